"""Learning ports: capped MAC learning, and a metered path to the controller."""
import time

from topologies import probes

from .conftest import flow_packets


def _learned_on(lab, hv, port):
    return {h["mac"] for h in lab.status()["learned_hosts"]
            if (h["hypervisor"], h["port"]) == (hv, port)}


def test_learning_port_learns_up_to_its_cap_then_drops_and_counts(lab):
    host = lab.host("hv2l20")
    app2 = lab.network.vm("app2")
    # An undeclared host is learned from its first frame and then reachable.
    assert probes.ping(host, str(app2.ip), count=3)[1] >= 2
    assert _learned_on(lab, "hv2", 20) == {host.MAC()}
    before = flow_packets("hv2", "in_port=20 actions=drop")
    with probes.capture(lab.host("app2"), "udp port 9") as cap:
        for i in range(5):
            probes.craft(host, "ipv4", count=2, src_mac=f"02:00:00:00:77:{i:02x}",
                         src_ip=f"10.255.77.{i + 1}", dst_mac=app2.mac, dst_ip=app2.ip)
            time.sleep(0.2)
    learned = _learned_on(lab, "hv2", 20)
    assert len(learned) == 2 and host.MAC() in learned     # max_hosts: 2 in the file
    # Only the one extra MAC that fit was delivered (its 2 frames); the rest
    # hit the learn-limit drop entry and were counted there.
    assert cap.count() == 2
    cap.close()
    assert flow_packets("hv2", "in_port=20 actions=drop") - before >= 8


def test_learned_hosts_keep_their_segment_and_cap_across_a_restart(lab):
    host = lab.host("hv2l20")
    app2 = lab.network.vm("app2")
    learned = _learned_on(lab, "hv2", 20)
    assert len(learned) == 2, "the test above filled the port"
    lab.restart_controller()
    # Adopted back from what the switch holds, not learned again.
    assert _learned_on(lab, "hv2", 20) == learned
    assert "adopted 2 learned hosts" in open(lab.controller_log).read()
    lab.wait_datapath()
    assert probes.ping(host, str(app2.ip), count=3)[1] >= 2, "still in segment internal"
    with probes.capture(lab.host("app2"), "udp port 9") as cap:
        probes.craft(host, "ipv4", count=2, src_mac="02:00:00:00:77:99",
                     src_ip="10.255.77.99", dst_mac=app2.mac, dst_ip=app2.ip)
    assert cap.count() == 0, "the port is still full"
    cap.close()
    assert _learned_on(lab, "hv2", 20) == learned
