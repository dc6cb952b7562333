"""Network file + learned hosts -> the flow entries each hypervisor should hold.

Pure: no Ryu, no I/O. See README "Table map" for the job of each table. The
number of entries per hypervisor is linear in VMs and segments: every VM
costs one entry on every hypervisor (its destination) and five more on its
own (port security, delivery); every segment costs a handful.

The entries are compiled in slices, by what they depend on: a host (a VM
where it runs, or a learned MAC), a segment's floods on a hypervisor, a
learning port, and the rest. Compiled keeps them indexed so an event that
moves, adds or removes hosts recomputes only their slices and the floods
of their segments (Compiled.update); compile_network is the full compile,
and a property test checks the two agree.
"""
from __future__ import annotations

import functools

from collections import defaultdict
from dataclasses import dataclass, replace

from .model import Hypervisor, Network
from .pipeline import (CLASS_MASK, CONTROLLER_METER, DESTINATION, DHCP6_SERVER_PORT,
                       DHCP_CLIENT_PORT, DHCP_METER, DHCP_SERVER_PORT, DST_GATEWAY, DST_REMOTE,
                       DST_SEGMENT_MASK, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6,
                       ETH_TYPE_PROBE, ETH_TYPE_RARP, FORWARD, FROM_FIREWALL, FROM_UPLINK,
                       Flow, ICMPV6_MLD2_REPORT, ICMPV6_NA, ICMPV6_NS, ICMPV6_RA,
                       ICMPV6_REDIRECT, ICMPV6_RS, INGRESS, IP_PROTO_ICMPV6, IP_PROTO_UDP,
                       KIND_LEARNED, MULTICAST, OFPVID_NONE, OFPVID_PRESENT, POLICY,
                       POLICY_MASK, SEGMENTS_MASK, SRC_SEGMENT_MASK, VLAN_TPIDS, flow,
                       metadata)

PACKET_IN_BYTES = 0xFFFF       # OFPCML_NO_BUFFER: the whole frame, so it can be re-injected
UNSPECIFIED = "0.0.0.0"        # a DHCP client's source before it has an address
SERVER_MESSAGE = dict(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO_UDP, udp_src=DHCP_SERVER_PORT)
CLIENT_MESSAGE = dict(eth_type=ETH_TYPE_IP, ip_proto=IP_PROTO_UDP, udp_src=DHCP_CLIENT_PORT,
                      udp_dst=DHCP_SERVER_PORT)
# A DHCP message the controller reads (snooping), forwarded as well: the
# meter bounds both, so a busy server costs the controller at most dhcp_rate.
SNOOP = dict(meter=DHCP_METER, actions=[("controller", PACKET_IN_BYTES)])
UNSPECIFIED6 = "::"
NO_MAC = "00:00:00:00:00:00"   # an ND message without a link-layer address option


def icmpv6(kind: int) -> dict:
    """The match of one ICMPv6 type, with its OpenFlow prerequisites."""
    return dict(eth_type=ETH_TYPE_IPV6, ip_proto=IP_PROTO_ICMPV6, icmpv6_type=kind)


SERVER6_MESSAGE = dict(eth_type=ETH_TYPE_IPV6, ip_proto=IP_PROTO_UDP, udp_src=DHCP6_SERVER_PORT)
# What only declared routers and servers may send: RAs, redirects, DHCPv6
# server messages. Dropped from anyone else, VM port or uplink.
GUARDED6 = (("rogue-ra", icmpv6(ICMPV6_RA)), ("rogue-redirect", icmpv6(ICMPV6_REDIRECT)),
            ("rogue-dhcp6", SERVER6_MESSAGE))


@dataclass(frozen=True)
class Host:
    """Anything the switch delivers unicast to: a declared VM or a learned host."""
    mac: str
    hypervisor: str
    port: int
    vlan: int                   # its segment's VLAN
    ip: str | None = None       # None: learned, or an `ip: dhcp` VM with no lease yet
    vm: str | None = None       # the VM's name; None for a learned host
    router: bool = False        # a router VM: a gateway of its segment
    dhcp: bool = False          # its address comes from DHCP: its messages are snooped
    dhcp_server: bool = False   # a trusted DHCP server
    ipv6: tuple | None = None   # its IPv6 addresses, link-local first; None: no IPv6
    ipv6_router: bool = False   # may send RAs and redirects


@dataclass(frozen=True)
class LearnedHost:
    mac: str
    hypervisor: str
    port: int


def hosts(net: Network, learned: frozenset[LearnedHost] = frozenset(),
          cache: dict | None = None, kept: dict | None = None) -> list[Host]:
    """cache: id(VM) -> (VM, Host) from the last call, and kept: where this
    call leaves its own (only the VMs of `net`, so it never grows): a VM
    object that did not change gives the same Host object (most of them, on
    every event), so telling what changed is mostly identity checks."""
    vlan = {s.name: s.vlan for s in net.segments}
    out = []
    for v in net.vms:
        if v.port is None:
            continue   # a bound VM that is not up anywhere: nothing is delivered to it
        known = cache.get(id(v)) if cache is not None else None
        if known is not None and known[0] is v:
            host = known[1]
        else:
            host = Host(v.mac, v.hypervisor, v.port, vlan[v.segment],
                        None if v.ip is None else _text(v.ip), v.name, v.router, v.dhcp,
                        v.dhcp_server,
                        None if v.ipv6 is None else tuple(str(a) for a in v.ipv6),
                        v.ipv6_router)
        if kept is not None:
            kept[id(v)] = (v, host)
        out.append(host)
    port_segment = {(h.name, lp.port): lp.segment
                    for h in net.hypervisors for lp in h.learning_ports}
    for lh in sorted(learned, key=lambda h: h.mac):
        out.append(Host(lh.mac, lh.hypervisor, lh.port,
                        vlan[port_segment[(lh.hypervisor, lh.port)]]))
    return out


@functools.lru_cache(maxsize=1 << 16)
def _text(ip) -> str:
    """An address as text (ipaddress's str() is slow, and every event needs
    every VM's)."""
    return str(ip)


def compile_network(net: Network, learned: frozenset[LearnedHost] = frozenset(),
                    firewalls_down: frozenset[str] = frozenset(),
                    candidates: frozenset[tuple[str, str, int]] = frozenset()
                    ) -> dict[str, list[Flow]]:
    """Hypervisor name -> its flow entries. `net` has bound VMs placed where
    they run (Network.placed). firewalls_down: hypervisors whose firewall
    does not return steered traffic (steering.fail then decides).
    candidates: (vm, hypervisor, ofport) bound to a VM that runs elsewhere."""
    compiled = Compiled(net, learned, firewalls_down, candidates)
    return {hv: list(flows.values()) for hv, flows in compiled.desired.items()}


class Compiled:
    """Every hypervisor's entries, kept by slice. desired[hv] is cookie ->
    Flow; an entry two slices both want (two mirrored VMs of one segment ask
    for the same flood copy) is counted, and goes when the last one drops it."""

    def __init__(self, net: Network, learned: frozenset[LearnedHost] = frozenset(),
                 firewalls_down: frozenset[str] = frozenset(),
                 candidates: frozenset[tuple[str, str, int]] = frozenset()):
        self.net, self.firewalls_down = net, firewalls_down
        self.desired: dict[str, dict[int, Flow]] = {hv.name: {} for hv in net.hypervisors}
        self._count: dict[str, dict[int, int]] = {hv.name: {} for hv in net.hypervisors}
        self._keys: dict[str, dict[tuple, int]] = {hv.name: {} for hv in net.hypervisors}
        self._slices: dict[str, dict[tuple, tuple[Flow, ...]]] = \
            {hv.name: {} for hv in net.hypervisors}
        self._shared: dict = {}             # entries many hypervisors hold alike
        # hv -> cookies added or removed since take_touched(); None: everything
        self._touched: dict[str, set[int]] | None = None
        self._allowed = list(_allowed(net))
        self._treat = {hv.name: _Treatment(net, hv, hv.name in firewalls_down)
                       for hv in net.hypervisors}
        self.hosts: dict[str, Host] = {}
        self._host_cache: dict = {}
        self.learned: frozenset[LearnedHost] = frozenset()
        self.candidates: frozenset = frozenset()
        for hv in net.hypervisors:
            self._set(hv.name, ("base",), _base(net, hv, self._treat[hv.name]))
        self._apply(net, learned, candidates, everything=True)

    def same_base(self, net: Network, firewalls_down: frozenset[str]) -> bool:
        """Can `net` be reached from here by update()? Only if nothing but
        its VMs differ (where they run, which there are)."""
        return firewalls_down == self.firewalls_down and \
            replace(net, vms=(), source="") == replace(self.net, vms=(), source="") and \
            _gateway_segments(net) == _gateway_segments(self.net)

    def update(self, net: Network, learned: frozenset[LearnedHost] = frozenset(),
               candidates: frozenset[tuple[str, str, int]] = frozenset()) -> None:
        """Move to `net` (same_base must hold): recompute the slices of the
        hosts that changed and the floods of their segments."""
        self.net = net
        self._apply(net, learned, candidates, everything=False)

    def take_touched(self) -> dict[str, set[int]] | None:
        """hv -> the cookies that came or went since the last call (None:
        since this compile began, so everything). A switch that held
        desired[hv] then differs from it only in these."""
        touched = self._touched
        self._touched = {hv: set() for hv in self.desired}
        return touched

    # -- internals
    def _apply(self, net: Network, learned, candidates, everything: bool) -> None:
        kept = {}
        new_hosts = {h.mac: h for h in hosts(net, learned, self._host_cache, kept)}
        self._host_cache = kept
        cand = defaultdict(list)
        for vm, hv, port in candidates:
            cand[vm].append((hv, port))
        old_cand = defaultdict(list)
        for vm, hv, port in self.candidates:
            old_cand[vm].append((hv, port))
        moved_candidates = {vm for vm in cand.keys() | old_cand.keys()
                            if sorted(cand.get(vm, ())) != sorted(old_cand.get(vm, ()))}
        changed = set() if not everything else new_hosts.keys() | self.hosts.keys()
        if not everything:
            for mac in new_hosts.keys() | self.hosts.keys():
                new, old = new_hosts.get(mac), self.hosts.get(mac)
                if (new is not old and new != old) or \
                        (new is not None and new.vm in moved_candidates):
                    changed.add(mac)
        vlans = {h.vlan for mac in changed for h in (new_hosts.get(mac), self.hosts.get(mac))
                 if h is not None}
        ports = {(lh.hypervisor, lh.port) for lh in learned ^ self.learned}
        self.hosts, self.learned, self.candidates = new_hosts, learned, candidates
        per_port = defaultdict(int)
        for lh in learned:
            per_port[(lh.hypervisor, lh.port)] += 1
        local = defaultdict(list)       # (hypervisor, vlan) -> host ports
        remote = defaultdict(set)       # vlan -> hypervisors with hosts of it
        for h in new_hosts.values():
            local[(h.hypervisor, h.vlan)].append(h.port)
            remote[h.vlan].add(h.hypervisor)
        for hv in net.hypervisors:
            for lp in hv.learning_ports:
                vlan = net.segment(lp.segment).vlan
                local[(hv.name, vlan)].append(lp.port)
                remote[vlan].add(hv.name)
        for hv in net.hypervisors:
            # Every old slice out before any new one in: a host may take the
            # port another one just left.
            for mac in changed:
                self._set(hv.name, ("host", mac), ())
            for mac in changed:
                h = new_hosts.get(mac)
                if h is not None:
                    self._set(hv.name, ("host", mac), _host(
                        net, hv, h, self._treat[hv.name], self._allowed,
                        cand[h.vm] if h.vm else (), self._shared))
            for lp in hv.learning_ports:
                if everything or (hv.name, lp.port) in ports:
                    self._set(hv.name, ("learning", lp.port),
                              _learning_port(hv, lp, per_port[(hv.name, lp.port)]))
            for seg in net.segments:
                if everything or seg.vlan in vlans:
                    # Floods reach the uplink for other hypervisors' hosts
                    # and for gateways on the physical network (ARP for them).
                    self._set(hv.name, ("floods", seg.vlan), _floods(
                        net, hv, seg, sorted(set(local[(hv.name, seg.vlan)])),
                        bool(remote[seg.vlan] - {hv.name}) or bool(seg.gateways)))

    def _set(self, hv: str, key: tuple, flows) -> None:
        old = self._slices[hv].pop(key, ())
        flows = tuple(self._treat[hv].sampled(f) for f in flows)
        if flows:
            self._slices[hv][key] = flows
        desired, count, keys = self.desired[hv], self._count[hv], self._keys[hv]
        touched = self._touched[hv] if self._touched is not None else None
        for f in old:
            count[f.cookie] -= 1
            if not count[f.cookie]:
                del count[f.cookie], desired[f.cookie], keys[f.key()]
                if touched is not None:
                    touched.add(f.cookie)
        for f in flows:
            if f.cookie in count:
                count[f.cookie] += 1
                continue
            if touched is not None:
                touched.add(f.cookie)
            other = keys.get(f.key())
            if other is not None:
                raise AssertionError(f"{hv}: two entries share {f.key()}: "
                                     f"{desired[other]} and {f}")
            count[f.cookie], desired[f.cookie], keys[f.key()] = 1, f, f.cookie


def _base(net: Network, hv: Hypervisor, treat: "_Treatment") -> list[Flow]:
    """What depends on no host: the fixed entries of every table, the
    uplink and firewall ports, the segment pairs the policy allows."""
    return (_ingress_base(net, hv) + _destination_base() + _gateways(net, hv)
            + _policy_base(net, treat) + _external(net, treat)
            + _to_uplink(net, hv) + [flow(FORWARD, 0, "no-route")])


def _host(net: Network, hv: Hypervisor, h: Host, treat: "_Treatment", allowed: list,
          candidates, shared: dict) -> list[Flow]:
    """Every entry one host costs on one hypervisor. shared: entries that are
    the same on many hypervisors, built once (10,000 VMs on 100 hypervisors
    would otherwise hold a million copies of the destination entries)."""
    flows = _ingress_host(net, hv, h) if h.hypervisor == hv.name else []
    if h.vm is not None:
        flows += _activation(net, hv, h, candidates)
    remote = h.hypervisor != hv.name
    if h.router and not remote and hv.firewall_port is not None and net.policy.steers_anything:
        flows.append(_firewall_return_from(hv, h.vlan, h.mac))
    if remote and hv.uplink_port is not None:
        # What it may send and others may not was judged where it runs.
        trusted = ([SERVER_MESSAGE, SERVER6_MESSAGE] if h.dhcp_server else []) + \
            ([icmpv6(ICMPV6_RA), icmpv6(ICMPV6_REDIRECT)] if h.ipv6_router else [])
        for match in trusted:
            flows.append(flow(INGRESS, 255, "uplink-trusted", in_port=hv.uplink_port,
                              vlan_vid=OFPVID_PRESENT | h.vlan, eth_src=h.mac, **match,
                              actions=[("pop_vlan",)],
                              write_metadata=(metadata(h.vlan, uplink=True), CLASS_MASK),
                              goto=DESTINATION))
    key = ("destination", h.mac, h.vlan, _quarantined(net, h), remote, h.router)
    if key not in shared:
        shared[key] = _destination_host(net, h, remote)
    flows += shared[key]
    flows += _vm_rules(net, hv, h, treat, allowed)
    if not remote:
        flows.append(flow(FORWARD, 200, "deliver", eth_dst=h.mac,
                          actions=[("output", h.port)]))
    return flows


# -- table 0: which segment a frame belongs to, and may its port send it

def _ingress_host(net: Network, hv: Hypervisor, h: Host) -> list[Flow]:
    classify = dict(write_metadata=(metadata(h.vlan, src_gateway=h.router), CLASS_MASK),
                    goto=DESTINATION)
    if h.vm is None:
        # Learned host: its MAC is pinned to its port; its IP is not known.
        return [flow(INGRESS, 200, "learned-host", in_port=h.port, vlan_vid=OFPVID_NONE,
                     eth_src=h.mac, kind=KIND_LEARNED,
                     idle_timeout=net.options.learned_idle_timeout, **classify)]
    if _quarantined(net, h):
        # Nothing it sends is delivered; the IDS, if reachable, sees it all.
        # Priority 110, not the port-security drop's 100: an entry of the
        # same match and priority would be replaced in place on release, and
        # OVS was seen to keep using the datapath flow cached from it.
        return [flow(INGRESS, 110, "quarantine", in_port=h.port,
                     actions=mirror_actions(net, hv) or ())]
    own = dict(in_port=h.port, vlan_vid=OFPVID_NONE, eth_src=h.mac)
    flows = []
    if h.ip is not None:
        # A router forwards others' packets: any IPv4 source, from its own MAC.
        source = {} if h.router else {"ipv4_src": h.ip}
        flows += [flow(INGRESS, 200, "router-ipv4" if h.router else "vm-ipv4",
                       eth_type=ETH_TYPE_IP, **source, **own, **classify),
                  flow(INGRESS, 200, "vm-arp", eth_type=ETH_TYPE_ARP, arp_sha=h.mac,
                       arp_spa=h.ip, **own, **classify)]
        if h.dhcp:          # its renewals and RELEASE, from the leased address
            flows.append(flow(INGRESS, 210, "dhcp-client", ipv4_src=h.ip, **CLIENT_MESSAGE,
                              **own, **classify, **SNOOP))
    # Every VM may ask for an address (DHCP from 0.0.0.0) and probe for a
    # conflict (ARP from 0.0.0.0, RFC 5227): neither claims anything.
    flows += [flow(INGRESS, 200, "dhcp-client", ipv4_src=UNSPECIFIED, **CLIENT_MESSAGE,
                   **own, **classify, **(SNOOP if h.dhcp else {})),
              flow(INGRESS, 200, "vm-arp-probe", eth_type=ETH_TYPE_ARP, arp_sha=h.mac,
                   arp_spa=UNSPECIFIED, **own, **classify)]
    if h.dhcp_server:       # above the rogue-dhcp drop of table 0's base
        flows.append(flow(INGRESS, 260, "dhcp-server", ipv4_src=h.ip, **SERVER_MESSAGE,
                          **own, **classify, **SNOOP))
    if h.ipv6 is not None:
        flows += _ingress_ipv6(h, own, classify)
    return flows + [
            # The RARP a resumed guest sends from its own MAC (QEMU, after a
            # migration): it floods in the segment and teaches the physical
            # network where the VM is now.
            flow(INGRESS, 200, "vm-rarp", eth_type=ETH_TYPE_RARP, **own, **classify),
            flow(INGRESS, 100, "port-security", in_port=h.port)]


def _ingress_ipv6(h: Host, own: dict, classify: dict) -> list[Flow]:
    """A VM's IPv6: from its own addresses (any, for a router VM); neighbour
    discovery only for its own addresses and with its own MAC (priority
    220, above table 0's drop of every other NS and NA); duplicate address
    detection, router solicitation and MLD reports from ::; RAs and
    redirects from an IPv6 router's link-local, DHCPv6 server messages from
    a declared server (above table 0's drops of them)."""
    flows = []
    if h.router:
        flows.append(flow(INGRESS, 200, "router-ipv6", eth_type=ETH_TYPE_IPV6, **own,
                          **classify))
    for address in h.ipv6:
        if not h.router:
            flows.append(flow(INGRESS, 200, "vm-ipv6", eth_type=ETH_TYPE_IPV6,
                              ipv6_src=address, **own, **classify))
        flows.append(flow(INGRESS, 220, "vm-nd", ipv6_src=UNSPECIFIED6, ipv6_nd_target=address,
                          **icmpv6(ICMPV6_NS), **own, **classify))         # DAD
        for mac in (h.mac, NO_MAC):
            flows.append(flow(INGRESS, 220, "vm-nd", ipv6_src=address, ipv6_nd_sll=mac,
                              **icmpv6(ICMPV6_NS), **own, **classify))
            flows.append(flow(INGRESS, 220, "vm-nd", ipv6_nd_target=address, ipv6_nd_tll=mac,
                              **icmpv6(ICMPV6_NA), **own, **classify))
    for kind in (ICMPV6_RS, ICMPV6_MLD2_REPORT):
        flows.append(flow(INGRESS, 200, "vm-ipv6-unspecified", ipv6_src=UNSPECIFIED6,
                          **icmpv6(kind), **own, **classify))
    if h.ipv6_router:
        for kind in (ICMPV6_RA, ICMPV6_REDIRECT):
            flows.append(flow(INGRESS, 260, "ipv6-router", ipv6_src=h.ipv6[0],
                              **icmpv6(kind), **own, **classify))
    if h.dhcp_server:
        for address in h.ipv6:
            flows.append(flow(INGRESS, 260, "dhcp6-server", ipv6_src=address,
                              **SERVER6_MESSAGE, **own, **classify))
    return flows


def _learning_port(hv: Hypervisor, lp, learned_here: int) -> list[Flow]:
    if learned_here >= lp.max_hosts:
        return [flow(INGRESS, 100, "learn-limit", in_port=lp.port)]
    # A new source MAC: tell the controller (rate-limited), drop the frame.
    return [flow(INGRESS, 100, "learn", in_port=lp.port, vlan_vid=OFPVID_NONE,
                 meter=CONTROLLER_METER, actions=[("controller", PACKET_IN_BYTES)]),
            flow(INGRESS, 90, "port-security", in_port=lp.port)]


def _ingress_base(net: Network, hv: Hypervisor) -> list[Flow]:
    # DHCP server messages from any VM or learning port (untagged) are a
    # rogue server's, unless the port is a declared server's (priority 260).
    # The same for IPv6's RAs, redirects and DHCPv6 servers; and neighbour
    # discovery from a VM for anything but its own addresses (spoofing).
    flows = [flow(INGRESS, 0, "unknown-port"),
             flow(INGRESS, 250, "rogue-dhcp", vlan_vid=OFPVID_NONE, **SERVER_MESSAGE)]
    flows += [flow(INGRESS, 250, reason, vlan_vid=OFPVID_NONE, **match)
              for reason, match in GUARDED6]
    flows += [flow(INGRESS, 215, "nd-spoof", vlan_vid=OFPVID_NONE, **icmpv6(kind))
              for kind in (ICMPV6_NS, ICMPV6_NA)]
    if hv.uplink_port is not None:
        for seg in net.segments:
            flows.append(flow(INGRESS, 200, "uplink", in_port=hv.uplink_port,
                              vlan_vid=OFPVID_PRESENT | seg.vlan, actions=[("pop_vlan",)],
                              write_metadata=(metadata(seg.vlan, uplink=True),
                                              CLASS_MASK),
                              goto=DESTINATION))
        flows.append(flow(INGRESS, 100, "uplink-unknown-vlan", in_port=hv.uplink_port))
        for seg in net.segments:
            tagged = dict(in_port=hv.uplink_port, vlan_vid=OFPVID_PRESENT | seg.vlan,
                          **SERVER_MESSAGE)
            if seg.dhcp_uplink:
                # Its server is on the physical network: trusted, and read.
                flows.append(flow(INGRESS, 260, "dhcp-uplink", **tagged, meter=DHCP_METER,
                                  actions=[("pop_vlan",), ("controller", PACKET_IN_BYTES)],
                                  write_metadata=(metadata(seg.vlan, uplink=True),
                                                  CLASS_MASK), goto=DESTINATION))
            else:
                flows.append(flow(INGRESS, 250, "rogue-dhcp", **tagged))
            vlan = dict(in_port=hv.uplink_port, vlan_vid=OFPVID_PRESENT | seg.vlan)
            for reason, match in GUARDED6:
                if not (reason == "rogue-dhcp6" and seg.dhcp_uplink):
                    flows.append(flow(INGRESS, 250, reason, **vlan, **match))
        if net.mirror_vlan is not None:
            # A copy back from the physical network: it floods the mirror VLAN
            # (RSPAN: harmless) or learned MACs in it (copies miss the IDS).
            # Counted apart so the controller can say which to check.
            flows.append(flow(INGRESS, 150, "mirror-copy-returned", in_port=hv.uplink_port,
                              vlan_vid=OFPVID_PRESENT | net.mirror_vlan))
    if hv.firewall_port is not None:
        flows.append(_firewall_probe(net, hv))
        if net.policy.steers_anything:
            flows += _firewall_returns(net, hv)
    for port, role in hv.special_ports().items():
        if role != "uplink_port":
            # The IDS port never sends; the firewall port only returns what
            # was steered to it, tagged as expected (entries above).
            flows.append(flow(INGRESS, 100, role.replace("_", "-"), in_port=port))
    return flows


def _activation(net: Network, hv: Hypervisor, h: Host, candidates) -> list[Flow]:
    """A port the management plane bound to a VM that still runs elsewhere
    (a live migration under way): nothing it sends is forwarded, but a frame
    from the VM's own MAC tells the controller the VM runs here now.
    candidates: (hypervisor, ofport) of such ports for this host's VM."""
    flows = []
    for hypervisor, port in sorted(candidates):
        if hypervisor == hv.name:
            flows.append(flow(INGRESS, 200, "activation", in_port=port,
                              vlan_vid=OFPVID_NONE, eth_src=h.mac, meter=CONTROLLER_METER,
                              actions=[("controller", PACKET_IN_BYTES)]))
            flows.append(flow(INGRESS, 100, "port-security", in_port=port))
    return flows


def _firewall_returns(net: Network, hv: Hypervisor) -> list[Flow]:
    """A frame coming back from the firewall, tagged with a segment's VLAN,
    belongs to that segment again, marked so it is never steered twice."""
    flows = []
    for seg in net.segments:
        flows.append(flow(INGRESS, 200, "firewall-return", in_port=hv.firewall_port,
                          vlan_vid=OFPVID_PRESENT | seg.vlan, actions=[("pop_vlan",)],
                          write_metadata=(metadata(seg.vlan, firewall=True), CLASS_MASK),
                          goto=DESTINATION))
    return flows


def _firewall_return_from(hv: Hypervisor, vlan: int, mac: str) -> Flow:
    """A steered frame of a gateway (its MAC) back from the firewall: still
    from a gateway, so its return is matched as north-south."""
    return flow(INGRESS, 210, "firewall-return-gateway", in_port=hv.firewall_port,
                vlan_vid=OFPVID_PRESENT | vlan, eth_src=mac, actions=[("pop_vlan",)],
                write_metadata=(metadata(vlan, firewall=True, src_gateway=True), CLASS_MASK),
                goto=DESTINATION)


def _firewall_probe(net: Network, hv: Hypervisor) -> Flow:
    """The controller's health probe, sent out tagged with the first
    segment's VLAN, comes back like any steered frame. Probed whether the
    policy steers or not: the firewall's state is known when it starts to."""
    return flow(INGRESS, 300, "firewall-probe", in_port=hv.firewall_port,
                vlan_vid=OFPVID_PRESENT | net.segments[0].vlan, eth_type=ETH_TYPE_PROBE,
                meter=CONTROLLER_METER, actions=[("controller", PACKET_IN_BYTES)])


# -- table 1: which segment the destination is in (0 = flood in own segment)

def _destination_base() -> list[Flow]:
    flows = [flow(DESTINATION, 0, "unknown-destination"),
             # A tag still present here is the inner tag of a double-tagged
             # frame whose outer tag the uplink popped. OVS parses one tag
             # by default (vlan-limit=1) and then shows the inner one only as
             # the EtherType, so both forms are dropped.
             flow(DESTINATION, 500, "double-tagged",
                  vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT)),
             flow(DESTINATION, 100, "flood", eth_dst=MULTICAST, goto=POLICY)]
    return flows + [flow(DESTINATION, 500, "double-tagged", eth_type=tpid)
                    for tpid in VLAN_TPIDS]


def _destination_host(net: Network, h: Host, remote: bool) -> list[Flow]:
    """remote: the host runs on another hypervisor than this entry's."""
    if _quarantined(net, h):
        return [flow(DESTINATION, 200, "quarantine", eth_dst=h.mac)]
    return [flow(DESTINATION, 200, "host", eth_dst=h.mac,
                 write_metadata=(metadata(dst_vlan=h.vlan, dst_gateway=h.router)
                                 | (DST_REMOTE if remote else 0),
                                 DST_SEGMENT_MASK | DST_REMOTE | DST_GATEWAY), goto=POLICY)]


def _quarantined(net: Network, h: Host) -> bool:
    return h.vm is not None and net.policy.vm_rule(h.vm).mode == "quarantine"


def mirror_actions(net: Network, hv: Hypervisor) -> list[tuple] | None:
    """How this hypervisor copies a frame to the IDS: out its own IDS port, out
    the tunnel port that encapsulates it to a remote IDS, or tagged with the
    mirror VLAN out the uplink (the tag is popped again so the original goes
    on unchanged). None: no IDS reachable."""
    if hv.ids_port is not None:
        return [("output", hv.ids_port)]
    if hv.mirror_port is not None:
        return [("output", hv.mirror_port)]
    if net.mirror_vlan is not None and hv.uplink_port is not None:
        return _tagged_uplink(net.mirror_vlan, hv.uplink_port) + [("pop_vlan",)]
    return None


# -- table 2: may this source segment reach that destination segment, and
#    is the frame copied to the IDS. Applied once, at the ingress hypervisor.

def _policy_base(net: Network, treat: "_Treatment") -> list[Flow]:
    flows = [flow(POLICY, 0, "policy-deny",
                  actions=treat.mirror if net.policy.mirror_denied else ()),
             # Frames from the uplink were judged by the sender's hypervisor;
             # they pass only inside the segment of their tag, and are not
             # copied again.
             flow(POLICY, 250, "uplink-cross-segment",
                  metadata=(FROM_UPLINK, FROM_UPLINK)),
             # Frames back from the firewall were judged here before they
             # left; they pass if they are what was steered, and are never
             # steered again.
             flow(POLICY, 250, "firewall-unexpected-return",
                  metadata=(FROM_FIREWALL, FROM_FIREWALL))]
    for seg in net.segments:
        for dst_vlan in (seg.vlan, 0):
            flows.append(flow(POLICY, 300, "uplink-pass",
                              metadata=(metadata(seg.vlan, dst_vlan, uplink=True),
                                        CLASS_MASK), goto=FORWARD))
    # Deny is the default (the priority-0 entry), so only what is allowed
    # costs entries: S segments and P allowed pairs give 2*S + 2*P, not S*S.
    for src, dst, mode in _allowed(net):
        mirror, steer = mode in ("mirror", "steer-mirror"), mode in ("steer", "steer-mirror")
        match = metadata(src.vlan, dst.vlan)
        flows.append(treat.entry(200, mode, src.vlan, mirror, steer,
                                 metadata=(match, POLICY_MASK)))
        if steer:
            flows.append(_steered_back(src.vlan, dst.vlan, 300))
        if src is dst:
            # Floods stay in the segment and are never steered: after a
            # hairpin the sender's own port could not be left out.
            flows.append(treat.entry(200, mode, src.vlan, mirror, False,
                                     metadata=(metadata(src.vlan, 0), POLICY_MASK)))
    return flows


def _steered_back(src_vlan: int, dst_vlan: int, priority: int, **match) -> Flow:
    """A frame of that pair back from the firewall it was steered to: on to
    its destination (above firewall-unexpected-return)."""
    return flow(POLICY, priority, "firewall-return", goto=FORWARD, **match,
                metadata=(metadata(src_vlan, dst_vlan, firewall=True), POLICY_MASK))


# -- gateways: a segment's way out (north-south), under policy.external

def _gateway_segments(net: Network) -> tuple[str, ...]:
    """Segments with a gateway: on the physical network, or a router VM."""
    routed = {vm.segment for vm in net.vms if vm.router}
    return tuple(s.name for s in net.segments if s.gateways or s.name in routed)


def _gateways(net: Network, hv: Hypervisor) -> list[Flow]:
    """The physical gateways' MACs: as a source from the uplink (and back
    from the firewall), and as a destination, out of the uplink. A
    destination entry matches the source segment too, so a router that uses
    one MAC on several VLANs is each segment's own gateway."""
    flows = []
    for seg in net.segments:
        for gw in seg.gateways:
            if hv.uplink_port is not None:
                # Its RAs and redirects too, above the uplink's drops of them.
                for priority, match in [(210, {})] + [
                        (255, icmpv6(kind)) for kind in (ICMPV6_RA, ICMPV6_REDIRECT)]:
                    flows.append(flow(INGRESS, priority, "uplink-gateway",
                                      in_port=hv.uplink_port,
                                      vlan_vid=OFPVID_PRESENT | seg.vlan, eth_src=gw.mac,
                                      **match, actions=[("pop_vlan",)],
                                      write_metadata=(metadata(seg.vlan, uplink=True,
                                                               src_gateway=True), CLASS_MASK),
                                      goto=DESTINATION))
            if hv.firewall_port is not None and net.policy.steers_anything:
                flows.append(_firewall_return_from(hv, seg.vlan, gw.mac))
            flows.append(flow(DESTINATION, 210, "gateway", eth_dst=gw.mac,
                              metadata=(metadata(seg.vlan), SRC_SEGMENT_MASK),
                              write_metadata=(metadata(dst_vlan=seg.vlan, dst_gateway=True)
                                              | DST_REMOTE,
                                              DST_SEGMENT_MASK | DST_REMOTE | DST_GATEWAY),
                              goto=POLICY))
    return flows


def _external_scopes(net: Network):
    """(segment, mode, [(priority, metadata value, mask, floods)]) for each
    segment with gateways: the frames its external mode decides. To a
    gateway; from one on this hypervisor (a router VM; its floods too); from
    one on the physical network (judged where it enters, so at priority 300
    above the uplink's pass). Floods are delivered, never copied or steered
    (a gateway's ARP reaches every hypervisor)."""
    for name in _gateway_segments(net):
        vlan = net.segment(name).vlan
        yield name, net.policy.external_mode(name), [
            (200, metadata(vlan, vlan, dst_gateway=True), POLICY_MASK, False),
            (200, metadata(vlan, vlan, src_gateway=True), CLASS_MASK, False),
            (200, metadata(vlan, 0, src_gateway=True), CLASS_MASK, True),
            (300, metadata(vlan, vlan, uplink=True, src_gateway=True), CLASS_MASK, False),
            (300, metadata(vlan, 0, uplink=True, src_gateway=True), CLASS_MASK, True)]


def _external(net: Network, treat: "_Treatment") -> list[Flow]:
    flows = []
    for name, mode, matches in _external_scopes(net):
        vlan = net.segment(name).vlan
        mirror, steer = mode in ("mirror", "steer-mirror"), mode in ("steer", "steer-mirror")
        for priority, value, mask, floods in matches:
            if mode == "deny":
                flows.append(flow(POLICY, priority, "external-deny", metadata=(value, mask),
                                  actions=treat.mirror if net.policy.mirror_denied else ()))
            else:
                flows.append(treat.entry(priority, f"external-{mode}", vlan,
                                         mirror and not floods, steer and not floods,
                                         metadata=(value, mask)))
        if steer:
            # Back from the firewall, to a gateway or from one: delivered.
            flows.append(_steered_back_external(vlan, 300, dst_gateway=True))
            flows.append(_steered_back_external(vlan, 300, src_gateway=True))
    return flows


def _steered_back_external(vlan: int, priority: int, dst_gateway: bool = False,
                           src_gateway: bool = False, **match) -> Flow:
    """A north-south frame back from the firewall it was steered to, to a
    gateway or from one: on to its destination."""
    value = metadata(vlan, vlan, firewall=True, dst_gateway=dst_gateway,
                     src_gateway=src_gateway)
    return flow(POLICY, priority, "firewall-return-external", goto=FORWARD, **match,
                metadata=(value, POLICY_MASK if dst_gateway else CLASS_MASK))


# Table-2 entries that only let through what another entry judged already.
PASS_THROUGH = frozenset({"uplink-pass", "firewall-return", "firewall-return-external"})


@dataclass(frozen=True)
class Judgement:
    """What a deciding entry does with a frame: refused, or let on (and then
    maybe copied to the IDS, maybe out through the firewall)."""
    refused: bool
    mirrored: bool
    steered: bool

    @property
    def verdict(self) -> str:
        return "refused" if self.refused else "allowed"


def judgement(net: Network, hv: Hypervisor, f: Flow) -> Judgement | None:
    """None for an entry that decides nothing (it classifies, delivers or
    passes on what was judged elsewhere)."""
    if f.table == POLICY and f.reason in PASS_THROUGH:
        return None
    if not (f.is_drop or f.table == POLICY):
        return None
    copies, steers, delivers = action_roles(net, hv, f)
    return Judgement(not delivers and not steers, copies, steers)


def action_roles(net: Network, hv: Hypervisor, f: Flow) -> tuple[bool, bool, bool]:
    """(copies to the IDS, sends to the firewall, passes the frame on), read
    from the entry's outputs and goto: an output to the IDS or mirror
    tunnel port, or tagged with the mirror VLAN, is a copy."""
    copies = steers = False
    delivers = f.goto is not None
    vlan = None
    for action in f.actions:
        if action[0] == "set_vlan":
            vlan = action[1]
        elif action[0] == "pop_vlan":
            vlan = None
        elif action[0] == "output":
            port = action[1]
            if port in (hv.ids_port, hv.mirror_port) or \
                    (vlan is not None and vlan == net.mirror_vlan):
                copies = True
            elif port == hv.firewall_port:
                steers = True
            else:
                delivers = True
    return copies, steers, delivers


class _Treatment:
    """Turns (copy to the IDS?, through the firewall?) into a table-2 entry,
    and gives each deciding entry its IPFIX sample action."""

    def __init__(self, net: Network, hv: Hypervisor, firewall_down: bool):
        self.net, self.hv, self.firewall_down = net, hv, firewall_down
        self.mirror = mirror_actions(net, hv) or []
        records = net.flow_records
        self._samples = {refused: (records.probability(refused), records.collector_set,
                                   hv.observation_domain) for refused in (False, True)}

    def sampled(self, f: Flow) -> Flow:
        """f with the sample action its judgement asks for (f if none)."""
        if not (f.is_drop or f.table == POLICY):
            return f          # the common case, checked before anything costly
        judged = judgement(self.net, self.hv, f)
        if judged is None:
            return f
        sample = self._samples[judged.refused]
        return replace(f, sample=sample) if sample[0] else f

    def entry(self, priority: int, reason: str, vlan: int, mirror: bool, steer: bool,
              **match) -> Flow:
        actions = list(self.mirror) if mirror else []
        if steer and self.firewall_down:
            if self.net.steering.fail == "closed":
                return flow(POLICY, priority, "steer-fail-closed", actions=actions, **match)
            return flow(POLICY, priority, "steer-fail-open", actions=actions,
                        goto=FORWARD, **match)
        if steer:
            # Out the firewall port tagged with the segment's VLAN; it comes
            # back the same way (table 0) and is delivered then.
            return flow(POLICY, priority, f"policy-{reason}",
                        actions=actions + [("push_vlan",), ("set_vlan", vlan),
                                           ("output", self.hv.firewall_port)], **match)
        return flow(POLICY, priority, f"policy-{reason}", actions=actions, goto=FORWARD,
                    **match)


def _vm_rules(net: Network, hv: Hypervisor, h: Host, treat: _Treatment,
              allowed: list) -> list[Flow]:
    """A VM's own rule: copy (mirror) or steer what it sends (checked where
    it sits) and what it receives (checked wherever the sender sits), among
    what the segment policy allows. One entry matches a frame, so it is
    treated once; a VM rule adds to the segment's treatment. Two mirrored
    VMs of one segment ask for the same flood entry: Compiled counts it."""
    rule = net.policy.vm_rule(h.vm) if h.vm else None
    if rule is None or rule.mode not in ("mirror", "steer"):
        return []
    flows = []
    sent = rule.mirrors_sent or rule.mode == "steer"
    received = rule.mirrors_received or rule.mode == "steer"
    reason = f"vm-{rule.mode}:{h.vm}"
    for src, dst, mode in allowed:
        mirror = rule.mode == "mirror" or mode in ("mirror", "steer-mirror")
        steer = rule.mode == "steer" or mode in ("steer", "steer-mirror")
        # Steered for this VM only: the pair has no return entry of its own.
        # Sent before received, as on the way out (two steered VMs talking).
        own_return = rule.mode == "steer" and mode not in ("steer", "steer-mirror")
        if sent and src.vlan == h.vlan and h.hypervisor == hv.name:
            flows.append(treat.entry(220, reason, src.vlan, mirror, steer, eth_src=h.mac,
                                     metadata=(metadata(src.vlan, dst.vlan), POLICY_MASK)))
            if own_return:
                flows.append(_steered_back(src.vlan, dst.vlan, 302, eth_src=h.mac))
            if src is dst and rule.mode == "mirror":
                flows.append(treat.entry(220, reason, src.vlan, True, False, eth_src=h.mac,
                                         metadata=(metadata(src.vlan, 0), POLICY_MASK)))
        if received and dst.vlan == h.vlan:
            flows.append(treat.entry(210, reason, src.vlan, mirror, steer, eth_dst=h.mac,
                                     metadata=(metadata(src.vlan, dst.vlan), POLICY_MASK)))
            if own_return:
                flows.append(_steered_back(src.vlan, dst.vlan, 301, eth_dst=h.mac))
            if src is dst and rule.mode == "mirror":
                # A flood inside its segment reaches it too.
                flows.append(treat.entry(210, reason, src.vlan, True, False,
                                         metadata=(metadata(src.vlan, 0), POLICY_MASK)))
    # North-south, where its segment's external mode lets it through; a
    # gateway's floods are not copied (see _external_scopes).
    for name, mode, matches in _external_scopes(net):
        if mode == "deny" or net.segment(name).vlan != h.vlan:
            continue
        mirror = rule.mode == "mirror" or mode in ("mirror", "steer-mirror")
        steer = rule.mode == "steer" or mode in ("steer", "steer-mirror")
        own_return = rule.mode == "steer" and mode not in ("steer", "steer-mirror")
        to_gateway, *from_gateway = [m for m in matches if not m[3]]
        if sent and h.hypervisor == hv.name:
            flows.append(treat.entry(to_gateway[0] + 20, reason, h.vlan, mirror, steer,
                                     eth_src=h.mac, metadata=to_gateway[1:3]))
            if own_return:
                flows.append(_steered_back_external(h.vlan, 302, dst_gateway=True,
                                                    eth_src=h.mac))
        if received:
            for priority, value, mask, _ in from_gateway:
                flows.append(treat.entry(priority + 10, reason, h.vlan, mirror, steer,
                                         eth_dst=h.mac, metadata=(value, mask)))
            if own_return:
                flows.append(_steered_back_external(h.vlan, 301, src_gateway=True,
                                                    eth_dst=h.mac))
    return flows


def _allowed(net: Network):
    """(source, destination, mode) for the segment pairs the policy allows,
    intra-segment included; mode is anything but deny."""
    for seg in net.segments:
        mode = net.policy.mode(seg.name, seg.name)
        if mode != "deny":
            yield seg, seg, mode
    for (a, b), mode in net.policy.pairs:
        if mode != "deny":
            seg_a, seg_b = net.segment(a), net.segment(b)
            yield seg_a, seg_b, mode
            yield seg_b, seg_a, mode


# -- table 3: where the frame leaves

def _to_uplink(net: Network, hv: Hypervisor) -> list[Flow]:
    """Frames for hosts on other hypervisors leave tagged by the uplink: one
    entry per segment (table 1 marked them DST_REMOTE), not one per host."""
    if hv.uplink_port is None:
        return []
    return [flow(FORWARD, 190, "to-uplink",
                 metadata=(metadata(dst_vlan=seg.vlan) | DST_REMOTE,
                           DST_SEGMENT_MASK | DST_REMOTE),
                 actions=_tagged_uplink(seg.vlan, hv.uplink_port))
            for seg in net.segments]


def _floods(net: Network, hv: Hypervisor, seg, ports: list[int], elsewhere: bool
            ) -> list[Flow]:
    """A segment's floods on one hypervisor: to its local host ports
    (`ports`) and, tagged, to the uplink if another hypervisor has it."""
    local = [("output", p) for p in ports]
    out = list(local)
    if hv.uplink_port is not None and elsewhere:
        out += _tagged_uplink(seg.vlan, hv.uplink_port)
    # A flood's source segment and whether it came by the uplink decide;
    # from a gateway or not makes no difference here.
    mask = SEGMENTS_MASK | FROM_UPLINK | FROM_FIREWALL
    return [flow(FORWARD, 150, "flood-from-uplink",
                 metadata=(metadata(seg.vlan, 0, uplink=True), mask), actions=local),
            flow(FORWARD, 100, "flood", metadata=(metadata(seg.vlan, 0), mask),
                 actions=out)]


def _tagged_uplink(vlan: int, uplink: int) -> list[tuple]:
    return [("push_vlan",), ("set_vlan", vlan), ("output", uplink)]
