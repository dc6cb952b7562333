"""Gateways: a segment's way out, under policy.external (table simulator).

A gateway on the physical network is reached through the uplink on its
segment's VLAN; a router VM forwards for others from its own port. Traffic
between a segment's VMs and its gateways is north-south: the segment's
external mode decides it, in both directions.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import learning, model
from controller.compiler import compile_network
from controller.tablesim import Fabric, Frame

ROUTER_MAC = "02:ee:00:00:00:01"      # one router interface MAC on two VLANs
NETWORK = f"""
segments:
  front: {{vlan: 110, subnet: 10.11.0.0/24, gateways: [{{mac: "{ROUTER_MAC}", ip: 10.11.0.254}}]}}
  back:  {{vlan: 120, subnet: 10.12.0.0/24, gateways: [{{mac: "{ROUTER_MAC}", ip: 10.12.0.254}}]}}
  lab:   {{vlan: 130, subnet: 10.13.0.0/24}}
hypervisors:
  ga: {{dpid: 0xa1, uplink_port: 1, ids_port: 2, firewall_port: 3}}
  gb: {{dpid: 0xa2, uplink_port: 5, ids_port: 2, firewall_port: 3,
       learning_ports: [{{port: 30, segment: lab, max_hosts: 2}}]}}
vms:
  f1: {{hypervisor: ga, port: 10, segment: front, mac: "02:11:00:00:00:01", ip: 10.11.0.1}}
  f2: {{hypervisor: gb, port: 10, segment: front, mac: "02:11:00:00:00:02", ip: 10.11.0.2}}
  b1: {{hypervisor: ga, port: 11, segment: back,  mac: "02:12:00:00:00:01", ip: 10.12.0.1}}
  l1: {{hypervisor: ga, port: 12, segment: lab,   mac: "02:13:00:00:00:01", ip: 10.13.0.1}}
  r1: {{hypervisor: gb, port: 12, segment: lab,   mac: "02:13:00:00:00:fe", ip: 10.13.0.254,
       router: true}}
  l2: {{hypervisor: gb, port: 13, segment: lab,   mac: "02:13:00:00:00:02", ip: 10.13.0.2}}
policy:
  default: allow
"""
OUTSIDE = "198.51.100.7"             # a host behind the gateway
UPLINK = {"ga": 1, "gb": 5}
IDS = {("ga", 2), ("gb", 2)}


def network(policy: str = "") -> model.Network:
    return model.parse(NETWORK + policy, "gateways.yaml")


def fabric(net, firewall=None) -> Fabric:
    return Fabric(net, compile_network(net), firewall=firewall)


def to_gateway(net, vm: str) -> Frame:
    v = net.vm(vm)
    return Frame.ipv4(v.mac, ROUTER_MAC, v.ip)


def from_gateway(net, vm: str, vlan: int) -> tuple[tuple[str, int], Frame]:
    """Where and what the router sends to `vm`: in by its hypervisor's uplink."""
    v = net.vm(vm)
    return (v.hypervisor, UPLINK[v.hypervisor]), Frame.ipv4(ROUTER_MAC, v.mac, OUTSIDE,
                                                           vlans=(vlan,))


def out_uplink(trace) -> list[tuple]:
    return [(hv, f.vlans) for hv, f in trace.uplink_hops]


def vm_ports(trace) -> set:
    return {(hv, p) for hv, p, _ in trace.deliveries if (hv, p) not in IDS}


def copies(trace) -> list:
    return [(hv, p) for hv, p, _ in trace.deliveries if (hv, p) in IDS]


def test_a_vm_reaches_its_gateway_out_of_the_uplink_tagged_with_its_segment():
    net = network()
    trace = fabric(net).run("f1", to_gateway(net, "f1"))
    assert out_uplink(trace) == [("ga", (110,))] and vm_ports(trace) == set()
    # The same router MAC is back's gateway too: tagged with back's VLAN.
    assert out_uplink(fabric(net).run("b1", to_gateway(net, "b1"))) == [("ga", (120,))]


def test_the_gateway_reaches_the_segments_vms_from_any_address():
    net = network()
    for vm in ("f1", "f2"):
        where, frame = from_gateway(net, vm, 110)
        trace = fabric(net).run(where, frame)
        assert vm_ports(trace) == {(net.vm(vm).hypervisor, net.vm(vm).port)}


def test_no_other_segment_reaches_a_gateway_nor_any_undeclared_physical_host():
    net = network()
    l1 = net.vm("l1")
    assert fabric(net).run("l1", to_gateway(net, "l1")).uplink_hops == []
    stranger = Frame.ipv4(l1.mac, "02:99:00:00:00:01", l1.ip)
    assert fabric(net).run("l1", stranger).uplink_hops == []
    # A frame of back from the router does not enter front.
    where, frame = from_gateway(net, "f1", 120)
    assert vm_ports(fabric(net).run(where, frame)) == set()


def test_external_deny_cuts_both_directions_for_that_segment_only():
    net = network("  external: {front: deny}\n")
    fab = fabric(net)
    assert fab.run("f1", to_gateway(net, "f1")).uplink_hops == []
    where, frame = from_gateway(net, "f2", 110)
    assert vm_ports(fab.run(where, frame)) == set()
    assert out_uplink(fab.run("b1", to_gateway(net, "b1"))) == [("ga", (120,))]
    # Inside the segment nothing changed.
    f1, f2 = net.vm("f1"), net.vm("f2")
    assert vm_ports(fab.run("f1", Frame.ipv4(f1.mac, f2.mac, f1.ip))) == {("gb", 10)}
    denied = [f for f in compile_network(net)["ga"] if f.reason == "external-deny"]
    assert denied and all(f.is_drop for f in denied)


def test_external_mode_defaults_to_the_segments_own():
    assert network("  segments: {front: deny}\n").policy.external_mode("front") == "deny"
    assert network("  external: {front: steer}\n").policy.external_mode("front") == "steer"
    assert network().policy.external_mode("back") == "allow"


def test_external_mirror_copies_each_direction_once_where_it_enters():
    net = network("  external: {front: mirror}\n")
    fab = fabric(net)
    trace = fab.run("f1", to_gateway(net, "f1"))
    assert copies(trace) == [("ga", 2)] and out_uplink(trace) == [("ga", (110,))]
    where, frame = from_gateway(net, "f2", 110)
    trace = fab.run(where, frame)
    assert copies(trace) == [("gb", 2)] and vm_ports(trace) == {("gb", 10)}
    # back is not mirrored, and nothing inside front is.
    assert copies(fab.run("b1", to_gateway(net, "b1"))) == []
    f1, f2 = net.vm("f1"), net.vm("f2")
    assert copies(fab.run("f1", Frame.ipv4(f1.mac, f2.mac, f1.ip))) == []


def test_a_gateways_broadcast_is_delivered_in_its_segment_and_not_copied():
    net = network("  external: {front: mirror}\n")
    arp = Frame.arp(ROUTER_MAC, "10.11.0.254", vlans=(110,))
    trace = fabric(net).run(("gb", 5), arp)
    assert vm_ports(trace) == {("gb", 10)} and copies(trace) == []


def test_a_vms_broadcast_reaches_the_uplink_for_the_gateway_even_alone_on_its_hypervisor():
    net = network()
    b1 = net.vm("b1")      # the only VM of back
    trace = fabric(net).run("b1", Frame.arp(b1.mac, b1.ip))
    assert out_uplink(trace) == [("ga", (120,))]


def test_external_steer_sends_north_south_through_the_firewall_once():
    net = network("  external: {front: steer}\n")
    fab = fabric(net, firewall=lambda hv, frame: frame)
    trace = fab.run("f1", to_gateway(net, "f1"))
    assert [(hv, f.vlans) for hv, f in trace.firewall_crossings] == [("ga", (110,))]
    assert out_uplink(trace) == [("ga", (110,))]
    where, frame = from_gateway(net, "f2", 110)
    trace = fab.run(where, frame)
    assert [hv for hv, _ in trace.firewall_crossings] == ["gb"]
    assert vm_ports(trace) == {("gb", 10)}
    # A firewall that drops: nothing goes out or in.
    dropping = fabric(net, firewall=lambda hv, frame: None)
    assert dropping.run("f1", to_gateway(net, "f1")).uplink_hops == []
    assert vm_ports(dropping.run(where, frame)) == set()


def test_a_vm_mirror_rule_covers_its_north_south_traffic_too():
    net = network("  vms: {f1: mirror}\n")
    fab = fabric(net)
    assert copies(fab.run("f1", to_gateway(net, "f1"))) == [("ga", 2)]
    where, frame = from_gateway(net, "f1", 110)
    assert copies(fab.run(where, frame)) == [("ga", 2)]
    # Under external deny its rule lets nothing through.
    net = network("  vms: {f1: mirror}\n  external: {front: deny}\n")
    assert fabric(net).run("f1", to_gateway(net, "f1")).uplink_hops == []


def test_a_router_vm_forwards_any_address_from_its_own_mac_only():
    net = network()
    fab = fabric(net)
    r1, l1, l2 = net.vm("r1"), net.vm("l1"), net.vm("l2")
    forwarded = Frame.ipv4(r1.mac, l1.mac, "10.12.0.1")        # routed from back
    assert vm_ports(fab.run("r1", forwarded)) == {("ga", 12)}
    assert vm_ports(fab.run("l1", Frame.ipv4(l1.mac, r1.mac, l1.ip))) == {("gb", 12)}
    assert vm_ports(fab.run("l1", Frame.ipv4(l1.mac, r1.mac, "10.13.0.99"))) == set()
    assert vm_ports(fab.run("r1", Frame.ipv4(l2.mac, l1.mac, "10.12.0.1"))) == set()
    # ARP only for its own address.
    assert vm_ports(fab.run("r1", Frame.arp(r1.mac, "10.13.0.1", eth_dst=l1.mac))) == set()
    assert vm_ports(fab.run("r1", Frame.arp(r1.mac, r1.ip, eth_dst=l1.mac))) == {("ga", 12)}


def test_a_router_vm_is_north_south_for_its_segment():
    net = network("  external: {lab: deny}\n")
    fab = fabric(net)
    r1, l1, l2 = net.vm("r1"), net.vm("l1"), net.vm("l2")
    assert vm_ports(fab.run("l1", Frame.ipv4(l1.mac, r1.mac, l1.ip))) == set()
    assert vm_ports(fab.run("r1", Frame.ipv4(r1.mac, l2.mac, r1.ip))) == set()
    assert vm_ports(fab.run("l1", Frame.ipv4(l1.mac, l2.mac, l1.ip))) == {("gb", 13)}
    # Judged once, where the router sends: no second look at the uplink.
    net = network("  external: {lab: mirror}\n")
    trace = fabric(net).run("r1", Frame.ipv4(r1.mac, l1.mac, "10.12.0.1"))
    assert copies(trace) == [("gb", 2)] and vm_ports(trace) == {("ga", 12)}


def test_a_learning_port_cannot_learn_a_gateways_mac():
    net = network()
    assert learning.decide(net, frozenset(), "gb", 30, ROUTER_MAC) == "gateway-mac"


@pytest.mark.parametrize("change,problem", [
    (("ip: 10.11.0.254}]}", "ip: 10.11.0.1}]}"), "10.11.0.1 is already used by VM 'f1'"),
    (('mac: "02:ee:00:00:00:01", ip: 10.12.0.254', 'mac: "02:11:00:00:00:01", ip: 10.12.0.254'),
     "02:11:00:00:00:01 is already used by VM 'f1'"),
    (("ip: 10.11.0.254}]}", "ip: 10.12.0.254}]}"), "outside segment 'front' subnet"),
    (("ip: 10.11.0.254}]}", "ip: 10.11.0.254}, {mac: \"02:ee:00:00:00:01\"}]}"),
     "already a gateway of this segment"),
    (('{mac: "02:ee:00:00:00:01", ip: 10.11.0.254}', '{mac: "02:ee:00:00:00:01"}'),
     None),                                          # an address is optional
    (("router: true", "router: yes please"), "router: must be true or false"),
    (("ip: 10.11.0.1}", "ip: 10.11.0.255}"), "broadcast address of segment 'front'"),
    (("ip: 10.11.0.1}", "ip: 10.11.0.0}"), "network address of segment 'front'"),
    (('{mac: "02:ee:00:00:00:01", ip: 10.11.0.254}', '{mac: "03:ee:00:00:00:01"}'),
     "multicast"),
    (("gateways: [{mac", "gateways: [{port: 3, mac"), "unknown key"),
])
def test_bad_gateways_and_routers_are_refused_with_the_place(change, problem):
    text = NETWORK.replace(*change, 1)
    assert text != NETWORK
    if problem is None:
        model.parse(text, "gateways.yaml")
        return
    with pytest.raises(model.NetworkFileError, match=problem):
        model.parse(text, "gateways.yaml")


def test_policy_external_names_known_segments_and_modes():
    with pytest.raises(model.NetworkFileError, match="policy.external.nowhere"):
        network("  external: {nowhere: allow}\n")
    with pytest.raises(model.NetworkFileError, match="invalid mode 'open'"):
        network("  external: {front: open}\n")
    assert network("  external: {front: deny}\n").policy.to_dict()["external"] == \
        {"front": "deny"}


def test_a_vm_that_becomes_a_router_needs_a_full_compile():
    from controller.compiler import Compiled
    net = network()
    plain = model.parse(NETWORK.replace(",\n       router: true}", "}"), "gateways.yaml")
    assert Compiled(plain).same_base(plain, frozenset())
    assert not Compiled(plain).same_base(net, frozenset())
    assert compile_network(net) != compile_network(plain)


MODES = ("deny", "allow", "mirror", "steer", "steer-mirror")
VM_MODES = ("allow", "mirror", "steer")


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({"default": st.sampled_from(MODES),
                              "external": st.dictionaries(st.sampled_from(
                                  ["front", "back", "lab"]), st.sampled_from(MODES)),
                              "vms": st.dictionaries(st.sampled_from(["f1", "f2", "b1"]),
                                                     st.sampled_from(VM_MODES))}))
def test_north_south_follows_the_external_mode_whatever_the_rest(policy):
    """Any policy: a VM reaches its gateway, and the gateway the VM, iff the
    segment's external mode lets it; copied once iff it or the VM's own
    rule mirrors; through the firewall once iff it or the VM's rule
    steers; never into another segment."""
    text = NETWORK.replace("policy:\n  default: allow\n", "")
    net = model.parse(text + "policy: " + json.dumps(policy) + "\n", "gateways.yaml")
    fab = fabric(net, firewall=lambda hv, frame: frame)
    r1 = net.vm("r1")
    cases = []
    for vm in ("f1", "f2", "b1"):
        seg = net.vm(vm).segment
        vlan = net.segment(seg).vlan
        cases.append((seg, vm, "out", fab.run(vm, to_gateway(net, vm)),
                      lambda t, vlan=vlan: out_uplink(t) == [(t.uplink_hops[0][0], (vlan,))]))
        where, frame = from_gateway(net, vm, vlan)
        cases.append((seg, vm, "in", fab.run(where, frame),
                      lambda t, vm=vm: vm_ports(t) == {(net.vm(vm).hypervisor,
                                                        net.vm(vm).port)}))
    for vm in ("l1", "l2"):
        v = net.vm(vm)
        cases.append(("lab", vm, "out", fab.run(vm, Frame.ipv4(v.mac, r1.mac, v.ip)),
                      lambda t: vm_ports(t) == {("gb", 12)}))
        cases.append(("lab", vm, "in", fab.run("r1", Frame.ipv4(r1.mac, v.mac, "10.12.0.1")),
                      lambda t, v=v: vm_ports(t) == {(v.hypervisor, v.port)}))
    for seg, vm, direction, trace, reached in cases:
        mode = policy["external"].get(seg, policy["default"])   # as documented
        own = policy["vms"].get(vm, "allow")
        where = f"{seg} {direction} under {mode}, {vm} {own}"
        if mode == "deny":
            assert vm_ports(trace) == set() and trace.uplink_hops == [], where
            continue
        assert reached(trace), where
        mirrored, steered = "mirror" in mode or own == "mirror", "steer" in mode or own == "steer"
        assert len(copies(trace)) == (1 if mirrored else 0), where
        assert len(trace.firewall_crossings) == (1 if steered else 0), where
