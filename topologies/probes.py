"""Measurements inside a running lab, with real tools; shared by tests and demo.

Each probe runs a real program in a Mininet host's namespace (ping, tcpdump,
macof, arpspoof, scapy) and returns numbers, never a verdict.
"""
from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def intf(host) -> str:
    return host.defaultIntf().name


def wait_for(predicate, seconds: float = 10.0) -> bool:
    """Poll predicate every 0.2 s until it holds or `seconds` pass."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def ping(src, dst_ip: str, count: int = 3, interval: float = 0.2,
         timeout: float = 1.0, size: int = 56) -> tuple[int, int]:
    """(sent, received) for `count` echo requests of `size` payload bytes
    (1472: full-size 1514-byte frames)."""
    out = src.cmd(f"ping -n -c {count} -i {interval} -W {timeout} -s {size} {dst_ip}")
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return (int(m.group(1)), int(m.group(2))) if m else (count, 0)


class PingStream:
    """ping every 10 ms from a host until stop(); each reply with its time
    (ping -D), so a test can tell what came back after a given moment."""

    def __init__(self, host, dst_ip: str, interval: float = 0.01):
        self.proc = host.popen(["ping", "-D", "-n", "-i", str(interval), "-W", "1", dst_ip],
                               stdout=subprocess.PIPE, text=True)
        self.replies: list[tuple[float, int]] = []

    def stop(self) -> "PingStream":
        """Stop it, after the replies still in flight (0.5 s)."""
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        out = self.proc.communicate(timeout=10)[0]
        self.replies = [(float(t), int(n)) for t, n in
                        re.findall(r"^\[([\d.]+)\].*icmp_seq=(\d+)", out, re.M)]
        return self

    def answered_after(self, moment: float) -> int:
        """Replies that came back after `moment` (time.time())."""
        return sum(1 for t, _ in self.replies if t > moment)

    def lost(self) -> list[int]:
        """Requests unanswered while a later one was answered."""
        seqs = {n for _, n in self.replies}
        return sorted(set(range(1, max(seqs, default=0) + 1)) - seqs)


def reaches(src, dst_ip: str) -> bool:
    """True if any of two pings is answered (one may be spent on ARP)."""
    return ping(src, dst_ip, count=2, interval=0.2, timeout=1)[1] > 0


class Capture:
    """tcpdump of what a host's interface receives; count() reads the capture.

    Only inbound frames are kept (-Q in): what a host sends is not evidence
    of what the switch delivered to it.
    """

    def __init__(self, host, bpf: str = "", interface: str | None = None):
        self.host, self.bpf = host, bpf
        self.interface = interface or intf(host)
        fd, self.path = tempfile.mkstemp(prefix=f"cap-{host.name}-", suffix=".pcap")
        os.close(fd)
        self.proc = None
        self.kernel_drops = 0

    def start(self) -> "Capture":
        # -U: write each packet at once, so SIGINT leaves a complete file.
        # --immediate-mode and a 16 MB buffer (-B): without them the kernel
        # drops packets under load, or holds the last ones back at SIGINT.
        self.proc = self.host.popen(["tcpdump", "-n", "-U", "--immediate-mode", "-B", "16384",
                                     "-Q", "in", "-i", self.interface, "-w", self.path]
                                    + ([self.bpf] if self.bpf else []),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_listening(self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            time.sleep(0.5)          # frames still in flight
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            report = (self.proc.stderr.read() or b"").decode(errors="replace")
            m = re.search(r"(\d+) packets? dropped by kernel", report)
            self.kernel_drops = int(m.group(1)) if m else 0

    def packets(self, bpf: str = "", epoch_times: bool = False) -> list[str]:
        """The captured packets as tcpdump -e lines, optionally filtered again;
        epoch_times: each line starts with its time in seconds since the epoch."""
        if self.kernel_drops:
            raise RuntimeError(f"tcpdump on {self.host.name} lost {self.kernel_drops} "
                               "packets: a count would be wrong")
        out = subprocess.run(["tcpdump", "-n", "-e", "-r", self.path]
                             + (["-tt"] if epoch_times else []) + ([bpf] if bpf else []),
                             capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    def frames(self) -> list[bytes]:
        """The captured frames, raw (the classic pcap file tcpdump -w writes)."""
        self.stop()
        if self.kernel_drops:
            raise RuntimeError(f"tcpdump on {self.host.name} lost {self.kernel_drops} "
                               "packets: a count would be wrong")
        with open(self.path, "rb") as f:
            data = f.read()
        order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        frames, at = [], 24
        while at + 16 <= len(data):
            length = struct.unpack_from(order + "I", data, at + 8)[0]
            frames.append(data[at + 16:at + 16 + length])
            at += 16 + length
        return frames

    def count(self, bpf: str = "") -> int:
        return len(self.packets(bpf))

    def close(self) -> None:
        self.stop()
        if os.path.exists(self.path):
            os.unlink(self.path)


def _wait_listening(proc, limit: float = 5.0) -> None:
    """tcpdump prints 'listening on' once its socket is open."""
    deadline = time.time() + limit
    line = b""
    os.set_blocking(proc.stderr.fileno(), False)
    while time.time() < deadline and b"listening on" not in line:
        chunk = proc.stderr.read() or b""
        line += chunk
        time.sleep(0.05)
    time.sleep(0.3)


@contextmanager
def capture(host, bpf: str = "", interface: str | None = None):
    cap = Capture(host, bpf, interface).start()
    try:
        yield cap
    finally:
        cap.stop()


def flood_macs(host, seconds: int):
    """Start macof (random source MACs) on a host, bounded by `timeout`."""
    return host.popen(["timeout", "-s", "INT", str(seconds), "macof", "-i", intf(host)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


CRAFTED_PAYLOAD = b"vguard-probe" * 4     # what craft.py's UDP frames carry


def craft(host, kind: str, count: int = 5, **fields) -> str:
    """Send hand-made frames from a host with scapy (topologies/craft.py)."""
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in fields.items())
    return host.cmd(f"{sys.executable} {REPO}/topologies/craft.py {kind} "
                    f"--iface {intf(host)} --count {count} {args}")


def neighbour_mac(host, ip: str) -> str | None:
    m = re.search(r"lladdr ([0-9a-f:]{17})", host.cmd(f"ip neigh show {ip}"))
    return m.group(1) if m else None


def reachability(sources: dict, targets: dict[str, str]) -> dict[tuple[str, str], bool]:
    """Ping every target IP from every source host, all at once.

    sources: name -> Mininet host; targets: name -> IP. Returns
    (source, target) -> answered. Two echo requests each: one may be spent
    while ARP resolves.
    """
    script = " ".join(
        f"(ping -n -c 2 -i 0.2 -W 1 {ip} >/dev/null 2>&1 && echo OK {name} || "
        f"echo NO {name}) &" for name, ip in targets.items())
    procs = {name: host.popen(["bash", "-c", script + " wait"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
             for name, host in sources.items()}
    result = {}
    for src, proc in procs.items():
        out, _ = proc.communicate(timeout=30)
        for line in out.splitlines():
            verdict, dst = line.split()
            if dst != src:
                result[(src, dst)] = verdict == "OK"
    return result
