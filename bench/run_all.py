"""Run every benchmark, each in its own process with a time limit, then
write the tables with the machine they ran on into bench/README.md.

    bash bench/run_all.sh                 # installs what is missing first
    .venv/bin/python -m bench.run_all [scale controller_load ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .common import REPO, RESULTS, log, machine

# name -> time limit in seconds (the whole suite must stay under ~15 min)
BENCHMARKS = {
    "scale": 120,
    "controller_load": 240,
    "policy_change": 180,
    "enforcement": 240,
    "lifecycle": 900,
    "dataplane": 420,
    "convergence": 360,
    "restart": 240,
    "steering": 300,
    "flow_records": 600,
    "alert_latency": 300,
}
README = os.path.join(REPO, "bench", "README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def run(name: str, limit: int) -> dict:
    log(f"=== {name} (limit {limit} s)")
    t = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=REPO,
                              timeout=limit)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit} s"
    return {"status": status, "seconds": round(time.monotonic() - t, 1)}


def tables_of(name: str) -> list[str]:
    try:
        with open(os.path.join(RESULTS, f"{name}.json")) as f:
            return json.load(f).get("tables") or []
    except (OSError, ValueError):
        return []


def update_readme(outcome: dict, total: float) -> None:
    m = machine()
    lines = [START, "",
             f"Run of {m['date']} on {m['nproc']} x {m['cpu']}, kernel {m['kernel']}, "
             f"{m['ovs']}, Python {m['python']}; whole suite {total / 60:.1f} min; "
             f"1-minute load average at the end {m['load_avg_1m']:.2f} (other labs "
             "share this machine).", ""]
    for name, o in outcome.items():
        lines.append(f"### {name} ({o['status']}, {o['seconds']:.0f} s)")
        lines.append("")
        tables = tables_of(name) if o["status"] == "ok" else []
        lines += ["```", "\n\n".join(tables) if tables else "(no table)", "```", ""]
    lines.append(END)
    with open(README) as f:
        text = f.read()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + "\n".join(lines) + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines) + "\n"
    with open(README, "w") as f:
        f.write(text)
    log(f"tables written to {os.path.relpath(README, REPO)}")


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmarks {sorted(unknown)}; known: {list(BENCHMARKS)}")
        return 2
    t = time.monotonic()
    outcome = {name: run(name, BENCHMARKS[name]) for name in names}
    total = time.monotonic() - t
    for name, o in outcome.items():
        log(f"{name}: {o['status']} in {o['seconds']:.0f} s")
    log(f"all: {total / 60:.1f} min")
    with open(os.path.join(RESULTS, "run_all.json"), "w") as f:
        json.dump({"machine": machine(), "total_s": total, "benchmarks": outcome}, f,
                  indent=1)
    if set(names) == set(BENCHMARKS):
        update_readme(outcome, total)
    return 0 if all(o["status"] == "ok" for o in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
