"""IPv6 port security on the table simulator: own addresses only, neighbour
discovery only for them (no ND spoofing), RA guard, DHCPv6 server guard,
and no IPv6 across segments."""
from __future__ import annotations

import pytest

from controller import model
from controller.compiler import compile_network
from controller.model import eui64_link_local
from controller.pipeline import ICMPV6_NA, ICMPV6_NS, ICMPV6_RA, ICMPV6_REDIRECT, ICMPV6_RS
from controller.tablesim import Fabric, Frame

NETWORK = """
segments:
  blue: {vlan: 910, subnet: 10.91.0.0/24, subnet6: "fd00:91::/64",
         gateways: [{mac: "02:91:ff:00:00:01", ip: 10.91.0.1, ipv6: "fe80::1"}]}
  red:  {vlan: 920, subnet6: "fd00:92::/64"}
hypervisors:
  p1: {dpid: 0x91, uplink_port: 1, ids_port: 2}
  p2: {dpid: 0x92, uplink_port: 3}
vms:
  b1: {hypervisor: p1, port: 10, segment: blue, mac: "02:91:00:00:00:11", ip: 10.91.0.11,
       ipv6: ["fd00:91::11"]}
  b2: {hypervisor: p2, port: 10, segment: blue, mac: "02:91:00:00:00:12", ip: 10.91.0.12,
       ipv6: ["fd00:91::12"], dhcp_server: true}
  b3: {hypervisor: p1, port: 11, segment: blue, mac: "02:91:00:00:00:13", ip: 10.91.0.13,
       ipv6: ["fd00:91::13"], ipv6_router: true}
  b4: {hypervisor: p1, port: 12, segment: blue, mac: "02:91:00:00:00:14", ip: 10.91.0.14}
  r1: {hypervisor: p2, port: 11, segment: red, mac: "02:92:00:00:00:11", ip: 10.92.0.11,
       ipv6: ["fd00:92::11"]}
policy:
  default: allow
"""
ALL_NODES, SOLICITED = "33:33:00:00:00:01", "33:33:ff:00:00:12"
GATEWAY = "02:91:ff:00:00:01"


@pytest.fixture(scope="module")
def net() -> model.Network:
    return model.parse(NETWORK, "ipv6.yaml")


@pytest.fixture(scope="module")
def fab(net) -> Fabric:
    return Fabric(net, compile_network(net))


def ports(fab, where, frame) -> set:
    return {(hv, p) for hv, p, _ in fab.send(where, frame) if p != 2}


def lladdr(net, vm) -> str:
    return str(net.vm(vm).ipv6[0])


def test_a_vm_has_its_eui64_link_local_first(net):
    assert lladdr(net, "b1") == "fe80::91:ff:fe00:11" == str(eui64_link_local(
        "02:91:00:00:00:11"))
    assert net.vm("b4").ipv6 is None


def test_ipv6_from_its_own_addresses_only(net, fab):
    b1, b2 = net.vm("b1"), net.vm("b2")
    for src in ("fd00:91::11", lladdr(net, "b1")):
        assert ports(fab, "b1", Frame.ipv6(b1.mac, b2.mac, ipv6_src=src)) == {("p2", 10)}
    assert ports(fab, "b1", Frame.ipv6(b1.mac, b2.mac, ipv6_src="fd00:91::12")) == set()
    assert ports(fab, "b1", Frame.ipv6(b1.mac, b2.mac, ipv6_src="fd00:91::99")) == set()
    # A VM without ipv6 keeps none, as before.
    b4 = net.vm("b4")
    assert ports(fab, "b4", Frame.ipv6(b4.mac, b2.mac, ipv6_src="fd00:91::14")) == set()


def test_neighbour_discovery_only_for_its_own_addresses_and_mac(net, fab):
    b1 = net.vm("b1")
    blue_others = {("p2", 10), ("p1", 11), ("p1", 12)}
    ns = Frame.icmpv6(b1.mac, SOLICITED, "fd00:91::11", ICMPV6_NS, target="fd00:91::12",
                      sll=b1.mac)
    assert ports(fab, "b1", ns) == blue_others
    spoofed_sll = Frame.icmpv6(b1.mac, SOLICITED, "fd00:91::11", ICMPV6_NS,
                               target="fd00:91::12", sll=net.vm("b2").mac)
    assert ports(fab, "b1", spoofed_sll) == set()
    na_own = Frame.icmpv6(b1.mac, ALL_NODES, "fd00:91::11", ICMPV6_NA, target="fd00:91::11",
                          tll=b1.mac)
    assert ports(fab, "b1", na_own) == blue_others
    na_claim = Frame.icmpv6(b1.mac, ALL_NODES, "fd00:91::11", ICMPV6_NA,
                            target="fd00:91::12", tll=b1.mac)
    assert ports(fab, "b1", na_claim) == set(), "ND spoofing: claiming b2's address"
    no_option = Frame.icmpv6(b1.mac, net.vm("b2").mac, "fd00:91::11", ICMPV6_NA,
                             target="fd00:91::11")
    assert ports(fab, "b1", no_option) == {("p2", 10)}


def test_duplicate_address_detection_and_solicitations_from_unspecified(net, fab):
    b1 = net.vm("b1")
    dad = Frame.icmpv6(b1.mac, "33:33:ff:00:00:11", "::", ICMPV6_NS, target="fd00:91::11")
    assert ports(fab, "b1", dad)
    dad_other = Frame.icmpv6(b1.mac, SOLICITED, "::", ICMPV6_NS, target="fd00:91::12")
    assert ports(fab, "b1", dad_other) == set()
    rs = Frame.icmpv6(b1.mac, "33:33:00:00:00:02", "::", ICMPV6_RS)
    assert ports(fab, "b1", rs)


def test_router_advertisements_and_redirects_only_from_declared_routers(net, fab):
    b1, b3 = net.vm("b1"), net.vm("b3")
    for kind in (ICMPV6_RA, ICMPV6_REDIRECT):
        assert ports(fab, "b1", Frame.icmpv6(b1.mac, ALL_NODES, lladdr(net, "b1"),
                                             kind)) == set()
    ra = Frame.icmpv6(b3.mac, ALL_NODES, lladdr(net, "b3"), ICMPV6_RA)
    assert ports(fab, "b3", ra) == {("p2", 10), ("p1", 10), ("p1", 12)}
    # An RA must come from the router's link-local.
    assert ports(fab, "b3", Frame.icmpv6(b3.mac, ALL_NODES, "fd00:91::13", ICMPV6_RA)) == set()
    # From the physical network: only from a declared gateway.
    from_gw = Frame.icmpv6(GATEWAY, ALL_NODES, "fe80::1", ICMPV6_RA, vlans=(910,))
    assert ports(fab, ("p2", 3), from_gw) == {("p2", 10)}
    rogue = Frame.icmpv6("02:66:00:00:00:01", ALL_NODES, "fe80::66", ICMPV6_RA, vlans=(910,))
    assert ports(fab, ("p2", 3), rogue) == set()
    # b3's own RA crossing to p2 was judged on p1 and passes there.
    assert ports(fab, ("p2", 3), Frame.icmpv6(b3.mac, ALL_NODES, lladdr(net, "b3"),
                                              ICMPV6_RA, vlans=(910,))) == {("p2", 10)}


def test_dhcpv6_server_messages_only_from_declared_servers(net, fab):
    b1, b2 = net.vm("b1"), net.vm("b2")
    advertise = Frame.udp6(b1.mac, "33:33:00:01:00:02", lladdr(net, "b1"), 547, 546)
    assert ports(fab, "b1", advertise) == set()
    served = Frame.udp6(b2.mac, b1.mac, lladdr(net, "b2"), 547, 546)
    assert ports(fab, "b2", served) == {("p1", 10)}
    assert ports(fab, ("p1", 1), Frame.udp6("02:66:00:00:00:01", b1.mac, "fe80::66", 547,
                                            546, vlans=(910,))) == set()


def test_no_ipv6_frame_crosses_segments(net, fab):
    b1, r1 = net.vm("b1"), net.vm("r1")
    assert ports(fab, "b1", Frame.ipv6(b1.mac, r1.mac, ipv6_src="fd00:91::11")) == set()
    ns = Frame.icmpv6(b1.mac, "33:33:ff:00:00:11", "fd00:91::11", ICMPV6_NS,
                      target="fd00:92::11", sll=b1.mac)
    assert ("p2", 11) not in ports(fab, "b1", ns)
    mld = Frame.ipv6(b1.mac, "33:33:00:00:00:16", ipv6_src=lladdr(net, "b1"))
    assert ("p2", 11) not in ports(fab, "b1", mld)


@pytest.mark.parametrize("change,problem", [
    (('ipv6: ["fd00:91::11"]', 'ipv6: ["fd00:91::zz"]'), "not an IPv6 address"),
    (('ipv6: ["fd00:91::11"]', 'ipv6: ["fd00:91::12"]'), "already used by VM 'b1'"),
    (('ipv6: ["fd00:91::11"]', 'ipv6: ["fe80::5"]'), "link-local"),
    (('ipv6: ["fd00:91::11"]', 'ipv6: ["ff02::1"]'), "not a host address"),
    (('ipv6: ["fd00:91::11"]', 'ipv6: ["fd00:93::11"]'), "outside segment 'blue' subnet6"),
    (('ipv6: ["fd00:91::11"]', 'ipv6: ["fd00:91::11", "fd00:91::11"]'), "given twice"),
    (('ip: 10.91.0.14}', 'ip: 10.91.0.14, ipv6_router: true}'), "needs IPv6"),
    (('ipv6: ["fd00:91::11"]}', 'ipv6_link_local: "fd00:91::5"}'), "not link-local"),
    (('subnet6: "fd00:92::/64"', 'subnet6: "fd00:92::/644"'), "not an IPv6 network"),
])
def test_bad_ipv6_is_refused_with_the_place(change, problem):
    text = NETWORK.replace(*change, 1)
    assert text != NETWORK
    with pytest.raises(model.NetworkFileError, match=problem):
        model.parse(text, "ipv6.yaml")


def test_two_vms_may_not_share_a_link_local_in_one_segment():
    text = NETWORK.replace('ipv6: ["fd00:91::11"]}', 'ipv6: ["fd00:91::11"], '
                           'ipv6_link_local: "fe80::7"}').replace(
        'ipv6: ["fd00:91::13"], ipv6_router: true}',
        'ipv6: ["fd00:91::13"], ipv6_router: true, ipv6_link_local: "fe80::7"}')
    with pytest.raises(model.NetworkFileError, match="fe80::7 is already used by VM 'b1'"):
        model.parse(text, "ipv6.yaml")


def test_a_gateways_ipv6_is_no_vms():
    text = NETWORK.replace('ipv6: "fe80::1"}', 'ipv6: "fd00:91::11"}')
    with pytest.raises(model.NetworkFileError, match="gateways\\[0\\].ipv6: fd00:91::11 is "
                                                     "already used by VM 'b1'"):
        model.parse(text, "ipv6.yaml")


def test_mirror_steer_and_quarantine_treat_ipv6_as_ipv4(net):
    from controller.policy import VMRule
    b1, b2 = net.vm("b1"), net.vm("b2")
    frame = Frame.ipv6(b1.mac, b2.mac, ipv6_src="fd00:91::11")
    with_ids = model.parse(NETWORK.replace("uplink_port: 3}", "uplink_port: 3, ids_port: 2}"),
                           "ipv6.yaml")
    mirrored = with_ids.with_policy(with_ids.policy.with_default("mirror"))
    trace = Fabric(mirrored, compile_network(mirrored)).run("b1", frame)
    assert [(hv, p) for hv, p, _ in trace.deliveries].count(("p1", 2)) == 1
    quarantined = net.with_policy(net.policy.with_vm("b1", VMRule("quarantine")))
    fab = Fabric(quarantined, compile_network(quarantined))
    assert ports(fab, "b1", frame) == set()
    assert ports(fab, "b2", Frame.ipv6(b2.mac, b1.mac, ipv6_src="fd00:91::12")) == set()
    text = NETWORK.replace("ids_port: 2}", "ids_port: 2, firewall_port: 4}").replace(
        "uplink_port: 3}", "uplink_port: 3, firewall_port: 4}")
    steered = model.parse(text, "ipv6.yaml")
    steered = steered.with_policy(steered.policy.with_default("steer"))
    trace = Fabric(steered, compile_network(steered), firewall=lambda hv, f: f).run("b1", frame)
    assert len(trace.firewall_crossings) == 1 and trace.ports == {("p2", 10)}
