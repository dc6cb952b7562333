"""Benchmark 3: the controller under packet-in load, with emulated switches.

    .venv/bin/python -m bench.controller_load [--switches 4] [--reps 3]

bench/ofload.py emulates N switches against each controller in turn: first
a trivial responder (the generator's own ceiling), then simple_switch_13,
Faucet and vguard. Every packet-in comes from a new source MAC, so each
controller has a host to learn each time:
  simple_switch_13  learns it and answers with a FLOW_MOD and a PACKET_OUT;
  Faucet            learns it (FLOW_MODs); ignore_learn_ins is set to 0 so it
                    does not skip every 10th packet-in on purpose, and
                    max_hosts to 0 (no limit; the default 256 per VLAN would
                    stop learning within a second);
  vguard            learns it on a learning port (max_hosts 4096, the most the
                    file allows), recompiles, and commits the new entries to
                    every switch in one two-phase bundle commit; the answer is
                    the bundle commit. On a real switch the packet-in meter
                    (options.packet_in_rate, default 100/s) would cap this
                    path long before the controller does; an emulated switch
                    has no meter, so this measures the controller alone. The
                    learn ban (options.learn_ban_rate, 10 new MACs/s per port)
                    would ban every port at once: it is lifted here
                    (learn_ban_rate 1,000,000), as Faucet's max_hosts is.
Each emulated switch sends what a real switch would send under that
controller's pipeline (packet-in cookie, reason, VLAN tag).
"""
from __future__ import annotations

import argparse
import asyncio

from controller import model
from controller.compiler import compile_network

from . import ofload
from .common import (log, network_yaml, print_table, save, spread, summary, write_temp,
                     free_port)
from .peers import Faucet, Responder, SimpleSwitch, Vguard

DPID_BASE = 0xB2_0000
UPLINK, LEARNING_PORTS = 1, (10, 11, 12, 13)
FAUCET_COOKIE = 1524372928          # Faucet's default dp cookie (strict_packet_in_cookie)


def vguard_shapes(net: model.Network) -> dict:
    """dpid -> Shape: the cookie of vguard's own 'learn' entry on each port."""
    flows = compile_network(net)
    shapes = {}
    for hv in net.hypervisors:
        cookies = {dict(f.match)["in_port"]: f.cookie for f in flows[hv.name]
                   if f.reason == "learn"}
        shapes[hv.dpid] = ofload.Shape(cookies=cookies, reason=ofload.OFPR_ACTION)
    return shapes


def measure(peer, dpids, ports, shapes, phases, ready=None) -> dict:
    port = free_port()
    peer.start(port)
    try:
        peer.wait_listening()
        return asyncio.run(ofload.run("127.0.0.1", port, dpids, ports, list(LEARNING_PORTS),
                                      shapes, phases, ready=ready))
    finally:
        peer.stop()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--switches", type=int, default=4)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--throughput-seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3, help="throughput repetitions")
    args = ap.parse_args(argv)

    text = network_yaml(args.switches, 1, args.switches, learning_ports=LEARNING_PORTS,
                        learning_max_hosts=4096, dpid_base=DPID_BASE, prefix="bl") + \
        "options:\n  learn_ban_rate: 1000000\n"
    path = write_temp(text, "load.yaml")
    net = model.load(path)
    dpids = [hv.dpid for hv in net.hypervisors]
    ports = sorted({UPLINK, *LEARNING_PORTS} | {vm.port for vm in net.vms})
    vid = net.segments[0].vlan
    phases = [("latency", args.latency_seconds)] + \
        [("throughput", args.throughput_seconds)] * args.reps

    vguard = Vguard(path)
    targets = [
        ("trivial responder", Responder(), ofload.Shape(), None),
        ("simple_switch_13", SimpleSwitch(), ofload.Shape(reason=ofload.OFPR_NO_MATCH), None),
        ("Faucet", Faucet(net, ignore_learn_ins=0, max_hosts=0),
         ofload.Shape(cookies={p: FAUCET_COOKIE for p in LEARNING_PORTS},
                      vlans={p: vid for p in LEARNING_PORTS}), None),
        ("vguard", vguard, vguard_shapes(net), vguard.ready),
    ]
    results = {}
    for name, peer, shapes, ready in targets:
        log(f"controller load: {name}")
        try:
            results[name] = measure(peer, dpids, ports, shapes, phases, ready)
        except Exception as e:          # one failing peer must not hide the others
            log(f"  {name} failed: {e}")
            results[name] = {"error": str(e)}

    ceiling = _throughput(results.get("trivial responder", {}))
    rows_t, rows_l = [], []
    for name, r in results.items():
        if "error" in r:
            rows_t.append([name, "error", None, None, None])
            rows_l.append([name, "error", None, None, None, None])
            continue
        tput = _throughput(r)
        lost = sum(p["lost"] for p in r["phases"] if p["mode"] == "throughput")
        sent = sum(p["sent"] for p in r["phases"] if p["mode"] == "throughput")
        tl = summary([p["latency_ms"]["p50"] for p in r["phases"] if p["mode"] == "throughput"])
        ratio = (f"{tput['median'] / ceiling['median']:.3f}"
                 if tput["median"] and ceiling.get("median") else None)
        rows_t.append([name, spread(tput, 0), ratio, spread(tl, 1), f"{lost}/{sent}"])
        lat = next(p for p in r["phases"] if p["mode"] == "latency")
        lm = lat["latency_ms"]
        rows_l.append([name, f"{lat['answers_per_s']:.0f}",
                       *(f"{lm[k]:.2f}" if lm[k] is not None else None
                         for k in ("p50", "p95", "p99")),
                       f"{lat['lost']}/{lat['sent']}"])
    tables = [
        print_table(f"Controller load, throughput mode: {args.switches} emulated switches, "
                    f"{ofload.WINDOW} packet-ins outstanding each, {args.reps} x "
                    f"{args.throughput_seconds:.0f} s; median (min-max)",
                    ["controller", "answers/s", "/ generator ceiling",
                     "latency p50 ms", "lost/sent"], rows_t),
        print_table(f"Controller load, latency mode: {args.switches} switches, one "
                    f"packet-in outstanding each, {args.latency_seconds:.0f} s",
                    ["controller", "answers/s", "p50 ms", "p95 ms", "p99 ms",
                     "lost/sent"], rows_l),
    ]
    config = {"switches": args.switches, "ports": ports, "learning_ports": LEARNING_PORTS,
              "window": ofload.WINDOW, "lost_after_s": ofload.LOST_AFTER,
              "phases": phases, "network_file": text}
    save("controller_load", config, results, tables)
    return results


def _throughput(r: dict) -> dict:
    return summary([p["answers_per_s"] for p in r.get("phases", [])
                    if p["mode"] == "throughput"])


if __name__ == "__main__":
    main()
