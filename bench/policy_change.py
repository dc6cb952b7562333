"""Benchmark 4: how long a policy change through the REST API takes.

    .venv/bin/python -m bench.policy_change [--reps 5]

PUT /api/v1/policy/default switches the whole network between allow and
mirror, `reps` times each way; the time is from sending the request to its
response, which vguard sends once every hypervisor has confirmed the
change (two-phase bundle commit, barriers). On 2 and 10 emulated
hypervisors (bench/ofload switches: they confirm at once, so this is the
controller's own cost) and on a real 2-hypervisor lab (OVS applies the
flow-mods). Each network has 20 VMs per hypervisor and 2 segments.
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
from .common import (CORE, REPO, free_port, log, network_yaml, print_table, save, spread,
                     summary, write_temp)
from .peers import Vguard

ENDPOINT = "/api/v1/policy/default"
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api_present() -> bool:
    with open(os.path.join(REPO, "apps", "rest_api.py")) as f:
        return '/policy/default": {"PUT"' in f.read()


def put_default(base_url: str, token: str, mode: str) -> dict:
    req = urllib.request.Request(
        base_url + ENDPOINT, data=json.dumps({"mode": mode}).encode(), method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    t = time.monotonic()
    try:
        with _http.open(req, timeout=60) as r:
            body, status = json.load(r), r.status
    except urllib.error.HTTPError as e:
        body, status = json.loads(e.read() or b"{}"), e.code
    return {"mode": mode, "status": status, "client_s": time.monotonic() - t,
            "server_s": body.get("seconds"), "ok": body.get("ok"),
            "applied_to": len(body.get("applied_to") or []), "error": body.get("error")}


def switches(base_url: str, token: str, reps: int) -> list[dict]:
    """allow -> mirror -> allow ... `reps` times each way."""
    return [put_default(base_url, token, mode)
            for _ in range(reps) for mode in ("mirror", "allow")]


def emulated(hypervisors: int, reps: int, token: str) -> dict:
    text = network_yaml(hypervisors, 2, 20 * hypervisors, ids_port=True, prefix="bp",
                        dpid_base=0xB3_0000)
    path = write_temp(text, f"policy-{hypervisors}.yaml")
    state = os.path.join(tempfile.mkdtemp(prefix="bq-state-"), "policy.json")
    peer = Vguard(path, args=["--state-file", state], env={"VGUARD_API_TOKEN": token})
    from controller import model
    net = model.load(path)
    ports = sorted({1, 3} | {vm.port for vm in net.vms})
    port = free_port()
    peer.start(port)
    try:
        peer.wait_listening()
        base = f"http://127.0.0.1:{peer.rest_port}"
        out = asyncio.run(ofload.run(
            "127.0.0.1", port, [hv.dpid for hv in net.hypervisors], ports, [10],
            ofload.Shape(), [("hold", lambda: switches(base, token, reps))],
            ready=peer.ready))
        return {"changes": out["phases"][0]["result"], "vms": len(net.vms),
                "hypervisors": hypervisors}
    finally:
        peer.stop()


def real(reps: int, token: str) -> dict:
    path = write_temp(network_yaml(2, 2, 40, ids_port=True), "policy-real.yaml")
    state = os.path.join(tempfile.mkdtemp(prefix="bq-state-"), "policy.json")
    os.environ["VGUARD_API_TOKEN"] = token        # the Lab's controller inherits it
    try:
        with Lab(path, controller_args=["--state-file", state], core=CORE) as lab:
            return {"changes": switches(lab.rest_url, token, reps), "vms": 40,
                    "hypervisors": 2}
    finally:
        os.environ.pop("VGUARD_API_TOKEN", None)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="changes each way")
    args = ap.parse_args(argv)
    if not api_present():
        print(f"policy change: skipped: apps/rest_api.py has no PUT {ENDPOINT} yet\n")
        save("policy_change", {"skipped": True}, {}, [])
        return {}
    token = secrets.token_urlsafe(24)
    results = {}
    for name, run in [("2 emulated hypervisors", lambda: emulated(2, args.reps, token)),
                      ("10 emulated hypervisors", lambda: emulated(10, args.reps, token)),
                      ("2 real hypervisors (OVS)", lambda: real(args.reps, token))]:
        log(f"policy change: {name}")
        try:
            results[name] = run()
        except Exception as e:
            log(f"  {name} failed: {e}")
            results[name] = {"error": str(e)}
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, None, "error", None, None])
            continue
        good = [c for c in r["changes"] if c["status"] == 200 and c["ok"]
                and c["applied_to"] == r["hypervisors"]]
        rows.append([name, r["vms"], spread(summary([c["client_s"] * 1000 for c in good]), 1),
                     spread(summary([(c["server_s"] or 0) * 1000 for c in good]), 1),
                     f"{len(good)}/{len(r['changes'])}"])
    tables = [print_table(
        f"Policy change: PUT {ENDPOINT} allow <-> mirror, {args.reps} each way; "
        "ms, median (min-max)",
        ["hypervisors", "VMs", "request to response ms", "commit (server) ms",
         "confirmed by all"], rows)]
    save("policy_change", {"reps": args.reps, "endpoint": ENDPOINT}, results, tables)
    return results


if __name__ == "__main__":
    main()
