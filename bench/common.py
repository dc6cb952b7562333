"""Shared helpers for the benchmarks: statistics, tables, JSON results,
machine facts, generated network files and a few OVS queries.

Every bridge, host and VM a benchmark creates is named with PREFIX, so labs
of other people on the same machine are never touched.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
# Bridges <prefix>h1.., VMs <prefix>a1.., core <prefix>core. BENCH_PREFIX
# lets two people benchmark on one machine (OVS bridge names are global).
PREFIX = os.environ.get("BENCH_PREFIX", "bq")
if not re.fullmatch(r"[a-z][a-z0-9]{1,3}", PREFIX):
    raise SystemExit(f"BENCH_PREFIX={PREFIX!r}: 2 to 4 lowercase letters or digits, "
                     "starting with a letter")
CORE = f"{PREFIX}core"


# ------------------------------------------------------------ statistics

def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (p in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values) -> dict:
    """Median and spread of repeated measurements (None values dropped)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0, "median": None, "min": None, "max": None,
                "p25": None, "p75": None, "values": []}
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "p25": percentile(xs, 25), "p75": percentile(xs, 75), "values": xs}


def spread(s: dict, digits: int = 1, scale: float = 1.0) -> str:
    """'812.0 (790.1-830.4)': median (min-max)."""
    if not s or s.get("median") is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    med, lo, hi = (f.format(s[k] * scale) for k in ("median", "min", "max"))
    sep = " to " if s["min"] < 0 else "-"     # '(-3.7 to -1.0)', not '(-3.7--1.0)'
    return med if s["n"] == 1 else f"{med} ({lo}{sep}{hi})"


def ratio(a, b) -> float | None:
    return None if a is None or not b else a / b


# ------------------------------------------------------------ output

def print_table(title: str, headers: list[str], rows: list[list]) -> str:
    """Print a plain-text table; returns it too (for the README)."""
    cells = [[str(c) for c in headers]] + [[("n/a" if c is None else str(c)) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [title, line(cells[0]), line(["-" * w for w in widths])]
    out += [line(r) for r in cells[1:]]
    text = "\n".join(out)
    print(text + "\n", flush=True)
    return text


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ovs = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(),
            "ovs": ovs.splitlines()[0] if ovs else None,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "load_avg_1m": os.getloadavg()[0]}


def save(name: str, config: dict, results, tables: list[str]) -> str:
    """bench/results/<name>.json with the machine, the settings, the numbers
    and the printed tables."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"benchmark": name, "machine": machine(), "config": config,
                   "results": results, "tables": tables}, f, indent=1, sort_keys=True)
    print(f"results: {os.path.relpath(path, REPO)}", flush=True)
    return path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------ network files

def network_yaml(hypervisors: int, segments: int, vms: int, *, ids_port: bool = False,
                 firewall_port: bool = False, uplink: bool = True, default: str = "allow",
                 learning_ports=(), learning_max_hosts: int = 4, dpid_base: int = 0xB0_0000,
                 prefix: str = PREFIX) -> str:
    """A network file: VMs spread round-robin over segments, and within a
    segment round-robin over hypervisors (so every segment spans hosts).
    Names: hypervisors <prefix>h1.., VMs <prefix><seg letter><n>; segment
    k has VLAN 100+k and subnet 10.<k>.0.0/16. Ports: uplink 1, firewall
    2, IDS 3, VMs from 10."""
    lines = ["segments:"]
    for k in range(segments):
        lines.append(f"  s{k}: {{vlan: {100 + k}, subnet: 10.{k}.0.0/16}}")
    lines.append("hypervisors:")
    for h in range(1, hypervisors + 1):
        lines.append(f"  {prefix}h{h}:")
        lines.append(f"    dpid: {dpid_base + h}")
        if uplink:
            lines.append("    uplink_port: 1")
        if firewall_port:
            lines.append("    firewall_port: 2")
        if ids_port:
            lines.append("    ids_port: 3")
        if learning_ports:
            lines.append("    learning_ports:")
            for p in learning_ports:
                lines.append(f"      - {{port: {p}, segment: s0, "
                             f"max_hosts: {learning_max_hosts}}}")
    lines.append("vms:" if vms else "vms: {}")
    next_port = {h: 10 for h in range(1, hypervisors + 1)}
    per_segment = [0] * segments
    for i in range(vms):
        k = i % segments
        n = per_segment[k]
        per_segment[k] += 1
        h = n % hypervisors + 1
        port = next_port[h]
        next_port[h] += 1
        while port in learning_ports:
            port = next_port[h]
            next_port[h] += 1
        name = f"{prefix}{_letters(k)}{n + 1}"
        mac = f"02:{(i >> 24) & 0xff:02x}:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:" \
              f"{i & 0xff:02x}:{k & 0xff:02x}"
        ip = f"10.{k}.{(n + 1) >> 8}.{(n + 1) & 0xff}"
        lines.append(f"  {name}: {{hypervisor: {prefix}h{h}, port: {port}, segment: s{k}, "
                     f"mac: \"{mac}\", ip: {ip}}}")
    lines += ["policy:", f"  default: {default}"]
    return "\n".join(lines) + "\n"


def _letters(k: int) -> str:
    """0 -> a, 25 -> z, 26 -> ba: a short segment tag for VM names."""
    out = chr(ord("a") + k % 26)
    while k >= 26:
        k //= 26
        out = chr(ord("a") + k % 26) + out
    return out


def write_temp(text: str, name: str) -> str:
    d = tempfile.mkdtemp(prefix=f"{PREFIX}-bench-")
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------ OVS and ports

def ovs(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=check).stdout


def ofctl(bridge: str, *args: str) -> str:
    return ovs("ovs-ofctl", "-O", "OpenFlow13", args[0], bridge, *args[1:])


def reset_bridges(bridges) -> None:
    """Empty the OpenFlow state (flows, meters, groups) of our own bridges."""
    for br in bridges:
        for cmd in ("del-flows", "del-meters", "del-groups"):
            ofctl(br, cmd)


def flow_count(bridge: str) -> int:
    return sum(1 for ln in ofctl(bridge, "dump-flows").splitlines() if "actions=" in ln)


def connections(port: int) -> int:
    """Established OpenFlow connections a controller on this port accepted.
    (OVS's is_connected column is refreshed lazily and can say true for a
    controller that just died.)"""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(1 for ln in out.splitlines() if ln.strip())


def repoint(bridges) -> None:
    """Set each bridge's controller again, so it connects now. OVS backs off
    1, 2, 4, then 8 s between attempts to an absent controller (its
    max_backoff setting did not shorten that here, OVS 3.1), which would
    hide a controller's own start-up time behind OVS's wait."""
    for br in bridges:
        target = ovs("ovs-vsctl", "get-controller", br).split()
        # Two transactions: within one, OVS would see the same target and
        # keep the connection (and its backoff) as it was.
        ovs("ovs-vsctl", "del-controller", br)
        ovs("ovs-vsctl", "set-controller", br, *target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """Poll until predicate() is truthy; its value, or None after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (OSError, ValueError):
            value = None
        if value or time.monotonic() >= deadline:
            return value or None
        time.sleep(interval)


# ------------------------------------------------------------ lab probes

def ping_rtts(host, ip: str, count: int, interval: float, timeout: float = 1.0):
    """(sent, received, [rtt ms]) from one ping run in a Mininet host."""
    out = host.cmd(f"ping -n -c {count} -i {interval} -W {timeout} {ip}")
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (count, 0)
    return sent, received, rtts


def wait_reachable(host, ip: str, timeout: float) -> float | None:
    """Seconds until one ping is answered, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ping_rtts(host, ip, 1, 0.2, 1)[1]:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def rx_bytes(host) -> int:
    """Bytes received on a Mininet host's only interface so far."""
    return int(host.cmd(f"cat /sys/class/net/{host.defaultIntf()}/statistics/rx_bytes"))


def flush_neighbours(hosts) -> None:
    for h in hosts:
        h.cmd("ip neigh flush all")
