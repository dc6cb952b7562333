"""Traffic per segment pair, from the switches' flow counters (pure, no Ryu).

Each flow entry that decides something about a frame is read for the pair
of segments it decides for and what it does: allowed (passed on by the
policy), refused (dropped), mirrored (copied to the IDS), steered (sent
to the firewall). One entry may count for two outcomes (a mirrored,
allowed frame). The labels come from the entry alone, never from a VM, so
there are at most (segments + 2)^2 pairs per outcome:

- a segment's name, from the metadata the entry matches (table 2) or the
  port, tag or VM MAC it matches (tables 0 and 1);
- EXTERNAL for the gateway side of north-south traffic (a gateway on the
  physical network or a router VM: the metadata's gateway bits);
- UNKNOWN where the entry does not say: a port-security drop knows its
  sender's segment but not where the frame was going, and the policy's
  default deny (table 2, priority 0) matches nothing, so it knows neither.

Counted once per fabric: the hypervisor where a frame enters judges it;
the receiving one passes it on as "from the uplink, policy applied
upstream" (table 2, uplink-pass), which is not counted, and neither is a
steered frame's return from the firewall's steering, only its delivery
after it (allowed). A steered frame is therefore steered where it leaves
for the firewall and allowed when it comes back and goes on: what the
firewall dropped is steered and not allowed. Frames from a gateway on the
physical network are judged where they enter, so a gateway's broadcast
counts once on each hypervisor the physical network floods it to.
"""
from __future__ import annotations

from .compiler import action_roles
from .model import Hypervisor, Network
from .pipeline import (DESTINATION, DST_GATEWAY, DST_SEGMENT_MASK, DST_SEGMENT_SHIFT,
                       FORWARD, FROM_UPLINK, INGRESS, OFPVID_PRESENT, POLICY,
                       SRC_GATEWAY, SRC_SEGMENT_MASK, Flow, cookie_kind)

OUTCOMES = ("allowed", "refused", "mirrored", "steered")
# Our entries that the controller has no Flow for (a switch's counters
# read just before or after a commit replaced them): counted, not dropped.
UNATTRIBUTED = "unattributed"
UNKNOWN, EXTERNAL = "-", "external"


class Attribution:
    """Reads the entries of one network (with bound VMs placed where they
    run). Built per scrape: a few dicts, linear in VMs."""

    def __init__(self, net: Network):
        self.net = net
        self.by_vlan = {s.vlan: s.name for s in net.segments}
        self.by_mac = {v.mac: v.segment for v in net.vms}
        # Where VMs run now (`net` placed): a port-security or quarantine
        # drop matches only the port.
        self.by_port = {(v.hypervisor, v.port): v.segment for v in net.vms
                        if v.port is not None}

    def keys(self, hv: Hypervisor, f: Flow) -> tuple:
        """(source, destination, outcome) this entry counts for; () if it
        decides nothing (classification, forwarding, judged elsewhere)."""
        copies, steers, delivers = action_roles(self.net, hv, f)
        outcomes = (("mirrored",) if copies else ()) + (("steered",) if steers else ())
        if f.table == POLICY:
            value, mask = _metadata(f)
            if delivers and value & FROM_UPLINK and not value & SRC_GATEWAY:
                return ()          # from the uplink: judged where it entered
            if delivers:           # also back from the firewall, on its way
                outcomes += ("allowed",)
            elif not steers:
                outcomes += ("refused",)
            return self._pair(value, mask, outcomes)
        if delivers or steers or _asks_controller(f):
            return ()              # classified, forwarded, or an event for the controller
        if f.table == INGRESS:
            if self.net.mirror_vlan is not None and \
                    dict(f.match).get("vlan_vid") == OFPVID_PRESENT | self.net.mirror_vlan:
                return ()          # an IDS copy the physical network sent back: no traffic
            src = self._sender(hv, f)
            return tuple((src, UNKNOWN, o) for o in outcomes + ("refused",))
        if f.table == FORWARD and f.match:
            return ()              # a flood with no port to go to: allowed already
        dst = UNKNOWN
        if f.table == DESTINATION:    # to a quarantined VM: its segment
            dst = self.by_mac.get(dict(f.match).get("eth_dst"), UNKNOWN)
        return tuple((UNKNOWN, dst, o) for o in outcomes + ("refused",))

    def _pair(self, value: int, mask: int, outcomes) -> tuple:
        src = dst = UNKNOWN
        if mask & SRC_SEGMENT_MASK == SRC_SEGMENT_MASK:
            src = self.by_vlan.get(value & SRC_SEGMENT_MASK, UNKNOWN)
            if mask & DST_SEGMENT_MASK == DST_SEGMENT_MASK:
                vlan = (value & DST_SEGMENT_MASK) >> DST_SEGMENT_SHIFT
                dst = src if vlan == 0 else self.by_vlan.get(vlan, UNKNOWN)  # 0: a flood
        if value & mask & SRC_GATEWAY:
            src = EXTERNAL
        if value & mask & DST_GATEWAY:
            dst = EXTERNAL
        return tuple((src, dst, o) for o in outcomes)

    def _sender(self, hv: Hypervisor, f: Flow) -> str:
        match = dict(f.match)
        if match.get("eth_src") in self.by_mac:
            return self.by_mac[match["eth_src"]]
        vid = match.get("vlan_vid")
        if isinstance(vid, int) and vid & OFPVID_PRESENT:
            return self.by_vlan.get(vid & ~OFPVID_PRESENT, UNKNOWN)
        port = match.get("in_port")
        if port is None or port in hv.special_ports():
            return UNKNOWN
        for lp in hv.learning_ports:
            if lp.port == port:
                return lp.segment
        return self.by_port.get((hv.name, port), UNKNOWN)


def _metadata(f: Flow) -> tuple[int, int]:
    m = dict(f.match).get("metadata")
    if m is None:
        return 0, 0
    return m if isinstance(m, tuple) else (m, (1 << 64) - 1)


def _asks_controller(f: Flow) -> bool:
    """A packet-in (learning, activation, probes): an event, not a refusal."""
    return any(a[0] == "controller" for a in f.actions)


def segment_pairs(net: Network, switches: list[tuple[Hypervisor, dict, dict]]) -> dict:
    """{(source, destination, outcome): (packets, bytes)} over every switch;
    `net` with bound VMs placed (Fabric.placed_network).
    switches: (hypervisor, {cookie: Flow} last committed, {cookie: (packets,
    bytes)} last read). Entries that counted nothing are skipped, so a pair
    shows once its traffic does."""
    reader, total = Attribution(net), {}
    for hv, desired, counts in switches:
        for cookie, (packets, octets) in counts.items():
            if not packets and not octets or cookie_kind(cookie) is None:
                continue           # nothing counted, or not our entry
            f = desired.get(cookie)
            if f is None:
                keys = ((UNKNOWN, UNKNOWN, UNATTRIBUTED),)
            else:
                keys = reader.keys(hv, f)
            for key in keys:
                p, b = total.get(key, (0, 0))
                total[key] = (p + packets, b + octets)
    return total
