"""Timed UDP probes for the latency benchmarks (stdlib only: it runs inside
the lab's hosts under /usr/bin/python3).

    probe_stream.py send DST_IP --id N [--interval 0.001] --seconds S
    probe_stream.py receive --out PATH --seconds S

A sender sends a datagram every `interval` seconds, each with its sender
id, sequence number and send time (time.time(): every namespace shares the
machine's clock). A receiver writes one line per datagram that arrived,
"id seq send_time", when it ends; both end by themselves after `seconds`.
"""
from __future__ import annotations

import argparse
import socket
import struct
import time

PORT = 47011
PROBE = struct.Struct("!HId")      # sender id, sequence, send time


def send(dst: str, sender: int, interval: float, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.time()
    seq = 0
    while True:
        now = time.time()
        if now - start >= seconds:
            return
        try:
            s.sendto(PROBE.pack(sender, seq, now), (dst, PORT))
        except OSError:
            pass                   # a quarantined path may refuse for a moment
        seq += 1
        # Keep to the schedule: sleep to the next slot, not for a fixed time.
        time.sleep(max(0.0, start + seq * interval - time.time()))


def receive(out: str, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", PORT))
    s.settimeout(0.2)
    end = time.time() + seconds
    got = []
    while time.time() < end:
        try:
            data = s.recv(64)
        except socket.timeout:
            continue
        if len(data) == PROBE.size:
            got.append(PROBE.unpack(data))
    with open(out, "w") as f:
        f.writelines(f"{i} {seq} {t:.6f}\n" for i, seq, t in got)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("send")
    s.add_argument("dst")
    s.add_argument("--id", type=int, required=True)
    s.add_argument("--interval", type=float, default=0.001)
    s.add_argument("--seconds", type=float, required=True)
    r = sub.add_parser("receive")
    r.add_argument("--out", required=True)
    r.add_argument("--seconds", type=float, required=True)
    args = ap.parse_args()
    if args.role == "send":
        send(args.dst, args.id, args.interval, args.seconds)
    else:
        receive(args.out, args.seconds)


if __name__ == "__main__":
    main()
