"""Benchmark 6: a controller restart under traffic.

    .venv/bin/python -m bench.restart [--reps 3]

One lab (2 hypervisors, bridges in secure mode), shared by the peers. For
each peer and repetition: the controller is brought up and the path
learned, a ping runs across hypervisors every 50 ms, and after 2 s the
controller is stopped and started again the way Lab.restart_controller
does it (SIGTERM to its process group, SIGKILL after 5 s, a new process).
Measured: echo requests lost over the whole ping, and the seconds from the
stop until the bridges are connected again (OVS reconnects on its own
backoff schedule, as it would in production) and until the controller
says it is ready (vguard: health ready; Faucet: dp_status; simple_switch_13
cannot say, so connected is used).
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import time

from topologies.lab import Lab

from .common import (CORE, PREFIX, flush_neighbours, free_port, log, network_yaml,
                     print_table, reset_bridges, save, spread, summary, wait_reachable,
                     write_temp)
from .peers import Faucet, SimpleSwitch, Vguard, bring_up

SRC, DST = f"{PREFIX}a1", f"{PREFIX}a2"   # segment s0, on hypervisors 1 and 2
INTERVAL, BEFORE, AFTER = 0.05, 2.0, 3.0


def one_restart(lab, peer, port) -> dict:
    bridges = [hv.name for hv in lab.network.hypervisors]
    src, dst_ip = lab.host(SRC), lab.host(DST).IP()
    ping = src.popen(["ping", "-n", "-i", str(INTERVAL), "-W", "1", dst_ip],
                     stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(BEFORE)
        t_stop = time.monotonic()
        peer.stop()
        stopped = time.monotonic() - t_stop
        # OVS reconnects on its own schedule (backoff 1, 2, 4, 8 s), as in real life.
        timing = bring_up(peer, port, bridges, prompt=False)
        since_stop = {k: v + stopped for k, v in timing.items()}
        time.sleep(AFTER)
    finally:
        ping.send_signal(signal.SIGINT)
        out = ping.communicate(timeout=10)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return {"stop_s": stopped, **{f"{k}_after_stop": v for k, v in since_stop.items()},
            "ping_sent": sent, "ping_lost": sent - received}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    path = write_temp(network_yaml(2, 2, 4), "restart.yaml")
    port = free_port()
    results = {}
    with Lab(path, controller=False, controller_port=port, core=CORE) as lab:
        bridges = [hv.name for hv in lab.network.hypervisors]
        for peer in [SimpleSwitch(), Faucet(lab.network), Vguard(path)]:
            log(f"restart: {peer.name}")
            runs = []
            try:
                reset_bridges(bridges)
                flush_neighbours(lab.net.hosts)
                bring_up(peer, port, bridges)
                if wait_reachable(lab.host(SRC), lab.host(DST).IP(), 30) is None:
                    raise RuntimeError(f"{SRC} cannot reach {DST}")
                for rep in range(args.reps):
                    runs.append(one_restart(lab, peer, port))
            except Exception as e:
                log(f"  {peer.name} failed: {e}")
                runs.append({"error": str(e)})
            finally:
                peer.stop()
            results[peer.name] = runs

    rows = []
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        col = lambda key: summary([r.get(key) for r in ok])  # noqa: E731
        rows.append([name, spread(col("ping_lost"), 0),
                     spread(summary([r["ping_sent"] for r in ok]), 0),
                     spread(col("connected_s_after_stop"), 2),
                     spread(col("ready_s_after_stop"), 2),
                     f"{len(ok)}/{args.reps}"])
    tables = [print_table(
        f"Restart under a {INTERVAL * 1000:.0f} ms ping across hypervisors "
        f"({SRC} -> {DST}); median (min-max) of {args.reps} restarts",
        ["controller", "pings lost", "pings sent", "connected again s", "ready again s",
         "runs ok"], rows)]
    save("restart", {"reps": args.reps, "interval_s": INTERVAL, "before_s": BEFORE,
                     "after_s": AFTER}, results, tables)
    return results


if __name__ == "__main__":
    main()
