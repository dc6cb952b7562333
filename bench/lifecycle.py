"""Benchmark: VM lifecycle — boot, stop, migration — and reload, until every
hypervisor is programmed; and a live migration on real OVS.

    .venv/bin/python -m bench.lifecycle [--reps 5] [--sizes 10x100,50x20] [--no-lab]

Emulated fabrics (bench/ofload switches that handle bundles as OVS does),
HYPERVISORSxVMS-PER-HYPERVISOR placed by the file, plus one VM bound by
interface name (`mover0`), down at start. Each event is what a hypervisor's
bridge reports: boot = a port named mover0 appears on hypervisor 1;
stop = it goes; migration = it goes from hypervisor 1 and appears on
hypervisor 2 at once. The time is from the port-status sent to the last
bundle commit any switch received for it (then 0.3 s without another
commit); the flow-mods are those the event cost, over all switches. Reload:
POST /api/v1/reload of the file with one VM's IP changed, to its answer
(every switch confirmed). An event recompiles only the hosts it touches
(Compiled.update); the reload parses and validates the whole file, then
commits only the difference.

Real OVS (bench lab, names lb*): a VM bound by interface migrates between
two hypervisors under a ping every 10 ms from a third VM; the gap between
the last reply before and the first reply after, and the pings lost.
"""
from __future__ import annotations

import argparse
import asyncio
import secrets
import time

from topologies import probes
from topologies.lab import Lab

from . import ofload
from .common import free_port, log, network_yaml, print_table, save, spread, summary, \
    write_temp
from .peers import Vguard

MOVER_PORT, MOVER_NAME = 999, "mover0"
QUIET = 0.3
SIZES = "10x100,50x20,100x100"


def fabric_yaml(hypervisors: int, per_hv: int) -> str:
    text = network_yaml(hypervisors, 2, hypervisors * per_hv, ids_port=True, prefix="bl",
                        dpid_base=0xB5_0000)
    mover = ('  blmover: {interface: mover0, segment: s0, mac: "02:b5:ff:00:00:01", '
             'ip: 10.0.250.1}\n')
    return text.replace("policy:", mover + "policy:", 1)


def _programmed(switches, before: list[int], t0: float, timeout: float = 30.0) -> float:
    """Wait until a commit has reached every switch that got one and none
    came for QUIET seconds; the time from t0 to the last commit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max(s.last_commit_at for s in switches)
        if any(s.commits > b for s, b in zip(switches, before)) and \
                time.monotonic() - last > QUIET:
            return last - t0
        time.sleep(0.002)
    raise TimeoutError("no switch was programmed for the event")


def _event(switches, loop, actions) -> dict:
    """Send port-status messages [(switch index, reason)] at once; time and cost."""
    before = [s.commits for s in switches]
    mods = [s.bundled for s in switches]
    t0 = time.monotonic()
    for index, reason in actions:
        loop.call_soon_threadsafe(switches[index].port_status, reason, MOVER_PORT, MOVER_NAME)
    seconds = _programmed(switches, before, t0)
    return {"ms": seconds * 1000,
            "flow_mods": sum(s.bundled for s in switches) - sum(mods),
            "switches_changed": sum(1 for s, b in zip(switches, before) if s.commits > b)}


def _reload(peer, path: str) -> dict:
    """One VM's address changed in the file, then POST /api/v1/reload."""
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace("ip: 10.0.0.1}", "ip: 10.0.249.1}", 1)
                if "ip: 10.0.0.1}" in text else text.replace("ip: 10.0.249.1}",
                                                             "ip: 10.0.0.1}", 1))
    t = time.monotonic()
    doc = peer.reload()
    return {"ms": (time.monotonic() - t) * 1000, "ok": doc.get("ok"),
            "applied_to": len(doc.get("applied_to") or [])}


def emulated(hypervisors: int, per_hv: int, reps: int) -> dict:
    from controller import model
    path = write_temp(fabric_yaml(hypervisors, per_hv), f"life-{hypervisors}x{per_hv}.yaml")
    token = secrets.token_urlsafe(24)
    peer = Vguard(path, token=token)
    net = model.load(path)
    ports = sorted({1, 3} | {vm.port for vm in net.vms if vm.port})

    def hold(switches, loop):
        out = {"boot": [], "stop": [], "migration": [], "reload": []}
        for _ in range(reps):
            out["boot"].append(_event(switches, loop, [(0, ofload.PPR_ADD)]))
            out["migration"].append(_event(switches, loop, [(0, ofload.PPR_DELETE),
                                                            (1, ofload.PPR_ADD)]))
            out["stop"].append(_event(switches, loop, [(1, ofload.PPR_DELETE)]))
            out["reload"].append(_reload(peer, path))
        return out

    port = free_port()
    peer.start(port)
    try:
        peer.wait_listening()
        result = asyncio.run(ofload.run(
            "127.0.0.1", port, [hv.dpid for hv in net.hypervisors], ports, [10],
            ofload.Shape(), [("hold", hold)], ready=peer.ready, connect_timeout=900,
            report_flows=True))
    finally:
        peer.stop()
    phase = result["phases"][0]["result"]
    return {"hypervisors": hypervisors, "vms": len(net.vms),
            "flows_per_hv": summary(list(result["flows_by_dpid"].values())),
            "events": phase}


def real(migrations: int) -> dict:
    text = """\
segments:
  s0: {vlan: 710}
hypervisors:
  lb1: {dpid: 0xb601, uplink_port: 1}
  lb2: {dpid: 0xb602, uplink_port: 1}
  lb3: {dpid: 0xb603, uplink_port: 1}
vms:
  lbpinger: {hypervisor: lb3, port: 10, segment: s0, mac: "02:b6:00:00:00:01", ip: 10.71.0.1}
  lbmover: {interface: lb-mover, segment: s0, mac: "02:b6:00:00:00:02", ip: 10.71.0.2}
policy:
  default: allow
"""
    path = write_temp(text, "life-real.yaml")
    rows = []
    with Lab(path, core="lbcore", placement={"lbmover": "lb1"}) as lab:
        stream = probes.PingStream(lab.host("lbpinger"), "10.71.0.2")
        time.sleep(1)
        moves = []
        for n in range(migrations):
            t = time.time()
            lab.migrate("lbmover", "lb2" if n % 2 == 0 else "lb1")
            moves.append((t, time.time()))
            time.sleep(1.5)
        replies = sorted(stream.stop().replies)
    for started, done in moves:
        before = [t for t, _ in replies if t < started]
        after = [t for t, _ in replies if t > started]
        seqs_before = [s for t, s in replies if t < started]
        seqs_after = [s for t, s in replies if t > started]
        rows.append({"lab_call_ms": (done - started) * 1000,
                     "first_reply_after_ms": (after[0] - started) * 1000 if after else None,
                     "gap_ms": (after[0] - before[-1]) * 1000 if after and before else None,
                     "lost": (seqs_after[0] - seqs_before[-1] - 1)
                     if seqs_after and seqs_before else None})
    return {"migrations": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sizes", default=SIZES, help="HYPERVISORSxVMS-PER-HYPERVISOR, ...")
    ap.add_argument("--migrations", type=int, default=6, help="on real OVS")
    ap.add_argument("--no-lab", action="store_true")
    args = ap.parse_args(argv)
    results = {}
    for size in filter(None, args.sizes.split(",")):
        h, v = (int(x) for x in size.split("x"))
        log(f"lifecycle: {h} emulated hypervisors x {v} VMs")
        try:
            results[size] = emulated(h, v, args.reps)
        except Exception as e:
            log(f"  {size} failed: {e}")
            results[size] = {"error": str(e)}
    rows = []
    for size, r in results.items():
        if "error" in r:
            rows.append([size, "error", r["error"][:60], "", "", ""])
            continue
        for event in ("boot", "migration", "stop", "reload"):
            samples = r["events"][event]
            rows.append([size, r["vms"], event, spread(summary([s["ms"] for s in samples]), 1),
                         spread(summary([s.get("flow_mods") for s in samples]), 0),
                         spread(summary([s.get("switches_changed", s.get("applied_to"))
                                         for s in samples]), 0)])
    tables = [print_table(
        f"VM lifecycle on emulated hypervisors: port-status (or reload) to every hypervisor "
        f"programmed; ms, median (min-max) of {args.reps}",
        ["hypervisors x VMs each", "VMs", "event", "ms", "flow-mods (all switches)",
         "switches changed"], rows)]
    if not args.no_lab:
        log("lifecycle: real OVS migration under a 10 ms ping")
        results["real"] = real(args.migrations)
        m = results["real"]["migrations"]
        tables.append(print_table(
            "Live migration on real OVS (tap leaves lb1's bridge, joins lb2's under a new "
            "ofport) under a ping every 10 ms; ms, median (min-max)",
            ["migrations", "first reply after the move began", "gap between replies",
             "pings lost"],
            [[len(m), spread(summary([x["first_reply_after_ms"] for x in m]), 1),
              spread(summary([x["gap_ms"] for x in m]), 1),
              spread(summary([x["lost"] for x in m]), 0)]]))
    save("lifecycle", {"reps": args.reps, "sizes": args.sizes}, results, tables)
    return results


if __name__ == "__main__":
    main()
