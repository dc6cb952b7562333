"""Benchmark 1: the data plane under each controller, against OVS NORMAL.

    .venv/bin/python -m bench.dataplane [--seconds 5] [--reps 3] [--pings 50]
                                        [--pair-reps 4] [--pair-seconds 4]

One Mininet lab (2 hypervisors, 2 segments, 6 VMs, an IDS port on each
hypervisor) is built once; its bridges are secure-mode and pointed at one
OpenFlow port. Each peer in turn gets the same lab, emptied of flows,
meters and groups and with the hosts' ARP caches flushed:
  OVS NORMAL (the ceiling), simple_switch_13, Faucet, and one vguard
  process whose policy default is switched through the REST API between
  isolation (allow) and mirror (every allowed frame also copied to the
  IDS port).
Once both paths answer a ping (reactive peers have learned by then), it
measures TCP throughput (iperf3, reps x seconds) and ping RTT (pings at 20
ms) between two VMs of one segment on one hypervisor and across two.
vguard's two modes are measured paired (see paired()): pair-reps
repetitions of isolation, mirror, mirror, isolation.
Ratios: every peer to OVS NORMAL, and the cost of mirroring (vguard mirror
/ vguard isolation, the median of the per-repetition ratios). The remote
path is measured the same way on a second lab, the same but with no IDS
port: every copy goes in ERSPAN to the central IDS (vguard only: the other
peers have no such path). Steering has its own lab (a firewall):
bench.steering.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics

from topologies.lab import CENTRAL_IDS, Lab

from .common import (CORE, PREFIX, flush_neighbours, free_port, log, network_yaml,
                     ping_rtts, percentile, print_table, ratio, reset_bridges, rx_bytes, save,
                     spread, summary, wait_reachable, write_temp)
from .peers import Faucet, Normal, SimpleSwitch, Vguard, bring_up

MIRROR, ISOLATION = "vguard mirror", "vguard isolation"
ERSPAN_MIRROR = "vguard mirror, ERSPAN"
ERSPAN_SECTION = "mirror:\n  erspan: {remote_ip: 198.18.9.10, port: 3}\n"   # port 3: no IDS
# vguard modes measured: label -> policy default, the baseline first.
# Steering needs a firewall in the lab, which would reflect the other
# peers' floods back: it is measured on a lab of its own in
# bench/steering.py.
VGUARD_MODES = {ISOLATION: "allow", MIRROR: "mirror"}
# Segment s0: VMs 1 and 3 on hypervisor 1, VM 2 on hypervisor 2.
PATHS = {"same hypervisor": (f"{PREFIX}a1", f"{PREFIX}a3"),
         "across hypervisors": (f"{PREFIX}a1", f"{PREFIX}a2")}
# Slots of one repetition (0: the baseline mode, 1: the other): a load
# change on the shared machine that drifts steadily over a repetition then
# weighs the same on both modes.
ABBA = (0, 1, 1, 0)


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
            "rtt_ms": _rtt(rtts), "mbps": summary(mbps)}


def _rtt(rtts) -> dict:
    return {"p50": percentile(rtts, 50), "p95": percentile(rtts, 95),
            "min": min(rtts, default=None), "max": max(rtts, default=None)}


def paired(set_mode, modes: dict, src, dst, args, probe=None) -> dict:
    """Two modes of one vguard (modes: label -> what set_mode takes, the
    baseline first; e.g. Vguard.set_default and policy defaults) on one
    pair, interleaved: per repetition, slots in ABBA order, the mode set
    before each (set_mode answers once every hypervisor confirmed). A mode gets half its iperf3 time and
    pings per repetition in each of its two slots; its figure for the
    repetition is the mean throughput of the two and the median of all its
    pings, and the repetition's ratio is other / baseline. probe(): a dict
    of cumulative counters; their change over each slot is added up per
    mode."""
    labels = list(modes)
    reps = [{label: {"mbps": [], "rtts": []} for label in labels}
            for _ in range(args.pair_reps)]
    totals = {label: {"ping_sent": 0, "ping_received": 0, "counters": {}}
              for label in labels}
    slots = []
    for r, rep in enumerate(reps):
        for i in ABBA:
            label = labels[i]
            change = set_mode(modes[label])
            before = probe() if probe else {}
            reached = wait_reachable(src, dst.IP(), 10)
            sent, received, rtts = ping_rtts(src, dst.IP(), args.pings // 2, 0.02)
            mbps = iperf(src, dst.IP(), args.pair_seconds / 2) if reached is not None else None
            after = probe() if probe else {}
            rep[label]["mbps"].append(mbps)
            rep[label]["rtts"] += rtts
            t = totals[label]
            t["ping_sent"] += sent
            t["ping_received"] += received
            for k in after:
                t["counters"][k] = t["counters"].get(k, 0) + after[k] - before[k]
            slots.append({"rep": r, "mode": label, "mbps": mbps, "rtts": rtts,
                          "put_changed": change.get("changed"),
                          "put_seconds": change.get("seconds")})

    def mean(xs):
        return None if None in xs else statistics.mean(xs)

    per_rep = [{label: {"mbps": mean(m[label]["mbps"]),
                        "rtt_p50": percentile(m[label]["rtts"], 50) if m[label]["rtts"]
                        else None} for label in labels} for m in reps]
    out = {"modes": {}, "ratios": {}, "slots": slots}
    for label in labels:
        everything = [x for s in slots if s["mode"] == label for x in s["rtts"]]
        out["modes"][label] = {
            **totals[label], "rtt_ms": _rtt(everything),
            "mbps": summary(p[label]["mbps"] for p in per_rep),
            "rtt_p50_ms": summary(p[label]["rtt_p50"] for p in per_rep)}
    base, other = labels
    out["ratios"] = {"throughput": summary(ratio(p[other]["mbps"], p[base]["mbps"])
                                           for p in per_rep),
                     "rtt_p50": summary(ratio(p[other]["rtt_p50"], p[base]["rtt_p50"])
                                        for p in per_rep)}
    return out


def paired_block(title: str, pairs: dict, notes=()) -> tuple[dict, str]:
    """For each path's paired() result, a line with each mode's median
    (min-max) over the repetitions, then one like 'same hypervisor: B / A =
    0.96 throughput (median of 4 paired ratios, 0.91-0.99), 1.02 RTT (...)';
    then the notes. Returns ({label: ratios}, text)."""
    def ratio_text(s, what):
        if not s or s["median"] is None:
            return f"n/a {what}"
        return (f"{s['median']:.2f} {what} (median of {s['n']} paired ratios, "
                f"{s['min']:.2f}-{s['max']:.2f})")
    out, text = {}, [title]
    for path, p in pairs.items():
        if not p.get("modes"):
            text.append(f"  {path}: not measured")
            continue
        base, other = p["modes"]
        text.append(f"  {path}: " + "; ".join(
            f"{label} {spread(m['mbps'], 0)} Mbit/s, RTT p50 {spread(m['rtt_p50_ms'], 3)} ms"
            for label, m in p["modes"].items()))
        label = f"{path}: {other} / {base}"
        r = out[label] = p["ratios"]
        text.append(f"  {label} = {ratio_text(r['throughput'], 'throughput')}, "
                    f"{ratio_text(r['rtt_p50'], 'RTT')}")
    text = "\n".join(text + list(notes))
    print(text + "\n", flush=True)
    return out, text


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


def measurement_args(ap) -> None:
    """The knobs of a data-plane measurement (bench.steering has the same)."""
    ap.add_argument("--seconds", type=float, default=5.0, help="per iperf3 run")
    ap.add_argument("--reps", type=int, default=3, help="iperf3 runs per path")
    ap.add_argument("--pings", type=int, default=50)
    ap.add_argument("--pair-reps", type=int, default=4,
                    help="repetitions of the paired vguard modes (A B B A each)")
    ap.add_argument("--pair-seconds", type=float, default=4.0,
                    help="iperf3 seconds per vguard mode and repetition (two runs of half); "
                    "--pings is per mode and repetition too (two halves)")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    measurement_args(ap)
    args = ap.parse_args(argv)

    base = write_temp(network_yaml(2, 2, 6, ids_port=True), "dataplane.yaml")
    port = free_port()
    results, pairs = {}, {}
    with Lab(base, controller=False, controller_port=port, core=CORE) as lab:
        bridges = [hv.name for hv in lab.network.hypervisors]
        for (a, b) in PATHS.values():
            lab.host(b).cmd("iperf3 -s -D")
        for peer in [Normal(bridges), SimpleSwitch(), Faucet(lab.network)]:
            log(f"data plane: {peer.name}")
            try:
                results[peer.name] = measure_peer(lab, peer, port, args)
            except Exception as e:       # one failing peer must not hide the others
                log(f"  {peer.name} failed: {e}")
                results[peer.name] = {"error": str(e)}
        log(f"data plane: vguard, {ISOLATION} and {MIRROR} paired")
        ids = [lab.host(f"{hv}ids") for hv in bridges]
        vguard = Vguard(base, "vguard", token=secrets.token_hex(24))

        def measure(src, dst, args):
            # What the IDS ports and the destination received: mirroring
            # shows as IDS bytes close to the destination's, isolation as ~0.
            def probe():
                return {"ids_bytes": sum(rx_bytes(h) for h in ids),
                        "destination_bytes": rx_bytes(dst)}
            return paired(vguard.set_default, VGUARD_MODES, src, dst, args, probe)
        try:
            run = measure_peer(lab, vguard, port, args, measure)
            pairs = run["paths"]
            for label in VGUARD_MODES:
                results[label] = {"paths": {path: p["modes"][label]
                                            for path, p in pairs.items()}}
        except Exception as e:
            log(f"  vguard failed: {e}")
            for label in VGUARD_MODES:
                results[label] = {"error": str(e)}

    remote = _remote_mirror(port, args)
    table = _table(results, args)
    to_normal, to_normal_text = _ratios(results, args)
    mirror, mirror_text = paired_block(
        f"Mirror cost: {MIRROR} / {ISOLATION}, one controller switched by PUT between "
        f"them, ABBA x {args.pair_reps}, ratios within each repetition (the mirror "
        "issue's aim: 0.9 or better)", {path: pairs.get(path, {}) for path in PATHS},
        _mirrored(pairs, VGUARD_MODES, "IDS ports"))
    remote_modes = {ISOLATION: "allow", ERSPAN_MIRROR: "mirror"}
    erspan, erspan_text = paired_block(
        f"Remote mirror cost: {ERSPAN_MIRROR} / {ISOLATION}, the lab with no IDS port, "
        f"every copy encapsulated to the central IDS, ABBA x {args.pair_reps}",
        {path: remote.get(path, {}) for path in PATHS},
        _mirrored(remote, remote_modes, "the central IDS (ERSPAN, 50 bytes more a copy)"))
    tables = [table, to_normal_text, mirror_text, erspan_text]
    config = {"seconds": args.seconds, "reps": args.reps, "pings": args.pings,
              "pair_reps": args.pair_reps, "pair_seconds": args.pair_seconds,
              "pair_order": "ABBA", "ping_interval_s": 0.02, "paths": PATHS,
              "network_file": open(base).read(), "vguard_modes": VGUARD_MODES}
    save("dataplane", config, {"peers": results, "paired": pairs, "ratios": {
        "to OVS NORMAL": to_normal, f"{MIRROR} / {ISOLATION}": mirror,
        f"{ERSPAN_MIRROR} / {ISOLATION}": erspan}, "paired_erspan": remote}, tables)
    return results


def _remote_mirror(port: int, args) -> dict:
    """vguard's paired isolation / mirror on a lab whose hypervisors have no
    IDS port: the copies go in ERSPAN to the central IDS. Per path, as
    paired() returns it ({} if it failed)."""
    path = write_temp(network_yaml(2, 2, 6) + ERSPAN_SECTION, "dataplane-erspan.yaml")
    modes = {ISOLATION: "allow", ERSPAN_MIRROR: "mirror"}
    log(f"data plane: vguard, {ISOLATION} and {ERSPAN_MIRROR} paired")
    try:
        with Lab(path, controller=False, controller_port=port, core=CORE) as lab:
            for (_a, b) in PATHS.values():
                lab.host(b).cmd("iperf3 -s -D")
            ids = lab.host(CENTRAL_IDS)
            vguard = Vguard(path, "vguard", token=secrets.token_hex(24))

            def measure(src, dst, args):
                def probe():
                    return {"ids_bytes": rx_bytes(ids), "destination_bytes": rx_bytes(dst)}
                return paired(vguard.set_default, modes, src, dst, args, probe)
            return measure_peer(lab, vguard, port, args, measure)["paths"]
    except Exception as e:
        log(f"  vguard with ERSPAN failed: {e}")
        return {}


def _mirrored(pairs, modes, sensors: str) -> list[str]:
    """Lines saying what the IDS got in each mode, against what the
    destination got: evidence that the mirror slots really mirrored."""
    lines = []
    for path, p in pairs.items():
        c = {label: m["counters"] for label, m in p["modes"].items()}
        lines.append(f"  {path}: {sensors} received "
                     + ", ".join(f"{c[label]['ids_bytes'] / 1e6:.0f} MB under {label}"
                                 for label in modes)
                     + "; the destination "
                     + ", ".join(f"{c[label]['destination_bytes'] / 1e6:.0f} MB"
                                 for label in modes))
    return lines


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
                       f"(min-max); {args.pings} pings at 20 ms. vguard rows: {pair_note(args)}",
                       headers, rows)


def pair_note(args) -> str:
    return (f"{args.pair_reps} paired repetitions, per mode 2 x {args.pair_seconds / 2:g} s "
            f"(their mean; median (min-max) over repetitions) and 2 x {args.pings // 2} "
            "pings each")


def _ratios(results, args):
    """Every peer to OVS NORMAL, per path."""
    lines = []
    for path in PATHS:
        ceiling = _path(results, "OVS NORMAL", path)
        lines += [(f"{path}: {peer} / OVS NORMAL", _path(results, peer, path), ceiling)
                  for peer in results if peer != "OVS NORMAL"]
    return ratio_block("Ratios to OVS NORMAL (throughput: higher is better; RTT: lower "
                       "is better)", lines)


def compare(num: dict, den: dict) -> dict:
    """num / den of two path measurements: median throughput, median RTT."""
    if not num or not den:
        return {"throughput": None, "rtt_p50": None}
    return {"throughput": ratio(num["mbps"]["median"], den["mbps"]["median"]),
            "rtt_p50": ratio(num["rtt_ms"]["p50"], den["rtt_ms"]["p50"])}


def ratio_block(title: str, lines):
    """Print lines like '  same hypervisor: A / B = 0.97 throughput (medians
    of 3 and 3), 1.20 RTT (medians of 50 and 50 pings)' for (label, num,
    den) triples; returns ({label: ratios}, text). Unpaired: A and B were
    measured at different times."""
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}"   # noqa: E731
    out, text = {}, [title]
    for label, num, den in lines:
        r = out[label] = compare(num, den)
        n = [x["mbps"]["n"] if x else 0 for x in (num, den)]
        pings = [x.get("ping_received", 0) if x else 0 for x in (num, den)]
        text.append(f"  {label} = {fmt(r['throughput'])} throughput (medians of {n[0]} and "
                    f"{n[1]}), {fmt(r['rtt_p50'])} RTT (medians of {pings[0]} and "
                    f"{pings[1]} pings)")
    text = "\n".join(text)
    print(text + "\n", flush=True)
    return out, text


if __name__ == "__main__":
    main()
