"""REST API served by the controller process (Ryu WSGI, JSON), and /metrics.

Ryu hands every request under /api/v1 (and /metrics) to one dispatcher
here, which owns the routing: unknown paths answer 404 and undeclared
methods 405 with `Allow`, both in JSON, and no exception escapes (a bug
answers 500 and is logged with its traceback). The endpoint table below
and apps/openapi.yaml describe the same API; a unit test keeps them equal.

Writes: authorize (controller/auth.py), parse and validate the request
(controller/changes.py), then, one write at a time, apply the new policy on
every connected hypervisor (all or nothing) and save it to the state file.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
import time

import yaml
from webob import Response

from controller import shim

shim.apply()

from ryu.app.wsgi import ControllerBase, route  # noqa: E402

from controller import changes, model, tablesim, topology, trace, views  # noqa: E402
from controller.response import ACTIONS, ResponseError, parse_response  # noqa: E402
from controller.auth import TOKEN_ENV, TokenError, WriteAuth, load_token  # noqa: E402
from controller.changes import RequestError  # noqa: E402
from controller.enforcement import DATAPATH_WINDOW_MS  # noqa: E402
from controller.fabric import SYNC  # noqa: E402
from controller.flows import FlowQueryError  # noqa: E402
from controller.policy import (DIRECTIONS, SCOPE_MODES, VM_MODES, PolicyError,  # noqa: E402
                               vm_rule)

from apps.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics  # noqa: E402

API = "/api/v1"
MAX_ALERTS_BODY = 1 << 20      # a batch of alerts, newline-delimited
OPENAPI_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.yaml")
CONSOLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
# The web console's files, by the name a URL may ask for: nothing else under
# /ui/ is served, so no path from a request ever reaches the file system.
CONSOLE_FILES = {"": ("index.html", "text/html"), "index.html": ("index.html", "text/html"),
                 "console.js": ("console.js", "text/javascript"),
                 "console.css": ("console.css", "text/css")}
# Only this origin's own files and API: no CDN, and the token goes nowhere else.
CONSOLE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                  "frame-ancestors 'none'")

# path -> {method: handler name}; `{name}` matches one path segment.
ENDPOINTS = {
    f"{API}/health": {"GET": "health"},
    f"{API}/hypervisors": {"GET": "hypervisors"},
    f"{API}/segments": {"GET": "segments"},
    f"{API}/vms": {"GET": "vms"},
    f"{API}/vms/{{vm}}": {"PUT": "put_vm", "DELETE": "delete_vm"},
    f"{API}/events": {"GET": "events"},
    f"{API}/alerts": {"POST": "alerts"},
    f"{API}/response": {"GET": "response", "PUT": "set_response"},
    f"{API}/response/actions/{{vm}}": {"DELETE": "release"},
    f"{API}/reload": {"POST": "reload"},
    f"{API}/policy": {"GET": "policy"},
    f"{API}/matrix": {"GET": "matrix"},
    f"{API}/counters": {"GET": "counters"},
    f"{API}/audit": {"GET": "audit"},
    f"{API}/trace": {"GET": "trace"},
    f"{API}/flows": {"GET": "flows"},
    f"{API}/flows/matrix": {"GET": "flow_matrix"},
    f"{API}/topology": {"GET": "topology"},
    f"{API}/openapi.json": {"GET": "openapi"},
    "/metrics": {"GET": "prometheus"},
    f"{API}/policy/default": {"PUT": "set_default"},
    f"{API}/policy/segments/{{segment}}": {"PUT": "set_segment", "DELETE": "clear_segment"},
    f"{API}/policy/pairs/{{a}}/{{b}}": {"PUT": "set_pair", "DELETE": "clear_pair"},
    f"{API}/policy/external/{{segment}}": {"PUT": "set_external",
                                           "DELETE": "clear_external"},
    f"{API}/policy/vms/{{vm}}": {"PUT": "set_vm", "DELETE": "clear_vm"},
}


def _json(body, status=200) -> Response:
    return Response(status=status, content_type="application/json", charset="utf-8",
                    body=json.dumps(body, indent=1, sort_keys=True).encode())


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _path(req) -> str:
    """The request path. PATH_INFO is URL-decoded bytes as latin-1; names are
    UTF-8, but a client may send anything (webob's req.path_info raises)."""
    return req.environ.get("PATH_INFO", "").encode("latin-1", "replace").decode(
        "utf-8", "replace")


def _pattern(path: str) -> re.Pattern:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)))


@functools.lru_cache(maxsize=1)
def _openapi_file() -> dict:
    with open(OPENAPI_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def openapi_document(network) -> dict:
    """apps/openapi.yaml with the modes of controller/policy.py and the
    names of this network filled in."""
    doc = copy.deepcopy(_openapi_file())
    doc.pop("x-write-responses", None)      # a YAML anchor's home, used in place
    schemas = doc["components"]["schemas"]
    schemas["ScopeMode"]["enum"] = list(SCOPE_MODES)
    schemas["VMMode"]["enum"] = list(VM_MODES)
    directed = [m for m in VM_MODES if _takes_direction(m)]
    schemas["VMModeDirected"]["enum"] = directed
    schemas["VMModeUndirected"]["enum"] = [m for m in VM_MODES if m not in directed]
    schemas["Direction"]["enum"] = list(DIRECTIONS)
    schemas["SegmentName"]["enum"] = [s.name for s in network.segments]
    schemas["VMName"]["enum"] = [v.name for v in network.vms]
    return doc


def _takes_direction(mode: str) -> bool:
    """Ask controller/policy.py itself, so the document follows its rules."""
    try:
        vm_rule({"mode": mode, "direction": DIRECTIONS[-1]}, "probe")
        return True
    except PolicyError:
        return False


def _fits_alone(document, name: str, body) -> bool:
    """Would this VM be valid as the only one of the network file?"""
    alone = {k: v for k, v in document.items() if k != "policy"}
    try:
        model.from_document({**alone, "vms": {name: body}}, "request")
        return True
    except model.NetworkFileError:
        return False


def write_auth_from_environment(logger) -> WriteAuth:
    """The launcher passes --token-file and --insecure-rest as environment
    variables (it has already checked them); VGUARD_API_TOKEN is the user's."""
    try:
        token = load_token(os.environ.get("VGUARD_TOKEN_FILE"))
        alert_file = os.environ.get("VGUARD_ALERT_TOKEN_FILE")
        alert_token = load_token(alert_file, {}) if alert_file else None
    except TokenError as e:
        raise SystemExit(f"error: {e}") from None
    insecure = os.environ.get("VGUARD_INSECURE_REST") == "1" and token is None
    if insecure:
        logger.warning("*** INSECURE: --insecure-rest: ANYONE who reaches the REST API "
                       "can change the policy, without a token ***")
    elif token is None:
        logger.warning("REST API is read-only: no token configured (--token-file PATH "
                       "or %s)", TOKEN_ENV)
    else:
        logger.info("REST API writes need the bearer token")
    if alert_token is not None:
        logger.info("IDS alerts may also come with the alert token")
    return WriteAuth(token, insecure, alert_token)


def _applied(result: dict) -> Response:
    """The answer to a change committed on every connected hypervisor: 200
    if it is in force everywhere it matters (or changed nothing); 202 if a
    hypervisor whose entries it changes has not taken it (offline, or out of sync): there it
    takes effect only once the controller reaches it again."""
    body = {**result, "datapath_window_ms": DATAPATH_WINDOW_MS}
    if not result["pending"] or not result["changed"]:
        return _json(body)
    return _json({**body, "warning": f"NOT in force on {', '.join(result['pending'])} "
                                     f"(offline or out of sync): it takes effect there when "
                                     f"the controller reaches it again"}, 202)


def register(wsgi, app) -> None:
    """Serve the API for this SegmentSwitch app on Ryu's WSGI server."""
    wsgi.register(RestApi, {"api": Api(app, write_auth_from_environment(app.logger))})


class RestApi(ControllerBase):
    """Ryu's per-request controller: hands everything to the shared Api."""

    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.api = data["api"]

    # Any character, a newline too: a path Routes did not match would get
    # Ryu's HTML 404 instead of ours.
    @route("vguard_api", API + "/{path}", requirements={"path": r"[\s\S]*"})
    def api_path(self, req, **_):
        return self.api.handle(req)

    @route("vguard_metrics", "/metrics")
    def metrics_path(self, req, **_):
        return self.api.handle(req)

    @route("vguard_console", "/")
    def console_root(self, req, **_):
        return self.api.console(req, "")

    @route("vguard_console_ui", "/ui")
    def console_ui(self, req, **_):
        return self.api.console(req, "")

    @route("vguard_ui", "/ui/{name}", requirements={"name": r"[\s\S]*"})
    def console_file(self, req, name="", **_):
        return self.api.console(req, name)


class Api:
    """The API's state, shared by all requests."""

    def __init__(self, app, auth: WriteAuth):
        self.app, self.auth, self.logger = app, auth, app.logger
        self.metrics = Metrics(app)
        self.openapi_doc = openapi_document(app.fabric.network)
        self.trace_switches = tablesim.SwitchCache()   # parsed entries, kept between traces
        self.routes = [(_pattern(path), methods) for path, methods in ENDPOINTS.items()]

    def handle(self, req) -> Response:
        path = _path(req)
        try:
            for pattern, methods in self.routes:
                match = pattern.fullmatch(path)
                if match:
                    break
            else:
                return _error(404, f"no such endpoint: {path} (see {API}/openapi.json)")
            handler = methods.get(req.method)
            if handler is None:
                response = _error(405, f"{req.method} is not allowed on {path} "
                                       f"(allowed: {', '.join(methods)})")
                response.headers["Allow"] = ", ".join(methods)
                return response
            return getattr(self, handler)(req, match.groupdict())
        except RequestError as e:
            return _error(e.status, e.message)
        except Exception:          # a bug: say so, keep serving, keep the traceback
            self.logger.exception("REST %s %s failed", req.method, path)
            return _error(500, "internal error; the controller log has the details")

    # ------------------------------------------------------------ reads

    def health(self, req, params):
        collector = self.app.collector
        return _json({**self.app.fabric.status(),
                      "flow_collector": collector.status() if collector else None})

    def hypervisors(self, req, params):
        datapaths = self.app.fabric.status()["datapaths"]
        out = []
        for hv in self.app.fabric.network.hypervisors:
            state = self.app.fabric.switches.get(hv.name)
            roles = self.app.fabric.port_roles(hv)
            down = sorted(state.ports_down) if state else []
            out.append({"name": hv.name, **datapaths[hv.name],
                        "ports_down": [{"port": p, "role": roles.get(p, "")} for p in down],
                        "uplink_port": hv.uplink_port, "firewall_port": hv.firewall_port,
                        "ids_port": hv.ids_port,
                        "mirror": views.mirror_path(self.app.fabric.network, hv),
                        "vms": [v.name for v in self.app.fabric.placed_network.vms
                                if v.hypervisor == hv.name]})
        return _json(out)

    def segments(self, req, params):
        return _json(views.segments(self.app.fabric.network))

    def vms(self, req, params):
        bindings = self.app.fabric.bindings
        return _json(views.vms(self.app.fabric.placed_network,
                               {v.name: bindings.binding(v.name)
                                for v in self.app.fabric.network.vms},
                               self.app.fabric.leases))

    def events(self, req, params):
        """Lifecycle events and the IDS response's trail, oldest first;
        ?source=lifecycle|response for one of them."""
        source = req.GET.get("source")
        if set(req.GET) - {"source"} or source not in (None, "lifecycle", "response"):
            raise RequestError(400, "the only query is source=lifecycle or source=response")
        fabric, events = self.app.fabric, []
        if source != "response":
            events += [{**e.to_dict(), "source": "lifecycle"} for e in list(fabric.events)]
        if source != "lifecycle":
            events += list(fabric.response.actions) + list(fabric.response.ignored)
        return _json({"events": sorted(events, key=lambda e: e["time"])})

    def response(self, req, params):
        fabric = self.app.fabric
        return _json({**fabric.response.status(time.time()),
                      "response": fabric.network.response.to_dict(),
                      "intake": self.app.alerts.status()})

    def policy(self, req, params):
        return _json({"policy": self.app.fabric.network.policy.to_dict(),
                      "modes": {"scope": list(SCOPE_MODES), "vm": list(VM_MODES),
                                "direction": list(DIRECTIONS)},
                      "state_file": self.app.intent.state_file})

    def matrix(self, req, params):
        return _json(views.matrix(self.app.fabric.network))

    def flows(self, req, params):
        collector = self._collector()
        try:
            page = collector.store.query(dict(req.GET))
        except FlowQueryError as e:
            return _error(400, str(e))
        return _json({**page, "collector": collector.status()})

    def flow_matrix(self, req, params):
        collector = self._collector()
        return _json({**collector.store.matrix(), "collector": collector.status()})

    def _collector(self):
        if self.app.collector is None:
            raise RequestError(409, "the flow collector is off (--flow-collector off)")
        return self.app.collector

    def counters(self, req, params):
        return _json(self.app.fabric.counters())

    def trace(self, req, params):
        """?src=VM&dst=VM|IP|MAC[&proto=icmp|tcp|udp|arp][&dport=N]"""
        query = req.GET
        unknown = sorted(set(query) - {"src", "dst", "proto", "dport"})
        if unknown or "src" not in query or "dst" not in query:
            raise RequestError(400, "give src (a VM) and dst (a VM, IPv4 address or MAC); "
                                    "proto and dport are optional"
                                    + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        dport = query.get("dport")
        if dport is not None and (not dport.isdigit() or not 0 < int(dport) < 65536):
            raise RequestError(400, f"dport must be 1..65535, not {dport!r}")
        flows, notes = self.app.fabric.committed()
        try:
            answer = trace.trace(self.app.fabric.placed_network, flows, query["src"],
                                 query["dst"], query.get("proto", "icmp"),
                                 int(dport) if dport else None, self.trace_switches)
        except trace.TraceError as e:
            raise RequestError(e.status, str(e)) from None
        return _json({**answer, "hypervisors": notes})

    def audit(self, req, params):
        per_hv = {}
        for name, entries in self.app.read_flows_now().items():
            switch = self.app.fabric.switches.get(name)
            intended = list(switch.desired.values()) if switch and switch.last_sync else None
            installed = None if entries is None else [
                (e.cookie, e.table_id, e.priority, views.match_doc(e.match.items()))
                for e in entries]
            if intended is None:
                per_hv[name] = {"answered": False,
                                "error": "connected, but not in sync yet: nothing to compare"}
            elif installed is None:
                per_hv[name] = {"answered": False,
                                "error": "the switch did not answer the flow read in time"}
            else:
                per_hv[name] = {"answered": True, **views.audit(intended, installed)}
        offline = sorted(hv.name for hv in self.app.fabric.network.hypervisors
                         if hv.name not in per_hv)
        return _json({"hypervisors": per_hv, "offline": offline,
                      "in_sync": all(d.get("in_sync") for d in per_hv.values())})

    def topology(self, req, params):
        fabric = self.app.fabric
        down = {name: sorted(s.ports_down) for name, s in fabric.switches.items()}
        return _json(topology.document(topology.graph(
            fabric.placed_network, fabric.status()["datapaths"], down)))

    def openapi(self, req, params):
        return _json(self.openapi_doc)

    def console(self, req, name: str) -> Response:
        """The web console (apps/console/): plain files, read on each request."""
        if req.method != "GET":
            response = _error(405, f"{req.method} is not allowed here (allowed: GET)")
            response.headers["Allow"] = "GET"
            return response
        if name not in CONSOLE_FILES:
            return _error(404, f"no such file: {_path(req)}")
        filename, content_type = CONSOLE_FILES[name]
        with open(os.path.join(CONSOLE_DIR, filename), "rb") as f:
            body = f.read()
        response = Response(body=body, content_type=content_type, charset="utf-8")
        response.headers.update({"Content-Security-Policy": CONSOLE_POLICY,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})
        return response

    def prometheus(self, req, params):
        response = Response(body=self.metrics.render())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    # ------------------------------------------------------------ writes

    def set_default(self, req, params):
        return self._write(req, params, changes.set_default, with_body=True)

    def set_segment(self, req, params):
        return self._write(req, params, changes.set_segment, with_body=True)

    def clear_segment(self, req, params):
        return self._write(req, params, changes.clear_segment, with_body=False)

    def set_pair(self, req, params):
        return self._write(req, params, changes.set_pair, with_body=True)

    def set_external(self, req, params):
        return self._write(req, params, changes.set_external, with_body=True)

    def clear_external(self, req, params):
        return self._write(req, params, changes.clear_external, with_body=False)

    def clear_pair(self, req, params):
        return self._write(req, params, changes.clear_pair, with_body=False)

    def set_vm(self, req, params):
        return self._write(req, params, changes.set_vm, with_body=True)

    def clear_vm(self, req, params):
        return self._write(req, params, changes.clear_vm, with_body=False)

    def _write(self, req, params, change, with_body: bool) -> Response:
        refusal = self._refuse(req)
        if refusal is not None:
            return refusal
        body = {}
        if with_body:
            body = changes.json_body(req.headers.get("Content-Type"),
                                     req.body_file.read(changes.MAX_BODY + 1))
        with self.app.intent.write_lock:
            current = self.app.fabric.network.policy
            new = change(current, self.app.fabric.network, params, body)
            started = time.monotonic()
            try:
                result = self.app.intent.apply_policy(new)
            except PolicyError as e:
                self.metrics.policy_changes.labels("refused").inc()
                raise RequestError(409, f"the network cannot carry this policy: "
                                        f"{e.problem}") from None
            if not result["ok"]:
                self.metrics.policy_changes.labels("failed").inc()
                why = "; ".join(f"{hv}: {reason}" for hv, reason in
                                sorted(result["failed"].items()))
                self.logger.error("policy change %s %s failed: %s", req.method,
                                  _path(req), why)
                return _json({**result, "changed": False,
                              "error": f"not applied ({why}); no hypervisor keeps it"}, 502)
            changed = new != current
            if changed and self.app.intent.state_file:
                try:
                    self.app.intent.save_state()
                except OSError as e:
                    return self._undo_unsaved(self.app.fabric.network.with_policy(current),
                                              self.app.fabric.inventory, e)
            self.metrics.policy_change_seconds.observe(time.monotonic() - started)
            self.metrics.policy_changes.labels("applied").inc()
            if changed:
                self.logger.info("policy changed by %s %s (%.3f s)", req.method,
                                 _path(req), result["seconds"])
            # In every switch's tables now; the datapath follows within the window.
            return _applied({**result, "changed": changed, "policy": new.to_dict()})

    # -- the IDS response

    def alerts(self, req, params):
        """Suricata EVE records (one object, or one per line): decided by the
        response rules; what they quarantine is in force when this answers."""
        refusal = self._refuse(req, alerts=True)
        if refusal is not None:
            return refusal
        raw = req.body_file.read(MAX_ALERTS_BODY + 1)
        if len(raw) > MAX_ALERTS_BODY:
            raise RequestError(413, f"at most {MAX_ALERTS_BODY} bytes of alerts per request")
        if not raw.strip():
            raise RequestError(400, "no records: send EVE JSON, one object or one per line")
        result = self.app.alerts.take(raw.decode("utf-8", "replace"),
                                      f"REST {req.remote_addr}")
        applied = result["applied"]
        if applied is not None and not applied["ok"]:
            return _json({**result, "warning": "an action is decided but not in force on "
                                               f"{', '.join(applied['failed'])} yet: the "
                                               "controller retries"}, 202)
        return _json(result, 202 if "warning" in result else 200)

    def set_response(self, req, params):
        """Replace the response rules (the network file's `response:` form)."""
        refusal = self._refuse(req)
        if refusal is not None:
            return refusal
        body = changes.json_body(req.headers.get("Content-Type"),
                                 req.body_file.read(changes.MAX_BODY + 1))
        try:
            new = parse_response(body)
        except ResponseError as e:
            raise RequestError(400, str(e)) from None
        with self.app.intent.write_lock:
            fabric = self.app.fabric
            previous = fabric.network
            try:
                self.app._do(fabric.set_response(new))
            except ResponseError as e:
                raise RequestError(409, f"the network cannot carry these rules: {e}") \
                    from None
            try:
                self.app.intent.save_state()
            except OSError as e:
                fabric.network = previous
                return _error(503, f"not changed: the state file "
                                   f"{self.app.intent.state_file} cannot be written "
                                   f"({e.strerror})")
            self.logger.info("response rules changed by PUT %s", _path(req))
            return _json({"changed": new != previous.response, "response": new.to_dict()})

    def release(self, req, params):
        """Release a VM from the IDS's automatic actions (?action= one kind)."""
        refusal = self._refuse(req)
        if refusal is not None:
            return refusal
        action = req.GET.get("action")
        if set(req.GET) - {"action"} or action not in (None, *ACTIONS):
            raise RequestError(400, f"the only query is action={' or action='.join(ACTIONS)}")
        name = params["vm"]
        events, actions = self.app.fabric.release(
            name, action, f"operator ({req.remote_addr})", time.time())
        if not events:
            raise RequestError(404, f"no automatic {action or 'action'} is in force on "
                                    f"{name!r}")
        applied = self.app._put_in_force() if SYNC in actions else None
        self.app._do([a for a in actions if a != SYNC])
        body = {"released": events, "applied": applied}
        if applied is not None and not applied["ok"]:
            return _json({**body, "warning": "released, but not yet in force on "
                                             f"{', '.join(applied['failed'])}"}, 202)
        return _json(body)

    # -- the inventory and the network file

    def put_vm(self, req, params):
        """Create or replace a VM, checked exactly as the network file is."""
        return self._change_network(req, lambda: self._with_vm(params["vm"], changes.json_body(
            req.headers.get("Content-Type"), req.body_file.read(changes.MAX_BODY + 1))))

    def delete_vm(self, req, params):
        def build():
            changes.vm(self.app.fabric.network, params["vm"])           # 404 if unknown
            return self._with_vm(params["vm"], None)
        return self._change_network(req, build)

    def _with_vm(self, name: str, body):
        """(the network with VM `name` replaced by `body`, or removed if None,
        the inventory that says so)."""
        inventory = {**self.app.fabric.inventory, name: body}
        file_vms = (self.app.fabric.file_document or {}).get("vms") or {}
        if body is None and name not in file_vms:
            del inventory[name]           # added at run time: simply gone again
        try:
            network = model.from_document(self.app.fabric.file_document, self.app.fabric.network.source,
                                          inventory)
        except model.NetworkFileError as e:
            # 400 if the VM is wrong on its own, 409 if it clashes with the rest.
            status = 409 if body is not None and _fits_alone(self.app.fabric.file_document, name,
                                                             body) else 400
            raise RequestError(status, f"{e.place}: {e.problem}" if e.place else e.problem) \
                from None
        try:
            return (network.with_policy(self.app.fabric.network.policy)
                    .with_response(self.app.fabric.network.response)), inventory
        except PolicyError as e:
            raise RequestError(409, f"the policy in force does not allow this: "
                                    f"{e.problem}") from None
        except ResponseError as e:
            raise RequestError(409, f"the response rules in force do not allow this: "
                                    f"{e.problem}") from None

    def reload(self, req, params):
        return self._change_network(req, None)

    def _change_network(self, req, build) -> Response:
        """Authorize, build the new network (None: reload the file), apply it
        all or nothing, save, answer."""
        refusal = self._refuse(req)
        if refusal is not None:
            return refusal
        with self.app.intent.write_lock:
            previous, previous_inventory = self.app.fabric.network, self.app.fabric.inventory
            if build is None:
                try:
                    result = self.app.intent.reload()
                except model.NetworkFileError as e:
                    raise RequestError(400, f"not reloaded, nothing changed: {e}") from None
                except PolicyError as e:
                    raise RequestError(409, f"not reloaded, nothing changed: the policy "
                                            f"in force no longer fits the file: "
                                            f"{e.problem}") from None
                except ResponseError as e:
                    raise RequestError(409, f"not reloaded, nothing changed: the response "
                                            f"rules in force no longer fit the file: "
                                            f"{e}") from None
            else:
                network, inventory = build()
                result = self.app.intent.apply_network(network, inventory)
            if not result["ok"]:
                why = "; ".join(f"{hv}: {r}" for hv, r in sorted(result["failed"].items()))
                return _json({**result, "changed": False,
                              "error": f"not applied ({why}); no hypervisor keeps it"}, 502)
            if self.app.intent.state_file:
                try:
                    self.app.intent.save_state()
                except OSError as e:
                    return self._undo_unsaved(previous, previous_inventory, e)
            self.openapi_doc = openapi_document(self.app.fabric.network)
            self.logger.info("network changed by %s %s (%.3f s)", req.method, _path(req),
                             result["seconds"])
            return _applied({**result, "changed": self.app.fabric.network != previous})

    def _refuse(self, req, alerts: bool = False) -> Response | None:
        """The answer to a write (alerts: a post of IDS alerts) that is not
        authorized, or None."""
        header = req.headers.get("Authorization")
        refusal = self.auth.check_alert(header) if alerts else self.auth.check(header)
        if refusal is not None:
            response = _error(refusal.status, refusal.message)
            if refusal.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="vguard"'
            return response
        if self.auth.insecure:
            self.logger.warning("*** INSECURE: unauthenticated %s %s from %s ***",
                                req.method, _path(req), req.remote_addr)
        return None

    def _undo_unsaved(self, previous, inventory: dict, error: OSError) -> Response:
        """A change that cannot be saved would be lost on restart: put the
        previous network back, so what is in force is what is saved."""
        self.logger.error("cannot save the state file %s (%s); rolling the change back",
                          self.app.intent.state_file, error)
        undo = self.app.intent.apply_network(previous, inventory)
        self.metrics.policy_changes.labels("failed").inc()
        state = "rolled back" if undo["ok"] else f"NOT rolled back ({undo['failed']})"
        return _error(503, f"the change was applied but the state file "
                           f"{self.app.intent.state_file} cannot be written ({error.strerror}); "
                           f"it was {state}")
