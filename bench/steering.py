"""Benchmark 7: steering through a firewall, against direct switching and a
physical firewall path.

    .venv/bin/python -m bench.steering [--seconds 5] [--reps 3] [--pings 50]
                                       [--pair-reps 4] [--pair-seconds 4]

1. A lab (2 hypervisors, 1 segment, 3 VMs, a firewall port on each
   hypervisor) with the lab's firewall host `fw`: a hairpin Linux bridge per
   link, nftables accepting everything behind one counter. One vguard
   process runs on it, its policy default switched through the REST API
   between direct (allow) and steered (steer: every frame between the VMs
   goes out the firewall port and back), paired as in bench.dataplane
   (pair-reps repetitions of direct, steer, steer, direct). Same pairs as
   bench.dataplane: two VMs on one hypervisor, and across two.
2. The physical picture before consolidation, no controller: host -- OVS
   bridge (standalone, NORMAL) -- firewall (a plain two-port Linux bridge,
   br_netfilter, the same ruleset) -- OVS bridge -- host; measured as in
   bench.dataplane (iperf3 TCP reps x seconds, pings at 20 ms).
Each row has a firewall counter on the pair's packets over its
measurement, so a steered row shows its traffic crossed the firewall and a
direct row shows it did not.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import tempfile

from mininet.net import Mininet
from mininet.node import OVSBridge

from topologies import firewall
from topologies.lab import Lab, disable_offload

from .common import (CORE, PREFIX, free_port, log, network_yaml, print_table, rx_bytes,
                     save, spread, write_temp)
from .dataplane import (PATHS, measure_path, measure_peer, measurement_args, pair_note, paired,
                        paired_block, ratio_block)
from .peers import Vguard

# label -> policy default, the baseline first
MODES = {"vguard direct": "allow", "vguard steer": "steer"}
DIRECT, STEER = MODES
PHYSICAL = "physical firewall path"
PHYSICAL_PATH = "two bridges + firewall"


def pair_counter(fw, src, dst):
    """A firewall counter on the pair's IPv4 packets (the base ruleset's own
    counter also sees the hosts' IPv6 autoconfiguration noise); returns a
    probe: the counter and the bytes the destination received so far. The
    firewall counts IP bytes, retransmissions of frames the userspace
    datapath lost after it included, so for a steered pair it is close to,
    and usually a little above, what the destination received; for a
    direct pair, 0."""
    ips = f"{{ {src.IP()}, {dst.IP()} }}"
    firewall.rules(fw, f'ip saddr {ips} ip daddr {ips} counter comment "pair"')

    def probe() -> dict:
        listing = fw.cmd(f"nft list chain inet {firewall.TABLE} forward")
        m = re.search(r'counter packets (\d+) bytes (\d+) comment "pair"', listing)
        if not m:
            raise RuntimeError(f"no pair counter on the firewall:\n{listing}")
        return {"packets": int(m.group(1)), "bytes": int(m.group(2)),
                "destination_received_bytes": rx_bytes(dst)}
    return probe


def counted(fw):
    """measure_path, with the pair's firewall counter over it."""
    def measure(src, dst, args) -> dict:
        probe = pair_counter(fw, src, dst)
        before = probe()
        out = measure_path(src, dst, args)
        out["counters"] = {k: v - before[k] for k, v in probe().items()}
        return out
    return measure


def physical(args) -> dict:
    """The physical baseline: its own small Mininet, torn down on return."""
    a, b, fw = f"{PREFIX}pa", f"{PREFIX}pb", f"{PREFIX}fw"
    left, right = f"{PREFIX}A", f"{PREFIX}B"
    net = Mininet(controller=None)
    pidfile = os.path.join(tempfile.mkdtemp(prefix=f"{PREFIX}-steering-"), "iperf3.pid")
    try:
        for n, br in enumerate((left, right), start=1):
            # No digit in the names for Mininet to derive a dpid from.
            net.addSwitch(br, cls=OVSBridge, datapath="user", dpid=f"{0xB5E0 + n:016x}")
        net.addHost(a, ip="10.99.0.1/24")
        net.addHost(b, ip="10.99.0.2/24")
        net.addHost(fw, ip=None)
        # Host sides first: makeIntfPair creates the pair in node1's namespace.
        net.addLink(a, left, intfName1=f"{a}-eth0", intfName2=f"{left}-p1")
        net.addLink(fw, left, intfName1=f"{fw}-eth0", intfName2=f"{left}-p2")
        net.addLink(fw, right, intfName1=f"{fw}-eth1", intfName2=f"{right}-p2")
        net.addLink(b, right, intfName1=f"{b}-eth0", intfName2=f"{right}-p1")
        net.start()
        disable_offload(net)                 # every host interface, the firewall's too
        fwh = net.get(fw)                    # counted() loads the lab's ruleset on it
        for cmd in ("sysctl -qw net.bridge.bridge-nf-call-iptables=1",
                    "ip link add br0 type bridge",
                    f"ip link set {fw}-eth0 master br0", f"ip link set {fw}-eth1 master br0",
                    "ip link set br0 up"):
            firewall.run(fwh, cmd)
        net.get(b).cmd(f"iperf3 -s -D -I {pidfile}")
        return {"paths": {PHYSICAL_PATH: counted(fwh)(net.get(a), net.get(b), args)}}
    finally:
        # A daemon outlives its Mininet shell and would keep the namespace.
        if os.path.exists(pidfile):
            net.get(b).cmd(f"kill $(cat {pidfile})")
        net.stop()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    measurement_args(ap)
    args = ap.parse_args(argv)

    network = write_temp(network_yaml(2, 1, 3, firewall_port=True), "steering.yaml")
    port = free_port()
    results, pairs = {}, {}
    with Lab(network, controller=False, controller_port=port, core=CORE) as lab:
        # Without its own controller the lab leaves the firewall unwired
        # (other peers would flood into it); here only vguard runs.
        fw = lab.host(firewall.HOST)
        firewall.configure(fw, lab.network)
        for (_a, b) in PATHS.values():
            lab.host(b).cmd("iperf3 -s -D")
        log(f"steering: {DIRECT} and {STEER} paired")
        vguard = Vguard(network, "vguard", token=secrets.token_hex(24))
        try:
            pairs = measure_peer(lab, vguard, port, args, lambda src, dst, args: paired(
                vguard.set_default, MODES, src, dst, args, pair_counter(fw, src, dst)))["paths"]
            for label in MODES:
                results[label] = {"paths": {path: p["modes"][label]
                                            for path, p in pairs.items()}}
        except Exception as e:       # the physical path must still be measured
            log(f"  vguard failed: {e}")
            for label in MODES:
                results[label] = {"error": str(e)}
    log(f"steering: {PHYSICAL}")
    try:
        results[PHYSICAL] = physical(args)
    except Exception as e:
        log(f"  {PHYSICAL} failed: {e}")
        results[PHYSICAL] = {"error": str(e)}

    def get(label, path):
        return results[label].get("paths", {}).get(path, {})

    tables = [_table(results, args)]
    paired_ratios, text = paired_block(
        f"Steering cost: {STEER} / {DIRECT}, one controller switched by PUT between "
        f"them, ABBA x {args.pair_reps}, ratios within each repetition (throughput: "
        "higher is better; RTT: lower is better)",
        {path: pairs.get(path, {}) for path in PATHS})
    tables.append(text)
    physical_ratios, text = ratio_block(
        "Against the physical firewall path, measured after the lab (unpaired)",
        [(f"{path}: {STEER} / {PHYSICAL}", get(STEER, path),
          get(PHYSICAL, PHYSICAL_PATH)) for path in PATHS])
    tables.append(text)
    config = {"seconds": args.seconds, "reps": args.reps, "pings": args.pings,
              "pair_reps": args.pair_reps, "pair_seconds": args.pair_seconds,
              "pair_order": "ABBA", "ping_interval_s": 0.02, "paths": PATHS,
              "modes": MODES, "network_file": open(network).read(),
              "firewall_ruleset": firewall.BASE_RULESET}
    save("steering", config, {"runs": results, "paired": pairs,
                              "ratios": {**paired_ratios, **physical_ratios}}, tables)
    return results


def _table(results, args) -> str:
    rows = []
    for label, r in results.items():
        if "error" in r:
            rows.append([label, "error"] + [None] * 4)
            continue
        for path, p in r["paths"].items():
            lost = p["ping_sent"] - p["ping_received"]
            fw = p["counters"]
            rows.append([label, path, spread(p["mbps"], 0),
                         f"{p['rtt_ms']['p50']:.3f} / {p['rtt_ms']['p95']:.3f}"
                         + (f" ({lost} lost)" if lost else ""),
                         f"{fw['packets']} pkts, {fw['bytes'] / 1e6:.0f} MB",
                         f"{fw['destination_received_bytes'] / 1e6:.0f} MB"])
    return print_table(
        f"Steering: iperf3 TCP {args.reps} x {args.seconds:g} s, median (min-max); "
        f"{args.pings} pings at 20 ms; vguard rows: {pair_note(args)}; the firewall's "
        "counter on the pair's IPv4 packets over the row's measurement, and what the "
        "destination received",
        ["setup", "path", "Mbit/s", "RTT p50/p95 ms", "firewall counter",
         "destination received"],
        rows)


if __name__ == "__main__":
    main()
