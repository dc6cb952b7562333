"""Random networks, random frames: the isolation invariants hold for all of them.

Each network is written as YAML and goes through model.parse, so only valid
files are generated. The frames come from a VM port; the property checks are
run over the simulated lab (every hypervisor, core flooding on the uplinks).
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import model
from controller.compiler import LearnedHost, compile_network
from controller.pipeline import ICMPV6_NA, ICMPV6_NS, ICMPV6_RA, ICMPV6_REDIRECT
from controller.tablesim import BROADCAST, Fabric, Frame

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])

UPLINK, FIREWALL, IDS, LEARNING = 1, 2, 3, 4


# ------------------------------------------------------------------ networks

@st.composite
def network_docs(draw) -> dict:
    n_hvs = draw(st.integers(1, 3))
    n_segs = draw(st.integers(1, 4))
    n_vms = draw(st.integers(1, 8))
    vlans = draw(st.lists(st.integers(1, 4094), min_size=n_segs, max_size=n_segs,
                          unique=True))
    segs = [f"s{i}" for i in range(n_segs)]
    hvs = {}
    for i in range(n_hvs):
        hv = {"dpid": i + 1}
        if draw(st.integers(0, 5)):                  # mostly with an uplink
            hv["uplink_port"] = UPLINK
        if draw(st.booleans()):
            hv["firewall_port"], hv["ids_port"] = FIREWALL, IDS
        if draw(st.booleans()):
            hv["learning_ports"] = [{"port": LEARNING,
                                     "segment": draw(st.sampled_from(segs)),
                                     "max_hosts": draw(st.integers(1, 2))}]
        hvs[f"h{i}"] = hv
    vms = {}
    for i in range(n_vms):
        vms[f"v{i}"] = {"hypervisor": f"h{draw(st.integers(0, n_hvs - 1))}",
                        "port": 10 + i, "segment": draw(st.sampled_from(segs)),
                        "mac": f"02:00:00:00:00:{i + 1:02x}", "ip": f"10.0.0.{i + 1}"}
        if draw(st.booleans()):                      # half of them with IPv6
            vms[f"v{i}"]["ipv6"] = [f"fd00::{i + 1:x}"]
    modes = st.sampled_from(["allow", "deny"])
    # Mostly permissive, so that many frames have somewhere to go.
    policy = {"default": draw(st.sampled_from(["allow", "allow", "allow", "deny"])),
              "segments": {s: draw(modes) for s in segs if not draw(st.integers(0, 3))},
              "pairs": []}
    for i, a in enumerate(segs):
        for b in segs[i + 1:]:
            mode = draw(st.sampled_from([None, "allow", "allow", "deny"]))
            if mode:
                policy["pairs"].append({"segments": [a, b], "mode": mode})
    return {"segments": {s: {"vlan": v} for s, v in zip(segs, vlans)},
            "hypervisors": hvs, "vms": vms, "policy": policy}


@dataclass(frozen=True)
class SimulatedLab:
    net: model.Network
    learned: frozenset
    fabric: Fabric

    def segment_of_port(self) -> dict[tuple[str, int], str]:
        """Every host port (VM or learning port) -> its segment."""
        out = {(v.hypervisor, v.port): v.segment for v in self.net.vms}
        out.update({(h.name, lp.port): lp.segment for h in self.net.hypervisors
                    for lp in h.learning_ports})
        return out

    def owner_port(self, mac: str) -> tuple[str, int] | None:
        for v in self.net.vms:
            if v.mac == mac:
                return v.hypervisor, v.port
        for lh in self.learned:
            if lh.mac == mac:
                return lh.hypervisor, lh.port
        return None

    def connected(self, hv_a: str, hv_b: str) -> bool:
        return hv_a == hv_b or (self.net.hypervisor(hv_a).uplink_port is not None
                                and self.net.hypervisor(hv_b).uplink_port is not None)


def compile_lab(net: model.Network, learned: frozenset, vlan_limit: int | None) -> Fabric:
    return Fabric(net, compile_network(net, learned), vlan_limit=vlan_limit)


@st.composite
def labs(draw) -> SimulatedLab:
    doc = draw(network_docs())
    net = model.parse(yaml.safe_dump(doc), source="generated.yaml")
    learned = set()
    for h in net.hypervisors:
        for lp in h.learning_ports:
            for k in range(draw(st.integers(0, lp.max_hosts))):
                learned.add(LearnedHost(f"06:00:00:00:{h.dpid:02x}:{k + 1:02x}",
                                        h.name, lp.port))
    learned = frozenset(learned)
    vlan_limit = draw(st.sampled_from([1, None]))     # OVS default, or every tag parsed
    return SimulatedLab(net, learned, compile_lab(net, learned, vlan_limit))


# ------------------------------------------------------------------ frames

@dataclass(frozen=True)
class Shot:
    """A frame sent in at one VM's port, and what it claims to be."""
    sender: model.VM
    frame: Frame
    spoofed: bool          # eth_src / IP / ARP sender fields are not the VM's own

    @property
    def unicast(self) -> bool:
        return not int(self.frame.eth_dst[:2], 16) & 1


def dst_macs(lab: SimulatedLab):
    known = sorted({v.mac for v in lab.net.vms} | {h.mac for h in lab.learned})
    random_unicast = st.integers(0, 2**40 - 1).map(
        lambda n: "0a:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (32, 24, 16, 8, 0)))
    multicast = st.sampled_from(["01:00:5e:00:00:01", "33:33:00:00:00:01",
                                 "01:80:c2:00:00:0e"])
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.just(BROADCAST),
                     multicast, random_unicast)


SPOOFS = ("eth_src", "ip", "arp_sha")


@st.composite
def shots(draw, lab: SimulatedLab, spoofing: bool | None = None) -> Shot:
    """spoofing: None = sometimes, True = always, False = never."""
    vm = draw(st.sampled_from(lab.net.vms))
    others = [v for v in lab.net.vms if v != vm]
    eth_dst = draw(dst_macs(lab))
    if spoofing is None:
        spoof = draw(st.sampled_from((None,) * 5 + SPOOFS))
    else:
        spoof = draw(st.sampled_from(SPOOFS)) if spoofing else None
    mac, ip, sha = vm.mac, str(vm.ip), vm.mac
    if spoof == "eth_src":
        mac = draw(st.sampled_from([o.mac for o in others] + ["02:de:ad:00:00:01"]))
        sha = draw(st.sampled_from([vm.mac, mac]))
    elif spoof == "ip":
        ip = draw(st.sampled_from([str(o.ip) for o in others] + ["10.0.1.1"]))
    elif spoof == "arp_sha":
        sha = draw(st.sampled_from([o.mac for o in others] + ["02:de:ad:00:00:02"]))
    if draw(st.integers(0, 2)) == 0 and (vm.ipv6 or spoofing is not False):
        return draw(ipv6_shots(vm, others, eth_dst, spoofing))
    if spoof != "arp_sha" and draw(st.booleans()):
        frame = Frame.ipv4(mac, eth_dst, ip)
    else:
        frame = Frame.arp(mac, ip, sha=sha, eth_dst=eth_dst)
    return Shot(vm, frame, spoofed=spoof is not None)


@st.composite
def ipv6_shots(draw, vm: model.VM, others, eth_dst: str, spoofing: bool | None) -> Shot:
    """IPv6 from a VM: from its own addresses, ND for itself (not spoofed);
    or from an address not its own (every address, if it has no IPv6), ND
    naming another's address or MAC, an RA, a redirect, a DHCP or DHCPv6
    server message (spoofed: none of the generated VMs is a router or
    server)."""
    own = [str(a) for a in vm.ipv6 or ()]
    foreign = [str(a) for o in others for a in o.ipv6 or ()] + ["fd00:99::99", "fe80::99"]
    other_macs = [o.mac for o in others] + ["02:de:ad:00:00:03"]
    spoof = True if not own else (draw(st.booleans()) if spoofing is None else spoofing)
    kinds = ["ipv6", "ns", "na"] + (["ra", "redirect", "dhcp", "dhcp6"] if spoof else [])
    kind = draw(st.sampled_from(kinds))
    mine = draw(st.sampled_from(own)) if own else "fe80::1"
    if kind == "ipv6":
        frame = Frame.ipv6(vm.mac, eth_dst, ipv6_src=draw(st.sampled_from(foreign))
                           if spoof else mine)
    elif kind in ("ns", "na"):
        lladdr = draw(st.sampled_from([vm.mac, None]))
        address, target = mine, draw(st.sampled_from(foreign + own))
        if spoof and own:
            # Lie about one thing: the NS's source or link-layer address, the
            # NA's target or link-layer address.
            if draw(st.booleans()):
                lladdr = draw(st.sampled_from(other_macs))
            elif kind == "ns":
                address = draw(st.sampled_from(foreign))
            else:
                target = draw(st.sampled_from(foreign))
        elif kind == "na":
            target = mine
        if kind == "ns":
            frame = Frame.icmpv6(vm.mac, eth_dst, address, ICMPV6_NS, target=target, sll=lladdr)
        else:
            frame = Frame.icmpv6(vm.mac, eth_dst, address, ICMPV6_NA, target=target, tll=lladdr)
    elif kind in ("ra", "redirect"):
        frame = Frame.icmpv6(vm.mac, eth_dst, mine, ICMPV6_RA if kind == "ra"
                             else ICMPV6_REDIRECT)
    elif kind == "dhcp":
        frame = Frame.udp(vm.mac, eth_dst, str(vm.ip), 67, 68)
    else:
        frame = Frame.udp6(vm.mac, eth_dst, mine, 547, 546)
    return Shot(vm, frame, spoofed=spoof)


@st.composite
def scenarios(draw, spoofing: bool | None = None):
    lab = draw(labs())
    return lab, draw(shots(lab, spoofing))


# ------------------------------------------------------------------ invariants

def allowed_segments(net: model.Network, shot: Shot, dst_segment: str) -> bool:
    src = shot.sender.segment
    if shot.unicast:
        return net.policy.mode(src, dst_segment) == "allow"
    return dst_segment == src and net.policy.mode(src, src) == "allow"


@PROPERTY_SETTINGS
@given(scenarios())
def test_frames_reach_only_segments_the_policy_lets_the_sender_reach(scenario):
    lab, shot = scenario
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    segment_of = lab.segment_of_port()
    for hv, port, _ in trace.deliveries:
        assert (hv, port) in segment_of, f"delivered to non-host port {hv}:{port}"
        assert allowed_segments(lab.net, shot, segment_of[(hv, port)]), \
            f"{shot.sender.segment} -> {segment_of[(hv, port)]} at {hv}:{port}"


@PROPERTY_SETTINGS
@given(scenarios())
def test_unicast_reaches_only_the_owner_of_its_destination_and_at_most_once(scenario):
    lab, shot = scenario
    if not shot.unicast:
        return
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    owner = lab.owner_port(shot.frame.eth_dst)
    assert len(trace.deliveries) <= 1, trace.deliveries
    assert trace.ports <= ({owner} if owner else set())


@PROPERTY_SETTINGS
@given(scenarios(spoofing=True))
def test_spoofed_frames_deliver_nothing(scenario):
    lab, shot = scenario
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    assert trace.deliveries == [] and trace.uplink_hops == [] and trace.packet_ins == []


@PROPERTY_SETTINGS
@given(scenarios())
def test_nothing_is_delivered_tagged(scenario):
    lab, shot = scenario
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    assert [d for d in trace.deliveries if d[2].vlans] == []
    # and what crosses the core carries exactly one tag
    assert all(len(frame.vlans) == 1 for _, frame in trace.uplink_hops)


@PROPERTY_SETTINGS
@given(scenarios(spoofing=False))
def test_frames_the_policy_allows_are_delivered_everywhere_they_should_be(scenario):
    """The other side of isolation: a well-formed allowed frame is not lost."""
    lab, shot = scenario
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    me = (shot.sender.hypervisor, shot.sender.port)
    if shot.unicast:
        owner = lab.owner_port(shot.frame.eth_dst)
        segment = owner and lab.segment_of_port()[owner]
        expected = ({owner} if owner and owner != me and lab.connected(me[0], owner[0])
                    and allowed_segments(lab.net, shot, segment) else set())
    else:
        expected = {p for p, seg in lab.segment_of_port().items()
                    if p != me and lab.connected(me[0], p[0])
                    and allowed_segments(lab.net, shot, seg)}
    assert sorted(trace.ports) == sorted(expected)
    assert len(trace.deliveries) == len(expected)
    assert all(frame == shot.frame for _, _, frame in trace.deliveries)


# ------------------------------------------------------------------ from the core

@st.composite
def core_injections(draw):
    """A frame arriving on some hypervisor's uplink with 0-2 arbitrary tags."""
    lab = draw(labs())
    hvs = [h for h in lab.net.hypervisors if h.uplink_port is not None]
    if not hvs:
        return lab, None, None
    hv = draw(st.sampled_from(hvs))
    declared = st.sampled_from([s.vlan for s in lab.net.segments])
    any_vlan = st.one_of(declared, st.integers(0, 4095))
    # Mostly the well-formed case (one declared tag), often a declared outer
    # tag hiding an inner one (QinQ smuggling), sometimes anything.
    tags = draw(st.one_of(declared.map(lambda v: [v]), declared.map(lambda v: [v]),
                          st.tuples(declared, any_vlan).map(list),
                          st.lists(any_vlan, min_size=0, max_size=2)))
    src = draw(st.sampled_from([v.mac for v in lab.net.vms] + ["0a:00:00:00:00:01"]))
    dst = draw(dst_macs(lab))
    if draw(st.booleans()):
        frame = Frame.ipv4(src, dst, "10.0.0.1", vlans=tags)
    else:
        frame = Frame.arp(src, "10.0.0.1", eth_dst=dst, vlans=tags)
    return lab, hv, frame


@PROPERTY_SETTINGS
@given(core_injections())
def test_frames_from_the_core_reach_only_their_tags_segment_on_that_hypervisor(injection):
    lab, hv, frame = injection
    if hv is None:
        return
    trace = lab.fabric.run((hv.name, hv.uplink_port), frame)
    assert trace.uplink_hops == [] and trace.packet_ins == []
    segment_by_vlan = {s.vlan: s.name for s in lab.net.segments}
    segment_of = lab.segment_of_port()
    if len(frame.vlans) != 1 or frame.vlans[0] not in segment_by_vlan:
        assert trace.deliveries == []
        return
    segment = segment_by_vlan[frame.vlans[0]]
    local = {p for p, seg in segment_of.items() if p[0] == hv.name and seg == segment}
    if int(frame.eth_dst[:2], 16) & 1:
        expected = local
    else:
        owner = lab.owner_port(frame.eth_dst)
        expected = {owner} & local
    assert sorted(trace.ports) == sorted(expected)
    assert len(trace.deliveries) == len(expected)
    assert all(out == frame.with_tags() for _, _, out in trace.deliveries)


@st.composite
def ipv6_scenarios(draw, spoofing: bool):
    """An IPv6 shot from a VM with IPv6 (spoofing: a lie of one kind or a
    forbidden message) to a known host or a multicast group."""
    lab = draw(labs())
    with_ipv6 = [v for v in lab.net.vms if v.ipv6]
    if not with_ipv6:
        return lab, None
    vm = draw(st.sampled_from(with_ipv6))
    others = [v for v in lab.net.vms if v != vm]
    eth_dst = draw(st.sampled_from([o.mac for o in others] + ["33:33:00:00:00:01",
                                                             "33:33:ff:00:00:01"]))
    return lab, draw(ipv6_shots(vm, others, eth_dst, spoofing))


@PROPERTY_SETTINGS
@given(ipv6_scenarios(spoofing=True))
def test_spoofed_or_forbidden_ipv6_delivers_nothing(scenario):
    lab, shot = scenario
    if shot is None:
        return
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    assert trace.deliveries == [] and trace.uplink_hops == [], shot.frame


@PROPERTY_SETTINGS
@given(ipv6_scenarios(spoofing=False))
def test_honest_ipv6_goes_where_ipv4_would(scenario):
    lab, shot = scenario
    if shot is None:
        return
    trace = lab.fabric.run(shot.sender.name, shot.frame)
    v4 = lab.fabric.run(shot.sender.name, Frame.ipv4(shot.sender.mac, shot.frame.eth_dst,
                                                     str(shot.sender.ip)))
    assert sorted(trace.ports) == sorted(v4.ports), shot.frame
