"""Benchmark 1: the data plane under each controller, against OVS NORMAL.

    .venv/bin/python -m bench.dataplane [--seconds 5] [--reps 3] [--pings 50]

One Mininet lab (2 hypervisors, 2 segments, 6 VMs, an IDS port on each
hypervisor) is built once; its bridges are secure-mode and pointed at one
OpenFlow port. Each peer in turn gets the same lab, emptied of flows,
meters and groups and with the hosts' ARP caches flushed:
  OVS NORMAL (the ceiling), simple_switch_13, Faucet, vguard in isolation
  mode (policy default allow) and in mirror mode (default mirror: every
  allowed frame is also copied to the IDS port).
Once both paths answer a ping (reactive peers have learned by then), it
measures TCP throughput (iperf3, reps x seconds) and ping RTT (pings at 20
ms) between two VMs of one segment on one hypervisor and across two.
Ratios: every peer to OVS NORMAL, and the cost of mirroring (vguard mirror
/ vguard isolation). Steering has its own lab (a firewall): bench.steering.
"""
from __future__ import annotations

import argparse
import json

from topologies.lab import Lab

from .common import (CORE, PREFIX, flush_neighbours, free_port, log, network_yaml,
                     ping_rtts, percentile, print_table, ratio, reset_bridges, save, spread,
                     summary, wait_reachable, write_temp)
from .peers import Faucet, Normal, SimpleSwitch, Vguard, bring_up

# vguard modes measured: name -> policy default. Steering needs a firewall
# in the lab, which would reflect the other peers' floods back: it is
# measured on a lab of its own in bench/steering.py.
VGUARD_MODES = {"isolation": "allow", "mirror": "mirror"}
# Segment s0: VMs 1 and 3 on hypervisor 1, VM 2 on hypervisor 2.
PATHS = {"same hypervisor": (f"{PREFIX}a1", f"{PREFIX}a3"),
         "across hypervisors": (f"{PREFIX}a1", f"{PREFIX}a2")}
MIRROR, ISOLATION = "vguard mirror", "vguard isolation"


def iperf(client, server_ip: str, seconds: float) -> float | None:
    """TCP throughput in Mbit/s (what the receiver got), None on failure."""
    out = client.cmd(f"timeout {seconds + 10:.0f} iperf3 -c {server_ip} -t {seconds:g} -J "
                     "--connect-timeout 3000")
    try:
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError):
        return None


def measure_path(src, dst, args) -> dict:
    """Once dst answers a ping: pings for the RTT, then iperf3 runs (the
    destination runs `iperf3 -s`)."""
    warm = wait_reachable(src, dst.IP(), 30)
    sent, received, rtts = ping_rtts(src, dst.IP(), args.pings, 0.02)
    mbps = [iperf(src, dst.IP(), args.seconds) for _ in range(args.reps)]
    return {"first_reply_s": warm, "ping_sent": sent, "ping_received": received,
            "rtt_ms": {"p50": percentile(rtts, 50), "p95": percentile(rtts, 95),
                       "min": min(rtts, default=None), "max": max(rtts, default=None)},
            "mbps": summary(mbps)}


def measure_peer(lab, peer, port, args, measure=measure_path) -> dict:
    """Bring a peer up on the emptied lab and measure every path with
    measure(src, dst, args)."""
    bridges = [hv.name for hv in lab.network.hypervisors]
    reset_bridges(bridges)
    flush_neighbours(lab.net.hosts)
    timing = bring_up(peer, port, bridges)
    try:
        out = {"bring_up": timing, "paths": {}}
        for path, (a, b) in PATHS.items():
            out["paths"][path] = measure(lab.host(a), lab.host(b), args)
        out["packet_ins"] = peer.packet_ins()
        return out
    finally:
        peer.stop()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per iperf3 run")
    ap.add_argument("--reps", type=int, default=3, help="iperf3 runs per path")
    ap.add_argument("--pings", type=int, default=50)
    args = ap.parse_args(argv)

    files = {mode: write_temp(network_yaml(2, 2, 6, ids_port=True, default=default),
                              f"dataplane-{mode}.yaml")
             for mode, default in VGUARD_MODES.items()}
    base = files["isolation"]
    port = free_port()
    results = {}
    with Lab(base, controller=False, controller_port=port, core=CORE) as lab:
        bridges = [hv.name for hv in lab.network.hypervisors]
        for (a, b) in PATHS.values():
            lab.host(b).cmd("iperf3 -s -D")
        peers = [Normal(bridges), SimpleSwitch(), Faucet(lab.network)]
        peers += [Vguard(path, f"vguard {mode}") for mode, path in files.items()]
        for peer in peers:
            log(f"data plane: {peer.name}")
            try:
                results[peer.name] = measure_peer(lab, peer, port, args)
            except Exception as e:       # one failing peer must not hide the others
                log(f"  {peer.name} failed: {e}")
                results[peer.name] = {"error": str(e)}

    to_normal, to_normal_text = _ratios(results, args)
    mirror, mirror_text = ratio_block(
        f"Mirror cost: {MIRROR} / {ISOLATION}, same pairs, same run (the mirror "
        "issue's aim: 0.9 or better)",
        [(f"{path}: {MIRROR} / {ISOLATION}", _path(results, MIRROR, path),
          _path(results, ISOLATION, path)) for path in PATHS], args.pings)
    tables = [_table(results, args), to_normal_text, mirror_text]
    config = {"seconds": args.seconds, "reps": args.reps, "pings": args.pings,
              "ping_interval_s": 0.02, "paths": PATHS,
              "network_file": open(base).read(), "vguard_modes": VGUARD_MODES}
    save("dataplane", config, {"peers": results, "ratios": {
        "to OVS NORMAL": to_normal, f"{MIRROR} / {ISOLATION}": mirror}}, tables)
    return results


def _path(results, peer, path) -> dict:
    return results.get(peer, {}).get("paths", {}).get(path, {})


def _table(results, args) -> str:
    rows = []
    for peer, r in results.items():
        if "error" in r:
            rows.append([peer, "error"] + [None] * 4)
            continue
        row = [peer]
        for path in PATHS:
            p = _path(results, peer, path)
            row.append(spread(p["mbps"], 0))
            lost = p["ping_sent"] - p["ping_received"]
            row.append(f"{p['rtt_ms']['p50']:.3f} / {p['rtt_ms']['p95']:.3f}"
                       + (f" ({lost} lost)" if lost else ""))
        rows.append(row)
    headers = ["peer"]
    for path in PATHS:
        headers += [f"{path}: Mbit/s", f"{path}: RTT p50/p95 ms"]
    return print_table(f"Data plane: iperf3 TCP {args.reps} x {args.seconds:g} s, median "
                       f"(min-max); {args.pings} pings at 20 ms", headers, rows)


def _ratios(results, args):
    """Every peer to OVS NORMAL, per path."""
    lines = []
    for path in PATHS:
        ceiling = _path(results, "OVS NORMAL", path)
        lines += [(f"{path}: {peer} / OVS NORMAL", _path(results, peer, path), ceiling)
                  for peer in results if peer != "OVS NORMAL"]
    return ratio_block("Ratios to OVS NORMAL (throughput: higher is better; RTT: lower "
                       "is better)", lines, args.pings)


def compare(num: dict, den: dict) -> dict:
    """num / den of two path measurements: median throughput, median RTT."""
    if not num or not den:
        return {"throughput": None, "rtt_p50": None}
    return {"throughput": ratio(num["mbps"]["median"], den["mbps"]["median"]),
            "rtt_p50": ratio(num["rtt_ms"]["p50"], den["rtt_ms"]["p50"])}


def ratio_block(title: str, lines, pings: int):
    """Print lines like '  same hypervisor: A / B = 0.97 throughput (median
    of 3), 1.20 RTT (median of 50 pings)' for (label, num, den) triples;
    returns ({label: ratios}, text)."""
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}"   # noqa: E731
    out, text = {}, [title]
    for label, num, den in lines:
        r = out[label] = compare(num, den)
        n = num["mbps"]["n"] if num else 0
        text.append(f"  {label} = {fmt(r['throughput'])} throughput (median of {n}), "
                    f"{fmt(r['rtt_p50'])} RTT (median of {pings} pings)")
    text = "\n".join(text)
    print(text + "\n", flush=True)
    return out, text


if __name__ == "__main__":
    main()
