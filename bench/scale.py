"""Benchmark 5: how flows, compile time and memory grow with the network.

    .venv/bin/python -m bench.scale [--sizes 10,20,...,5000] [--reps 3]

Pure, no switches: for each size a fresh Python process generates a
network file (8 hypervisors, 8 segments, VMs spread over both), parses and
validates it (controller.model.parse) and compiles it
(controller.compiler.compile_network) `reps` times, and reports the flows
per hypervisor, the times, and its own peak RSS (what a controller holding
that network costs beyond the Ryu baseline, roughly). Plots flows and
compile time against VMs to bench/results/scale_*.png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from .common import RESULTS, REPO, log, network_yaml, print_table, save, spread, summary

SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
HYPERVISORS = SEGMENTS = 8


def one_size(vms: int, reps: int) -> dict:
    """Runs inside the child process."""
    from controller import model
    from controller.compiler import compile_network
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = network_yaml(HYPERVISORS, SEGMENTS, vms)
    t = time.perf_counter()
    net = model.parse(text, source=f"generated-{vms}")
    parse_s = time.perf_counter() - t
    times, flows = [], None
    for _ in range(reps):
        t = time.perf_counter()
        flows = compile_network(net)
        times.append(time.perf_counter() - t)
    per_hv = [len(f) for f in flows.values()]
    return {"vms": vms, "hypervisors": HYPERVISORS, "segments": SEGMENTS,
            "parse_s": parse_s, "compile_s": summary(times),
            "flows_per_hv": {"min": min(per_hv), "max": max(per_hv),
                             "median": statistics.median(per_hv)},
            "flows_total": sum(per_hv), "rss_before_mb": base_rss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def plot(rows: list[dict]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    vms = [r["vms"] for r in rows]
    out = []
    for name, ylabel, values, lo, hi in [
        ("scale_flows", "flow entries per hypervisor (median)",
         [r["flows_per_hv"]["median"] for r in rows],
         [r["flows_per_hv"]["min"] for r in rows], [r["flows_per_hv"]["max"] for r in rows]),
        ("scale_compile_time", "compile time, all hypervisors (s)",
         [r["compile_s"]["median"] for r in rows],
         [r["compile_s"]["min"] for r in rows], [r["compile_s"]["max"] for r in rows]),
    ]:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(vms, values, "o-", label="median")
        ax.fill_between(vms, lo, hi, alpha=0.3, label="min-max")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"VMs ({HYPERVISORS} hypervisors, {SEGMENTS} segments)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"vguard: {ylabel.split(',')[0].split('(')[0].strip()} vs VMs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = os.path.join(RESULTS, f"{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
        print(f"plot: {os.path.relpath(path, REPO)}", flush=True)
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)   # child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.reps)))
        return []
    rows = []
    for vms in map(int, args.sizes.split(",")):
        log(f"scale: {vms} VMs")
        out = subprocess.run([sys.executable, "-m", "bench.scale", "--one", str(vms),
                              "--reps", str(args.reps)], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
        rows.append(json.loads(out))
    table = print_table(
        f"Scale: {HYPERVISORS} hypervisors, {SEGMENTS} segments; compile = "
        f"compile_network for all hypervisors, median (min-max) of {args.reps}",
        ["VMs", "flows per hv (min-max)", "flows total", "parse s", "compile s",
         "peak RSS MB"],
        [[r["vms"], f"{r['flows_per_hv']['median']:.0f} ({r['flows_per_hv']['min']}-"
                    f"{r['flows_per_hv']['max']})", r["flows_total"],
          f"{r['parse_s']:.3f}", spread(r["compile_s"], 3), f"{r['peak_rss_mb']:.0f}"]
         for r in rows])
    os.makedirs(RESULTS, exist_ok=True)
    plots = plot(rows)
    save("scale", {"sizes": [r["vms"] for r in rows], "reps": args.reps,
                   "hypervisors": HYPERVISORS, "segments": SEGMENTS,
                   "plots": [os.path.relpath(p, REPO) for p in plots]}, rows, [table])
    return rows


if __name__ == "__main__":
    main()
