"""The lab's own IDS detector: its two rules on scapy-built frames, and the
CLI for real on a veth pair in a namespace of its own."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from topologies.ids_detector import Detector

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, Raw  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTACKER, VICTIM = "10.0.0.66", "10.0.0.2"
SIG = b"VGUARD-ATTACK"


def eth():
    return Ether(src="02:00:00:00:00:66", dst="02:00:00:00:00:02")


def ip4(src=ATTACKER, dst=VICTIM):
    return eth() / IP(src=src, dst=dst)


def ip6():
    return eth() / IPv6(src="2001:db8::66", dst="2001:db8::2")


def syn(dport, src=ATTACKER, dst=VICTIM, flags="S") -> bytes:
    return bytes(ip4(src, dst) / TCP(sport=40000, dport=dport, flags=flags))


def ids(alerts):
    return [a["alert"]["signature_id"] for a in alerts]


@pytest.mark.parametrize("net", [ip4, ip6])
@pytest.mark.parametrize("l4", [TCP(sport=40000, dport=80, flags="PA"), UDP(sport=40000, dport=53)])
def test_signature_in_tcp_and_udp_over_ipv4_and_ipv6(net, l4):
    pkt = net() / l4 / Raw(b"GET /?q=" + SIG + b" HTTP/1.0\r\n")
    alerts = Detector().feed(bytes(pkt), 1000.0)
    assert ids(alerts) == [9000001]
    a = alerts[0]
    assert (a["src_port"], a["dest_port"]) == (40000, l4.dport)
    assert a["proto"] == ("TCP" if isinstance(l4, TCP) else "UDP")
    assert a["src_ip"] == pkt.getlayer(1).src and a["dest_ip"] == pkt.getlayer(1).dst


@pytest.mark.parametrize("tags", [[Dot1Q(vlan=100)], [Dot1AD(vlan=200), Dot1Q(vlan=100)],
                                  [Dot1Q(vlan=200), Dot1Q(vlan=100)]])
def test_signature_in_vlan_tagged_frames(tags):
    pkt = eth()
    for tag in tags:
        pkt = pkt / tag
    pkt = pkt / IP(src=ATTACKER, dst=VICTIM) / UDP(sport=1234, dport=9) / Raw(SIG)
    alerts = Detector().feed(bytes(pkt), 1000.0)
    assert ids(alerts) == [9000001] and alerts[0]["dest_ip"] == VICTIM


def test_no_alert_without_the_signature_and_the_signature_is_configurable():
    pkt = bytes(ip4() / UDP(sport=1234, dport=9) / Raw(b"VGUARD-ATTAC nothing VGUARD ATTACK"))
    assert Detector().feed(pkt, 1.0) == []
    custom = bytes(ip4() / TCP(flags="PA") / Raw(b"xx EVIL yy"))
    assert Detector().feed(custom, 1.0) == []
    assert ids(Detector(signature=b"EVIL").feed(custom, 1.0)) == [9000001]
    # Only the payload counts: the string in a header field or padding is no match.
    padded = bytes(ip4() / UDP(sport=1, dport=2) / Raw(b"x")) + SIG
    assert Detector().feed(padded, 1.0) == []


def test_eve_record_fields_exactly():
    now = datetime(2026, 12, 2, 18, 43, 0, 123456, tzinfo=timezone.utc).timestamp()
    pkt = bytes(ip4() / UDP(sport=5555, dport=53) / Raw(SIG))
    (rec,) = Detector(iface="ids-eth0").feed(pkt, now)
    assert json.loads(json.dumps(rec)) == rec
    flow_id = rec.pop("flow_id")
    assert isinstance(flow_id, int) and 0 <= flow_id < 2 ** 53
    assert rec == {
        "timestamp": "2026-12-02T18:43:00.123456+0000", "in_iface": "ids-eth0",
        "event_type": "alert", "src_ip": ATTACKER, "src_port": 5555,
        "dest_ip": VICTIM, "dest_port": 53, "proto": "UDP",
        "alert": {"action": "allowed", "gid": 1, "signature_id": 9000001, "rev": 1,
                  "signature": "VGUARD lab payload signature",
                  "category": "A Network Trojan was detected", "severity": 1}}
    # Both directions of a flow share its id; another flow has another.
    back = bytes(ip4(VICTIM, ATTACKER) / UDP(sport=53, dport=5555) / Raw(SIG))
    other = bytes(ip4() / UDP(sport=5556, dport=53) / Raw(SIG))
    assert Detector().feed(back, now)[0]["flow_id"] == flow_id
    assert Detector().feed(other, now)[0]["flow_id"] != flow_id
    assert Detector().feed(pkt, now)[0]["in_iface"] == ""


def test_scan_threshold_exactly_and_once_per_window():
    det = Detector()                    # 10 pairs in 5 s
    t = 100.0
    for port in range(1, 10):           # 9 distinct pairs: not yet
        assert det.feed(syn(port), t) == []
        t += 0.1
    (rec,) = det.feed(syn(10), t)       # the 10th crosses the threshold
    assert rec["alert"] == {"action": "allowed", "gid": 1, "signature_id": 9000002, "rev": 1,
                            "signature": "VGUARD lab port scan",
                            "category": "Attempted Information Leak", "severity": 2}
    assert (rec["src_ip"], rec["dest_ip"], rec["dest_port"], rec["proto"]) == \
        (ATTACKER, VICTIM, 10, "TCP")
    json.dumps(rec)
    for port in range(11, 40):          # more of the same scan, same window: quiet
        t += 0.1
        assert det.feed(syn(port), t) == []
    t += 5.5                            # the window empties; a new scan alerts anew
    alerts = [det.feed(syn(port, dst="10.0.0.3"), t + i * 0.01) for i, port in enumerate(range(10))]
    assert [ids(a) for a in alerts] == [[]] * 9 + [[9000002]]
    assert alerts[-1][0]["dest_ip"] == "10.0.0.3" and alerts[-1][0]["dest_port"] == 9


def test_a_long_scan_gives_one_alert_per_window():
    det = Detector(scan_ports=10, scan_window=5.0)
    times = [i * 0.1 for i in range(120)]   # 12 s of one SYN each 0.1 s
    hits = [t for t, port in zip(times, range(1, 121)) if det.feed(syn(port), t)]
    assert len(hits) == 3
    assert all(b - a >= 5.0 for a, b in zip(hits, hits[1:]))


def test_syn_acks_and_repeated_syns_do_not_count():
    det = Detector(scan_ports=3)
    for port in range(1, 20):           # a server answering: SYN-ACKs, not scanning
        assert det.feed(syn(port, flags="SA"), 1.0) == []
    for _ in range(20):                 # a client retrying one port
        assert det.feed(syn(80), 1.0) == []
    assert det.feed(syn(22, flags="A"), 1.0) == [] and det.feed(syn(23, flags="R"), 1.0) == []
    assert det.feed(syn(81), 1.1) == []
    assert ids(det.feed(syn(82), 1.2)) == [9000002]   # the 3rd distinct pair
    # The same port on another host is another pair.
    det = Detector(scan_ports=2)
    assert det.feed(syn(22, dst="10.0.0.3"), 1.0) == []
    assert ids(det.feed(syn(22, dst="10.0.0.4"), 1.0)) == [9000002]


def test_scan_counts_per_source():
    det = Detector(scan_ports=4)
    for i in range(3):
        for src in ("10.0.0.7", "10.0.0.8"):
            assert det.feed(syn(100 + i, src=src), 1.0) == []
    assert ids(det.feed(syn(200, src="10.0.0.7"), 1.1)) == [9000002]
    assert ids(det.feed(syn(200, src="10.0.0.8"), 1.1)) == [9000002]


def test_the_window_slides():
    det = Detector()                    # 10 pairs in 5 s
    for port in range(1, 6):            # t=0: 5 pairs
        assert det.feed(syn(port), 0.0) == []
    for port in range(6, 10):           # t=4: 9 pairs in the window
        assert det.feed(syn(port), 4.0) == []
    assert det.feed(syn(10), 5.5) == []     # t=0's five are out: 5 left, not 10
    for port in range(11, 15):
        assert det.feed(syn(port), 5.6) == []
    (rec,) = det.feed(syn(15), 5.7)     # 6..9, 10, 11..15: ten within 5 s
    assert rec["dest_port"] == 15
    # A repeated SYN refreshes its pair: it stays in the window.
    det = Detector(scan_ports=3, scan_window=5.0)
    det.feed(syn(1), 0.0)
    det.feed(syn(2), 0.0)
    det.feed(syn(1), 4.0)
    assert ids(det.feed(syn(3), 6.0)) == []          # 2 expired: 1 and 3
    assert ids(det.feed(syn(4), 6.5)) == [9000002]   # 1 (at 4.0), 3, 4


def test_truncated_and_garbage_frames_never_raise():
    det = Detector(scan_ports=1)
    frames = [bytes(ip4() / UDP(sport=1, dport=2) / Raw(SIG)),
              bytes(ip6() / TCP(flags="S") / Raw(SIG)),
              bytes(eth() / Dot1Q(vlan=5) / IP(src=ATTACKER, dst=VICTIM) / TCP(flags="S") /
                    Raw(SIG))]
    for whole in frames:
        assert det.feed(whole, 1.0) != []   # whole, it alerts; cut anywhere, never
        for n in range(len(whole)):
            assert det.feed(whole[:n], 1.0) == [], n
    bad = [
        b"", b"\x00", bytes(14), b"\xff" * 60,
        bytes(ip4() / UDP(sport=1, dport=2, len=4) / Raw(SIG)),          # UDP length < 8
        bytes(ip4() / UDP(sport=1, dport=2, len=500) / Raw(SIG)),        # UDP length > data
        bytes(ip4() / TCP(dataofs=3) / Raw(SIG)),                         # TCP header < 20
        bytes(ip4() / TCP(dataofs=15) / Raw(SIG)),                        # past the segment
        bytes(eth() / IP(src=ATTACKER, dst=VICTIM, ihl=4) / UDP() / Raw(SIG)),
        bytes(eth() / IP(src=ATTACKER, dst=VICTIM, len=2000) / UDP() / Raw(SIG)),
        bytes(eth() / IP(src=ATTACKER, dst=VICTIM, frag=10) / Raw(b"\x00" * 8 + SIG)),
        bytes(eth() / IP(src=ATTACKER, dst=VICTIM, version=6) / UDP() / Raw(SIG)),
        bytes(eth() / IPv6(plen=3000) / UDP() / Raw(SIG)),
        bytes(eth() / Dot1Q() / Dot1Q() / Dot1Q() / IP() / UDP() / Raw(SIG)),   # three tags
    ]
    for frame in bad:
        assert det.feed(frame, 1.0) == [], frame.hex()
    rng = random.Random(7)
    heads = [bytes.fromhex(h) for h in ("", "0800", "86dd", "8100", "8100080045", "86dd60")]
    for _ in range(3000):
        head = rng.choice(heads)
        frame = bytes(12) + head + rng.randbytes(rng.randrange(0, 80))
        det.feed(frame, 1.0)            # anything may come back; nothing raises


def test_tracked_sources_are_capped_oldest_dropped():
    det = Detector(scan_ports=3, max_sources=50)
    det.feed(syn(1, src="10.9.0.1"), 1.0)
    det.feed(syn(2, src="10.9.0.1"), 1.0)
    for i in range(198):                # a flood of spoofed sources
        det.feed(syn(1, src=f"10.9.1.{i}"), 1.0)
        assert len(det.sources) <= 50
    assert set(det.sources) == {f"10.9.1.{i}" for i in range(148, 198)}   # the newest
    # 10.9.0.1's two pairs were dropped with it: its 3rd is not a 3rd.
    assert det.feed(syn(3, src="10.9.0.1"), 1.1) == []
    # A source still tracked keeps its state.
    last = "10.9.1.197"
    det.feed(syn(2, src=last), 1.1)
    assert ids(det.feed(syn(3, src=last), 1.1)) == [9000002]
    # Nor does one source's wide scan grow without bound.
    det = Detector()
    for port in range(300):
        det.feed(syn(port), 1.0)
    assert len(det.sources[ATTACKER][1]) <= det.scan_ports
    assert Detector().max_sources == 4096


def run(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frame = bytes.fromhex(sys.argv[2])
for _ in range(15):     # fewer alerts than fill a write buffer: needs the flush
    s.send(frame)
    time.sleep(0.25)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and ip(8)")
def test_cli_on_a_veth_pair_in_a_namespace(tmp_path):
    suffix = uuid.uuid4().hex[:6]
    ns, sensor, peer = f"idt{suffix}", f"idt{suffix}a", f"idt{suffix}b"
    eve = tmp_path / "eve.json"
    # To a MAC not the sensor's: received only thanks to the promiscuous membership
    # on a real NIC (a veth delivers it to packet sockets anyway).
    frame = bytes(Ether(src="02:00:00:00:00:66", dst="02:00:00:00:00:99") /
                  IP(src=ATTACKER, dst=VICTIM) / UDP(sport=40000, dport=9) / Raw(b"x" + SIG))
    det = sender = None
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "add", sensor, "type", "veth", "peer", "name", peer)
        for dev in (sensor, peer):
            run("ip", "-n", ns, "link", "set", dev, "up")
        # The system Python, as in the lab: the detector needs no venv packages.
        det = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3",
                                os.path.join(REPO, "topologies", "ids_detector.py"),
                                "--iface", sensor, "--eve", str(eve), "--seconds", "5"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sender = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", SENDER,
                                   peer, frame.hex()], stderr=subprocess.PIPE, text=True)
        records, promiscuity = [], 0
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline and not records:
            # A packet socket's membership shows as a count, not the PROMISC flag.
            shown = run("ip", "-d", "-n", ns, "link", "show", sensor).stdout.split()
            promiscuity = max(promiscuity, int(shown[shown.index("promiscuity") + 1]))
            if eve.exists():
                text = eve.read_text()
                # Only whole lines: the detector flushes each one with its newline.
                records = [json.loads(line) for line in text.splitlines(keepends=True)
                           if line.endswith("\n")]
            time.sleep(0.05)
        if not records and det.poll() is not None:
            pytest.fail(f"detector exited {det.returncode}: {det.stderr.read()}")
        assert records, "no alert line before the deadline"
        assert det.poll() is None, "the line came only when the detector exited"
        assert records[0]["event_type"] == "alert"
        assert records[0]["alert"]["signature_id"] == 9000001
        assert records[0]["in_iface"] == sensor and records[0]["dest_port"] == 9
        assert promiscuity > 0, "the detector did not make its interface promiscuous"
        det.terminate()
        out, err = det.communicate(timeout=10)
        assert det.returncode == 0, err
    finally:
        for proc in (sender, det):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        run("ip", "netns", "delete", ns, check=False)
    assert ns not in run("ip", "netns", "list").stdout
