"""The compiled flows, executed by the table simulator: where do frames go?"""
from __future__ import annotations

from pathlib import Path

import pytest

from controller import model
from controller.compiler import LearnedHost, compile_network
from controller.pipeline import INGRESS, KIND_LEARNED, cookie_kind
from controller.tablesim import Fabric, Frame

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "consolidated.yaml"
UNKNOWN_MAC = "02:99:99:99:99:99"
IPV4_MULTICAST_MAC = "01:00:5e:00:00:fb"


@pytest.fixture(scope="module")
def net() -> model.Network:
    return model.load(str(EXAMPLE))


@pytest.fixture(scope="module", params=[1, None], ids=["ovs-vlan-limit-1", "all-tags-parsed"])
def fabric(net, request) -> Fabric:
    """The example lab; OVS parses one tag by default (vlan-limit=1), so
    double tags look different to the pipeline: check both ways."""
    return Fabric(net, compile_network(net), vlan_limit=request.param)


def fabric_for(net: model.Network, learned=frozenset()) -> Fabric:
    return Fabric(net, compile_network(net, frozenset(learned)))


def example_with(policy: str) -> model.Network:
    """The example file with its policy section replaced."""
    text = EXAMPLE.read_text()
    text = text[:text.index("policy:")] + policy
    return model.parse(text, source="example-variant.yaml")


def ip_frame(net, src: str, dst_mac: str) -> Frame:
    vm = net.vm(src)
    return Frame.ipv4(vm.mac, dst_mac, vm.ip)


def arp_request(net, src: str) -> Frame:
    vm = net.vm(src)
    return Frame.arp(vm.mac, vm.ip)


def segment_ports(net, segment: str, hypervisors=None) -> set[tuple[str, int]]:
    """Every host port of a segment: VM ports and learning ports."""
    ports = {(v.hypervisor, v.port) for v in net.vms if v.segment == segment}
    ports |= {(h.name, lp.port) for h in net.hypervisors for lp in h.learning_ports
              if lp.segment == segment}
    return {p for p in ports if hypervisors is None or p[0] in hypervisors}


def infrastructure_ports(net) -> set[tuple[str, int]]:
    return {(h.name, p) for h in net.hypervisors for p in h.special_ports()}


def assert_untagged(trace) -> None:
    assert all(not frame.vlans for _, _, frame in trace.deliveries), trace.deliveries


def assert_dropped(fabric: Fabric, where, frame: Frame) -> None:
    trace = fabric.run(where, frame)
    assert trace.deliveries == []
    assert trace.uplink_hops == []
    assert trace.packet_ins == []


# ------------------------------------------------------------------ unicast

def test_unicast_to_vm_on_same_hypervisor_reaches_only_that_vm(net, fabric):
    frame = ip_frame(net, "web1", net.vm("web2").mac)
    trace = fabric.run("web1", frame)
    assert trace.deliveries == [("hv1", 11, frame)]
    assert trace.uplink_hops == []


def test_unicast_across_hypervisors_makes_one_tagged_hop_and_arrives_untagged(net, fabric):
    frame = ip_frame(net, "web1", net.vm("web3").mac)
    trace = fabric.run("web1", frame)
    assert trace.uplink_hops == [("hv1", frame.with_tags(10))]
    assert trace.deliveries == [("hv2", 10, frame)]


def test_arp_reply_is_unicast_to_the_asker_only(net, fabric):
    web3, web1 = net.vm("web3"), net.vm("web1")
    reply = Frame.arp(web3.mac, web3.ip, eth_dst=web1.mac)
    trace = fabric.run("web3", reply)
    assert trace.deliveries == [("hv1", 10, reply)]


@pytest.mark.parametrize("src, dst", [("web1", "app1"), ("web1", "app2"), ("app1", "mgmt2"),
                                      ("mgmt2", "web3"), ("web3", "db1")])
def test_cross_segment_unicast_is_dropped_when_policy_denies(net, fabric, src, dst):
    assert_dropped(fabric, src, ip_frame(net, src, net.vm(dst).mac))


ALLOW_DMZ_INTERNAL = """policy:
  default: allow
  pairs:
    - {segments: [dmz, internal], mode: allow}
    - {segments: [dmz, management], mode: deny}
"""


def test_cross_segment_unicast_is_delivered_when_pair_is_allowed():
    net = example_with(ALLOW_DMZ_INTERNAL)
    fabric = fabric_for(net)
    frame = ip_frame(net, "web1", net.vm("app1").mac)
    assert fabric.run("web1", frame).deliveries == [("hv1", 12, frame)]
    # The allowed pair works in both directions.
    back = ip_frame(net, "app1", net.vm("web1").mac)
    assert fabric.run("app1", back).deliveries == [("hv1", 10, back)]


def test_cross_segment_unicast_across_hypervisors_is_tagged_with_destination_vlan():
    net = example_with(ALLOW_DMZ_INTERNAL)
    fabric = fabric_for(net)
    frame = ip_frame(net, "web1", net.vm("app2").mac)
    trace = fabric.run("web1", frame)
    assert trace.uplink_hops == [("hv1", frame.with_tags(20))]
    assert trace.deliveries == [("hv2", 11, frame)]


def test_pair_explicitly_denied_or_not_listed_stays_isolated():
    net = example_with(ALLOW_DMZ_INTERNAL)
    fabric = fabric_for(net)
    assert_dropped(fabric, "web1", ip_frame(net, "web1", net.vm("mgmt1").mac))
    assert_dropped(fabric, "app1", ip_frame(net, "app1", net.vm("mgmt2").mac))


def test_intra_segment_deny_isolates_vms_of_that_segment_only():
    net = example_with("policy:\n  segments: {dmz: deny}\n")
    fabric = fabric_for(net)
    assert_dropped(fabric, "web1", ip_frame(net, "web1", net.vm("web2").mac))
    assert_dropped(fabric, "web1", ip_frame(net, "web1", net.vm("web3").mac))
    assert_dropped(fabric, "web1", arp_request(net, "web1"))
    frame = ip_frame(net, "app1", net.vm("db1").mac)
    assert fabric.run("app1", frame).deliveries == [("hv1", 13, frame)]


def test_unknown_unicast_destination_is_dropped_not_flooded(net, fabric):
    assert_dropped(fabric, "web1", ip_frame(net, "web1", UNKNOWN_MAC))
    assert_dropped(fabric, "web3", ip_frame(net, "web3", UNKNOWN_MAC))


def test_frame_to_own_mac_goes_nowhere(net, fabric):
    assert fabric.send("web1", ip_frame(net, "web1", net.vm("web1").mac)) == set()


# ------------------------------------------------------------------ flooding

@pytest.mark.parametrize("src", ["web1", "web2", "app1", "db1", "mgmt1",
                                 "web3", "app2", "mgmt2"])
def test_broadcast_floods_exactly_the_senders_segment_on_every_hypervisor(net, fabric, src):
    vm = net.vm(src)
    trace = fabric.run(src, arp_request(net, src))
    expected = segment_ports(net, vm.segment) - {(vm.hypervisor, vm.port)}
    assert trace.ports == expected
    assert len(trace.deliveries) == len(expected)          # each port once
    assert not trace.ports & infrastructure_ports(net)
    assert_untagged(trace)


def test_broadcast_uses_one_uplink_hop_tagged_with_the_senders_vlan(net, fabric):
    trace = fabric.run("app1", arp_request(net, "app1"))
    assert [(hv, frame.vlans) for hv, frame in trace.uplink_hops] == [("hv1", (20,))]


def test_ipv4_multicast_floods_like_broadcast(net, fabric):
    trace = fabric.run("mgmt2", ip_frame(net, "mgmt2", IPV4_MULTICAST_MAC))
    assert trace.ports == {("hv1", 14)}
    assert_untagged(trace)


def test_broadcast_stays_in_segment_even_when_a_pair_is_allowed():
    net = example_with(ALLOW_DMZ_INTERNAL)
    trace = fabric_for(net).run("web1", arp_request(net, "web1"))
    assert trace.ports == {("hv1", 11), ("hv2", 10)}


def test_broadcast_does_not_cross_the_uplink_when_no_remote_host_is_in_the_segment():
    net = model.parse("""
segments: {a: {vlan: 5}, b: {vlan: 6}}
hypervisors:
  h1: {dpid: 1, uplink_port: 1}
  h2: {dpid: 2, uplink_port: 1}
vms:
  a1: {hypervisor: h1, port: 10, segment: a, mac: "02:00:00:00:00:01", ip: 10.0.0.1}
  a2: {hypervisor: h1, port: 11, segment: a, mac: "02:00:00:00:00:02", ip: 10.0.0.2}
  b1: {hypervisor: h2, port: 10, segment: b, mac: "02:00:00:00:00:03", ip: 10.0.0.3}
""")
    trace = fabric_for(net).run("a1", arp_request(net, "a1"))
    assert trace.ports == {("h1", 11)}
    assert trace.uplink_hops == []


def test_hypervisor_without_uplink_keeps_its_traffic_local():
    net = model.parse("""
segments: {a: {vlan: 5}}
hypervisors:
  h1: {dpid: 1, uplink_port: 1}
  h2: {dpid: 2}
vms:
  a1: {hypervisor: h1, port: 10, segment: a, mac: "02:00:00:00:00:01", ip: 10.0.0.1}
  a2: {hypervisor: h2, port: 10, segment: a, mac: "02:00:00:00:00:02", ip: 10.0.0.2}
  a3: {hypervisor: h2, port: 11, segment: a, mac: "02:00:00:00:00:03", ip: 10.0.0.3}
""")
    fabric = fabric_for(net)
    assert fabric.run("a2", arp_request(net, "a2")).ports == {("h2", 11)}
    # h1 hands these to its core, but h2 is not attached to it.
    assert fabric.run("a1", arp_request(net, "a1")).ports == set()
    assert fabric.run("a1", ip_frame(net, "a1", net.vm("a2").mac)).ports == set()


# ------------------------------------------------------------------ port security

def spoofed_frames(net):
    web1, web2 = net.vm("web1"), net.vm("web2")
    return {
        "eth_src of another VM": Frame.ipv4(web2.mac, net.vm("web3").mac, web1.ip),
        "unknown eth_src": Frame.ipv4(UNKNOWN_MAC, net.vm("web3").mac, web1.ip),
        "ipv4_src of another VM": Frame.ipv4(web1.mac, net.vm("web3").mac, web2.ip),
        "ipv4_src outside the segment": Frame.ipv4(web1.mac, web2.mac, "10.0.20.1"),
        "ARP with wrong sha": Frame.arp(web1.mac, web1.ip, sha=web2.mac),
        "ARP with wrong spa": Frame.arp(web1.mac, web2.ip),
        "ARP with wrong eth_src": Frame.arp(web2.mac, web1.ip, sha=web1.mac),
        "tagged with own VLAN": ip_frame(net, "web1", web2.mac).with_tags(10),
        "tagged with another VLAN": ip_frame(net, "web1", net.vm("app1").mac).with_tags(20),
        "priority-tagged (VLAN 0)": ip_frame(net, "web1", web2.mac).with_tags(0),
        "double-tagged": ip_frame(net, "web1", web2.mac).with_tags(10, 20),
        "tagged broadcast": arp_request(net, "web1").with_tags(10),
        "IPv6": Frame.ipv6(web1.mac, web2.mac),
        "IPv6 multicast": Frame.ipv6(web1.mac, "33:33:00:00:00:01"),
    }


SPOOF_CASES = list(spoofed_frames(model.load(str(EXAMPLE))))


@pytest.mark.parametrize("case", SPOOF_CASES)
def test_vm_port_drops_frames_it_may_not_send(net, fabric, case):
    assert_dropped(fabric, "web1", spoofed_frames(net)[case])


@pytest.mark.parametrize("port", [2, 3], ids=["firewall", "ids"])
def test_firewall_and_ids_ports_send_nothing_into_the_switch(net, fabric, port):
    assert_dropped(fabric, ("hv1", port), ip_frame(net, "web2", net.vm("web1").mac))
    assert_dropped(fabric, ("hv1", port), arp_request(net, "web2"))


def test_unknown_port_sends_nothing_into_the_switch(net, fabric):
    assert_dropped(fabric, ("hv1", 42), ip_frame(net, "web2", net.vm("web1").mac))


# ------------------------------------------------------------------ the uplink

def test_uplink_frame_with_destination_segments_tag_is_delivered_untagged(net, fabric):
    frame = ip_frame(net, "web3", net.vm("web1").mac)
    trace = fabric.run(("hv1", 1), frame.with_tags(10))
    assert trace.deliveries == [("hv1", 10, frame)]
    assert trace.uplink_hops == []


def test_uplink_broadcast_floods_local_ports_of_its_vlan_only(net, fabric):
    frame = arp_request(net, "web3")
    trace = fabric.run(("hv1", 1), frame.with_tags(10))
    assert trace.ports == {("hv1", 10), ("hv1", 11)}
    assert trace.uplink_hops == []                    # never reflected to the core
    assert_untagged(trace)


@pytest.mark.parametrize("vlans", [(99,), (0,), (4094,), ()],
                         ids=["undeclared", "priority-tag", "4094", "untagged"])
def test_uplink_frame_without_a_declared_vlan_is_dropped(net, fabric, vlans):
    assert_dropped(fabric, ("hv1", 1), ip_frame(net, "web3", net.vm("web1").mac)
                   .with_tags(*vlans))
    assert_dropped(fabric, ("hv1", 1), arp_request(net, "web3").with_tags(*vlans))


@pytest.mark.parametrize("vlans", [(10, 10), (10, 20), (20, 10), (10, 99)])
def test_double_tagged_uplink_frame_is_dropped(net, fabric, vlans):
    assert_dropped(fabric, ("hv1", 1), ip_frame(net, "web3", net.vm("web1").mac)
                   .with_tags(*vlans))
    assert_dropped(fabric, ("hv1", 1), arp_request(net, "web3").with_tags(*vlans))


@pytest.mark.parametrize("tag, dst", [(20, "web1"), (30, "web1"), (10, "app1"),
                                      (10, "mgmt1")])
def test_uplink_frame_whose_tag_is_not_the_destinations_segment_is_dropped(
        net, fabric, tag, dst):
    frame = ip_frame(net, "web3", net.vm(dst).mac).with_tags(tag)
    assert_dropped(fabric, ("hv1", 1), frame)


def test_uplink_frame_for_a_vm_elsewhere_is_not_sent_back_to_the_core(net, fabric):
    frame = ip_frame(net, "web1", net.vm("web2").mac).with_tags(10)
    assert_dropped(fabric, ("hv2", 1), frame)


# ------------------------------------------------------------------ learning ports

LEARN_PORT = ("hv2", 20)
NEWCOMER = "02:00:00:00:ee:01"


def test_unknown_host_on_learning_port_is_reported_and_not_forwarded(net, fabric):
    frame = Frame.ipv4(NEWCOMER, net.vm("app2").mac, "10.0.20.99")
    trace = fabric.run(LEARN_PORT, frame)
    assert trace.deliveries == [] and trace.uplink_hops == []
    assert [(hv, p.in_port, p.frame) for hv, p in trace.packet_ins] == [
        ("hv2", 20, frame)]
    assert trace.packet_ins[0][1].flow.meter is not None       # rate-limited


def test_unknown_host_broadcast_on_learning_port_only_reaches_the_controller(net, fabric):
    trace = fabric.run(LEARN_PORT, Frame.arp(NEWCOMER, "10.0.20.99"))
    assert trace.deliveries == [] and len(trace.packet_ins) == 1


def test_tagged_frame_on_learning_port_is_dropped_without_packet_in(net, fabric):
    assert_dropped(fabric, LEARN_PORT,
                   Frame.ipv4(NEWCOMER, net.vm("app2").mac, "10.0.20.99").with_tags(20))


def test_learned_host_reaches_and_is_reached_within_its_segment(net):
    fabric = fabric_for(net, {LearnedHost(NEWCOMER, "hv2", 20)})
    to_local = Frame.ipv4(NEWCOMER, net.vm("app2").mac, "10.0.20.99")
    assert fabric.run(LEARN_PORT, to_local).deliveries == [("hv2", 11, to_local)]
    to_remote = Frame.ipv4(NEWCOMER, net.vm("db1").mac, "10.0.20.99")
    trace = fabric.run(LEARN_PORT, to_remote)
    assert trace.deliveries == [("hv1", 13, to_remote)]
    assert trace.packet_ins == []
    back = ip_frame(net, "app1", NEWCOMER)
    trace = fabric.run("app1", back)
    assert trace.deliveries == [("hv2", 20, back)]
    assert trace.uplink_hops == [("hv1", back.with_tags(20))]


def test_learned_host_is_still_confined_to_its_segment(net):
    fabric = fabric_for(net, {LearnedHost(NEWCOMER, "hv2", 20)})
    assert_dropped(fabric, LEARN_PORT, Frame.ipv4(NEWCOMER, net.vm("web3").mac, "10.0.20.9"))
    assert_dropped(fabric, "web1", ip_frame(net, "web1", NEWCOMER))
    trace = fabric.run(LEARN_PORT, Frame.arp(NEWCOMER, "10.0.20.99"))
    assert trace.ports == segment_ports(net, "internal") - {LEARN_PORT}


def test_learned_hosts_flow_entries_are_marked_learned(net):
    flows = compile_network(net, frozenset({LearnedHost(NEWCOMER, "hv2", 20)}))["hv2"]
    learned = [f for f in flows if f.table == INGRESS and dict(f.match).get("eth_src")
               == NEWCOMER]
    assert len(learned) == 1
    assert cookie_kind(learned[0].cookie) == KIND_LEARNED
    assert learned[0].idle_timeout == net.options.learned_idle_timeout


def test_learning_port_below_its_cap_still_reports_new_hosts(net):
    fabric = fabric_for(net, {LearnedHost(NEWCOMER, "hv2", 20)})
    trace = fabric.run(LEARN_PORT, Frame.arp("02:00:00:00:ee:02", "10.0.20.98"))
    assert len(trace.packet_ins) == 1 and trace.deliveries == []


def test_learning_port_at_its_cap_drops_new_hosts_without_packet_in(net):
    learned = {LearnedHost(NEWCOMER, "hv2", 20), LearnedHost("02:00:00:00:ee:02", "hv2", 20)}
    fabric = fabric_for(net, learned)                        # max_hosts is 2
    assert_dropped(fabric, LEARN_PORT, Frame.arp("02:00:00:00:ee:03", "10.0.20.97"))
    # The hosts already learned keep working.
    frame = Frame.ipv4(NEWCOMER, net.vm("app2").mac, "10.0.20.99")
    assert fabric.run(LEARN_PORT, frame).deliveries == [("hv2", 11, frame)]


# ------------------------------------------------------------------ flow table size

def generated_network(n_vms: int, n_segments: int = 3, n_hvs: int = 2,
                      pairs: str = "[]") -> model.Network:
    segments = "\n".join(f"  s{i}: {{vlan: {100 + i}}}" for i in range(n_segments))
    hvs = "\n".join(f"  h{i}: {{dpid: {i + 1}, uplink_port: 1}}" for i in range(n_hvs))
    vms = "\n".join(
        f"  v{i}: {{hypervisor: h{i % n_hvs}, port: {10 + i}, segment: s{i % n_segments},"
        f" mac: \"02:00:00:00:{i // 256:02x}:{i % 256:02x}\", ip: 10.1.{i // 256}.{i % 256 + 1}}}"
        for i in range(n_vms))
    return model.parse(f"segments:\n{segments}\nhypervisors:\n{hvs}\nvms:\n{vms}\n"
                       f"policy: {{pairs: {pairs}}}\n", source=f"generated-{n_vms}.yaml")


def flow_counts(net) -> dict[str, int]:
    return {hv: len(flows) for hv, flows in compile_network(net).items()}


def test_flow_count_per_hypervisor_is_linear_in_vms():
    c10, c20, c40 = (flow_counts(generated_network(n)) for n in (10, 20, 40))
    for hv in c10:
        assert c40[hv] - c20[hv] == 2 * (c20[hv] - c10[hv]), (c10, c20, c40)


def test_each_vm_costs_one_entry_elsewhere_and_eight_on_its_own_hypervisor():
    c10, c11 = flow_counts(generated_network(10)), flow_counts(generated_network(11))
    # v10 lands on h0 (10 % 2 == 0): IPv4, ARP, RARP, DHCP from 0.0.0.0, the
    # ARP probe, the drop, its destination and its delivery there; elsewhere
    # only its destination (table 3 sends every remote host's frames to the
    # uplink by segment).
    assert c11["h0"] - c10["h0"] == 8
    assert c11["h1"] - c10["h1"] == 1


def test_flow_count_per_hypervisor_is_linear_in_segments():
    # With no cross-segment pair allowed, one more segment should cost a fixed
    # handful of entries, as compiler.py's docstring promises.
    c4, c8, c16 = (flow_counts(generated_network(16, n_segments=s)) for s in (4, 8, 16))
    for hv in c4:
        assert c16[hv] - c8[hv] == 2 * (c8[hv] - c4[hv]), (c4, c8, c16)


@pytest.mark.parametrize("learned", [frozenset(),
                                     frozenset({LearnedHost(NEWCOMER, "hv2", 20)})])
def test_cookies_are_unique_within_each_hypervisor(net, learned):
    for hv, flows in compile_network(net, learned).items():
        cookies = [f.cookie for f in flows]
        assert len(set(cookies)) == len(cookies), hv


def test_cookies_are_unique_in_a_larger_network():
    for hv, flows in compile_network(generated_network(40)).items():
        cookies = [f.cookie for f in flows]
        assert len(set(cookies)) == len(cookies), hv


def test_compiling_twice_gives_the_same_flows(net):
    assert compile_network(net) == compile_network(net)
