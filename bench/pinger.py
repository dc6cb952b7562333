"""Timestamped probes: ICMP echo requests on a fixed schedule, every send
and every reply recorded with its wall-clock time, printed as JSON on exit.

    python -m bench.pinger 10.1.0.1 --interval 0.01     # until SIGTERM / SIGINT

ping(8) only shows replies (and on a 10 ms interval sent every ~16 ms
here); this keeps the send time of every probe, so the moment a change
stops traffic (the first probe that is lost) is known as well as the moment
it lets it through (the first reply). Needs root (a raw socket): run it in
a lab host.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    return ~(total + (total >> 16)) & 0xFFFF


def echo(ident: int, seq: int) -> bytes:
    payload = b"vguard-bench-probe".ljust(32, b".")
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident,
                       seq) + payload


def run(ip: str, interval: float) -> dict:
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    sent, replies = [], []
    start, n = time.monotonic(), 0
    while not stop:
        # Send on a fixed schedule (not "interval after the last"), so a
        # late wake-up does not shift every later probe.
        wait = start + n * interval - time.monotonic()
        if wait <= 0:
            seq = n & 0xFFFF
            sent.append((seq, time.time()))
            sock.sendto(echo(ident, seq), (ip, 0))
            n += 1
            continue
        ready = select.select([sock], [], [], wait)[0]
        while ready:
            packet = sock.recv(2048)
            now = time.time()
            icmp = packet[(packet[0] & 0x0F) * 4:]           # after the IP header
            kind, _code, _sum, rid, seq = struct.unpack_from("!BBHHH", icmp)
            if kind == ECHO_REPLY and rid == ident:
                replies.append((seq, now))
            ready = select.select([sock], [], [], 0)[0]
    return {"ip": ip, "interval": interval, "sent": sent, "replies": replies}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ip")
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between probes")
    args = ap.parse_args(argv)
    json.dump(run(args.ip, args.interval), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
