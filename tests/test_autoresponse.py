"""The IDS response in the network's terms (controller/autoresponse.py) and
through the fabric: who owns an address, what the switches get while an
action is in force (the table simulator says where frames go), TTL expiry
on the fabric's clock, the trails, the state file, the alert token, and
the response section of the network file."""
from __future__ import annotations

import ipaddress
import json
import logging

import pytest

from controller import model, store
from controller.auth import WriteAuth
from controller.autoresponse import ACTIONS_KEPT, AutoResponse, owners
from controller.fabric import SAVE, SYNC
from controller.policy import Policy, VMRule
from controller.response import Alert, ResponseError, parse_response
from tests.test_fabric import NETWORK, Lab

RESPONSE = """
response:
  rules:
    - {severity: [1], target: source, action: quarantine, ttl: 30}
    - {category: [bad], target: destination, action: mirror}
  allowlist: [other]
  max_per_minute: 5
"""
LOG = logging.getLogger("test_autoresponse")


def alert(src: str, dst: str = "10.31.0.99", severity: int = 1, category: str = "c") -> Alert:
    return Alert(timestamp="t", src_ip=ipaddress.ip_address(src),
                 dest_ip=ipaddress.ip_address(dst), src_port=1, dest_port=2, proto="TCP",
                 signature_id=7, signature="s", severity=severity, category=category)


def started() -> Lab:
    lab = Lab(NETWORK + RESPONSE)
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    lab.tick(10)                      # past the start-up grace
    lab.settle()
    return lab


def test_quarantine_beats_every_rule_and_mirror_never_undoes_steering():
    base = (Policy().with_vm("a", VMRule("steer")).with_vm("b", VMRule("mirror", "sent"))
            .with_vm("c", VMRule("quarantine")))
    p = base.with_responses(quarantined=["a"], mirrored=["b", "c", "d", "e"])
    assert p.vm_rule("a") == VMRule("quarantine")
    assert p.vm_rule("b") == VMRule("mirror", "both")
    assert p.vm_rule("c") == VMRule("quarantine"), "an operator's quarantine stays"
    assert p.vm_rule("d") == VMRule("mirror")
    s = base.with_responses(quarantined=[], mirrored=["a"])
    assert s.vm_rule("a") == VMRule("steer"), "a steered VM keeps passing the firewall"


def test_an_address_is_owned_by_its_vm_declared_leased_or_ipv6():
    text = NETWORK.replace("  default: allow", "  default: allow").replace(
        'ip: 10.31.0.3}', 'ip: dhcp}')
    net = model.parse(text, "x.yaml").leased({"tenant": "10.31.0.77"})
    by = owners(net)
    assert by[ipaddress.ip_address("10.31.0.1")] == "anchor"
    assert by[ipaddress.ip_address("10.31.0.77")] == "tenant"
    assert ipaddress.ip_address("10.31.0.3") not in by
    v6 = model.parse(NETWORK.replace('ip: 10.31.0.1}', 'ip: 10.31.0.1, ipv6: ["fd00::1"]}'),
                     "x.yaml")
    assert owners(v6)[ipaddress.ip_address("fd00::1")] == "anchor"


def test_an_alert_quarantines_its_source_everywhere_until_released():
    lab = started()
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    decisions, actions = lab.fabric.alerts([alert("10.31.0.1")], lab.step())
    assert [(d.kind, d.vm) for d in decisions] == [("acted", "anchor")]
    assert SYNC in actions and SAVE in actions
    lab.do(actions)
    lab.settle()
    # Nothing delivered to a VM; what it sends, the IDS still sees.
    assert lab.ping("anchor", "roamer") == {("hx", 2)}
    assert lab.ping("roamer", "anchor") == set()
    assert lab.fabric.network.policy.vm_rule("anchor") == VMRule(), \
        "the operator's policy itself never changes"
    assert lab.fabric.placed_network.policy.vm_rule("anchor") == VMRule("quarantine")
    lab.assert_in_sync()
    events, actions = lab.fabric.release("anchor", None, "operator (test)", lab.step())
    assert [e["kind"] for e in events] == ["released"]
    assert events[0]["released_by"] == "operator (test)"
    lab.do(actions)
    lab.settle()
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    lab.assert_in_sync()


def test_the_ttl_releases_on_the_fabric_clock():
    lab = started()
    lab.do(lab.fabric.alerts([alert("10.31.0.2")], lab.now)[1])
    lab.settle()
    assert lab.ping("anchor", "roamer") == set()
    saves = lab.saves
    lab.tick(29)
    assert lab.fabric.response.in_force() == {"roamer": ["quarantine"]}
    lab.tick(1.5)
    lab.settle()
    assert lab.fabric.response.in_force() == {}
    assert lab.saves > saves
    assert lab.fabric.response.actions[-1]["released_by"] == "expiry"
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    lab.assert_in_sync()


def test_an_alert_during_start_up_is_committed_when_it_ends():
    lab = Lab(NETWORK + RESPONSE)
    lab.connect("hx")                 # hy and hz not yet: still starting
    lab.settle()
    decisions, actions = lab.fabric.alerts([alert("10.31.0.1")], lab.now)
    assert decisions[0].kind == "acted" and SYNC not in actions
    lab.do(actions)
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    assert lab.ping("roamer", "anchor") == set()
    lab.assert_in_sync()


def test_a_mirror_rule_copies_the_destination_to_the_ids():
    lab = started()
    before = lab.ping("roamer", "anchor")
    assert before == {("hx", 10)}
    lab.do(lab.fabric.alerts([alert("10.31.0.2", "10.31.0.1", severity=3,
                                    category="bad")], lab.now)[1])
    lab.settle()
    # Copied where it enters (hy), over the mirror VLAN to the core's IDS.
    assert lab.ping("roamer", "anchor") == before | {("core", 0)}
    lab.assert_in_sync()


def test_allowlisted_unowned_and_unmatched_alerts_change_nothing():
    lab = started()
    before = {n: set(t) for n, t in lab.tables.items()}
    decisions, actions = lab.fabric.alerts(
        [alert("10.32.0.1"), alert("10.99.0.1"), alert("10.31.0.1", severity=4)], lab.now)
    assert [(d.kind, d.vm) for d in decisions] == [("allowlisted", "other"),
                                                   ("unowned", None)]
    assert actions == []
    assert {n: set(t) for n, t in lab.tables.items()} == before


def test_a_flood_of_ignored_alerts_keeps_the_trail_of_actions():
    lab = started()
    lab.fabric.alerts([alert("10.31.0.1")], lab.now)
    lab.fabric.alerts([alert("10.99.0.1")] * (ACTIONS_KEPT + 10), lab.now)
    assert [e["kind"] for e in lab.fabric.response.actions] == ["quarantined"]
    assert len(lab.fabric.response.ignored) < ACTIONS_KEPT


def test_response_rules_that_do_not_fit_are_refused_and_change_nothing():
    lab = started()
    before = lab.fabric.network
    with pytest.raises(ResponseError, match="no VM 'ghost'"):
        lab.fabric.set_response(parse_response({"allowlist": ["ghost"]}))
    assert lab.fabric.network is before
    assert lab.fabric.set_response(parse_response({"max_per_minute": 1})) == [SAVE]
    assert lab.fabric.network.response.max_per_minute == 1


def test_a_reload_keeps_rules_changed_at_run_time():
    lab = started()
    lab.fabric.set_response(parse_response({"max_per_minute": 1}))
    network, fresh = lab.fabric.from_file(model.yaml.safe_load(NETWORK + RESPONSE))
    assert network.response.max_per_minute == 1 and fresh.response.max_per_minute == 5


def test_the_state_file_keeps_rules_actions_and_trail(tmp_path):
    lab = started()
    f = lab.fabric
    f.alerts([alert("10.31.0.1")], lab.now)
    f.alerts([alert("10.99.0.1")], lab.now)
    f.set_response(parse_response({"rules": [{"severity": [2], "target": "both",
                                              "action": "quarantine"}]}))
    path = str(tmp_path / "state.json")
    store.save(path, f.network.policy, f.file_policy, f.network.source, {}, {},
               f.network.response, f.file_response, f.response.to_state())
    document = model.yaml.safe_load(NETWORK + RESPONSE)
    net = model.from_document(document, "fabric.yaml")
    restored, _, _, state = store.restore(path, net, document, LOG)
    assert restored.response == f.network.response
    again = AutoResponse(restored.response, state)
    assert again.in_force() == {"anchor": ["quarantine"]}
    assert [e["kind"] for e in again.actions] == ["quarantined"]
    assert [e["kind"] for e in again.ignored] == ["unowned"]

    doc = json.loads(open(path).read())
    doc["response_state"]["responder"]["active"][0]["since"] = "yesterday"
    open(path, "w").write(json.dumps(doc))
    with pytest.raises(store.StateFileError, match="IDS response state"):
        store.restore(path, net, document, LOG)


def test_the_alert_token_posts_alerts_only():
    auth = WriteAuth("w" * 16, alert_token="a" * 16)
    assert auth.check_alert("Bearer " + "a" * 16) is None
    assert auth.check_alert("Bearer " + "w" * 16) is None
    assert auth.check("Bearer " + "a" * 16).status == 401
    assert auth.check_alert("Bearer " + "x" * 16).status == 401
    assert auth.check_alert(None).status == 401
    assert WriteAuth(None).check_alert("Bearer " + "a" * 16).status == 403


@pytest.mark.parametrize("section, place", [
    ("response: {allowlist: [nobody]}", "response.allowlist"),
    ("response: {rules: [{severity: [1], target: source, action: jail}]}",
     "response.rules[0].action"),
    ("response: {rules: [{target: source, action: quarantine}]}", "response.rules[0]"),
    ("response: {max_per_minute: -1}", "response.max_per_minute"),
    ("response: {rule: []}", "response"),
])
def test_a_bad_response_section_names_its_place(section, place):
    with pytest.raises(model.NetworkFileError) as e:
        model.parse(NETWORK + section + "\n", "x.yaml")
    assert e.value.place == place


def test_a_mirror_rule_needs_a_way_to_the_ids():
    blind = NETWORK.replace(" ids_port: 2,", "").replace("mirror: {vlan: 390}\n", "")
    model.parse(blind, "x.yaml")
    with pytest.raises(model.NetworkFileError, match="it mirrors") as e:
        model.parse(blind + "response: {rules: [{severity: [1], target: source, "
                            "action: mirror}]}\n", "x.yaml")
    assert e.value.place == "response.rules[0].action"


def test_rules_not_changed_at_run_time_come_from_the_file_after_a_restart(tmp_path):
    lab = started()
    f = lab.fabric
    path = str(tmp_path / "state.json")
    store.save(path, f.network.policy, f.file_policy, f.network.source, {}, {},
               f.network.response, f.file_response, f.response.to_state())
    edited = model.yaml.safe_load(NETWORK + RESPONSE.replace("max_per_minute: 5",
                                                             "max_per_minute: 7"))
    net = model.from_document(edited, "fabric.yaml")
    restored, _, _, _ = store.restore(path, net, edited, LOG)
    assert restored.response.max_per_minute == 7, "the edited file's rules"
