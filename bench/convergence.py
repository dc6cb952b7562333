"""Benchmark 2: convergence of a 48-VM, 4-hypervisor lab under each controller.

    .venv/bin/python -m bench.convergence [--reps 3] [--vms 48 --hypervisors 4]

One lab (4 segments spread over every hypervisor), built once; for each
peer and repetition the bridges are emptied, the hosts' ARP caches flushed,
and every VM starts pinging 3 VMs of its own segment (two on other
hypervisors, one on its own; every VM is a source and a target) in a loop
before the controller starts. Measured from the controller's start (for
OVS NORMAL: from adding the NORMAL flows, which gives the probe's floor):
  listening  the controller accepts TCP connections (its start-up time)
  connected  every bridge has an OpenFlow connection to it (the bridges are
             pointed at it again once it listens, so OVS's reconnect
             backoff, up to 8 s, is not counted against the controller)
  ready      the controller says so (vguard: health ready; Faucet: dp_status)
  reachable  the last sampled pair answered its first ping
then the packet-ins the controller handled (vguard: health packet_ins;
simple_switch_13: its 'packet in' log lines; Faucet: of_packet_ins_total),
the flows on each bridge (ovs-ofctl dump-flows) and the controller's RSS.
ARP retransmits every 200 ms in the hosts (not 1 s) so that the probe
itself does not add up to a second.
"""
from __future__ import annotations

import argparse
import subprocess
import time

from topologies.lab import Lab

from .common import (CORE, flow_count, flush_neighbours, free_port, log,
                     network_yaml, print_table, reset_bridges, save, spread, summary,
                     write_temp)
from .peers import Faucet, Normal, SimpleSwitch, Vguard, bring_up

DEADLINE = 60          # seconds a probe keeps trying


def targets(network) -> dict[str, list[str]]:
    """VM -> 3 VMs of its segment: the next two in the segment's list (on
    other hypervisors, as the file spreads a segment round-robin) and the
    one a full hypervisor round away (on its own hypervisor)."""
    by_segment = {}
    for vm in network.vms:
        by_segment.setdefault(vm.segment, []).append(vm.name)
    hops = (1, 2, len(network.hypervisors))
    return {name: sorted({vms[(i + h) % len(vms)] for h in hops} - {name})
            for vms in by_segment.values() for i, name in enumerate(vms)}


PROBE = """
end=$(( $(date +%s) + {deadline} ))
for ip in {ips}; do
  ( while [ $(date +%s) -lt $end ]; do
      if ping -n -c1 -W 0.5 $ip >/dev/null 2>&1; then echo "OK $ip $(date +%s.%N)"; exit 0; fi
      sleep 0.05
    done; echo "FAIL $ip" ) &
done
wait
"""


def start_probes(lab, pairs) -> dict:
    ip = {vm.name: str(vm.ip) for vm in lab.network.vms}
    return {src: lab.host(src).popen(
        ["bash", "-c", PROBE.format(deadline=DEADLINE,
                                    ips=" ".join(ip[d] for d in dsts))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for src, dsts in pairs.items()}


def one_run(lab, peer, port, pairs) -> dict:
    bridges = [hv.name for hv in lab.network.hypervisors]
    reset_bridges(bridges)
    flush_neighbours(lab.net.hosts)
    probes = start_probes(lab, pairs)
    time.sleep(1.0)                      # every probe is running and failing
    t0 = time.time()
    try:
        timing = bring_up(peer, port, bridges)
        answered, failed = [], 0
        for proc in probes.values():
            out, _ = proc.communicate(timeout=DEADLINE + 15)
            for line in out.splitlines():
                if line.startswith("OK "):
                    answered.append(float(line.split()[2]) - t0)
                else:
                    failed += 1
        return {**timing, "reachable_s": max(answered) if not failed else None,
                "pair_first_reply_s": summary(answered), "pairs": len(answered) + failed,
                "pairs_failed": failed, "packet_ins": peer.packet_ins(),
                "flows": {br: flow_count(br) for br in bridges}, "rss_mb": peer.rss_mb()}
    finally:
        for proc in probes.values():
            if proc.poll() is None:
                proc.kill()
        peer.stop()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--vms", type=int, default=48)
    ap.add_argument("--hypervisors", type=int, default=4)
    ap.add_argument("--segments", type=int, default=4)
    args = ap.parse_args(argv)

    text = network_yaml(args.hypervisors, args.segments, args.vms)
    path = write_temp(text, "convergence.yaml")
    port = free_port()
    results = {}
    log(f"convergence: building a lab of {args.vms} VMs on {args.hypervisors} hypervisors")
    with Lab(path, controller=False, controller_port=port, core=CORE) as lab:
        bridges = [hv.name for hv in lab.network.hypervisors]
        for vm in lab.network.vms:
            lab.host(vm.name).cmd(f"sysctl -qw net.ipv4.neigh.{vm.name}-eth0."
                                  "retrans_time_ms=200")
        pairs = targets(lab.network)
        peers = [Normal(bridges), SimpleSwitch(), Faucet(lab.network), Vguard(path)]
        for peer in peers:
            runs = []
            for rep in range(args.reps):
                log(f"convergence: {peer.name} run {rep + 1}/{args.reps}")
                try:
                    runs.append(one_run(lab, peer, port, pairs))
                except Exception as e:
                    log(f"  {peer.name} failed: {e}")
                    runs.append({"error": str(e)})
            results[peer.name] = runs

    rows = []
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        col = lambda key: summary([r.get(key) for r in ok])  # noqa: E731
        flows = summary([n for r in ok for n in r["flows"].values()])
        failed = sum(r["pairs_failed"] for r in ok)
        rows.append([name, spread(col("listening_s"), 2), spread(col("connected_s"), 2),
                     spread(col("ready_s"), 2),
                     spread(col("reachable_s"), 2) + (f" ({failed} pairs failed)"
                                                      if failed else ""),
                     spread(col("packet_ins"), 0), spread(flows, 0),
                     spread(col("rss_mb"), 0), f"{len(ok)}/{len(runs)}"])
    n_pairs = sum(len(d) for d in pairs.values())
    tables = [print_table(
        f"Convergence: {args.vms} VMs, {args.hypervisors} hypervisors, {args.segments} "
        f"segments, {n_pairs} same-segment pairs sampled (every VM a source and a target); "
        f"seconds from controller start, median (min-max) of {args.reps}",
        ["peer", "listening s", "connected s", "ready s", "all pairs reachable s", "packet-ins",
         "flows per bridge", "RSS MB", "runs ok"], rows)]
    config = {"vms": args.vms, "hypervisors": args.hypervisors, "segments": args.segments,
              "reps": args.reps, "pairs": pairs, "network_file": text,
              "probe": "ping -c1 -W 0.5 every 50 ms until answered; ARP retrans 200 ms"}
    save("convergence", config, results, tables)
    return results


if __name__ == "__main__":
    main()
