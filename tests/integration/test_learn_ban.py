"""A MAC flood on a learning port (macof, real OVS): banned from learning,
and what it learned forgotten, so a genuine host that comes after the ban
gets a slot; the genuine host learned before the flood keeps its own."""
import time

from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS


def learned(lab) -> set[str]:
    return {h["mac"] for h in lab.status()["learned_hosts"]}


def test_a_mac_flood_is_banned_and_frees_the_slots_it_took():
    with Lab(f"{NETWORKS}/learn_ban.yaml") as lab:
        host, target = lab.host("lb9l20"), lab.network.vm("target")
        assert probes.ping(host, str(target.ip), count=2)[1] >= 1
        assert learned(lab) == {host.MAC()}
        time.sleep(1.1)     # learned before the flood's second: it keeps its slot
        probes.flood_macs(host, 2).wait(timeout=30)
        status = lab.status()
        assert status["bans"] >= 1 and status["learn_bans"], status
        assert learned(lab) == {host.MAC()}, "the flood holds no slot"
        time.sleep(lab.network.options.learn_ban_seconds + 0.5)    # the ban is over
        newcomer = "02:9b:00:00:00:77"
        with probes.capture(lab.host("target"), "udp port 9") as cap:
            for _ in range(3):
                probes.craft(host, "ipv4", count=2, src_mac=newcomer, src_ip="10.0.30.77",
                             dst_mac=target.mac, dst_ip=target.ip)
                time.sleep(0.2)
        assert newcomer in learned(lab), "a genuine host after the flood is learned"
        assert cap.count() >= 4
        cap.close()
