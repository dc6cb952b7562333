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


def apply() -> None:
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    _fix_tls_listener()


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
