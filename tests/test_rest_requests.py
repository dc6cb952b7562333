"""REST request validation, write authorization, the read documents, and the
OpenAPI document against the endpoint table (no controller running)."""
from __future__ import annotations

import pytest

from controller.binding import Bindings
from controller import changes, model, views
from controller.auth import TokenError, WriteAuth, load_token
from controller.changes import RequestError
from controller.compiler import compile_network
from controller.policy import DIRECTIONS, SCOPE_MODES, VM_MODES, Policy, VMRule

from .test_model import EXAMPLE

TOKEN = "s3cret-token-0123456789"
JSON = "application/json"


@pytest.fixture(scope="module")
def net() -> model.Network:
    return model.load(str(EXAMPLE))


def refused(status: int, call, *args) -> str:
    with pytest.raises(RequestError) as e:
        call(*args)
    assert e.value.status == status, e.value.message
    return e.value.message


# ------------------------------------------------------------ bodies

def test_a_json_object_body_is_read():
    assert changes.json_body("application/json; charset=utf-8", b'{"mode": "allow"}') \
        == {"mode": "allow"}


@pytest.mark.parametrize("content_type, body, status, says", [
    (None, b'{"mode": "allow"}', 415, "Content-Type: application/json"),
    ("text/plain", b'{"mode": "allow"}', 415, "got 'text/plain'"),
    ("application/x-www-form-urlencoded", b"mode=allow", 415, "must be JSON"),
    (JSON, b"", 400, "the body is empty"),
    (JSON, b"   ", 400, "the body is empty"),
    (JSON, b'{"mode": "allow"', 400, "malformed JSON"),
    (JSON, b"{'mode': 'allow'}", 400, "malformed JSON: Expecting property name"),
    (JSON, b'\xff{"mode": 1}', 400, "not UTF-8"),
    (JSON, b"[" * 50000 + b"]" * 50000, 413, "larger than"),
    (JSON, b"[" * 30000 + b"]" * 30000, 400, "nested too deeply"),
    (JSON, b'["allow"]', 400, "must be a JSON object, got an array"),
    (JSON, b'"allow"', 400, "must be a JSON object, got a string"),
    (JSON, b"null", 400, "got null"),
])
def test_bad_bodies_are_refused_with_what_to_fix(content_type, body, status, says):
    assert says in refused(status, changes.json_body, content_type, body)


@pytest.mark.parametrize("body, says", [
    ({}, "missing field 'mode'"),
    ({"mode": "allow", "extra": 1}, "unknown field 'extra' (allowed: mode)"),
    ({"mode": 3}, "field 'mode' must be a string, got a number"),
    ({"mode": None}, "got null"),
    ({"mode": ["allow"]}, "got an array"),
    ({"mode": "open"}, "invalid mode 'open' (one of: " + ", ".join(SCOPE_MODES) + ")"),
    ({"mode": "quarantine"}, "invalid mode 'quarantine'"),
    ({"mode": "ALLOW"}, "invalid mode 'ALLOW'"),
])
def test_scope_modes_are_checked(body, says):
    assert says in refused(400, changes.scope_mode, body)


def test_every_scope_mode_of_the_policy_module_is_accepted():
    assert [changes.scope_mode({"mode": m}) for m in SCOPE_MODES] == list(SCOPE_MODES)


@pytest.mark.parametrize("body, says", [
    ({"mode": "mirror", "direction": "up"}, "invalid direction 'up'"),
    ({"mode": "quarantine", "direction": "sent"}, "a direction applies to mode mirror only"),
    ({"mode": "mirror", "direction": 1}, "field 'direction' must be a string"),
    ({"direction": "sent"}, "missing field 'mode'"),
    ({"mode": "deny"}, "invalid mode 'deny' (one of: " + ", ".join(VM_MODES) + ")"),
])
def test_vm_modes_are_checked(body, says):
    assert says in refused(400, changes.vm_mode, body)


def test_vm_modes_become_rules():
    assert changes.vm_mode({"mode": "mirror", "direction": "received"}) == \
        VMRule("mirror", "received")
    assert changes.vm_mode({"mode": "quarantine"}) == VMRule("quarantine")
    assert changes.vm_mode({"mode": "mirror"}) == VMRule("mirror", "both")


# ------------------------------------------------------------ changes

def test_each_route_changes_its_own_scope(net):
    p = Policy()
    p = changes.set_default(p, net, {}, {"mode": "deny"})
    p = changes.set_segment(p, net, {"segment": "dmz"}, {"mode": "mirror"})
    p = changes.set_pair(p, net, {"a": "internal", "b": "dmz"}, {"mode": "allow"})
    p = changes.set_vm(p, net, {"vm": "web2"}, {"mode": "quarantine"})
    p = changes.set_external(p, net, {"segment": "internal"}, {"mode": "steer"})
    assert p.default == "deny" and p.mode("dmz", "dmz") == "mirror"
    assert p.mode("dmz", "internal") == "allow" and p.vm_rule("web2").mode == "quarantine"
    assert p.external_mode("internal") == "steer" and p.external_mode("dmz") == "mirror"
    p = changes.clear_external(p, net, {"segment": "internal"}, {})
    p = changes.clear_segment(p, net, {"segment": "dmz"}, {})
    p = changes.clear_pair(p, net, {"a": "dmz", "b": "internal"}, {})
    p = changes.clear_vm(p, net, {"vm": "web2"}, {})
    assert p == Policy().with_default("deny")


def test_unknown_names_are_404(net):
    assert "unknown segment 'dmzz' (known: dmz, internal, management)" in refused(
        404, changes.set_segment, Policy(), net, {"segment": "dmzz"}, {"mode": "allow"})
    assert "unknown segment 'x'" in refused(404, changes.set_external, Policy(), net,
                                            {"segment": "x"}, {"mode": "deny"})
    assert "unknown VM 'ghost'" in refused(404, changes.clear_vm, Policy(), net,
                                           {"vm": "ghost"}, {})
    assert "unknown segment" in refused(404, changes.set_pair, Policy(), net,
                                        {"a": "dmz", "b": "nope"}, {"mode": "allow"})
    assert "a pair joins two different segments" in refused(
        404, changes.clear_pair, Policy(), net, {"a": "dmz", "b": "dmz"}, {})


# ------------------------------------------------------------ authorization

def test_without_a_token_writes_are_refused_and_say_how_to_configure_one():
    refusal = WriteAuth(None).check(f"Bearer {TOKEN}")
    assert refusal.status == 403
    assert "--token-file" in refusal.message and "VGUARD_API_TOKEN" in refusal.message


def test_insecure_mode_lets_writes_through_without_a_token():
    assert WriteAuth(None, insecure=True).check(None) is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                    "Bearer é-not-ascii", TOKEN])
def test_a_missing_or_wrong_token_is_401(header):
    assert WriteAuth(TOKEN).check(header).status == 401


def test_the_right_token_is_accepted():
    assert WriteAuth(TOKEN).check(f"Bearer {TOKEN}") is None
    assert WriteAuth(TOKEN).check(f"bearer  {TOKEN} ") is None


def test_tokens_come_from_the_file_else_the_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert load_token(str(path), {"VGUARD_API_TOKEN": "other-token-0123456789"}) == TOKEN
    assert load_token(None, {"VGUARD_API_TOKEN": TOKEN}) == TOKEN
    assert load_token(None, {}) is None
    for bad in ("short", "has a space 0123456789", "tab\there0123456789"):
        with pytest.raises(TokenError):
            load_token(None, {"VGUARD_API_TOKEN": bad})


# ------------------------------------------------------------ read documents

def test_the_matrix_vms_and_segments_show_effective_modes(net):
    p = (Policy().with_segment("dmz", "deny").with_pair("dmz", "internal", "mirror")
         .with_vm("app1", VMRule("mirror", "sent")).with_vm("db1", VMRule("quarantine")))
    n = net.with_policy(p)
    m = views.matrix(n)
    assert m["segments"] == ["dmz", "internal", "management"]
    assert m["modes"]["dmz"] == {"dmz": "deny", "internal": "mirror", "management": "deny"}
    assert m["modes"]["internal"]["dmz"] == "mirror"
    bindings = Bindings(n)
    vms = {v["name"]: v for v in views.vms(n, {v.name: bindings.binding(v.name)
                                               for v in n.vms})}
    assert vms["web1"]["binding"] == {"by": "port", "hypervisor": "hv1", "ofport": 10,
                                      "up": False, "since": None, "candidates": []}
    assert (vms["web1"]["mode"], vms["web1"]["effective"]) == ("allow", "deny")
    assert (vms["app1"]["mode"], vms["app1"]["direction"], vms["app1"]["effective"]) == \
        ("mirror", "sent", "mirror")
    assert vms["db1"]["effective"] == "quarantine" and vms["db1"]["direction"] is None
    segs = {s["name"]: s for s in views.segments(n)}
    assert segs["dmz"]["override"] and segs["dmz"]["mode"] == "deny"
    assert not segs["internal"]["override"] and segs["internal"]["mode"] == "allow"


def test_the_audit_lists_missing_and_unexpected_entries(net):
    flows = compile_network(net)["hv1"]
    gone = flows[5]
    installed = [(f.cookie, f.table, f.priority, views.match_doc(f.match))
                 for f in flows if f is not gone]
    stray = (0x5EC0_0100_0000_0042, 3, 5, {"eth_dst": "02:00:00:00:99:99"})
    doc = views.audit(flows, installed + [stray])
    assert not doc["in_sync"] and doc["intended"] == len(flows)
    assert doc["missing"] == [{"cookie": f"0x{gone.cookie:016x}", "table": gone.table,
                               "table_name": views.TABLE_NAMES[gone.table],
                               "priority": gone.priority,
                               "match": views.match_doc(gone.match), "reason": gone.reason}]
    assert [e["cookie"] for e in doc["unexpected"]] == ["0x5ec0010000000042"]
    healthy = views.audit(flows, [(f.cookie, f.table, f.priority, {}) for f in flows])
    assert healthy["in_sync"] and healthy["missing"] == healthy["unexpected"] == []


def test_counters_split_mirrored_and_dropped_traffic(net):
    n = net.with_policy(Policy().with_default("mirror"))
    hv = n.hypervisor("hv1")
    desired = {f.cookie: f for f in compile_network(n)["hv1"]}
    by_reason = {f.reason: c for c, f in desired.items()}
    counts = {by_reason["policy-mirror"]: (7, 700), by_reason["port-security"]: (3, 180),
              by_reason["policy-deny"]: (2, 100), by_reason["deliver"]: (50, 5000),
              0x1234: (99, 9900)}                # not ours: ignored
    doc = views.counters(n, [(hv, desired, counts)])
    assert doc["mirrored"] == {"packets": 7, "bytes": 700}
    assert doc["dropped"] == {"port-security": {"packets": 3, "bytes": 180},
                              "policy-deny": {"packets": 2, "bytes": 100}}
    assert doc["hypervisors"]["hv1"]["reasons"]["deliver"] == {"packets": 50, "bytes": 5000}


# ------------------------------------------------------------ OpenAPI

def test_the_openapi_document_describes_exactly_the_served_endpoints(net):
    from apps import rest_api
    doc = rest_api.openapi_document(net)
    documented = {(path, method.upper()) for path, item in doc["paths"].items()
                  for method in item if method != "parameters"}
    served = {(path, method) for path, methods in rest_api.ENDPOINTS.items()
              for method in methods}
    assert documented == served


def test_the_openapi_document_takes_modes_and_names_from_the_code(net):
    from apps import rest_api
    schemas = rest_api.openapi_document(net)["components"]["schemas"]
    assert schemas["ScopeMode"]["enum"] == list(SCOPE_MODES)
    assert schemas["VMMode"]["enum"] == list(VM_MODES)
    assert schemas["VMModeDirected"]["enum"] == ["mirror"]
    assert sorted(schemas["VMModeDirected"]["enum"] + schemas["VMModeUndirected"]["enum"]) \
        == sorted(VM_MODES)
    assert schemas["Direction"]["enum"] == list(DIRECTIONS)
    assert schemas["SegmentName"]["enum"] == ["dmz", "internal", "management"]
    assert "web1" in schemas["VMName"]["enum"]
