"""The OpenFlow 1.3 pipeline, declared once, and the flow entries it holds.

A Flow is a canonical, hashable description of one flow entry; the compiler
makes them, the Ryu glue turns them into flow-mods, and the table simulator
in tests executes them. Every Flow is checked against its table's
declaration when it is built, so a wrong match fails here, not in OVS.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

# Tables, in packet order.
INGRESS, DESTINATION, POLICY, FORWARD = 0, 1, 2, 3
TABLE_NAMES = {INGRESS: "ingress", DESTINATION: "destination",
               POLICY: "policy", FORWARD: "forward"}

# What each table may match and where it may continue.
TABLE_MATCHES = {
    INGRESS: {"in_port", "vlan_vid", "eth_src", "eth_type", "ipv4_src",
              "arp_sha", "arp_spa", "ip_proto", "udp_src", "udp_dst", "ipv6_src",
              "icmpv6_type", "ipv6_nd_target", "ipv6_nd_sll", "ipv6_nd_tll"},
    DESTINATION: {"vlan_vid", "eth_type", "eth_dst", "metadata"},
    POLICY: {"metadata", "eth_src", "eth_dst"},
    FORWARD: {"metadata", "eth_dst"},
}
TABLE_NEXT = {INGRESS: {DESTINATION}, DESTINATION: {POLICY}, POLICY: {FORWARD},
              FORWARD: set()}

# Metadata carries the packet's classification between tables.
SRC_SEGMENT_SHIFT, SRC_SEGMENT_MASK = 0, 0xFFF           # VLAN of sender's segment
DST_SEGMENT_SHIFT, DST_SEGMENT_MASK = 12, 0xFFF << 12    # VLAN of receiver's; 0 = flood
FROM_UPLINK = 1 << 24                                    # policy already applied upstream
FROM_FIREWALL = 1 << 25                                  # came back from the firewall
# The receiver runs on another hypervisor (table 1 says, table 3 sends it to
# the uplink by segment: no per-host entry for the thousands of remote VMs).
DST_REMOTE = 1 << 26
# North-south: the sender (table 0) / the receiver (table 1) is a gateway
# of the segment, so policy.external decides in table 2, not the segment's
# own mode.
SRC_GATEWAY = 1 << 27
DST_GATEWAY = 1 << 28
SEGMENTS_MASK = SRC_SEGMENT_MASK | DST_SEGMENT_MASK
CLASS_MASK = SEGMENTS_MASK | FROM_UPLINK | FROM_FIREWALL | SRC_GATEWAY  # what table 0 decides
POLICY_MASK = CLASS_MASK | DST_GATEWAY          # table 2: which scope a frame is in

OFPVID_PRESENT = 0x1000
OFPVID_NONE = 0x0000
ETH_TYPE_IP, ETH_TYPE_ARP, ETH_TYPE_RARP = 0x0800, 0x0806, 0x8035
ETH_TYPE_IPV6 = 0x86DD
IP_PROTO_ICMPV6 = 58
# ICMPv6 types the ingress checks: router solicitation and advertisement,
# neighbour solicitation and advertisement, redirect, MLDv2 report.
ICMPV6_RS, ICMPV6_RA, ICMPV6_NS, ICMPV6_NA, ICMPV6_REDIRECT = 133, 134, 135, 136, 137
ICMPV6_MLD2_REPORT = 143
DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT = 546, 547
ETH_TYPE_PROBE = 0x88B5        # IEEE local experimental: firewall health probes
PROBE_MAC = "02:5e:c0:00:00:01"
# VLAN TPIDs: 802.1Q, 802.1ad (QinQ), and the pre-standard QinQ one.
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")   # eth_dst value/mask

# Cookies: every flow the controller owns carries COOKIE_TAG in its top 16
# bits; 8 bits say what kind of flow it is; 40 bits are a digest of the flow,
# so a flow's cookie names it and reconciliation can diff by cookie alone.
COOKIE_TAG = 0x5EC0 << 48
COOKIE_TAG_MASK = 0xFFFF << 48
KIND_SHIFT = 40
KIND_MASK = 0xFF << KIND_SHIFT
KIND_STATIC = 1        # compiled from the network file and policy
KIND_LEARNED = 2       # a learned host's ingress entry (adopted back on restart)
CONTROLLER_METER = 1   # rate-limits everything sent to the controller
DHCP_METER = 2         # rate-limits DHCP messages snooped (and so the trusted servers')
IP_PROTO_UDP = 17
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68


def metadata(src_vlan: int = 0, dst_vlan: int = 0, uplink: bool = False,
             firewall: bool = False, src_gateway: bool = False, dst_gateway: bool = False):
    return (src_vlan << SRC_SEGMENT_SHIFT) | (dst_vlan << DST_SEGMENT_SHIFT) \
        | (FROM_UPLINK if uplink else 0) | (FROM_FIREWALL if firewall else 0) \
        | (SRC_GATEWAY if src_gateway else 0) | (DST_GATEWAY if dst_gateway else 0)


@dataclass(frozen=True)
class Flow:
    """One flow entry.

    match:   sorted ((field, value) | (field, (value, mask))) pairs
    actions: apply-actions in order: ("output", port) ("push_vlan",)
             ("set_vlan", vid) ("pop_vlan",) ("controller", max_len)
    An entry with no actions and no goto drops the packet. `reason` names
    what the entry is for (drop counters are reported by it); it is not part
    of the entry's identity.
    """
    table: int
    priority: int
    match: tuple
    actions: tuple = ()
    write_metadata: tuple | None = None       # (value, mask)
    goto: int | None = None
    meter: int | None = None
    idle_timeout: int = 0
    kind: int = KIND_STATIC
    reason: str = ""
    # IPFIX: (probability out of 65535, collector set id, observation
    # domain); the entry's observation_point names it in the records.
    sample: tuple | None = None

    def __post_init__(self):
        fields = [f for f, _ in self.match]
        unknown = set(fields) - TABLE_MATCHES[self.table]
        if unknown:
            raise ValueError(f"table {TABLE_NAMES[self.table]} cannot match {unknown}")
        if fields != sorted(fields) or len(set(fields)) != len(fields):
            raise ValueError(f"match must be sorted and unique: {fields}")
        if self.goto is not None and self.goto not in TABLE_NEXT[self.table]:
            raise ValueError(f"table {self.table} cannot go to {self.goto}")

    @property
    def is_drop(self) -> bool:
        return not self.actions and self.goto is None

    @cached_property      # hashed once: plans and audits ask for it many times
    def cookie(self) -> int:
        identity = self._identity() if self.sample is None else \
            self._identity() + (self.sample,)
        identity = repr(identity).encode()
        digest = int.from_bytes(hashlib.blake2b(identity, digest_size=5).digest(), "big")
        return COOKIE_TAG | (self.kind << KIND_SHIFT) | digest

    @cached_property
    def observation_point(self) -> int:
        """The 32-bit IPFIX observation point id of this entry: a digest of
        what it does, without the sample action that carries it (which
        cannot name itself)."""
        digest = hashlib.blake2b(repr(self._identity()).encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big")

    def _identity(self) -> tuple:
        return (self.table, self.priority, self.match, self.actions,
                self.write_metadata, self.goto, self.meter, self.idle_timeout)

    def describe(self) -> dict:
        """The entry as the API names a rule."""
        return {"table": TABLE_NAMES[self.table], "priority": self.priority,
                "reason": self.reason, "cookie": f"{self.cookie:#018x}"}

    def key(self) -> tuple:
        """What OpenFlow uses to tell entries apart: two flows with the same
        key cannot both be installed."""
        return (self.table, self.priority, self.match)


def flow(table: int, priority: int, reason: str = "", **kw: Any) -> Flow:
    """Build a Flow from keyword matches: flow(INGRESS, 100, in_port=3)."""
    options = {k: kw.pop(k) for k in ("actions", "write_metadata", "goto", "meter",
                                      "idle_timeout", "kind", "sample") if k in kw}
    options["actions"] = tuple(options.get("actions", ()))
    return Flow(table, priority, tuple(sorted(kw.items())), reason=reason, **options)


def cookie_kind(cookie: int) -> int | None:
    """The kind of one of our cookies, or None if the flow is not ours."""
    if cookie & COOKIE_TAG_MASK != COOKIE_TAG:
        return None
    return (cookie & KIND_MASK) >> KIND_SHIFT
