"""Patches that make Ryu 4.34 work on current eventlet and Python 3.11.

1. ryu.app.wsgi imports eventlet.wsgi.ALREADY_HANDLED, which eventlet
   removed after 0.30; the old eventlet releases that have it do not import
   on Python 3.11. Ryu only uses the value as a sentinel returned to
   eventlet's WSGI server, so any unique object restores it.

2. Ryu's OpenFlow TLS listener (--ctl-privkey, --ctl-cert, --ca-certs)
   serves one switch only: ryu.lib.hub.StreamServer configures its
   SSLContext inside the per-connection handler by popping its SSL settings
   off a dict shared by all connections, so the second switch is wrapped
   with no certificate and fails the handshake (see faucetsdn/ryu PR #85).
   The replacement configures the context once, when the server is built,
   and wraps each accepted connection with it.

3. Ryu's REST server is eventlet's WSGI server with its defaults: no read
   timeout and a pool of 1,024 connections whose accept blocks when full,
   so ~1,000 idle connections that never finish their headers (anyone who
   reaches the port can open them) stop health and metrics from answering.
   The replacement reads each request within REST_READ_SECONDS and serves
   up to REST_MAX_CONNECTIONS at once; past that a connection gets a 503
   and is closed, instead of waiting in the accept queue.

Call apply() before anything imports ryu.app.wsgi (so also before Ryu opens
its OpenFlow listener); calling it again does nothing.
"""
import logging
import ssl
import warnings

with warnings.catch_warnings():
    # eventlet warns that it is in maintenance mode; Ryu 4.34 needs it anyway.
    warnings.simplefilter("ignore", DeprecationWarning)
    import eventlet.wsgi

LOG = logging.getLogger(__name__)
# A client that connects and never completes the handshake is dropped after
# this long (Ryu's Datapath sets its own timeout once the switch is in).
TLS_HANDSHAKE_TIMEOUT = 10.0
REST_READ_SECONDS = 10.0         # a request's line, headers and body, or the connection goes
REST_MAX_CONNECTIONS = 4096      # served at once (file descriptors allowing)
REST_BACKLOG = 1024
REST_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: 60\r\n\r\n"
                b'{"error": "too many connections to the REST API; try again"}')


def apply() -> None:
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    _fix_tls_listener()
    _bound_rest_server()


class _CappedPool(eventlet.GreenPool):
    """A pool that refuses, rather than waits, when it is full."""

    def spawn(self, function, connection):
        if self.free() > 0:
            return super().spawn(function, connection)
        return eventlet.spawn(_refuse, connection)


def _refuse(connection) -> None:
    try:
        connection[1].sendall(REST_REFUSAL)
    except OSError:
        pass


def _bound_rest_server() -> None:
    from ryu.lib import hub

    if getattr(hub.WSGIServer.serve_forever, "_vguard_bounded", False):
        return

    def serve_forever(self):
        self.logger = hub.LoggingWrapper()
        # eventlet listens with a backlog of 50: a burst of connections
        # would wait in SYN retries, not in the accept queue.
        self.server.listen(REST_BACKLOG)
        eventlet.wsgi.server(self.server, self.handle, self.logger,
                             socket_timeout=REST_READ_SECONDS,
                             custom_pool=_CappedPool(REST_MAX_CONNECTIONS))

    serve_forever._vguard_bounded = True
    hub.WSGIServer.serve_forever = serve_forever


def _fix_tls_listener() -> None:
    # Patched on the class, so it also holds for ryu.controller.controller,
    # which imports the class by name, whenever that import happens.
    from ryu.lib.hub import StreamServer

    original = StreamServer.__init__
    if getattr(original, "_vguard_tls_fix", False):
        return

    def __init__(self, listen_info, handle=None, backlog=None, spawn="default",
                 **ssl_args):
        ctx = ssl_args.pop("ssl_ctx", None)
        if ctx is None:              # plain TCP (or no SSLContext): Ryu's own code
            return original(self, listen_info, handle, backlog, spawn, **ssl_args)
        # What Ryu does on every connection, done once here; and no
        # protocol older than TLS 1.2 (Ryu's context would allow them).
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(ssl_args.pop("certfile"), ssl_args.pop("keyfile", None))
        if "cert_reqs" in ssl_args:
            ctx.verify_mode = ssl_args.pop("cert_reqs")
        if "ca_certs" in ssl_args:
            ctx.load_verify_locations(ssl_args.pop("ca_certs"))
        ssl_args.setdefault("server_side", True)
        original(self, listen_info, handle, backlog, spawn)   # a plain listener

        def wrap_and_handle(sock, addr):     # one green thread per connection
            # The TLS socket takes over the descriptor: close it, not `sock`.
            tls = ctx.wrap_socket(sock, do_handshake_on_connect=False, **ssl_args)
            try:
                tls.settimeout(TLS_HANDSHAKE_TIMEOUT)
                tls.do_handshake()
                tls.settimeout(None)
            except OSError as e:                             # ssl.SSLError too
                LOG.warning("OpenFlow TLS handshake with %s refused: %s", addr, e)
                tls.close()
                return
            handle(tls, addr)

        self.handle = wrap_and_handle

    __init__._vguard_tls_fix = True
    StreamServer.__init__ = __init__
