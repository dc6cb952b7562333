"""Traffic per segment pair (controller/traffic.py) on the compiler's real
entries. The counters are synthetic but frame-accurate: each frame is run
through the table simulator and every entry it matches counts it, as OVS
would; then the sums are checked per outcome and once per fabric."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from controller import model, traffic
from controller.compiler import compile_network
from controller.pipeline import POLICY, POLICY_MASK, cookie_kind, flow, metadata
from controller.policy import VMRule
from controller.tablesim import Fabric, Frame
from tests.test_compiler import EXAMPLE

NETWORKS = EXAMPLE.parent.parent / "tests" / "networks"
SIZE = 100          # bytes per synthetic frame


def load(name: str) -> model.Network:
    return model.load(str(EXAMPLE if name == "consolidated" else NETWORKS / f"{name}.yaml"))


def measure(net, sends, firewall=lambda hv, f: f, down=frozenset()):
    """Run `sends` ([(where, frame)]) through the fabric; the per-pair sums
    and the traces."""
    flows = compile_network(net, firewalls_down=frozenset(down))
    fab = Fabric(net, flows, firewall=firewall)
    hits = {hv: Counter() for hv in flows}
    traces = []
    for where, frame in sends:
        trace = fab.run(where, frame)
        traces.append(trace)
        for hop in trace.hops:
            for entry in hop.entries:
                hits[hop.hypervisor][entry.cookie] += 1
    switches = [(net.hypervisor(hv), {f.cookie: f for f in fl},
                 {c: (n, n * SIZE) for c, n in hits[hv].items()})
                for hv, fl in flows.items()]
    return traffic.segment_pairs(net, switches), traces


def unicast(net, src, dst) -> tuple:
    a, b = net.vm(src), net.vm(dst)
    return src, Frame.ipv4(a.mac, b.mac, str(a.ip))


def counted(totals) -> dict:
    return {k: p for k, (p, _) in totals.items()}


@pytest.fixture(scope="module")
def example():
    return load("consolidated")


def test_allowed_counts_once_per_fabric_on_one_hypervisor_and_across(example):
    net = example.with_policy(example.policy.with_pair("dmz", "internal", "allow"))
    totals, _ = measure(net, [unicast(net, "web1", "app1")] * 3      # hv1 only
                        + [unicast(net, "web1", "app2")] * 5         # hv1 -> hv2
                        + [unicast(net, "app2", "web3")] * 2)        # hv2 only
    assert counted(totals) == {("dmz", "internal", "allowed"): 8,
                               ("internal", "dmz", "allowed"): 2}
    assert totals[("dmz", "internal", "allowed")][1] == 8 * SIZE


def test_mirrored_is_allowed_too_with_an_ids_port_and_the_mirror_vlan(example):
    net = example.with_policy(example.policy.with_pair("dmz", "internal", "mirror"))
    # hv1 copies out its IDS port, hv2 tagged with the mirror VLAN.
    totals, _ = measure(net, [unicast(net, "web1", "app2")] * 4
                        + [unicast(net, "app2", "web1")] * 3)
    assert counted(totals) == {("dmz", "internal", "allowed"): 4,
                               ("dmz", "internal", "mirrored"): 4,
                               ("internal", "dmz", "allowed"): 3,
                               ("internal", "dmz", "mirrored"): 3}


def test_steered_then_allowed_when_the_firewall_returns_it(example):
    net = example.with_policy(example.policy.with_default("steer"))
    sends = [unicast(net, "web1", "web3")] * 3
    totals, _ = measure(net, sends)
    assert counted(totals) == {("dmz", "dmz", "steered"): 3, ("dmz", "dmz", "allowed"): 3}
    # What the firewall drops was steered, and goes no further.
    totals, _ = measure(net, sends, firewall=lambda hv, f: None)
    assert counted(totals) == {("dmz", "dmz", "steered"): 3}


def test_steering_fail_closed_refuses_the_pair(example):
    net = example.with_policy(example.policy.with_default("steer"))
    totals, _ = measure(net, [unicast(net, "web1", "web2")] * 2, down={"hv1"})
    assert counted(totals) == {("dmz", "dmz", "refused"): 2}


def test_refusals_name_what_the_entry_knows(example):
    net = example.with_policy(example.policy.with_vm("web2", VMRule("quarantine")))
    web1, app1 = net.vm("web1"), net.vm("app1")
    totals, _ = measure(net, [
        unicast(net, "web1", "app1"),                            # isolated pair
        unicast(net, "web1", "web2"), unicast(net, "web1", "web2"),   # to a quarantined VM
        unicast(net, "web2", "web1"),                            # from it (hv1: IDS copy)
        ("web1", Frame.ipv4(app1.mac, web1.mac, str(app1.ip))),  # spoofed source
    ])
    # The policy's default deny (table 2, priority 0) matches nothing: it
    # cannot say which pair it refused.
    assert counted(totals) == {("-", "-", "refused"): 1,
                               ("-", "dmz", "refused"): 2,
                               ("dmz", "-", "refused"): 2,
                               ("dmz", "-", "mirrored"): 1}


def test_a_deny_entry_that_names_its_pair_is_counted_for_it(example):
    # Should the compiler ever give denied pairs entries of their own.
    hv = example.hypervisor("hv1")
    deny = flow(POLICY, 1, "policy-deny", metadata=(metadata(10, 20), POLICY_MASK))
    assert traffic.Attribution(example).keys(hv, deny) == (("dmz", "internal", "refused"),)


def test_other_actions_change_nothing(example):
    net = example.with_policy(example.policy.with_pair("dmz", "internal", "steer-mirror"))
    reader = traffic.Attribution(net)
    for name, flows in compile_network(net).items():
        hv = net.hypervisor(name)
        for f in flows:
            sampled = replace(f, actions=(("sample", 1, 1, 7),) + f.actions)
            assert reader.keys(hv, sampled) == reader.keys(hv, f), f


def test_unattributed_entries_are_counted_apart_and_foreign_ones_not(example):
    hv = example.hypervisor("hv1")
    ours_unknown = next(iter(compile_network(example)["hv2"])).cookie ^ 1
    assert cookie_kind(ours_unknown) is not None
    totals = traffic.segment_pairs(example, [(hv, {}, {ours_unknown: (4, 400),
                                                       0x1234: (9, 900)})])
    assert totals == {("-", "-", traffic.UNATTRIBUTED): (4, 400)}


def test_north_south_through_gateways():
    net = load("gateways")
    web = net.segment("web")
    gw, w1 = web.gateways[0], net.vm("w1")
    from_gateway = (("nx1", 1), Frame.ipv4(gw.mac, w1.mac, "198.51.100.7",
                                           vlans=(web.vlan,)))
    to_gateway = ("w1", Frame.ipv4(w1.mac, gw.mac, str(w1.ip)))
    totals, _ = measure(net, [to_gateway] * 2 + [from_gateway] * 3)
    assert counted(totals) == {("web", "external", "allowed"): 2,
                               ("external", "web", "allowed"): 3}
    net = net.with_policy(net.policy.with_external("web", "deny"))
    totals, _ = measure(net, [to_gateway] * 2 + [from_gateway] * 3)
    assert counted(totals) == {("web", "external", "refused"): 2,
                               ("external", "web", "refused"): 3}


def test_remote_mirroring_by_tunnel_counts_once():
    net = load("remote_mirror")          # north mirrored; rm1 copies by ERSPAN
    totals, traces = measure(net, [unicast(net, "n1", "n2")] * 3)
    assert all(len(t.uplink_hops) >= 1 for t in traces)       # it did cross
    assert counted(totals) == {("north", "north", "allowed"): 3,
                               ("north", "north", "mirrored"): 3}


MIXED = {"consolidated": lambda p: p.with_pair("dmz", "internal", "mirror")
         .with_pair("internal", "management", "steer").with_segment("management", "deny")
         .with_vm("db1", VMRule("mirror")),
         "remote_mirror": lambda p: p.with_pair("north", "south", "allow")
         .with_pair("east", "west", "mirror").with_vm("w3", VMRule("quarantine")),
         "gateways": lambda p: p.with_pair("web", "db", "allow")
         .with_external("db", "deny").with_segment("dev", "mirror")}


@pytest.mark.parametrize("name", sorted(MIXED))
def test_every_unicast_is_allowed_once_or_refused_once(name):
    """For every ordered VM pair, one frame: exactly one 'allowed' count, for
    its own pair, if it reached the destination; else exactly one
    'refused' count. Never counted on both hypervisors."""
    base = load(name)
    net = base.with_policy(MIXED[name](base.policy))
    names = [v.name for v in net.vms]
    for src in names:
        for dst in names:
            if src == dst:
                continue
            totals, (trace,) = measure(net, [unicast(net, src, dst)])
            by = Counter()
            for (s, d, outcome), (packets, _) in totals.items():
                by[outcome] += packets
            reached = (net.vm(dst).hypervisor, net.vm(dst).port) in trace.ports
            assert (by["allowed"], by["refused"]) == ((1, 0) if reached else (0, 1)), \
                (src, dst, totals)
            if reached:
                # A router VM is a gateway: its side is north-south.
                pair = tuple(traffic.EXTERNAL if net.vm(v).router else net.vm(v).segment
                             for v in (src, dst))
                assert {k[:2] for k in totals if k[2] == "allowed"} == {pair}


@pytest.mark.parametrize("name", ["consolidated", "gateways", "remote_mirror", "ipv6",
                                  "dhcp", "lifecycle"])
def test_labels_are_segments_never_vms(name):
    """Every entry of every hypervisor counting: the labels stay within
    the segments, "external" and "-", so at most (S + 2)^2 pairs per outcome."""
    base = load(name)
    for policy in (base.policy, MIXED.get(name, lambda p: p.with_default("steer-mirror")
                                          if base.hypervisors[0].firewall_port else p)
                   (base.policy)):
        net = base.with_policy(policy)
        totals = every_entry_counting(net)
        labels = {s.name for s in net.segments} | {traffic.EXTERNAL, traffic.UNKNOWN}
        assert all(s in labels and d in labels and o in traffic.OUTCOMES
                   for s, d, o in totals), totals
        assert len(totals) <= len(traffic.OUTCOMES) * len(labels) ** 2


def every_entry_counting(net) -> dict:
    flows = compile_network(net)
    return traffic.segment_pairs(net, [
        (net.hypervisor(hv), {f.cookie: f for f in fl}, {f.cookie: (1, SIZE) for f in fl})
        for hv, fl in flows.items()])


def test_more_vms_bring_no_more_series():
    text = EXAMPLE.read_text()
    head, tail = text.split("\nvms:\n")
    vms = "".join(f'  x{i}: {{hypervisor: hv{1 + i % 2}, port: {100 + i}, '
                  f'segment: {("dmz", "internal", "management")[i % 3]}, '
                  f'mac: "02:00:00:01:{i // 256:02x}:{i % 256:02x}", '
                  f'ip: 10.9.{i // 200}.{i % 200 + 1}}}\n' for i in range(300))
    big = model.parse(head + "\nvms:\n" + vms + tail, "big.yaml")
    small = load("consolidated")
    for policy in (lambda p: p, MIXED["consolidated"]):
        assert every_entry_counting(big.with_policy(policy(big.policy))).keys() == \
            every_entry_counting(small.with_policy(policy(small.policy))).keys()
