"""Port security on VM ports and on the uplink (real OVS + Mininet + scapy)."""
import subprocess
import sys
import time

from topologies import probes

from .conftest import REPO, flow_packets

PROBE = "udp port 9"          # craft.py's frames, untagged


def _send_from_attacker(lab, kind, **fields):
    attacker = lab.network.vm("web2")
    base = dict(src_mac=attacker.mac, src_ip=attacker.ip)
    base.update(fields)
    probes.craft(lab.host("web2"), kind, count=5, **base)


def test_vm_port_drops_spoofed_and_tagged_frames(lab):
    net = lab.network
    web1, web3, app1 = net.vm("web1"), net.vm("web3"), net.vm("app1")
    targets = ["web1", "web3", "app1", "app2"]
    caps = {t: probes.Capture(lab.host(t)).start() for t in targets}
    dropped_before = flow_packets("hv1", "in_port=11 actions=drop")
    cases = {
        "mac-spoof": dict(kind="ipv4", src_mac=web1.mac, dst_mac=web3.mac, dst_ip=web3.ip),
        "ip-spoof": dict(kind="ipv4", src_ip=web1.ip, dst_mac=web3.mac, dst_ip=web3.ip),
        "tagged-own-vlan": dict(kind="tagged", vlan=10, dst_mac=web3.mac, dst_ip=web3.ip),
        "tagged-other-vlan": dict(kind="tagged", vlan=20, dst_mac=app1.mac, dst_ip=app1.ip),
        "double-tagged": dict(kind="double", vlan=10, inner_vlan=20,
                              dst_mac="ff:ff:ff:ff:ff:ff", dst_ip="10.255.255.255"),
        "arp-claims-web3-ip": dict(kind="arp", src_ip=web3.ip, dst_mac=web1.mac,
                                   dst_ip=web1.ip),
    }
    for fields in cases.values():
        fields = dict(fields)
        _send_from_attacker(lab, fields.pop("kind"), **fields)
    # Control: the same attacker's honest frame does arrive, so the probe can see.
    _send_from_attacker(lab, "ipv4", dst_mac=web3.mac, dst_ip=web3.ip)
    for cap in caps.values():
        cap.stop()
    attacker_mac = net.vm("web2").mac
    # By the payload, so a frame delivered still tagged counts too.
    got = {t: sum(probes.CRAFTED_PAYLOAD in f for f in caps[t].frames()) for t in targets}
    arp_from_attacker = caps["web1"].count(f"arp and ether src {attacker_mac}")
    for cap in caps.values():
        cap.close()
    assert got == {"web1": 0, "web3": 5, "app1": 0, "app2": 0}, got
    assert arp_from_attacker == 0
    # 5 frames for each of the 6 spoofed cases were counted by the drop entry.
    assert flow_packets("hv1", "in_port=11 actions=drop") - dropped_before >= 30


def test_arpspoof_cannot_poison_a_neighbour(lab):
    web1, web3 = lab.host("web1"), lab.host("web3")
    assert probes.reaches(web1, web3.IP())
    spoof = lab.host("web2").popen(["timeout", "-s", "INT", "4", "arpspoof", "-i",
                                    probes.intf(lab.host("web2")), "-t", web1.IP(),
                                    web3.IP()], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    time.sleep(3)
    # arpspoof re-ARPs the truth when it exits, so look while it runs.
    during = probes.neighbour_mac(web1, web3.IP())
    spoof.wait(timeout=10)
    assert during == lab.network.vm("web3").mac


def _inject_on_core(lab, hv_name: str, frame_args: list[str]):
    """Put a frame on the wire towards a hypervisor's uplink, from the core switch."""
    hexframe = subprocess.run([sys.executable, f"{REPO}/topologies/craft.py", "hex"]
                              + frame_args, capture_output=True, text=True,
                              check=True).stdout.strip()
    port = lab.core_port(hv_name)
    subprocess.run(["ovs-ofctl", "packet-out", "core",
                    f"in_port=LOCAL packet={hexframe} actions=output:{port}"], check=True)


def test_uplink_accepts_only_declared_vlans_single_tagged(lab):
    net = lab.network
    web1, web3 = net.vm("web1"), net.vm("web3")
    common = ["--src-mac", web3.mac, "--src-ip", str(web3.ip), "--dst-mac", web1.mac,
              "--dst-ip", str(web1.ip)]
    with probes.capture(lab.host("web1"), PROBE) as cap:
        _inject_on_core(lab, "hv1", ["tagged", "--vlan", "99"] + common)     # unknown VLAN
        _inject_on_core(lab, "hv1", ["double", "--vlan", "10", "--inner-vlan", "20"]
                        + common)                                              # QinQ
        _inject_on_core(lab, "hv1", ["tagged", "--vlan", "20"] + common)     # wrong segment
        dropped = cap
    assert dropped.count() == 0
    dropped.close()
    with probes.capture(lab.host("web1"), PROBE) as cap:
        _inject_on_core(lab, "hv1", ["tagged", "--vlan", "10"] + common)     # control
    assert cap.count() == 1
    cap.close()
    assert flow_packets("hv1", "in_port=1 actions=drop") >= 1
