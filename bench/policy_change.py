"""Benchmark 4: how long a policy change through the REST API takes, until
every hypervisor confirms it (the data plane: bench/enforcement.py).

    .venv/bin/python -m bench.policy_change [--reps 5]
        [--sizes 2x20,10x10,10x50,10x100,50x2,50x20] [--no-lab]

Confirmation: PUT /api/v1/policy/default switches the whole network between
allow and mirror, `reps` times each way; the time is from sending the
request to its response, which vguard sends once every hypervisor has
confirmed the change (two-phase bundle commit, barriers), and the commit
time the controller reports (`seconds`). On emulated hypervisors
(bench/ofload switches that answer bundles, barriers and flow stats as OVS
does, from a flow table of their own; HYPERVISORSxVMS-PER-HYPERVISOR, 2
segments) and on a real 2-hypervisor lab (OVS applies the flow-mods).

Skipped if the write API is not in apps/rest_api.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
import urllib.error
import urllib.request

from topologies.lab import Lab

from . import ofload
from .common import (REPO, free_port, log, network_yaml, print_table, save, spread,
                     summary, write_temp)
from .peers import Vguard

DEFAULT = "/api/v1/policy/default"
SIZES = "2x20,10x10,10x50,10x100,50x2,50x20"     # hypervisors x VMs per hypervisor
# The real lab: its own names (OVS bridge names are global on the machine).
LAB_HVS, LAB_CORE, LAB_VMS = ("bc1", "bc2"), "bccore", 10
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api_present() -> bool:
    with open(os.path.join(REPO, "apps", "rest_api.py")) as f:
        return '/policy/default": {"PUT"' in f.read()


def put(base_url: str, token: str, path: str, mode: str) -> dict:
    """One write; wall-clock times (comparable with bench.pinger's) and the answer."""
    req = urllib.request.Request(
        base_url + path, data=json.dumps({"mode": mode}).encode(), method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    sent = time.time()
    try:
        with _http.open(req, timeout=60) as r:
            body, status = json.load(r), r.status
    except urllib.error.HTTPError as e:
        body, status = json.loads(e.read() or b"{}"), e.code
    answered = time.time()
    return {"mode": mode, "status": status, "sent": sent, "answered": answered,
            "client_s": answered - sent, "server_s": body.get("seconds"), "ok": body.get("ok"),
            "applied_to": len(body.get("applied_to") or []), "error": body.get("error")}


def switches(base_url: str, token: str, reps: int) -> list[dict]:
    """allow -> mirror -> allow ... `reps` times each way."""
    return [put(base_url, token, DEFAULT, mode)
            for _ in range(reps) for mode in ("mirror", "allow")]


def compile_ms(net, reps: int = 3) -> dict:
    """compile_network for the whole network in mirror mode, in this process:
    the part of each request that grows with VMs x hypervisors."""
    from controller.compiler import compile_network
    mirror = net.with_policy(net.policy.with_default("mirror"))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        compile_network(mirror)
        times.append((time.perf_counter() - t) * 1000)
    return summary(times)


# ------------------------------------------------------------ emulated hypervisors

def emulated(hypervisors: int, per_hv: int, reps: int, token: str) -> dict:
    from controller import model
    text = network_yaml(hypervisors, 2, per_hv * hypervisors, ids_port=True, prefix="bp",
                        dpid_base=0xB3_0000)
    path = write_temp(text, f"policy-{hypervisors}x{per_hv}.yaml")
    state = os.path.join(tempfile.mkdtemp(prefix="bq-state-"), "policy.json")
    peer = Vguard(path, args=["--state-file", state], env={"VGUARD_API_TOKEN": token})
    net = model.load(path)
    ports = sorted({1, 3} | {vm.port for vm in net.vms})
    port = free_port()
    base = f"http://127.0.0.1:{peer.rest_port}"

    def hold(_switches, _loop):
        return {"changes": switches(base, token, reps), "health": peer.health()}

    peer.start(port)
    try:
        peer.wait_listening()
        # report_flows: the controller's 2 s counter poll reads every flow back,
        # as from OVS, so its parsing competes with the changes as it would.
        out = asyncio.run(ofload.run(
            "127.0.0.1", port, [hv.dpid for hv in net.hypervisors], ports, [10],
            ofload.Shape(), [("hold", hold)], ready=peer.ready, connect_timeout=90,
            report_flows=True))
    finally:
        peer.stop()
    phase = out["phases"][0]
    changes = phase["result"]["changes"]
    # The emulated tables must hold what the controller says it committed.
    said = {int(d["dpid"], 16): d["flows"]
            for d in phase["result"]["health"]["datapaths"].values()}
    return {"hypervisors": hypervisors, "vms": len(net.vms), "changes": changes,
            "connected_and_ready_s": out["handshake_and_settle_s"],
            "flows_per_hv": summary(list(out["flows_by_dpid"].values())),
            "tables_match": out["flows_by_dpid"] == said,
            "flow_mods_per_change": phase["bundled"] / len(changes),
            "commits": phase["commits"], "compile_ms": compile_ms(net)}


# ------------------------------------------------------------ the real lab

def lab_yaml(vms: int = LAB_VMS) -> str:
    """2 hypervisors, 2 segments with no subnet (the VMs get /8, so a
    cross-segment ping needs no router), VMs alternating over segments and
    hypervisors: s0 = bca1 (bc1), bca2 (bc2), ...; s1 = bcb1 (bc2), bcb2 (bc1), ..."""
    lines = ["segments:", "  s0: {vlan: 100}", "  s1: {vlan: 101}", "hypervisors:"]
    lines += [f"  {hv}: {{dpid: {0xBC00 + i}, uplink_port: 1, ids_port: 3}}"
              for i, hv in enumerate(LAB_HVS, start=1)]
    lines.append("vms:")
    next_port = dict.fromkeys(LAB_HVS, 10)
    for i in range(vms):
        k, n = i % 2, i // 2 + 1
        hv = LAB_HVS[(n + k + 1) % 2]
        lines.append(f"  bc{'ab'[k]}{n}: {{hypervisor: {hv}, port: {next_port[hv]}, "
                     f"segment: s{k}, mac: \"02:bc:00:00:0{k}:{n:02x}\", ip: 10.{k}.0.{n}}}")
        next_port[hv] += 1
    lines += ["policy:", "  default: allow"]
    return "\n".join(lines) + "\n"


def real(reps: int, token: str) -> dict:
    path = write_temp(lab_yaml(), "policy-real.yaml")
    state = os.path.join(tempfile.mkdtemp(prefix="bc-state-"), "policy.json")
    os.environ["VGUARD_API_TOKEN"] = token        # the Lab's controller inherits it
    try:
        with Lab(path, controller_args=["--state-file", state], core=LAB_CORE) as lab:
            changes = switches(lab.rest_url, token, reps)
            flows = [d["flows"] for d in lab.status()["datapaths"].values()]
    finally:
        os.environ.pop("VGUARD_API_TOKEN", None)
    from controller import model
    return {"hypervisors": len(LAB_HVS), "vms": LAB_VMS, "changes": changes,
            "flows_per_hv": summary(flows), "compile_ms": compile_ms(model.load(path))}


# ------------------------------------------------------------ tables

def confirmation_row(name: str, r: dict) -> list:
    if "error" in r:
        return [name, None, None, None, "error", None, None, None]
    good = [c for c in r["changes"] if c["status"] == 200 and c["ok"]
            and c["applied_to"] == r["hypervisors"]]
    confirmed = f"{len(good)}/{len(r['changes'])}"
    if r.get("tables_match") is False:
        confirmed += " (switch tables differ!)"
    mods = r.get("flow_mods_per_change")
    return [name, r["vms"], spread(r["flows_per_hv"], 0),
            None if mods is None else f"{mods:.0f}",
            spread(summary([c["client_s"] * 1000 for c in good]), 1),
            spread(summary([(c["server_s"] or 0) * 1000 for c in good]), 1),
            spread(r["compile_ms"], 1), confirmed]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="default-mode changes each way")
    ap.add_argument("--sizes", default=SIZES,
                    help="emulated HYPERVISORSxVMS-PER-HYPERVISOR, comma-separated")
    ap.add_argument("--no-lab", action="store_true", help="emulated hypervisors only")
    args = ap.parse_args(argv)
    if not api_present():
        print(f"policy change: skipped: apps/rest_api.py has no PUT {DEFAULT} yet\n")
        save("policy_change", {"skipped": True}, {}, [])
        return {}
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",") if s]
    token = secrets.token_urlsafe(24)
    runs = [(f"{h} emulated x {v} VMs", lambda h=h, v=v: emulated(h, v, args.reps, token))
            for h, v in sizes]
    if not args.no_lab:
        runs.append((f"{len(LAB_HVS)} real (OVS) x {LAB_VMS // len(LAB_HVS)} VMs",
                     lambda: real(args.reps, token)))
    results = {}
    for name, run in runs:
        log(f"policy change: {name}")
        try:
            results[name] = run()
        except Exception as e:
            log(f"  {name} failed: {e}")
            results[name] = {"error": str(e)}
    tables = [print_table(
        f"Policy change: PUT {DEFAULT} allow <-> mirror, {args.reps} each way, until every "
        "hypervisor confirmed; ms, median (min-max)",
        ["hypervisors x VMs each", "VMs", "flows per hv", "flow-mods per change",
         "request to response ms", "commit (server) ms", "compile ms", "confirmed by all"],
        [confirmation_row(name, r) for name, r in results.items()])]
    save("policy_change", {"reps": args.reps, "sizes": sizes},
         results, tables)
    return results


if __name__ == "__main__":
    main()
