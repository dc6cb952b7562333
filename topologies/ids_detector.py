"""A tiny IDS for the lab's sensor host: mirrored copies in, EVE alerts out.

No IDS engine is packaged on the lab machine, yet the mirror tests need
something on the sensor that reads the copies and says "attack seen" the way
a real sensor would. This is that: it reads every frame on one interface
(raw AF_PACKET, promiscuous) and appends Suricata EVE JSON alert lines to a
file, one object per line, flushed at once so a follower sees whole lines.

Two rules, nothing more:

- payload signature (9000001): a TCP or UDP payload, over IPv4 or IPv6,
  that contains a byte string (default VGUARD-ATTACK);
- port scan (9000002): one source sending TCP SYNs to at least scan_ports
  distinct (destination IP, port) pairs within scan_window seconds; one
  alert when the threshold is crossed, then none for that source until the
  pairs that made it have left the window (scan_window seconds), so a long
  scan gives one alert per window, not one per packet.

Detector is pure (frames and times in, EVE records out) so it is tested
without a network; main() is the socket loop.

    ids_detector.py --iface IF --eve PATH [--seconds N] [--scan-ports N]
                    [--scan-window S] [--signature TEXT]
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import signal
import socket
import struct
import sys
import time
from collections import OrderedDict
from datetime import datetime, timezone

SIGNATURE_ID, SCAN_ID = 9000001, 9000002
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
TCP, UDP = 6, 17
SYN, ACK = 0x02, 0x10
ETH_P_ALL, SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC = 0x0003, 263, 1, 1


def parse(frame: bytes):
    """(src_ip, dst_ip, proto, sport, dport, tcp_flags, payload), or None for
    anything that is not a whole TCP/UDP packet over IPv4/IPv6."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    off = 14
    # The kernel usually strips the outer tag into metadata, but QinQ's inner
    # tag, or a tag on a trace from elsewhere, stays in the bytes.
    for _ in range(2):
        if ethertype not in VLAN_TPIDS or len(frame) < off + 4:
            break
        (ethertype,) = struct.unpack_from("!H", frame, off + 2)
        off += 4
    if ethertype == 0x0800 and len(frame) >= off + 20:
        ver_ihl, total, frag, proto = frame[off], *struct.unpack_from("!H2xHxB", frame, off + 2)
        ihl = (ver_ihl & 0x0F) * 4
        if ver_ihl >> 4 != 4 or ihl < 20 or not ihl <= total <= len(frame) - off \
                or frag & 0x1FFF:
            return None         # bad or truncated, or a later fragment (no L4 header)
        src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
        l4 = frame[off + ihl:off + total]   # total length drops Ethernet padding
    elif ethertype == 0x86DD and len(frame) >= off + 40:
        plen, proto = struct.unpack_from("!HB", frame, off + 4)
        if frame[off] >> 4 != 6 or off + 40 + plen > len(frame):
            return None
        src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
        l4 = frame[off + 40:off + 40 + plen]
    else:
        return None
    if proto == TCP and len(l4) >= 20:
        sport, dport, flags = struct.unpack_from("!HH8xxB", l4)
        hlen = (l4[12] >> 4) * 4
        if hlen < 20 or hlen > len(l4):
            return None
        payload = l4[hlen:]
    elif proto == UDP and len(l4) >= 8:
        sport, dport, ulen = struct.unpack_from("!HHH", l4)
        if not 8 <= ulen <= len(l4):
            return None
        flags, payload = 0, l4[8:ulen]
    else:
        return None
    return (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
            proto, sport, dport, flags, payload)


class Detector:
    """The two rules; feed(frame, now) returns the EVE alerts for a frame."""

    def __init__(self, iface: str = "", signature: bytes = b"VGUARD-ATTACK",
                 scan_ports: int = 10, scan_window: float = 5.0,
                 max_sources: int = 4096):
        self.iface, self.signature = iface, signature
        self.scan_ports, self.scan_window = scan_ports, scan_window
        self.max_sources = max_sources
        # source IP -> [last alert time or None, {(dst, dport): last SYN time}],
        # both least recently seen first, so expiry and eviction pop the front.
        self.sources: OrderedDict[str, list] = OrderedDict()

    def feed(self, frame: bytes, now: float) -> list[dict]:
        try:
            pkt = parse(frame)
        except (struct.error, ValueError, IndexError):
            pkt = None          # input is attacker-controlled: never raise
        if pkt is None:
            return []
        src, dst, proto, sport, dport, flags, payload = pkt
        alerts = []
        if self.signature and self.signature in payload:
            alerts.append(self._alert(now, pkt, SIGNATURE_ID, "VGUARD lab payload signature",
                                      "A Network Trojan was detected", 1))
        if proto == TCP and flags & (SYN | ACK) == SYN and self._scan(src, (dst, dport), now):
            alerts.append(self._alert(now, pkt, SCAN_ID, "VGUARD lab port scan",
                                      "Attempted Information Leak", 2))
        return alerts

    def _scan(self, src: str, pair: tuple, now: float) -> bool:
        """Record a SYN; True when this one crosses the source's threshold."""
        state = self.sources.pop(src, None) or [None, OrderedDict()]
        self.sources[src] = state                   # now the most recent source
        if len(self.sources) > self.max_sources:
            self.sources.popitem(last=False)
        alerted_at, pairs = state
        while pairs and next(iter(pairs.values())) <= now - self.scan_window:
            pairs.popitem(last=False)
        pairs.pop(pair, None)
        pairs[pair] = now
        # Only the newest scan_ports pairs matter for the count, so keep no more.
        while len(pairs) > self.scan_ports:
            pairs.popitem(last=False)
        if len(pairs) < self.scan_ports or (
                alerted_at is not None and now - alerted_at < self.scan_window):
            return False        # under threshold, or the last alert's pairs still count
        state[0] = now
        return True

    def _alert(self, now, pkt, sid, signature, category, severity) -> dict:
        src, dst, proto, sport, dport = pkt[:5]
        # Same id for both directions of a flow, stable across runs, JSON-safe.
        ends = sorted([f"{src}/{sport}", f"{dst}/{dport}"])
        key = f"{proto} {ends[0]} {ends[1]}".encode()
        flow_id = int.from_bytes(hashlib.blake2b(key, digest_size=6).digest(), "big")
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
        return {"timestamp": stamp, "flow_id": flow_id, "in_iface": self.iface,
                "event_type": "alert", "src_ip": src, "src_port": sport,
                "dest_ip": dst, "dest_port": dport, "proto": "TCP" if proto == TCP else "UDP",
                "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1,
                          "signature": signature, "category": category,
                          "severity": severity}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--eve", required=True, help="EVE JSON file to append alerts to")
    ap.add_argument("--seconds", type=float, help="stop after this long (default: on SIGTERM)")
    ap.add_argument("--scan-ports", type=int, default=10)
    ap.add_argument("--scan-window", type=float, default=5.0)
    ap.add_argument("--signature", default="VGUARD-ATTACK")
    a = ap.parse_args(argv)
    det = Detector(a.iface, a.signature.encode(), a.scan_ports, a.scan_window)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    deadline = None if a.seconds is None else time.monotonic() + a.seconds
    with open(a.eve, "a", encoding="utf-8") as eve:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((a.iface, ETH_P_ALL))
            # Mirrored copies are unicast to other MACs: a real NIC drops them
            # unless promiscuous; a membership is undone when the socket closes.
            mreq = struct.pack("iHH8s", socket.if_nametoindex(a.iface), PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # scans are bursts
        except OSError as e:
            print(f"ids_detector: {a.iface}: {e}", file=sys.stderr)
            return 1
        while not stop:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            sock.settimeout(0.25 if left is None else min(0.25, left))  # to notice `stop`
            try:
                frame, addr = sock.recvfrom(1 << 18)   # GRO can merge past 64 KiB
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue        # the sensor's own sends are not mirrored traffic
            for record in det.feed(frame, time.time()):
                eve.write(json.dumps(record) + "\n")
                eve.flush()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
