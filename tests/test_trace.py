"""The trace: what the network does with a frame, and why (table simulator
over the compiled entries)."""
from __future__ import annotations

import pytest

from controller import model, tablesim, trace
from controller.compiler import compile_network
from controller.policy import VMRule
from tests.test_compiler import EXAMPLE
from tests.test_gateways import NETWORK as GATEWAYS


@pytest.fixture(scope="module")
def net():
    return model.load(str(EXAMPLE))


def ask(net, src, dst, **kw):
    return trace.trace(net, compile_network(net), src, dst, **kw)


def test_a_frame_inside_a_segment_is_delivered_by_the_segments_rule(net):
    got = ask(net, "web1", "web2")
    assert got["verdict"] == "delivered" and got["delivered_to"] == ["VM web2"]
    assert got["rule"]["table"] == "policy" and got["rule"]["reason"] == "policy-allow"
    assert got["copies"] == [] and got["steered"] == []
    assert [h["hypervisor"] for h in got["path"]] == ["hv1"]
    assert got["path"][0]["outputs"] == [{"port": 11, "to": "VM web2", "vlan": []}]


def test_across_hypervisors_the_path_shows_the_uplink_and_its_tag(net):
    got = ask(net, "web1", "web3")
    assert got["verdict"] == "delivered" and got["delivered_to"] == ["VM web3"]
    first = got["path"][0]
    assert first["outputs"] == [{"port": 1, "to": "uplink", "vlan": [10]}]
    assert got["path"][1]["hypervisor"] == "hv2" and got["path"][1]["in"] == "uplink"


def test_a_denied_pair_names_the_rule_and_why(net):
    got = ask(net, "web1", "app1")
    assert got["verdict"] == "dropped" and got["reason"] == "policy-deny"
    assert got["rule"]["table"] == "policy" and "denies" in got["explanation"]


def test_quarantine_mirror_and_steer_show_as_such(net):
    q = net.with_policy(net.policy.with_vm("web1", VMRule("quarantine")))
    got = ask(q, "web1", "web2")
    assert (got["verdict"], got["reason"]) == ("dropped", "quarantine")
    assert got["copies"] == [{"hypervisor": "hv1", "port": 3}], "the IDS sees it try"
    m = net.with_policy(net.policy.with_default("mirror"))
    assert ask(m, "web3", "web1")["copies"] == [{"hypervisor": "core", "port": 0}]
    s = net.with_policy(net.policy.with_default("steer"))
    got = ask(s, "web1", "web2")
    assert got["steered"] == ["hv1"] and got["verdict"] == "delivered"


def test_destinations_by_address_or_mac_and_bad_questions(net):
    assert ask(net, "web1", "10.0.10.3")["delivered_to"] == ["VM web3"]
    assert ask(net, "web1", "02:00:00:00:10:02")["delivered_to"] == ["VM web2"]
    unknown = ask(net, "web1", "02:00:00:00:99:99")
    assert (unknown["verdict"], unknown["reason"]) == ("dropped", "unknown-destination")
    arp = ask(net, "web1", "web2", proto="arp")
    assert set(arp["delivered_to"]) == {"VM web2", "VM web3"}     # its segment, not more
    for src, dst, proto, says in [("ghost", "web1", "icmp", "unknown VM"),
                                  ("web1", "web2", "gre", "proto must be"),
                                  ("web1", "nowhere", "icmp", "no VM, IPv4 address or MAC"),
                                  ("web1", "10.9.9.9", "icmp", "no gateway")]:
        with pytest.raises(trace.TraceError, match=says):
            ask(net, src, dst, proto=proto)


def test_the_way_out_goes_to_the_gateway_and_external_deny_stops_it():
    net = model.parse(GATEWAYS, "gateways.yaml")
    got = ask(net, "f1", "198.51.100.7", proto="tcp", dport=443)
    assert got["verdict"] == "delivered" and got["delivered_to"] == ["gateway (by the uplink)"]
    assert got["frame"]["destination"] == "gateway"
    cut = model.parse(GATEWAYS + "  external: {front: deny}\n", "gateways.yaml")
    got = ask(cut, "f1", "198.51.100.7")
    assert (got["verdict"], got["reason"]) == ("dropped", "external-deny")


THREE = """
segments:
  a: {vlan: 10}
  b: {vlan: 20}
hypervisors:
  x: {dpid: 1, uplink_port: 1}
  y: {dpid: 2, uplink_port: 1}
  z: {dpid: 3, uplink_port: 1}
vms:
  a1: {hypervisor: x, port: 5, segment: a, mac: "02:00:00:00:0a:01", ip: 10.0.0.1}
  a2: {hypervisor: y, port: 5, segment: a, mac: "02:00:00:00:0a:02", ip: 10.0.0.2}
  b3: {hypervisor: z, port: 5, segment: b, mac: "02:00:00:00:0b:03", ip: 10.0.0.3}
policy:
  default: allow
"""


def test_the_core_learns_unicast_goes_to_its_hypervisor_only_broadcast_everywhere():
    net = model.parse(THREE, "three.yaml")
    got = ask(net, "a1", "a2", proto="udp", dport=53)
    assert [h["hypervisor"] for h in got["path"]] == ["x", "y"]
    assert got["delivered_to"] == ["VM a2"]
    arp = ask(net, "a1", "a2", proto="arp")
    assert sorted(h["hypervisor"] for h in arp["path"]) == ["x", "y", "z"]


def test_kept_switches_answer_for_the_entries_given_never_older_ones():
    net = model.parse(THREE, "three.yaml")
    kept = tablesim.SwitchCache()
    allowed = compile_network(net.with_policy(net.policy.with_pair("a", "b", "allow")))
    denied = compile_network(net.with_policy(net.policy.with_pair("a", "b", "deny")))
    for flows, verdict in [(allowed, "delivered"), (allowed, "delivered"),
                           (denied, "dropped"), (allowed, "delivered")]:
        got = trace.trace(net, flows, "a1", "b3", switches=kept)
        assert got["verdict"] == verdict
    # The same entries again: the same parsed switch, not a new one.
    assert kept.get("x", allowed["x"], 1) is kept.get("x", allowed["x"], 1)
    assert kept.get("x", denied["x"], 1) is not kept.get("x", allowed["x"], 1)
