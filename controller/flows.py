"""Flow records: IPFIX samples joined to VMs, segments, verdicts and rules.

Pure: the collector (apps/collector.py) hands in decoded samples with the
entry that sampled them; this keeps the newest records, bounded, answers
the API's questions, and adds up the traffic matrix. Each IPFIX record
counts packets already scaled by the exporter (OVS adds 1/probability per
sample): estimates, exact for refusals at the default (every packet).
"""
from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass, replace

from .compiler import Judgement
from .model import Network
from .pipeline import Flow

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
ETH_TYPES = {0x0806: "arp", 0x8035: "rarp", 0x0800: "ipv4", 0x86DD: "ipv6",
             0x88B5: "probe"}
MERGE_SECONDS = 60.0           # samples of one flow this close make one record
VERDICTS = ("allowed", "refused")
FILTERS = ("vm", "segment", "verdict", "reason", "hypervisor", "since", "until")


class FlowQueryError(ValueError):
    pass


def parse_address(text: str) -> tuple[str, int]:
    """The collector's HOST:PORT ([v6]:PORT); an empty host: every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"flow collector address must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Record:
    hypervisor: str
    src_mac: str
    dst_mac: str
    src_vm: str | None
    dst_vm: str | None
    src_segment: str | None
    dst_segment: str | None
    proto: str
    src_ip: str | None
    dst_ip: str | None
    src_port: int | None
    dst_port: int | None
    verdict: str
    reason: str
    rule: dict
    mirrored: bool
    steered: bool
    sampling: float
    packets: int
    bytes: int
    first_seen: float
    last_seen: float

    def to_dict(self) -> dict:
        d = dict(vars(self))
        # OVS already scales each sample by 1/probability: packets and bytes
        # are estimates; `sampled` is how many packets it actually saw.
        d["sampled"] = round(self.packets * self.sampling)
        return d


class Directory:
    """MAC -> (name, segment) for one network: VMs, gateways, learned hosts.
    Neither where VMs run nor their leases matter: MACs and segments are
    the file's."""

    def __init__(self, net: Network, learned=frozenset()):
        self.net, self.learned = net, learned
        self.by_mac: dict[str, tuple[str, str]] = {}
        for seg in net.segments:
            for gw in seg.gateways:
                self.by_mac[gw.mac] = (f"gateway:{gw.ip or gw.mac}", seg.name)
        for vm in net.vms:
            self.by_mac[vm.mac] = (vm.name, vm.segment)
        for lh in learned:
            hv = next((h for h in net.hypervisors if h.name == lh.hypervisor), None)
            lp = next((p for p in hv.learning_ports if p.port == lh.port), None) if hv else None
            if lp is not None:
                self.by_mac.setdefault(lh.mac, (f"learned:{lh.mac}", lp.segment))

    def who(self, mac: str) -> tuple[str | None, str | None]:
        return self.by_mac.get(mac, (None, None))


def proto_name(sample: dict) -> str:
    if "ip_proto" in sample:
        return PROTOCOLS.get(sample["ip_proto"], str(sample["ip_proto"]))
    eth_type = sample.get("eth_type")
    return ETH_TYPES.get(eth_type, f"0x{eth_type:04x}" if eth_type is not None else "?")


class FlowStore:
    """The newest `capacity` records, merged per flow; and running totals
    per segment pair and (bounded) per VM pair."""

    def __init__(self, capacity: int = 10_000, vm_pairs: int = 10_000):
        self.capacity, self.vm_pairs_cap = capacity, vm_pairs
        self.records: OrderedDict[tuple, Record] = OrderedDict()   # oldest first
        self.segment_pairs = defaultdict(lambda: [0, 0, 0, 0])     # pkts, bytes, refused p, b
        self.vm_pairs: OrderedDict[tuple, list] = OrderedDict()
        self.vm_pairs_dropped = 0        # pairs pushed out of the bounded VM matrix

    def add(self, sample: dict, hypervisor: str, entry: Flow, judged: Judgement,
            probability: float, directory: Directory, now: float) -> Record:
        """Keep one decoded sample that `entry` (on `hypervisor`) took;
        returns it as a record of its own (for the flow log)."""
        src_vm, src_seg = directory.who(sample.get("src_mac", ""))
        dst_vm, dst_seg = directory.who(sample.get("dst_mac", ""))
        packets = sample.get("packets", 0)
        octets = sample.get("octets", 0)
        last = now - sample.get("end_delta_us", 0) / 1e6
        first = now - sample.get("start_delta_us", 0) / 1e6
        key = (hypervisor, entry.observation_point, sample.get("src_mac"),
               sample.get("dst_mac"), proto_name(sample), sample.get("src_ip"),
               sample.get("dst_ip"), sample.get("src_port"), sample.get("dst_port"))
        fresh = Record(hypervisor, sample.get("src_mac"), sample.get("dst_mac"),
                       src_vm, dst_vm, src_seg, dst_seg, key[4], sample.get("src_ip"),
                       sample.get("dst_ip"), sample.get("src_port"), sample.get("dst_port"),
                       judged.verdict, entry.reason, entry.describe(), judged.mirrored,
                       judged.steered, probability, packets, octets, first, last)
        record = self.records.pop(key, None)
        if record is not None and last - record.last_seen <= MERGE_SECONDS:
            record.packets += packets
            record.bytes += octets
            record.last_seen = max(record.last_seen, last)
        else:
            record = replace(fresh)
        self.records[key] = record            # newest last
        while len(self.records) > self.capacity:
            self.records.popitem(last=False)
        est_p, est_b = packets, octets
        refused = judged.refused
        totals = self.segment_pairs[(src_seg or "-", dst_seg or "-")]
        totals[0] += est_p
        totals[1] += est_b
        if refused:
            totals[2] += est_p
            totals[3] += est_b
        pair = (src_vm or sample.get("src_mac"), dst_vm or sample.get("dst_mac"))
        counts = self.vm_pairs.pop(pair, None) or [0, 0, 0, 0]
        counts[0] += est_p
        counts[1] += est_b
        if refused:
            counts[2] += est_p
            counts[3] += est_b
        self.vm_pairs[pair] = counts
        if len(self.vm_pairs) > self.vm_pairs_cap:
            self.vm_pairs.popitem(last=False)
            self.vm_pairs_dropped += 1
        return fresh

    def query(self, params: dict) -> dict:
        """GET /api/v1/flows: filters (vm, segment, verdict, reason,
        hypervisor, since, until: seconds since the epoch), newest first,
        `limit` (default 100, at most 1000) from `offset`."""
        unknown = set(params) - set(FILTERS) - {"limit", "offset"}
        if unknown:
            raise FlowQueryError(f"unknown parameter {sorted(unknown)[0]!r} "
                                 f"(filters: {', '.join(FILTERS)}, limit, offset)")
        limit = _number(params, "limit", 100, 1, 1000)
        offset = _number(params, "offset", 0, 0, 10**9)
        since = _number(params, "since", None, 0, 10**11, float)
        until = _number(params, "until", None, 0, 10**11, float)
        verdict = params.get("verdict")
        if verdict is not None and verdict not in VERDICTS:
            raise FlowQueryError(f"verdict must be one of {', '.join(VERDICTS)}")
        vm, segment = params.get("vm"), params.get("segment")
        reason, hypervisor = params.get("reason"), params.get("hypervisor")
        matched = []
        for r in sorted(self.records.values(), key=lambda r: r.last_seen, reverse=True):
            if (vm and vm not in (r.src_vm, r.dst_vm)) or \
                    (segment and segment not in (r.src_segment, r.dst_segment)) or \
                    (verdict and r.verdict != verdict) or (reason and r.reason != reason) or \
                    (hypervisor and r.hypervisor != hypervisor) or \
                    (since is not None and r.last_seen < since) or \
                    (until is not None and r.first_seen > until):
                continue
            matched.append(r)
        page = matched[offset:offset + limit]
        return {"total": len(matched), "offset": offset, "limit": limit,
                "flows": [r.to_dict() for r in page]}

    def matrix(self) -> dict:
        """Estimated packets and bytes per segment pair and per VM pair
        (the VM pairs heard from most recently, bounded)."""
        def row(keys, counts):
            return {**keys, "packets": round(counts[0]), "bytes": round(counts[1]),
                    "refused_packets": round(counts[2]), "refused_bytes": round(counts[3])}
        return {"segment_pairs": [row({"src_segment": s, "dst_segment": d}, c)
                                  for (s, d), c in sorted(self.segment_pairs.items())],
                "vm_pairs": [row({"src_vm": s, "dst_vm": d}, c)
                             for (s, d), c in sorted(self.vm_pairs.items(),
                                                     key=lambda i: (str(i[0][0]),
                                                                    str(i[0][1])))],
                "vm_pairs_dropped": self.vm_pairs_dropped}


def _number(params: dict, name: str, default, low, high, kind=int):
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise FlowQueryError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise FlowQueryError(f"{name} must be from {low} to {high}, got {raw!r}")
    return value
