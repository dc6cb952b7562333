"""A small OpenFlow 1.3 table simulator over controller.pipeline.Flow objects.

Pure Python, no Ryu, no OVS. It executes the flow entries the compiler
produces, the way OVS would, so tests can ask "where does this frame go?"
instead of asserting on the shape of individual entries, and the
controller's trace (controller/trace.py) can answer it for an operator
over the entries each switch was given.

Semantics (OpenFlow 1.3 as implemented by OVS):

* Processing starts in table 0 with metadata 0.
* In each table the matching entry with the highest priority wins. Two
  matching entries of the same priority are undefined behaviour in OpenFlow,
  so the simulator raises AmbiguousMatch: that is a compiler bug.
* A table miss drops the frame (OF1.3 default; the compiler installs explicit
  priority-0 entries anyway).
* Matches: exact or (value, mask). MACs, IPv4 addresses and integers are
  compared numerically, so "01:00:00:00:00:00"/"01:00:00:00:00:00" selects
  group addresses. `vlan_vid` follows OF1.3: OFPVID_NONE (0x0000) matches
  untagged frames only, 0x1000|vid matches an outer tag with that vid, and
  (0x1000, 0x1000) matches any tagged frame. `eth_type` is the type after the
  parsed VLAN tags. Like OVS, the switch parses at most `vlan_limit` tags
  (OVS's other_config:vlan-limit, default 1): with the default, a
  double-tagged frame shows its outer tag as vlan_vid and the inner TPID
  (0x8100) as eth_type, and still does after the outer tag is popped, since
  OVS does not re-parse mid-pipeline. vlan_limit=None parses every tag.
  ipv4_* needs eth_type 0x0800 and arp_* needs
  0x0806 in the same entry (OF1.3 prerequisites; OVS rejects such a flow
  otherwise) - an entry without them raises BadFlow.
* Instructions run in OF order: apply-actions (in list order, on a working
  copy of the frame), then write-metadata, then goto-table. No goto ends the
  pipeline. A meter is ignored (no rate limiting here).
* Actions: ("pop_vlan",) removes the outer tag; ("push_vlan",) pushes a new
  outer tag, copying the vid of the current outer tag or 0 (OF1.3);
  ("set_vlan", vid) rewrites the outer tag's vid; ("output", port) emits a
  copy of the current frame - to the in_port it is dropped, as OVS does
  without OFPP_IN_PORT; ("controller", max_len) records a packet-in.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Iterable

from controller.pipeline import (ETH_TYPE_ARP, ETH_TYPE_IP, OFPVID_PRESENT, TABLE_NAMES,
                                 Flow)

BROADCAST = "ff:ff:ff:ff:ff:ff"
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_8021Q = 0x8100


class SimulationError(AssertionError):
    """The flows cannot be executed as OpenFlow would: a bug in what was compiled."""


class AmbiguousMatch(SimulationError):
    pass


class BadFlow(SimulationError):
    pass


class ForwardingLoop(SimulationError):
    pass


# ------------------------------------------------------------------ frames

@dataclass(frozen=True)
class Frame:
    """The parts of an Ethernet frame the pipeline can look at.

    vlans is the 802.1Q tag stack, outermost first (a list is accepted and
    stored as a tuple). eth_type is the type after the tags. Absent fields
    are None.
    """
    eth_src: str
    eth_dst: str
    eth_type: int = ETH_TYPE_IP
    vlans: tuple = ()
    ipv4_src: str | None = None
    arp_sha: str | None = None
    arp_spa: str | None = None
    ip_proto: int | None = None
    udp_src: int | None = None
    udp_dst: int | None = None
    ipv6_src: str | None = None
    icmpv6_type: int | None = None
    nd_target: str | None = None
    nd_sll: str | None = None        # None: no link-layer option (OVS: all zeros)
    nd_tll: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "eth_src", self.eth_src.lower())
        object.__setattr__(self, "eth_dst", self.eth_dst.lower())
        if self.arp_sha is not None:
            object.__setattr__(self, "arp_sha", self.arp_sha.lower())
        object.__setattr__(self, "vlans", tuple(self.vlans))
        for vid in self.vlans:
            if not 0 <= vid <= 0xFFF:
                raise ValueError(f"VLAN id {vid} does not fit in 12 bits")

    @property
    def tagged(self) -> bool:
        return bool(self.vlans)

    def with_tags(self, *vlans: int) -> "Frame":
        return replace(self, vlans=tuple(vlans))

    # -- constructors for the common cases
    @classmethod
    def ipv4(cls, eth_src: str, eth_dst: str, ipv4_src: str, vlans=()) -> "Frame":
        return cls(eth_src, eth_dst, ETH_TYPE_IP, tuple(vlans), ipv4_src=str(ipv4_src))

    @classmethod
    def udp(cls, eth_src: str, eth_dst: str, ipv4_src: str, sport: int, dport: int,
            vlans=()) -> "Frame":
        return cls(eth_src, eth_dst, ETH_TYPE_IP, tuple(vlans), ipv4_src=str(ipv4_src),
                   ip_proto=17, udp_src=sport, udp_dst=dport)

    @classmethod
    def arp(cls, eth_src: str, spa: str, sha: str | None = None,
            eth_dst: str = BROADCAST, vlans=()) -> "Frame":
        return cls(eth_src, eth_dst, ETH_TYPE_ARP, tuple(vlans),
                   arp_sha=sha if sha is not None else eth_src, arp_spa=str(spa))

    @classmethod
    def ipv6(cls, eth_src: str, eth_dst: str, vlans=(), ipv6_src: str | None = None
             ) -> "Frame":
        return cls(eth_src, eth_dst, ETH_TYPE_IPV6, tuple(vlans),
                   ipv6_src=None if ipv6_src is None else str(ipv6_src))

    @classmethod
    def icmpv6(cls, eth_src: str, eth_dst: str, ipv6_src: str, kind: int,
               target: str | None = None, sll: str | None = None, tll: str | None = None,
               vlans=()) -> "Frame":
        return cls(eth_src, eth_dst, ETH_TYPE_IPV6, tuple(vlans), ipv6_src=str(ipv6_src),
                   ip_proto=58, icmpv6_type=kind,
                   nd_target=None if target is None else str(target), nd_sll=sll, nd_tll=tll)

    @classmethod
    def udp6(cls, eth_src: str, eth_dst: str, ipv6_src: str, sport: int, dport: int,
             vlans=()) -> "Frame":
        return cls(eth_src, eth_dst, ETH_TYPE_IPV6, tuple(vlans), ipv6_src=str(ipv6_src),
                   ip_proto=17, udp_src=sport, udp_dst=dport)


def _mac(value: str) -> int:
    parts = value.split(":")
    if len(parts) != 6:
        raise BadFlow(f"not a MAC address: {value!r}")
    return int("".join(parts), 16)


def _ip(value) -> int:
    return int(ipaddress.IPv4Address(str(value)))


def _ip6(value) -> int:
    return int(ipaddress.IPv6Address(str(value)))


NO_OPTION = "00:00:00:00:00:00"     # OVS's nd_sll/nd_tll when the option is absent


@dataclass(frozen=True)
class _Parsed:
    """The frame as the switch sees it (OVS's flow key) next to the frame itself.

    OVS parses at most `vlan_limit` tags (other_config:vlan-limit, default 1).
    A tag beyond the limit is not a VLAN to the pipeline: eth_type shows its
    TPID (0x8100) and nothing above L2 is parsed. Actions update both views;
    the key is not re-parsed after pop_vlan, so a double-tagged frame whose
    outer tag was popped looks untagged with eth_type 0x8100.
    """
    frame: Frame
    vlans: tuple          # parsed tags, outermost first
    eth_type: int

    @classmethod
    def extract(cls, frame: Frame, vlan_limit: int | None) -> "_Parsed":
        if vlan_limit is None or len(frame.vlans) <= vlan_limit:
            return cls(frame, frame.vlans, frame.eth_type)
        return cls(frame, frame.vlans[:vlan_limit], ETH_TYPE_8021Q)


def _vlan_vid(p: _Parsed, in_port: int) -> int:
    return OFPVID_PRESENT | p.vlans[0] if p.vlans else 0


IP_TYPES = (ETH_TYPE_IP, ETH_TYPE_IPV6)
# field -> (how to read it, how to turn a value of it into an int, the
# eth_type(s) it needs)
FIELDS = {
    "in_port": (lambda p, port: port, int, None),
    "vlan_vid": (_vlan_vid, int, None),
    "eth_src": (lambda p, port: p.frame.eth_src, _mac, None),
    "eth_dst": (lambda p, port: p.frame.eth_dst, _mac, None),
    "eth_type": (lambda p, port: p.eth_type, int, None),
    "ipv4_src": (lambda p, port: p.frame.ipv4_src, _ip, ETH_TYPE_IP),
    "arp_sha": (lambda p, port: p.frame.arp_sha, _mac, ETH_TYPE_ARP),
    "arp_spa": (lambda p, port: p.frame.arp_spa, _ip, ETH_TYPE_ARP),
    "ip_proto": (lambda p, port: p.frame.ip_proto, int, IP_TYPES),
    "udp_src": (lambda p, port: p.frame.udp_src, int, IP_TYPES),
    "udp_dst": (lambda p, port: p.frame.udp_dst, int, IP_TYPES),
    "ipv6_src": (lambda p, port: p.frame.ipv6_src, _ip6, ETH_TYPE_IPV6),
    "icmpv6_type": (lambda p, port: p.frame.icmpv6_type, int, ETH_TYPE_IPV6),
    "ipv6_nd_target": (lambda p, port: p.frame.nd_target, _ip6, ETH_TYPE_IPV6),
    # An ND message without the option reads as all zeros, as in OVS.
    "ipv6_nd_sll": (lambda p, port: (p.frame.nd_sll or NO_OPTION)
                    if p.frame.icmpv6_type == 135 else None, _mac, ETH_TYPE_IPV6),
    "ipv6_nd_tll": (lambda p, port: (p.frame.nd_tll or NO_OPTION)
                    if p.frame.icmpv6_type == 136 else None, _mac, ETH_TYPE_IPV6),
}
# OpenFlow's prerequisites above the EtherType: field -> (field, its values).
PROTO_PREREQ = {"udp_src": ("ip_proto", {17}), "udp_dst": ("ip_proto", {17}),
                "icmpv6_type": ("ip_proto", {58}),
                "ipv6_nd_target": ("icmpv6_type", {135, 136}),
                "ipv6_nd_sll": ("icmpv6_type", {135}), "ipv6_nd_tll": ("icmpv6_type", {136})}
FULL_MASK = {"in_port": 0xFFFFFFFF, "vlan_vid": 0x1FFF, "eth_src": 2**48 - 1,
             "eth_dst": 2**48 - 1, "eth_type": 0xFFFF, "ipv4_src": 2**32 - 1,
             "arp_sha": 2**48 - 1, "arp_spa": 2**32 - 1, "metadata": 2**64 - 1,
             "ip_proto": 0xFF, "udp_src": 0xFFFF, "udp_dst": 0xFFFF, "ipv6_src": 2**128 - 1,
             "icmpv6_type": 0xFF, "ipv6_nd_target": 2**128 - 1, "ipv6_nd_sll": 2**48 - 1,
             "ipv6_nd_tll": 2**48 - 1}


def _types(prereq) -> tuple:
    return () if prereq is None else prereq if isinstance(prereq, tuple) else (prereq,)


def _compile_match(flow: Flow) -> tuple[tuple[str, int, int], ...]:
    """The entry's match fields as (name, value, mask), values as ints."""
    out = []
    fields = dict(flow.match)
    for name, raw in flow.match:
        if name == "metadata":
            conv = int
        elif name in FIELDS:
            conv = FIELDS[name][1]
            prereq = _types(FIELDS[name][2])
            if prereq and fields.get("eth_type") not in prereq:
                raise BadFlow(f"{flow}: matching {name} needs eth_type in "
                              f"{[hex(t) for t in prereq]} (OpenFlow prerequisite)")
            if name in PROTO_PREREQ:
                field, values = PROTO_PREREQ[name]
                if fields.get(field) not in values:
                    raise BadFlow(f"{flow}: matching {name} needs {field} in {values} "
                                  "(OpenFlow prerequisite)")
        else:
            raise BadFlow(f"{flow}: the simulator does not know field {name!r}")
        if isinstance(raw, tuple):
            value, mask = conv(raw[0]), conv(raw[1])
        else:
            value, mask = conv(raw), FULL_MASK[name]
        if value & ~mask:
            raise BadFlow(f"{flow}: {name} value has bits outside its mask")
        out.append((name, value, mask))
    return tuple(out)


# ------------------------------------------------------------------ one switch

@dataclass(frozen=True)
class PacketIn:
    table: int
    in_port: int
    frame: Frame
    max_len: int
    flow: Flow


class Switch:
    """One OpenFlow 1.3 bridge holding `flows`.

    vlan_limit: how many tags the switch parses (OVS other_config:vlan-limit;
    OVS's default is 1). None parses every tag, so eth_type is always the
    type after the tags.
    """

    def __init__(self, flows: Iterable[Flow], name: str = "switch",
                 vlan_limit: int | None = 1):
        self.name = name
        self.vlan_limit = vlan_limit
        # As OVS's classifier: per table, the entries grouped by priority and
        # by which fields they match under which masks; a group is a dict
        # from the masked values to its entry, so a lookup costs one probe
        # per group, not one test per entry.
        groups: dict[tuple, dict[tuple, Flow]] = defaultdict(dict)
        for f in flows:
            fields = sorted(_compile_match(f))
            shape = tuple((field, mask) for field, _, mask in fields)
            values = tuple(value for _, value, _ in fields)
            group = groups[(f.table, f.priority, shape)]
            seen = group.get(values)
            if seen is not None:
                if seen != f:
                    raise BadFlow(f"{name}: two different entries match the same: "
                                  f"{seen} and {f}")
                continue            # the same entry twice is one entry in OVS
            group[values] = f
        self.flows = [f for group in groups.values() for f in group.values()]
        self.tables: dict[int, list[tuple[int, tuple, dict]]] = defaultdict(list)
        for (table, priority, shape), group in groups.items():
            self.tables[table].append((priority, shape, group))
        for entries in self.tables.values():
            entries.sort(key=lambda e: -e[0])
        self.packet_ins: list[PacketIn] = []
        self.trace: list[Flow] = []      # entries hit by the last process() call

    def lookup(self, table: int, in_port: int, packet: "_Parsed | Frame",
               metadata: int = 0) -> Flow | None:
        """The entry of `table` that wins for this frame, or None (table miss)."""
        if isinstance(packet, Frame):
            packet = _Parsed.extract(packet, self.vlan_limit)
        values = self._fields(packet, in_port, metadata)
        best = None
        for priority, shape, group in self.tables.get(table, ()):
            if best is not None and priority < best.priority:
                break
            key = []
            for name, mask in shape:
                value = values[name]
                if value is None:
                    break
                key.append(value & mask)
            else:
                f = group.get(tuple(key))
                if f is None:
                    continue
                if best is not None:
                    raise AmbiguousMatch(
                        f"{self.name}: table {TABLE_NAMES.get(table, table)}: "
                        f"{packet} on port {in_port} matches two entries of priority "
                        f"{f.priority}:\n  {best}\n  {f}")
                best = f
        return best

    @staticmethod
    def _fields(packet: _Parsed, in_port: int, metadata: int) -> dict[str, int | None]:
        """Every matchable field as an int (None: not present or not parsed)."""
        values: dict[str, int | None] = {"metadata": metadata}
        for name, (getter, conv, prereq) in FIELDS.items():
            raw = getter(packet, in_port)
            if raw is None or (prereq is not None and packet.eth_type not in _types(prereq)):
                values[name] = None
            else:
                values[name] = conv(raw)
        return values

    def process(self, in_port: int, frame: Frame) -> list[tuple[int, Frame]]:
        """Run one frame through the pipeline; return the (port, frame) it is
        output as, in order. Packet-ins are appended to self.packet_ins."""
        outputs: list[tuple[int, Frame]] = []
        self.trace = []
        packet = _Parsed.extract(frame, self.vlan_limit)
        table, metadata = 0, 0
        while True:
            f = self.lookup(table, in_port, packet, metadata)
            if f is None:                 # table miss: OF1.3 drops
                return outputs
            self.trace.append(f)
            for action in f.actions:
                packet = self._apply(action, f, table, in_port, packet, outputs)
            if f.write_metadata is not None:
                value, mask = f.write_metadata
                if value & ~mask:
                    raise BadFlow(f"{f}: write_metadata value has bits outside its mask")
                metadata = (metadata & ~mask) | (value & mask)
            if f.goto is None:
                return outputs
            if f.goto <= table:
                raise BadFlow(f"{f}: goto must go forward")
            table = f.goto

    def _apply(self, action: tuple, f: Flow, table: int, in_port: int, packet: _Parsed,
               outputs: list) -> _Parsed:
        kind, frame = action[0], packet.frame
        if kind == "output":
            if action[1] != in_port:
                outputs.append((action[1], frame))
            return packet
        if kind == "pop_vlan":
            if not packet.vlans:
                raise BadFlow(f"{self.name}: {f}: pop_vlan on a frame without a parsed tag")
            return replace(packet, frame=replace(frame, vlans=frame.vlans[1:]),
                           vlans=packet.vlans[1:])
        if kind == "push_vlan":        # OF1.3: the new tag copies the outer vid, or 0
            vid = packet.vlans[0] if packet.vlans else 0
            return replace(packet, frame=replace(frame, vlans=(vid,) + frame.vlans),
                           vlans=(vid,) + packet.vlans)
        if kind == "set_vlan":
            vid = action[1]
            if not packet.vlans:
                raise BadFlow(f"{self.name}: {f}: set_vlan on a frame without a parsed tag")
            if not 0 <= vid <= 0xFFF:
                raise BadFlow(f"{self.name}: {f}: VLAN id {vid} does not fit in 12 bits")
            return replace(packet, frame=replace(frame, vlans=(vid,) + frame.vlans[1:]),
                           vlans=(vid,) + packet.vlans[1:])
        if kind == "controller":
            self.packet_ins.append(PacketIn(table, in_port, frame, action[1], f))
            return packet
        raise BadFlow(f"{self.name}: {f}: unknown action {action!r}")


# ------------------------------------------------------------------ the lab

@dataclass
class Hop:
    """One switch's pass over the frame: where it came in, the entry each
    table matched (in order), and where it went out."""
    hypervisor: str
    in_port: int
    entries: tuple
    outputs: list


@dataclass
class Trace:
    """Everything that happened to one frame sent into the fabric."""
    hops: list[Hop] = field(default_factory=list)
    deliveries: list[tuple[str, int, Frame]] = field(default_factory=list)
    uplink_hops: list[tuple[str, Frame]] = field(default_factory=list)   # (from hv, frame)
    firewall_crossings: list[tuple[str, Frame]] = field(default_factory=list)
    packet_ins: list[tuple[str, PacketIn]] = field(default_factory=list)

    @property
    def delivered(self) -> set[tuple[str, int, Frame]]:
        return set(self.deliveries)

    @property
    def ports(self) -> set[tuple[str, int]]:
        return {(hv, port) for hv, port, _ in self.deliveries}


CENTRAL_IDS = ("core", 0)


class SwitchCache:
    """Switches kept from one run to the next (the trace's): each is built
    again only when its entries are not the same Flow objects as before,
    and at most `size` are kept, the least recently used going first (one
    holds its entries' parsed matches: a big hypervisor's are megabytes)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._kept: OrderedDict = OrderedDict()     # (name, vlan_limit) -> (ids, Switch)

    def get(self, name: str, flows: list[Flow], vlan_limit: int | None) -> "Switch":
        # The kept switch holds its Flow objects, so none of their ids is reused.
        ids = frozenset(map(id, flows))
        key = (name, vlan_limit)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == ids:
            self._kept.move_to_end(key)
            switch = kept[1]
            switch.packet_ins, switch.trace = [], []
            return switch
        switch = Switch(flows, name, vlan_limit)
        self._kept[key] = (ids, switch)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return switch


class _Switches(dict):
    """hv -> Switch, each built when it is first asked for."""

    def __init__(self, flows_by_hv: dict, vlan_limit: int | None,
                 cache: SwitchCache | None):
        super().__init__()
        self._flows, self._vlan_limit, self._cache = flows_by_hv, vlan_limit, cache

    def __missing__(self, name: str) -> "Switch":
        flows = self._flows[name]
        switch = (self._cache.get(name, flows, self._vlan_limit) if self._cache is not None
                  else Switch(flows, name, self._vlan_limit))
        self[name] = switch
        return switch


class Fabric:
    """Every hypervisor of a network, joined by a core switch on their uplinks.

    The core is modelled as flooding: a frame a hypervisor outputs on its
    uplink reaches the uplink port of every other hypervisor (a learning core
    delivers to a subset of these, so checking against flooding is the
    conservative choice). With core="learning" it is a learning core that
    has seen every running VM on its segment's VLAN: a frame with that VLAN
    outside and that VM's MAC as destination goes to the VM's hypervisor
    only (or nowhere, if it came from there); any other frame floods.
    Outputs on any other port are deliveries. A frame
    tagged with the network's mirror VLAN also reaches the central IDS, an
    access port of that VLAN on the core: delivered untagged at CENTRAL_IDS.
    A frame output on a hypervisor's mirror tunnel port (ERSPAN/GRE) reaches
    the central IDS too, as it was before encapsulation.

    With `firewall` given, each hypervisor's firewall port is a transparent
    firewall: a frame output there is handed to firewall(hv, frame); the
    frame it returns (the same one: pass; another: a misbehaving firewall)
    comes back in on the same port; None drops it. Without `firewall`,
    firewall-port outputs are deliveries.

    Without `cache`, every switch is built (its entries checked) at once.
    With it, a switch is built when a frame first reaches it, and kept in
    the cache for the next Fabric over the same entries (the trace's way).
    """

    def __init__(self, network, flows_by_hv: dict[str, list[Flow]], max_hops: int = 8,
                 vlan_limit: int | None = 1, firewall=None, core: str = "flood",
                 cache: SwitchCache | None = None):
        if core not in ("flood", "learning"):
            raise ValueError(f"core must be 'flood' or 'learning', not {core!r}")
        self.firewall = firewall
        self.firewall_ports = {hv.name: hv.firewall_port for hv in network.hypervisors}
        self.network = network
        self.switches = _Switches(flows_by_hv, vlan_limit, cache)
        if cache is None:
            for name in flows_by_hv:
                self.switches[name]
        self.learned_at = None
        if core == "learning":
            vlans = {seg.name: seg.vlan for seg in network.segments}
            self.learned_at = {(vlans[vm.segment], vm.mac.lower()): vm.hypervisor
                               for vm in network.vms if vm.port is not None}
        self.uplinks = {hv.name: hv.uplink_port for hv in network.hypervisors}
        self.tunnels = {hv.name: getattr(hv, "mirror_port", None)
                        for hv in network.hypervisors}
        self.max_hops = max_hops

    def port_of(self, where) -> tuple[str, int]:
        if isinstance(where, tuple):
            return where
        vm = self.network.vm(where)
        return vm.hypervisor, vm.port

    def run(self, where, frame: Frame) -> Trace:
        """Send `frame` in at a VM (by name) or at (hv, port); follow it everywhere."""
        trace = Trace()
        queue = deque([(*self.port_of(where), frame, 0)])
        while queue:
            hv, in_port, fr, hops = queue.popleft()
            if hops > self.max_hops:
                raise ForwardingLoop(f"frame still moving after {self.max_hops} uplink "
                                     f"hops: {fr} entering {hv} port {in_port}")
            switch = self.switches[hv]
            before = len(switch.packet_ins)
            outputs = switch.process(in_port, fr)
            trace.hops.append(Hop(hv, in_port, tuple(switch.trace), outputs))
            trace.packet_ins += [(hv, p) for p in switch.packet_ins[before:]]
            for port, out in outputs:
                if self.firewall is not None and port == self.firewall_ports[hv]:
                    trace.firewall_crossings.append((hv, out))
                    back = self.firewall(hv, out)
                    if back is not None:
                        queue.append((hv, port, back, hops + 1))
                elif port is not None and port == self.tunnels[hv]:
                    trace.deliveries.append((*CENTRAL_IDS, out))
                elif port == self.uplinks[hv]:
                    trace.uplink_hops.append((hv, out))
                    mirror_vlan = getattr(self.network, "mirror_vlan", None)
                    if out.vlans and out.vlans[0] == mirror_vlan:
                        trace.deliveries.append((*CENTRAL_IDS, out.with_tags(*out.vlans[1:])))
                    for other in self._core_delivers(hv, out):
                        queue.append((other, self.uplinks[other], out, hops + 1))
                else:
                    trace.deliveries.append((hv, port, out))
        return trace

    def _core_delivers(self, hv: str, frame: Frame) -> list[str]:
        """The hypervisors the core sends a frame from hv's uplink to."""
        if self.learned_at is not None and frame.vlans:
            at = self.learned_at.get((frame.vlans[0], frame.eth_dst))
            if at is not None:
                return [at] if at != hv and self.uplinks.get(at) is not None else []
        return [other for other, uplink in self.uplinks.items()
                if other != hv and uplink is not None]

    def send(self, where, frame: Frame) -> set[tuple[str, int, Frame]]:
        """Where `frame` ends up: {(hv, port, frame)} over non-uplink ports."""
        return self.run(where, frame).delivered
