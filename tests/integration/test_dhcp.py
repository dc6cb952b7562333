"""DHCP on real OVS with Debian's dnsmasq and dhclient
(tests/networks/dhcp.yaml): a client gets its lease from the declared
server and is then pinned to it; a rogue dnsmasq in the same segment hands
out nothing (it does on the hub baseline); a segment served from the
physical network gets its lease through the uplink; a RELEASE unpins, and
leases survive a controller restart."""
import pytest

from topologies import dhcptools, probes, router
from topologies.lab import Lab

from .conftest import NETWORKS

NETWORK = f"{NETWORKS}/dhcp.yaml"
CORE = "dhcore"
GUEST, POOL = "10.81.0.0/24", ("10.81.0.100", "10.81.0.150")
ROGUE_POOL = ("10.81.0.200", "10.81.0.210")


def lease_of(lab, vm: str):
    doc = next(v for v in lab.api("/api/v1/vms") if v["name"] == vm)
    return (doc["dhcp"] or {}).get("lease")


def delivered_from(lab, vm: str, src_ip: str, to: str = "srv") -> int:
    """Crafted UDP frames from `vm`'s own MAC and `src_ip` that reach `to`."""
    target = lab.network.vm(to)
    with probes.capture(lab.host(to), "udp port 9") as cap:
        probes.craft(lab.host(vm), "ipv4", count=3, src_mac=lab.network.vm(vm).mac,
                     src_ip=src_ip, dst_mac=target.mac, dst_ip=target.ip)
    got = cap.count()
    cap.close()
    return got


@pytest.fixture(scope="module")
def lab():
    with Lab(NETWORK, core=CORE) as running:
        yield running


def test_on_the_hub_baseline_a_rogue_server_hands_out_addresses():
    with Lab(NETWORK, controller=False, switch_mode="hub", core=CORE) as hub:
        with dhcptools.Server(hub.host("rogue"), GUEST, ROGUE_POOL):
            got = dhcptools.Client(hub.host("c2")).lease()
        assert got is not None and got.startswith("10.81.0.2"), got


def test_a_client_gets_its_lease_from_the_declared_server_and_is_pinned_to_it(lab):
    with dhcptools.Server(lab.host("srv"), GUEST, POOL):
        client = dhcptools.Client(lab.host("c1"))
        address = client.lease()
        assert address is not None and address.startswith("10.81.0.1"), address
        assert probes.wait_for(lambda: (lease_of(lab, "c1") or {}).get("ip") == address, 5)
        assert lease_of(lab, "c1")["server"] == lab.network.vm("srv").mac
        assert delivered_from(lab, "c1", address) == 3
        assert delivered_from(lab, "c1", "10.81.0.99") == 0, "pinned to its lease"
        assert probes.reaches(lab.host("c1"), "10.81.0.2")
        client.stop()


def rogue_drops(lab) -> int:
    """Packets dh2's rogue-dhcp entries dropped, as the controller counts them."""
    dropped = lab.api("/api/v1/counters")["hypervisors"]["dh2"]["dropped"]
    return dropped.get("rogue-dhcp", {}).get("packets", 0)


def test_a_rogue_server_hands_out_nothing_while_the_real_one_is_away(lab):
    before = rogue_drops(lab)
    with dhcptools.Server(lab.host("rogue"), GUEST, ROGUE_POOL) as rogue:
        got = dhcptools.Client(lab.host("c2")).lease(seconds=8)
        log = rogue.log_text()
    assert got is None, f"c2 took {got} from the rogue"
    assert "DHCPOFFER" in log, "the rogue did answer: its offers were dropped"
    assert probes.wait_for(lambda: rogue_drops(lab) > before, 5), "counted as rogue-dhcp"
    assert lease_of(lab, "c2") is None


def test_a_segment_served_from_the_physical_network_gets_its_lease_by_the_uplink(lab):
    rtr = lab.host(router.ROUTER)
    with dhcptools.Server(rtr, "10.82.0.0/24", ("10.82.0.100", "10.82.0.110"),
                          interface=router.router_intf(0), router="10.82.0.1"):
        client = dhcptools.Client(lab.host("c3"))
        address = client.lease()
        assert address is not None and address.startswith("10.82.0.10"), address
        assert probes.wait_for(lambda: (lease_of(lab, "c3") or {}).get("ip") == address, 5)
        assert probes.reaches(lab.host("c3"), "10.82.0.1")
        client.stop()


def test_a_release_unpins_and_leases_survive_a_restart(lab):
    with dhcptools.Server(lab.host("srv"), GUEST, POOL):
        keeper, leaver = dhcptools.Client(lab.host("c2")), dhcptools.Client(lab.host("c1"))
        kept, left = keeper.lease(), leaver.lease()
        assert kept and left
        assert probes.wait_for(lambda: lease_of(lab, "c1") and lease_of(lab, "c2"), 5)
        leaver.release()
        assert probes.wait_for(lambda: lease_of(lab, "c1") is None, 5)
        assert delivered_from(lab, "c1", left) == 0, "released: no longer its address"
        lab.restart_controller()
        assert lease_of(lab, "c2")["ip"] == kept
        assert delivered_from(lab, "c2", kept) == 3
        keeper.stop()
