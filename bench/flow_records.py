"""Benchmark 9: flow records and the trace, at the scale they must hold.

    .venv/bin/python -m bench.flow_records [--pair-reps 4] [--pair-seconds 4]
        [--rates 5000,10000,20000,40000,80000] [--rate-seconds 4] [--traces 100]

1. The data plane's cost of sampling. One Mininet lab (2 hypervisors, 2
   segments, 6 VMs) whose bridges export IPFIX to the controller's
   collector (the rows the README's ovs-vsctl line makes), one vguard whose
   network file is switched by POST /api/v1/reload between sampling off
   (both probabilities 0: no sample action anywhere) and the defaults
   (every refused packet, 1 % of the others). Paired as the mirror cost
   is (bench.dataplane.paired: ABBA, ratio within each repetition); the
   records the collector kept in each mode show the sampling was on.
2. The collector's intake. On the same lab, a generator on 127.0.0.1
   offers OVS-shaped IPFIX (the UDP-over-IPv4 template of a real OVS 3.1
   export, tests/data/ovs31-ipfix.hex; records naming entries the bridges
   really hold, their observation points read from the bridges' sample
   actions, and real VM pairs; one record a datagram, as OVS sends them)
   at fixed rates for a few seconds each. Per rate: records kept per
   second (until the socket's backlog is read too), records shed by the
   intake bound, the datagrams the kernel dropped, the controller's CPU,
   and how fast GET /api/v1/health answers meanwhile. Once with the bound
   lifted (what it keeps up with) and once at the default bound.
3. The trace's answer time: a controller with bench.lifecycle's
   10,001-VM file (100 hypervisors x 100 VMs; no switch connected: it
   traces over the entries they will get), GET /api/v1/trace for random VM
   pairs, and for one pair asked again (its switches parsed already).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import secrets
import socket
import struct
import threading
import time
import urllib.request

from controller import ipfix, model
from topologies import flowexport
from topologies.lab import Lab, free_udp_port

from .common import (CORE, REPO, free_port, log, network_yaml, ofctl, percentile,
                     print_table, save, spread, summary, write_temp)
from .dataplane import PATHS, measurement_args, measure_peer, paired, paired_block
from .lifecycle import fabric_yaml
from .peers import Vguard, bring_up

OFF, DEFAULTS = "sampling off", "sampling at the defaults"
OFF_SECTION = "flow_records: {denied: 0, allowed: 0}\n"
CAPTURE = os.path.join(REPO, "tests", "data", "ovs31-ipfix.hex")
TEMPLATE_ID = 61000          # ours: the bridges' own templates stay as they are
LIFTED = 10_000_000          # --flow-intake for the ceiling run
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ------------------------------------------------------------ IPFIX generator

def udp_template() -> tuple:
    """The fields of the captured export's UDP-over-IPv4 template."""
    templates = ipfix.Templates()
    with open(CAPTURE) as f:
        for line in f:
            if line.strip():
                ipfix.decode(bytes.fromhex(line), "capture", templates)
    wanted = {4, 7, 8, 11, 12, 56, 80, 138}     # proto, ports, IPv4, MACs, point
    for fields in templates.known.values():
        elements = {e for e, _, ent in fields if not ent}
        if fields != ipfix.OPTIONS and wanted <= elements and 27 not in elements:
            return fields
    raise SystemExit(f"{CAPTURE}: no UDP-over-IPv4 template in the capture")


def template_set(fields: tuple) -> bytes:
    body = struct.pack("!HH", TEMPLATE_ID, len(fields))
    for element, size, enterprise in fields:
        body += struct.pack("!HH", element | (0x8000 if enterprise else 0), size)
        if enterprise:
            body += struct.pack("!I", enterprise)
    return struct.pack("!HH", ipfix.TEMPLATE_SET, 4 + len(body)) + body


def record(fields: tuple, values: dict) -> bytes:
    """One data record: the values given, zeros (or empty) elsewhere."""
    out = b""
    for element, size, enterprise in fields:
        value = None if enterprise else values.get(element)
        if size == ipfix.VARIABLE:
            out += b"\x00"
        elif value is None:
            out += bytes(size)
        elif isinstance(value, bytes):
            out += value.rjust(size, b"\x00")[-size:]
        else:
            out += value.to_bytes(size, "big")
    return out


def message(domain: int, sequence: int, sets: bytes) -> bytes:
    return struct.pack("!HHIII", ipfix.VERSION, 16 + len(sets), int(time.time()),
                       sequence, domain) + sets


def data_sets(fields: tuple, points: dict, pairs: list, count: int) -> list:
    """`count` (domain, data set) of one record each, as OVS 3.1 sends them
    (one record a datagram: checked on the capture). points: domain -> its
    observation points; pairs: VMs ((mac, ip), (mac, ip)) that talk."""
    rng = random.Random(7)
    domains = sorted(points)
    out = []
    for n in range(count):
        domain = domains[n % len(domains)]
        (smac, sip), (dmac, dip) = rng.choice(pairs)
        body = record(fields, {
            56: bytes.fromhex(smac.replace(":", "")),
            80: bytes.fromhex(dmac.replace(":", "")), 256: 0x0800,
            8: ipaddress.IPv4Address(sip).packed, 12: ipaddress.IPv4Address(dip).packed,
            4: 17, 7: rng.randrange(1024, 65536), 11: 53, 2: 1, 1: 120,
            138: rng.choice(points[domain])})
        out.append((domain, struct.pack("!HH", TEMPLATE_ID, 4 + len(body)) + body))
    return out


def observation_points(bridges) -> dict:
    """domain -> the observation points of the sample actions each bridge holds."""
    found = {}
    for bridge in bridges:
        for d, p in re.findall(r"obs_domain_id=(\d+),obs_point_id=(\d+)",
                               ofctl(bridge, "dump-flows")):
            found.setdefault(int(d), set()).add(int(p))
    return {d: sorted(p) for d, p in found.items()}


def offer(peer, collector: tuple, fields, pool: list, rate: int, seconds: float) -> dict:
    """Send pool's datagrams round-robin at `rate` a second for `seconds`;
    then, once the collector has read everything (its message count still
    for 0.5 s), what it kept and shed, and its CPU until then.
    Meanwhile a thread asks GET /api/v1/health every 100 ms: the REST
    answer time during the flood shows whether the rest of the controller
    still gets its turn."""
    def status():
        return peer.health()["flow_collector"]
    answers, sending_done = [], threading.Event()

    def ask_health():
        while not sending_done.is_set():
            t = time.perf_counter()
            try:
                peer.health()
                answers.append((time.perf_counter() - t) * 1000)
            except OSError:
                answers.append(None)
            sending_done.wait(0.1)
    asker = threading.Thread(target=ask_health, daemon=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for domain in sorted({d for d, _ in pool}):       # templates first
            sock.sendto(message(domain, 0, template_set(fields)), collector)
        time.sleep(0.5)
        before, cpu0, t0 = status(), peer.cpu_seconds(), time.monotonic()
        asker.start()
        sent = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            while sent < elapsed * rate:
                domain, data = pool[sent % len(pool)]
                sock.sendto(message(domain, sent, data), collector)
                sent += 1
            time.sleep(0.002)
        sending = time.monotonic() - t0
    finally:
        sending_done.set()
        sock.close()
    asker.join()
    # Reading ended by the last poll (every 0.1 s) that saw the count move.
    after, read_until, still_since = status(), time.monotonic(), time.monotonic()
    while time.monotonic() - still_since < 0.5:
        time.sleep(0.1)
        now = status()
        if now["messages"] != after["messages"]:
            after, read_until, still_since = now, time.monotonic(), time.monotonic()
    wall = read_until - t0
    cpu = peer.cpu_seconds() - cpu0
    delta = {k: (after[k] or 0) - (before[k] or 0) for k in
             ("messages", "records", "dropped_messages", "malformed", "unknown_rule",
              "unknown_domain", "kernel_drops")}
    return {"offered_per_s": rate, "sent_records": sent, "sending_s": sending,
            "wall_s": wall, "kept": delta["records"],
            "kept_per_s": delta["records"] / max(wall, sending),   # backlog read too
            "sent_per_s": sent / sending,
            "kept_share": delta["records"] / sent if sent else None,
            "shed_by_bound": delta["dropped_messages"],
            "kernel_dropped_datagrams": delta["kernel_drops"],
            "unknown_rule": delta["unknown_rule"], "malformed": delta["malformed"],
            "cpu_share": cpu / max(wall, sending),
            "health_ms": summary(answers), "health_failed": answers.count(None),
            "health_p95_ms": percentile([a for a in answers if a is not None], 95)}


def intake(lab, port: int, network_path: str, args) -> dict:
    """Part 2 on the lab of part 1: per bound, per offered rate."""
    bridges = [hv.name for hv in lab.network.hypervisors]
    by_segment = {}
    for vm in lab.network.vms:
        by_segment.setdefault(vm.segment, []).append((vm.mac, str(vm.ip)))
    pairs = [(a, b) for seg in by_segment.values() for a in seg for b in seg if a != b]
    fields = udp_template()
    out = {}
    for label, bound in (("bound lifted", LIFTED), ("default bound", None)):
        udp = free_udp_port()
        extra = ["--flow-collector", f"127.0.0.1:{udp}"]
        if bound is not None:
            extra += ["--flow-intake", str(bound)]
        peer = Vguard(network_path, "vguard", args=extra, token=secrets.token_hex(24))
        log(f"flow records: intake, {label}")
        try:
            bring_up(peer, port, bridges)
            points = observation_points(bridges)
            pool = data_sets(fields, points, pairs, 1000)
            out[label] = {"rates": [offer(peer, ("127.0.0.1", udp), fields, pool, rate,
                                          args.rate_seconds) for rate in args.rates]}
            out[label]["intake_per_second"] = peer.health()["flow_collector"][
                "intake_per_second"]
        except Exception as e:
            log(f"  failed: {e}")
            out[label] = {"error": str(e)}
        finally:
            peer.stop()
    return out


# ------------------------------------------------------------ the lab: sampling cost, intake

def on_the_lab(args, port: int) -> tuple[dict, dict]:
    """Part 1, then part 2 on the same lab: (paired results per path, intake)."""
    base = network_yaml(2, 2, 6)
    path = write_temp(base, "flowrec.yaml")
    udp = free_udp_port()
    texts = {OFF: base + OFF_SECTION, DEFAULTS: base}
    label_of = {text: label for label, text in texts.items()}
    sampling_entries = {label: [] for label in texts}    # per slot, on all bridges

    def set_mode(text: str) -> dict:
        with open(path, "w") as f:
            f.write(text)
        answer = vguard.reload()
        sampling_entries[label_of[text]].append(sum(
            ofctl(hv.name, "dump-flows").count("sample(") for hv in lab.network.hypervisors))
        return answer

    vguard = Vguard(path, "vguard", args=["--flow-collector", f"127.0.0.1:{udp}"],
                    token=secrets.token_hex(24))
    with Lab(path, controller=False, controller_port=port, core=CORE) as lab:
        rows = flowexport.configure(lab.network, f"127.0.0.1:{udp}")
        try:
            for (_a, b) in PATHS.values():
                lab.host(b).cmd("iperf3 -s -D")

            def probe():
                return {"records_kept": vguard.health()["flow_collector"]["records"]}

            def measure(src, dst, args):
                return paired(set_mode, texts, src, dst, args, probe)
            log(f"flow records: {OFF} and {DEFAULTS} paired")
            try:
                pairs = measure_peer(lab, vguard, port, args, measure)["paths"]
            except Exception as e:
                log(f"  failed: {e}")
                pairs = {}
            for path_result in pairs.values():
                path_result["sampling_entries"] = sampling_entries
            flowexport.remove(rows)
            rows = []
            with open(path, "w") as f:
                f.write(base)
            # The generator's records are the only ones: no bridge exports now.
            return pairs, intake(lab, port, path, args)
        finally:
            flowexport.remove(rows)


# ------------------------------------------------------------ trace

def trace_time(args) -> dict:
    path = write_temp(fabric_yaml(100, 100), "trace-100x100.yaml")
    net = model.load(path)
    running = [vm.name for vm in net.vms if vm.port is not None]
    peer = Vguard(path, "vguard")
    peer.start(free_port())
    log(f"flow records: trace on {len(net.vms)} VMs, {len(net.hypervisors)} hypervisors")

    def ask(src: str, dst: str) -> tuple[float, dict]:
        url = (f"http://127.0.0.1:{peer.rest_port}/api/v1/trace?src={src}&dst={dst}"
               "&proto=tcp&dport=443")
        t = time.perf_counter()
        with _http.open(url, timeout=600) as r:
            doc = json.load(r)
        return (time.perf_counter() - t) * 1000, doc

    try:
        peer.wait_listening()
        deadline = time.monotonic() + 120
        while True:
            try:
                peer.health()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        rng = random.Random(11)
        first_ms, _ = ask(*rng.sample(running, 2))      # the fabric compiles its entries
        random_ms, verdicts, hops = [], {}, []
        for _ in range(args.traces):
            ms, doc = ask(*rng.sample(running, 2))
            random_ms.append(ms)
            verdicts[doc["verdict"]] = verdicts.get(doc["verdict"], 0) + 1
            hops.append(len(doc["path"]))
        pair = rng.sample(running, 2)
        ask(*pair)
        again_ms = [ask(*pair)[0] for _ in range(args.traces)]
        return {"vms": len(net.vms), "hypervisors": len(net.hypervisors),
                "first_ms": first_ms, "random_pairs_ms": summary(random_ms),
                "random_p95_ms": percentile(random_ms, 95), "verdicts": verdicts,
                "hops": summary(hops), "same_pair_ms": summary(again_ms),
                "same_pair_p95_ms": percentile(again_ms, 95),
                "rss_mb": peer.rss_mb()}
    finally:
        peer.stop()


# ------------------------------------------------------------ main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    measurement_args(ap)
    ap.add_argument("--rates", default="5000,10000,20000,40000,80000",
                    type=lambda s: [int(x) for x in s.split(",")],
                    help="offered records/s, comma-separated")
    ap.add_argument("--rate-seconds", type=float, default=4.0)
    ap.add_argument("--traces", type=int, default=100)
    args = ap.parse_args(argv)

    port = free_port()
    pairs, taken = on_the_lab(args, port)
    traced = trace_time(args)

    cost, cost_text = paired_block(
        f"Sampling cost: {DEFAULTS} / {OFF}, one controller switched by reload between "
        f"them, ABBA x {args.pair_reps}, ratios within each repetition",
        {path: pairs.get(path, {}) for path in PATHS}, _kept(pairs))
    intake_text = _intake_table(taken)
    trace_text = print_table(
        f"Trace answer time, GET /api/v1/trace over HTTP, {traced['vms']} VMs on "
        f"{traced['hypervisors']} hypervisors (entries they will get; none connected)",
        ["question", "median (min-max) ms", "p95 ms"],
        [["the first (the fabric compiles every hypervisor's entries)",
          f"{traced['first_ms']:.0f}", ""],
         [f"{args.traces} random VM pairs (mostly switches not parsed yet)",
          spread(traced["random_pairs_ms"], 1), f"{traced['random_p95_ms']:.1f}"],
         [f"one pair, {args.traces} times (its switches kept)",
          spread(traced["same_pair_ms"], 1), f"{traced['same_pair_p95_ms']:.1f}"]])
    config = {"pair_reps": args.pair_reps, "pair_seconds": args.pair_seconds,
              "pings": args.pings, "rates": args.rates, "rate_seconds": args.rate_seconds,
              "traces": args.traces, "paths": PATHS, "off_section": OFF_SECTION}
    results = {"paired": pairs, "sampling_ratio": cost, "intake": taken, "trace": traced}
    save("flow_records", config, results, [cost_text, intake_text, trace_text])
    return results


def _kept(pairs) -> list[str]:
    """Evidence that each mode was what it says: entries with a sample
    action on the bridges after each switch, and the records kept."""
    lines = []
    for p in list(pairs.values())[:1]:
        lines.append("  entries with a sample action (both bridges, at each switch): " + ", ".join(
            f"{sorted(set(n))} under {label}" for label, n in p["sampling_entries"].items()))
    for path, p in pairs.items():
        kept = {label: m["counters"].get("records_kept", 0) for label, m in p["modes"].items()}
        lines.append(f"  {path}: records the collector kept: "
                     + ", ".join(f"{n} under {label}" for label, n in kept.items()))
    return lines


def _intake_table(taken: dict) -> str:
    rows = []
    for label, t in taken.items():
        if "error" in t:
            rows.append([label, "error", t["error"][:60], "", "", "", "", ""])
            continue
        for r in t["rates"]:
            rows.append([f"{label} ({t['intake_per_second']:,}/s)",
                         f"{r['sent_per_s']:,.0f}", f"{r['kept_per_s']:,.0f}",
                         f"{r['kept_share']:.1%}", f"{r['shed_by_bound']:,}",
                         f"{r['kernel_dropped_datagrams']:,}", f"{r['cpu_share']:.0%}",
                         f"{spread(r['health_ms'], 1)}" + (f" ({r['health_failed']} failed)"
                                                          if r["health_failed"] else "")])
    return print_table(
        "Collector intake: OVS-shaped IPFIX from 127.0.0.1, one record a datagram as "
        "OVS sends them; kept = decoded, joined to VMs and rules, stored and logged",
        ["intake bound", "sent records/s", "kept records/s", "kept share",
         "shed by the bound", "datagrams the kernel dropped", "controller CPU (1 core = 100%)",
         "GET /health meanwhile, ms"],
        rows)


if __name__ == "__main__":
    main()
