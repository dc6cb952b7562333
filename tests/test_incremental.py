"""Compiled.update (only the slices of the hosts that changed) ends where a
full compile of the same state does, whatever the events: VMs that boot,
stop, migrate (with candidates), hosts learned and forgotten, VMs added or
removed at run time, under a policy with mirrored and quarantined VMs."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from controller import model
from controller.compiler import Compiled, LearnedHost, compile_network
from controller.policy import VMRule

NETWORK = """
segments:
  red:   {vlan: 801}
  green: {vlan: 802}
hypervisors:
  ha: {dpid: 0x21, uplink_port: 1, ids_port: 3,
       learning_ports: [{port: 30, segment: red, max_hosts: 2}]}
  hb: {dpid: 0x22, uplink_port: 1, ids_port: 3}
  hc: {dpid: 0x23, uplink_port: 5}
vms:
  fixed: {hypervisor: ha, port: 10, segment: red, mac: "02:08:00:00:00:01", ip: 10.8.0.1}
  v1: {interface: t1, segment: red, mac: "02:08:00:00:00:11", ip: 10.8.0.11}
  v2: {interface: t2, segment: red, mac: "02:08:00:00:00:12", ip: 10.8.0.12}
  v3: {interface: t3, segment: green, mac: "02:08:00:00:00:13", ip: 10.8.0.13}
  v4: {interface: t4, segment: green, mac: "02:08:00:00:00:14", ip: 10.8.0.14}
mirror: {vlan: 899}
policy:
  default: allow
  pairs: [{segments: [red, green], mode: mirror}]
  vms:
    v1: {mode: mirror, direction: received}
    v2: {mode: mirror, direction: received}
    v4: quarantine
"""
BASE = model.parse(NETWORK, "incremental.yaml")
HVS = ("ha", "hb", "hc")
BOUND = ("v1", "v2", "v3", "v4")
LEARNED_MACS = ("02:09:00:00:00:01", "02:09:00:00:00:02", "02:09:00:00:00:03")

place = st.one_of(st.none(), st.tuples(st.sampled_from(HVS), st.integers(40, 43)))
state = st.fixed_dictionaries({
    "where": st.fixed_dictionaries({vm: place for vm in BOUND}),
    "learned": st.frozensets(st.sampled_from(LEARNED_MACS), max_size=2),
    "candidate": st.one_of(st.none(), st.tuples(st.sampled_from(BOUND),
                                                st.sampled_from(HVS))),
    "without_v3": st.booleans(),
})


def realize(s: dict):
    """(placed network, learned, candidates) for one drawn state."""
    net = BASE
    if s["without_v3"]:
        net = model.Network(**{**net.__dict__, "vms": tuple(v for v in net.vms
                                                            if v.name != "v3")})
    taken, locations = set(), {}
    for vm, where in s["where"].items():
        if where is not None and where not in taken and any(v.name == vm for v in net.vms):
            taken.add(where)
            locations[vm] = where
    candidates = frozenset()
    if s["candidate"] is not None:
        vm, hv = s["candidate"]
        if vm in locations and (hv, 50) not in taken:
            candidates = frozenset({(vm, hv, 50)})
    learned = frozenset(LearnedHost(mac, "ha", 30) for mac in s["learned"])
    return net.placed(locations), learned, candidates


def as_sets(desired: dict) -> dict:
    return {hv: set(flows) for hv, flows in desired.items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(state, min_size=2, max_size=6))
def test_incremental_updates_end_where_a_full_compile_does(states):
    first = realize(states[0])
    compiled = Compiled(*first[:2], candidates=first[2])
    for s in states[1:]:
        net, learned, candidates = realize(s)
        assert compiled.same_base(net, frozenset())
        compiled.update(net, learned, candidates)
        full = compile_network(net, learned, candidates=candidates)
        assert as_sets(compiled.desired) == {hv: {f.cookie for f in flows}
                                             for hv, flows in full.items()}


def test_a_policy_or_firewall_change_is_not_incremental():
    compiled = Compiled(BASE)
    assert compiled.same_base(BASE.placed({"v1": ("hb", 40)}), frozenset())
    assert not compiled.same_base(BASE.with_policy(BASE.policy.with_default("deny")),
                                  frozenset())
    assert not compiled.same_base(BASE.with_policy(BASE.policy.with_vm(
        "v3", VMRule("mirror"))), frozenset())
    assert not compiled.same_base(BASE, frozenset({"ha"}))
