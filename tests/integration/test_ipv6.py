"""IPv6 on real OVS (tests/networks/ipv6.yaml), probes by ping and scapy:
ping6 between VMs of a segment on one hypervisor and across, by global
and link-local address; ND spoofing, a rogue RA and a rogue DHCPv6
ADVERTISE reach nobody while the declared router's and server's do; no
neighbour discovery crosses segments. Each attack is shown to work on
the hub baseline."""
import pytest

from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS

NETWORK = f"{NETWORKS}/ipv6.yaml"
CORE = "v6core"
ROGUE_PREFIX = "fd00:dead::"


def lladdr(lab, vm: str) -> str:
    return str(lab.network.vm(vm).ipv6[0])


def global6(lab, vm: str) -> str:
    return str(lab.network.vm(vm).ipv6[1])


def ping6(lab, src: str, dst_ip: str) -> bool:
    out = lab.host(src).cmd(f"ping -6 -c 2 -i 0.2 -W 1 {dst_ip}")
    return " 0 received" not in out and "received" in out


def attacks(lab) -> dict:
    """What mal's forged IPv6 does at a1: each attack's frames a1 received,
    and whether its neighbour cache or routes took them."""
    net, a1 = lab.network, lab.host("a1")
    mal = net.vm("mal")
    a1.cmd(f"ping -6 -c 1 -W 1 {global6(lab, 'a2')}")      # a real entry for a2 first
    out = {}
    with probes.capture(a1, "icmp6 and ip6[40] == 136") as cap:
        probes.craft(lab.host("mal"), "na", count=3, src_mac=mal.mac,
                     dst_mac=net.vm("a1").mac, src_ip6=global6(lab, "mal"),
                     dst_ip6=global6(lab, "a1"), target=global6(lab, "a2"))
    out["na"] = cap.count()
    cap.close()
    out["poisoned"] = mal.mac in a1.cmd(f"ip -6 neigh show {global6(lab, 'a2')}")
    with probes.capture(a1, "icmp6 and ip6[40] == 134") as cap:
        probes.craft(lab.host("mal"), "ra", count=3, src_mac=mal.mac,
                     dst_mac="33:33:00:00:00:01", src_ip6=lladdr(lab, "mal"),
                     dst_ip6="ff02::1", prefix=ROGUE_PREFIX)
    out["ra"] = cap.count()
    cap.close()
    out["rogue_route"] = ROGUE_PREFIX in a1.cmd("ip -6 addr; ip -6 route")
    with probes.capture(a1, "udp src port 547") as cap:
        probes.craft(lab.host("mal"), "dhcp6", count=3, src_mac=mal.mac,
                     dst_mac="33:33:00:00:00:01", src_ip6=lladdr(lab, "mal"),
                     dst_ip6="ff02::1")
    out["dhcp6"] = cap.count()
    cap.close()
    return out


def test_on_the_hub_baseline_every_ipv6_attack_lands():
    with Lab(NETWORK, controller=False, switch_mode="hub", core=CORE) as hub:
        got = attacks(hub)
    assert got["na"] == 3 and got["poisoned"], got
    assert got["ra"] == 3 and got["rogue_route"], got
    assert got["dhcp6"] == 3, got


@pytest.fixture(scope="module")
def lab():
    with Lab(NETWORK, core=CORE) as running:
        yield running


def test_ipv6_ping_between_vms_of_a_segment_on_one_hypervisor_and_across(lab):
    assert ping6(lab, "a1", global6(lab, "a2")), "same hypervisor"
    assert ping6(lab, "a1", global6(lab, "a3")), "across hypervisors"
    assert ping6(lab, "a3", f"{lladdr(lab, 'a1')}%a3-eth0"), "link-local, across"
    assert not ping6(lab, "n1", f"{lladdr(lab, 'a1')}%n1-eth0"), "n1 declares no IPv6"


def test_nd_spoofing_a_rogue_ra_and_a_rogue_dhcpv6_server_reach_nobody(lab):
    got = attacks(lab)
    assert got == {"na": 0, "poisoned": False, "ra": 0, "rogue_route": False,
                   "dhcp6": 0}, got


def test_the_declared_router_and_server_are_heard(lab):
    net, a1 = lab.network, lab.host("a1")
    rt, srv = net.vm("rt"), net.vm("srv")
    with probes.capture(a1, "icmp6 and ip6[40] == 134") as cap:
        probes.craft(lab.host("rt"), "ra", count=2, src_mac=rt.mac,
                     dst_mac="33:33:00:00:00:01", src_ip6=lladdr(lab, "rt"),
                     dst_ip6="ff02::1", prefix="fd00:96:1::")
    assert cap.count() == 2
    cap.close()
    with probes.capture(a1, "udp src port 547") as cap:
        probes.craft(lab.host("srv"), "dhcp6", count=2, src_mac=srv.mac,
                     dst_mac="33:33:00:00:00:01", src_ip6=lladdr(lab, "srv"),
                     dst_ip6="ff02::1")
    assert cap.count() == 2
    cap.close()


def test_no_neighbour_discovery_crosses_segments(lab):
    net, r1 = lab.network, lab.host("r1")
    a1 = net.vm("a1")
    target = global6(lab, "r1")
    solicited = "33:33:ff:" + ":".join(f"{b:02x}" for b in
                                       net.vm("r1").ipv6[1].packed[-3:])
    # From blue's VMs only: the machine's own kernel sends router
    # solicitations down the lab's links too, which cross nothing.
    blue = " or ".join(f"ether src {vm.mac}" for vm in net.vms if vm.segment == "blue")
    with probes.capture(r1, f"icmp6 and ({blue})") as cap:
        probes.craft(lab.host("a1"), "ns", count=3, src_mac=a1.mac, dst_mac=solicited,
                     src_ip6=global6(lab, "a1"), dst_ip6="ff02::1:ff00:11", target=target)
        lab.host("a1").cmd(f"ping -6 -c 1 -W 1 {lladdr(lab, 'r1')}%a1-eth0")
    got = cap.packets()
    cap.close()
    assert got == [], f"a1's solicitations stay in blue: r1 got {got}"
