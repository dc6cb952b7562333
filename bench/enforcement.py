"""Benchmark: enforcement lag of a policy change on real OVS, per transition.

    .venv/bin/python -m bench.enforcement [--cycles 50] [--interval 0.001]

A `200` from a policy write means every hypervisor's OpenFlow tables hold
the change (bundle committed, barrier answered). The datapath caches flows
(megaflows) and follows once OVS's revalidator threads have re-translated
them, a little later. This measures that lag where it matters, in the
packets: two probe streams (bench/pinger.py, one ICMP echo every
`interval`, each send time recorded) run the whole time, eb1 -> er1 on one
hypervisor and eb2 -> er1 across the uplink, while the REST API switches
the policy through a cycle of transitions. tcpdump at er1 records which
probes were delivered and tcpdump at the firewall which were steered.

Per change, the old path is what the old policy did with a probe
(delivered; dropped; delivered without the firewall). The lag is the send
time of the last probe that took the old path, minus the moment the `200`
arrived: negative means the data plane already enforced the change before
the answer came. For changes
that tighten (to deny, steer, quarantine), the probes that took the old path
after the documented window (controller.enforcement.DATAPATH_WINDOW_MS) are
counted too: the guarantee is that there are none.

--load N runs N busy loops beside it (the window is OVS's threads getting
CPU); --wait-datapath makes each write also wait for two revalidator rounds
(Lab.wait_datapath) and measures from there: if no probe takes the old path
after that, the window is the datapath's cache and nothing else.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time

from controller.enforcement import DATAPATH_WINDOW_MS
from topologies import firewall, probes
from topologies.lab import Lab
from tests import rest_client

from .common import REPO, log, percentile, print_table, save, write_temp

LAB_YAML = """\
segments:
  blue: {vlan: 210}
  red:  {vlan: 220}
hypervisors:
  ef1: {dpid: 0xef01, uplink_port: 1, firewall_port: 2, ids_port: 3}
  ef2: {dpid: 0xef02, uplink_port: 1, firewall_port: 2, ids_port: 3}
vms:
  eb1: {hypervisor: ef1, port: 10, segment: blue, mac: "02:ef:00:00:10:01", ip: 10.9.10.1}
  er1: {hypervisor: ef1, port: 11, segment: red,  mac: "02:ef:00:00:20:01", ip: 10.9.20.1}
  eb2: {hypervisor: ef2, port: 10, segment: blue, mac: "02:ef:00:00:10:02", ip: 10.9.10.2}
policy:
  default: allow
  pairs: []
"""
CORE = "efcore"
SOURCES, TARGET = ("eb1", "eb2"), "er1"
PAIR, QUARANTINED = "/api/v1/policy/pairs/blue/red", "/api/v1/policy/vms/er1"
# One cycle of writes: (method, path, mode, the transition it measures or None).
CYCLE = [("PUT", PAIR, "allow", "deny -> allow"),
         ("PUT", PAIR, "deny", "allow -> deny"),
         ("PUT", PAIR, "allow", None),
         ("PUT", PAIR, "steer", "allow -> steer"),
         ("PUT", PAIR, "mirror", None),
         ("PUT", PAIR, "steer", "mirror -> steer"),
         ("PUT", PAIR, "allow", None),
         ("PUT", QUARANTINED, "quarantine", "allow -> quarantine"),
         ("DELETE", QUARANTINED, None, None),
         ("PUT", PAIR, "deny", None)]
TIGHTENING = {"allow -> deny", "allow -> steer", "mirror -> steer", "allow -> quarantine"}
HOLD = 0.15          # s each state is held


def write(lab: Lab, token: str, method: str, path: str, mode: str | None,
          wait_datapath: bool) -> dict:
    sent = time.time()
    status, text = rest_client.request(lab.rest_url, method, path,
                                       {"mode": mode} if mode else None, token,
                                       "application/json", None, timeout=30)
    doc = json.loads(text)
    if status != 200 or not doc.get("ok"):
        raise RuntimeError(f"{method} {path} {mode}: {status} {doc}")
    if wait_datapath:
        lab.wait_datapath()
    return {"sent": sent, "answered": time.time()}


def seen(capture: probes.Capture, bpf: str) -> list[tuple[float, int, int]]:
    """(time, icmp id, seq) of every echo request the capture holds."""
    out = []
    for line in capture.packets(bpf, epoch_times=True):
        m = re.search(r"ICMP echo request, id (\d+), seq (\d+)", line)
        if m:
            out.append((float(line.split()[0]), int(m.group(1)), int(m.group(2))))
    return out


def match_probes(stream: dict, observed: list[tuple[float, int, int]]) -> set[int]:
    """Indexes into stream['sent'] of the probes observed. Seqs wrap at 65536,
    so each sighting is the latest probe of that seq sent before it."""
    by_seq: dict[int, list[float]] = {}
    index: dict[tuple[int, float], int] = {}
    for i, (seq, t) in enumerate(stream["sent"]):
        by_seq.setdefault(seq, []).append(t)
        index[(seq, t)] = i
    found = set()
    for t, ident, seq in observed:
        if ident != stream["ident"] or seq not in by_seq:
            continue
        times = by_seq[seq]
        k = bisect.bisect_right(times, t) - 1
        if k >= 0:
            found.add(index[(seq, times[k])])
    return found


def lag(change: dict, probes_in_turn: list[tuple[float, bool]]) -> dict:
    """probes_in_turn: (send time, took the new path) for the probes sent from
    this change's request until the next one's. The lag is when the last
    probe that took the old path was sent, after the 200 (negative: before)."""
    old = [t for t, new in probes_in_turn if not new]
    window_end = change["answered"] + DATAPATH_WINDOW_MS / 1000
    return {"lag_ms": (old[-1] - change["answered"]) * 1000 if old else None,
            "old_after_answer": sum(1 for t in old if t > change["answered"]),
            "old_after_window": sum(1 for t in old if t > window_end),
            "probes": len(probes_in_turn)}


def busy_loops(n: int, seconds: float) -> list[subprocess.Popen]:
    """n CPU-bound processes, each ending by itself after `seconds`."""
    return [subprocess.Popen(["timeout", str(int(seconds)), sys.executable, "-c",
                              "while True: pass"]) for _ in range(n)]


def run(cycles: int, interval: float, load: int, wait_datapath: bool) -> dict:
    path = write_temp(LAB_YAML, "enforcement.yaml")
    token = secrets.token_urlsafe(24)
    tmp = tempfile.mkdtemp(prefix="ef-")
    with open(os.path.join(tmp, "token"), "w") as f:
        f.write(token + "\n")
    with Lab(path, core=CORE, controller_args=["--token-file",
                                               os.path.join(tmp, "token")]) as lab:
        net = lab.network
        lab.pin_neighbours()
        target_ip = str(net.vm(TARGET).ip)
        echo = f"icmp[icmptype] == icmp-echo and dst host {target_ip}"
        at_target = probes.Capture(lab.host(TARGET), echo).start()
        fw = lab.host(firewall.HOST)
        at_firewall = [probes.Capture(fw, f"vlan and {echo}", intf).start()
                       for intf in firewall.interfaces(net).values()]
        pingers = {src: lab.host(src).popen(
            [sys.executable, "-m", "bench.pinger", target_ip, "--interval", str(interval)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for src in SOURCES}
        changes = []
        # Bounded by time too; a revalidator wait under load can take 0.5 s.
        burners = busy_loops(load, cycles * len(CYCLE) * (HOLD + 1.5) + 60)
        try:
            time.sleep(0.5)
            for n in range(cycles):
                for method, api_path, mode, transition in CYCLE:
                    changes.append({**write(lab, token, method, api_path, mode,
                                            wait_datapath), "transition": transition})
                    time.sleep(HOLD)
                if n % 10 == 9:
                    log(f"  {n + 1}/{cycles} cycles")
        finally:
            for proc in burners:
                proc.terminate()
                proc.wait()
            streams = {}
            for src, proc in pingers.items():
                proc.terminate()
                out, err = proc.communicate(timeout=30)
                if proc.returncode:
                    raise RuntimeError(f"bench.pinger in {src} failed: {err[-500:]}")
                streams[src] = json.loads(out)
                streams[src]["ident"] = proc.pid & 0xFFFF
            for cap in [at_target, *at_firewall]:
                cap.stop()
    delivered = seen(at_target, "")
    steered = [s for cap in at_firewall for s in seen(cap, "")]
    for cap in [at_target, *at_firewall]:
        cap.close()
    # The pinger's ident is its PID in the host's namespace: Mininet hosts
    # share the root PID namespace, so popen's PID is it.
    results = {}
    for src, stream in streams.items():
        got, via_fw = match_probes(stream, delivered), match_probes(stream, steered)
        sends = [t for _seq, t in stream["sent"]]
        rows = []
        for i, change in enumerate(changes):
            if change["transition"] is None:
                continue
            end = changes[i + 1]["sent"] if i + 1 < len(changes) else float("inf")
            lo, hi = bisect.bisect_left(sends, change["sent"]), bisect.bisect_left(sends, end)
            new_path = _new_path(change["transition"])
            turn = [(sends[k], new_path(k in got, k in via_fw)) for k in range(lo, hi)]
            rows.append({"transition": change["transition"],
                         "client_ms": (change["answered"] - change["sent"]) * 1000,
                         **lag(change, turn)})
        results[src] = {"probes": len(sends), "delivered": len(got), "changes": rows}
    return results


def _new_path(transition: str):
    """(delivered, steered) -> did the probe take the new policy's path."""
    return {"deny -> allow": lambda d, s: d,
            "allow -> deny": lambda d, s: not d,
            "allow -> steer": lambda d, s: not d or s,
            "mirror -> steer": lambda d, s: not d or s,
            "allow -> quarantine": lambda d, s: not d}[transition]


def rows(results: dict) -> list[list]:
    out = []
    for src, r in results.items():
        where = "same hypervisor" if src == SOURCES[0] else "across the uplink"
        for transition in dict.fromkeys(c["transition"] for c in r["changes"]):
            cs = [c for c in r["changes"] if c["transition"] == transition]
            lags = [c["lag_ms"] for c in cs if c["lag_ms"] is not None]
            cell = lambda p: f"{percentile(lags, p):.1f}" if lags else "n/a"  # noqa: E731
            tight = transition in TIGHTENING
            out.append([f"{transition} ({where})", len(cs), cell(50), cell(99),
                        f"{max(lags):.1f}" if lags else "n/a",
                        sum(1 for c in cs if c["old_after_answer"]),
                        sum(c["old_after_window"] for c in cs) if tight else "-"])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=50,
                    help="cycles through every transition (each measured once a cycle)")
    ap.add_argument("--interval", type=float, default=0.001, help="s between probes")
    ap.add_argument("--load", type=int, default=0, help="busy loops running beside")
    ap.add_argument("--wait-datapath", action="store_true",
                    help="measure from two revalidator rounds after each 200")
    args = ap.parse_args(argv)
    log(f"enforcement: {args.cycles} cycles, a probe every {args.interval * 1000:g} ms, "
        f"{args.load} busy loops{', waiting for the datapath' if args.wait_datapath else ''}")
    results = run(args.cycles, args.interval, args.load, args.wait_datapath)
    since = "two revalidator rounds after the 200" if args.wait_datapath else "the 200"
    table = print_table(
        f"Enforcement lag on real OVS: the last probe that took the old path, sent how "
        f"long after {since}; ms (negative: before); probe every "
        f"{args.interval * 1000:g} ms; {args.load} busy loops beside; window "
        f"{DATAPATH_WINDOW_MS} ms",
        ["transition", "changes", "lag p50 ms", "lag p99 ms", "lag max ms",
         "changes with old path after the 200", "old-path probes after the window"],
        rows(results))
    name = "enforcement" + (f"_load{args.load}" if args.load else "") + \
        ("_wait_datapath" if args.wait_datapath else "")
    save(name, {"cycles": args.cycles, "interval_s": args.interval, "hold_s": HOLD,
                "window_ms": DATAPATH_WINDOW_MS, "load": args.load,
                "wait_datapath": args.wait_datapath}, results, [table])
    return results


if __name__ == "__main__":
    main()
