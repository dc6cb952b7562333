"""Steering through a real nftables firewall (real OVS + Mininet + controller).

The lab's `fw` host reflects steered frames back on its link to every
hypervisor's firewall port, filtering with nftables.
"""

from topologies import firewall, probes
from topologies.lab import Lab

from .conftest import example_variant

REQUESTS = "icmp[icmptype] == icmp-echo"


def _count_web1_pings(lab, *more_rules):
    """Firewall rules counting web1's echo requests and the replies to it."""
    web1 = lab.host("web1").IP()
    firewall.rules(lab.host("fw"),
                   f'ip saddr {web1} icmp type echo-request counter comment "requests"',
                   f'ip daddr {web1} icmp type echo-reply counter comment "replies"',
                   *more_rules)


def _steered(lab):
    """web1's pings the firewall has seen: requests + replies."""
    counts = firewall.counters(lab.host("fw"))
    return counts["requests"] + counts["replies"]


def test_steered_traffic_crosses_the_firewall_once_and_obeys_its_rules(tmp_path):
    with Lab(example_variant(tmp_path, "  default: steer\n")) as lab:
        fw, net = lab.host("fw"), lab.network
        web1, web2, web3 = (lab.host(n) for n in ("web1", "web2", "web3"))
        # Accept everything: it flows, and the firewall counts every packet.
        caps = {i: probes.Capture(fw, f"vlan 10 and {REQUESTS}", interface=i).start()
                for i in ("fw-eth0", "fw-eth1")}
        _count_web1_pings(lab)
        before = _steered(lab)
        assert probes.ping(web1, web2.IP(), count=5)[1] == 5
        assert probes.ping(web1, web3.IP(), count=5)[1] == 5
        for cap in caps.values():
            cap.stop()
        assert _steered(lab) - before == 20          # 10 requests + 10 replies, once each
        # Requests from web1 (hv1) cross at hv1's link only, never at hv2's.
        assert caps["fw-eth0"].count() == 10 and caps["fw-eth1"].count() == 0
        for cap in caps.values():
            cap.close()
        # Drop one conversation: it stops, the others flow.
        firewall.rules(fw, f'ip saddr {web1.IP()} ip daddr {web2.IP()} counter drop '
                           'comment "web1-web2"')
        assert probes.ping(web1, web2.IP(), count=3)[1] == 0
        assert probes.ping(web1, web3.IP(), count=3)[1] == 3
        assert firewall.counters(fw)["web1-web2"] == 3
        # Stateful: web1 may open connections to web3, not the other way;
        # replies come back through the other hypervisor's link, same firewall.
        firewall.rules(fw, "ct state established,related accept",
                       f'ip saddr {web1.IP()} ip daddr {web3.IP()} ct state new accept',
                       'counter drop comment "rest"')
        assert probes.ping(web1, web3.IP(), count=3)[1] == 3
        assert probes.ping(web3, web1.IP(), count=3)[1] == 0
        assert firewall.counters(fw)["rest"] >= 3
        # Isolation is not the firewall's to undo: cross-segment stays dropped.
        firewall.rules(fw)
        assert not probes.reaches(web1, lab.host("app1").IP())
        assert net.policy.mode("dmz", "internal") == "deny"


def test_a_vm_steer_rule_steers_that_vm_only_on_a_segment_that_allows(tmp_path):
    with Lab(example_variant(tmp_path, "  default: allow\n  vms: {web1: steer}\n")) as lab:
        web1, web2, web3 = (lab.host(n) for n in ("web1", "web2", "web3"))
        _count_web1_pings(lab)
        before = _steered(lab)
        assert probes.ping(web1, web2.IP(), count=5)[1] == 5      # on its hypervisor
        assert probes.ping(web1, web3.IP(), count=5)[1] == 5      # across
        assert _steered(lab) - before == 20          # 10 requests + 10 replies, once each
        assert probes.ping(web3, web1.IP(), count=3)[1] == 3      # to it, steered too
        # The others are not steered: the firewall drops all they would show it.
        firewall.rules(lab.host("fw"), 'counter drop comment "rest"')
        assert probes.ping(web2, web3.IP(), count=3)[1] == 3
        assert probes.ping(web2, web1.IP(), count=3)[1] == 0
        assert firewall.counters(lab.host("fw"))["rest"] >= 3


def test_firewall_gone_fails_closed_and_steering_resumes_by_itself(tmp_path):
    with Lab(example_variant(tmp_path, "  default: steer\n")) as lab:
        fw, web1, web2 = lab.host("fw"), lab.host("web1"), lab.host("web2")
        assert probes.ping(web1, web2.IP(), count=2)[1] == 2
        _count_web1_pings(lab)
        fw.cmd("ip link set br-0 down")              # hv1's link stops returning
        assert probes.wait_for(lambda: lab.status()["datapaths"]["hv1"]["firewall"] == "down")
        lab.wait_datapath()
        assert "hv1: the firewall is not returning steered traffic; steered traffic is " \
               "DROPPED (fail-closed)" in open(lab.controller_log).read()
        assert probes.ping(web1, web2.IP(), count=3)[1] == 0
        fw.cmd("ip link set br-0 up")
        assert probes.wait_for(lambda: lab.status()["datapaths"]["hv1"]["firewall"] == "up")
        lab.wait_datapath()
        assert probes.ping(web1, web2.IP(), count=1)[1] == 1
        before = _steered(lab)
        assert probes.ping(web1, web2.IP(), count=3)[1] == 3
        assert _steered(lab) - before == 6           # through the firewall again


def test_fail_open_delivers_directly_while_the_firewall_is_gone(tmp_path):
    path = example_variant(tmp_path, "  default: steer\n")
    with open(path, "a") as f:
        f.write("steering: {fail: open}\n")
    with Lab(path) as lab:
        fw, web1, web2 = lab.host("fw"), lab.host("web1"), lab.host("web2")
        _count_web1_pings(lab)
        fw.cmd("ip link set br-0 down")
        assert probes.wait_for(lambda: lab.status()["datapaths"]["hv1"]["firewall"] == "down")
        lab.wait_datapath()
        before = _steered(lab)
        assert probes.ping(web1, web2.IP(), count=3)[1] == 3
        assert _steered(lab) == before               # not through the firewall
        assert "DELIVERED DIRECTLY, UNFILTERED (fail-open)" in open(lab.controller_log).read()


def test_steered_and_mirrored_traffic_is_copied_once(tmp_path):
    with Lab(example_variant(tmp_path, "  default: steer-mirror\n")) as lab:
        web1, web2 = lab.host("web1"), lab.host("web2")
        _count_web1_pings(lab)
        with probes.capture(lab.host("hv1ids"), REQUESTS) as ids:
            before = _steered(lab)
            assert probes.ping(web1, web2.IP(), count=5)[1] == 5
        assert ids.count() == 5
        ids.close()
        assert _steered(lab) - before == 10
