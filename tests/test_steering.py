"""Steering through the physical firewall, executed by the table simulator."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controller import model
from controller.compiler import compile_network
from controller.policy import PolicyError, VMRule
from controller.tablesim import Fabric, Frame
from tests.test_compiler import EXAMPLE

HV1_IDS = ("hv1", 3)


@pytest.fixture(scope="module")
def net() -> model.Network:
    return model.load(str(EXAMPLE))


def passing(hv, frame):
    return frame


def fabric(net, policy, firewall=passing, down=frozenset(), fail="closed") -> Fabric:
    net = replace(net, steering=replace(net.steering, fail=fail)).with_policy(policy)
    return Fabric(net, compile_network(net, firewalls_down=frozenset(down)),
                  firewall=firewall)


def unicast(net, src, dst) -> Frame:
    a, b = net.vm(src), net.vm(dst)
    return Frame.ipv4(a.mac, b.mac, a.ip)


def vm_ports(trace) -> set:
    return {(hv, port) for hv, port, _ in trace.deliveries if port >= 10}


@pytest.mark.parametrize("src,dst,via", [("web1", "web2", "hv1"), ("web1", "web3", "hv1"),
                                         ("web3", "web1", "hv2")])
def test_steered_frame_crosses_its_ingress_firewall_once_and_arrives_unchanged(
        net, src, dst, via):
    frame = unicast(net, src, dst)
    trace = fabric(net, net.policy.with_default("steer")).run(src, frame)
    assert [(hv, f.vlans) for hv, f in trace.firewall_crossings] == [(via, (10,))]
    dst_vm = net.vm(dst)
    assert [(hv, port, f) for hv, port, f in trace.deliveries] == \
        [(dst_vm.hypervisor, dst_vm.port, frame)]


def test_what_the_firewall_drops_is_not_delivered(net):
    trace = fabric(net, net.policy.with_default("steer"), firewall=lambda hv, f: None) \
        .run("web1", unicast(net, "web1", "web2"))
    assert len(trace.firewall_crossings) == 1 and trace.deliveries == []


@pytest.mark.parametrize("returned", [
    lambda net, f: f.with_tags(),                         # untagged
    lambda net, f: f.with_tags(999),                      # unknown VLAN
    lambda net, f: f.with_tags(20),                       # another segment's VLAN
    lambda net, f: f.with_tags(10, 20),                   # double-tagged
    lambda net, f: replace(f, eth_dst=net.vm("app1").mac),  # re-addressed across segments
])
def test_a_frame_returned_with_unexpected_marking_is_dropped(net, returned):
    fab = fabric(net, net.policy.with_default("steer"),
                 firewall=lambda hv, f: returned(net, f))
    trace = fab.run("web1", unicast(net, "web1", "web2"))
    assert len(trace.firewall_crossings) == 1 and trace.deliveries == []


def test_every_steered_frame_crosses_exactly_once_and_never_loops(net):
    # The fabric re-injects every returned frame; a second crossing or a
    # loop would show here (the fabric also raises after too many hops).
    fab = fabric(net, net.policy.with_default("steer"))
    for src in net.vms:
        for dst in net.vms:
            if src is not dst:
                trace = fab.run(src.name, unicast(net, src.name, dst.name))
                assert len(trace.firewall_crossings) == (1 if src.segment == dst.segment
                                                         else 0)


def test_floods_are_delivered_directly_in_the_segment(net):
    web1 = net.vm("web1")
    trace = fabric(net, net.policy.with_default("steer")).run(
        "web1", Frame.arp(web1.mac, web1.ip))
    assert trace.firewall_crossings == []
    assert vm_ports(trace) == {("hv1", 11), ("hv2", 10)}


@pytest.mark.parametrize("fail,delivered", [("closed", set()), ("open", {("hv1", 11)})])
def test_firewall_down_follows_the_configured_choice(net, fail, delivered):
    trace = fabric(net, net.policy.with_default("steer"), down={"hv1"}, fail=fail) \
        .run("web1", unicast(net, "web1", "web2"))
    assert trace.firewall_crossings == []
    assert vm_ports(trace) == delivered


def test_isolation_holds_whatever_the_firewall_does(net):
    fab = fabric(net, net.policy.with_default("steer"))
    trace = fab.run("web1", unicast(net, "web1", "app1"))
    assert trace.firewall_crossings == [] and trace.deliveries == []


def test_steer_mirror_copies_once_and_crosses_once(net):
    trace = fabric(net, net.policy.with_default("steer-mirror")).run(
        "web1", unicast(net, "web1", "web2"))
    assert len(trace.firewall_crossings) == 1
    assert [(hv, port) for hv, port, _ in trace.deliveries] == [HV1_IDS, ("hv1", 11)]


def test_pair_and_vm_steering_cover_only_what_they_name(net):
    fab = fabric(net, net.policy.with_pair("dmz", "internal", "steer"))
    assert len(fab.run("web1", unicast(net, "web1", "app1")).firewall_crossings) == 1
    assert vm_ports(fab.run("web1", unicast(net, "web1", "app1"))) == {("hv1", 12)}
    assert fab.run("web1", unicast(net, "web1", "web2")).firewall_crossings == []
    fab = fabric(net, net.policy.with_vm("web1", VMRule("steer")))
    assert len(fab.run("web1", unicast(net, "web1", "web2")).firewall_crossings) == 1
    assert len(fab.run("web2", unicast(net, "web2", "web1")).firewall_crossings) == 1
    assert fab.run("web2", unicast(net, "web2", "web3")).firewall_crossings == []


def test_vm_mirror_on_a_steered_segment_still_steers(net):
    policy = net.policy.with_default("steer").with_vm("web1", VMRule("mirror"))
    trace = fabric(net, policy).run("web1", unicast(net, "web1", "web2"))
    assert len(trace.firewall_crossings) == 1
    assert [(hv, port) for hv, port, _ in trace.deliveries] == [HV1_IDS, ("hv1", 11)]


def test_steering_needs_firewall_ports(net):
    text = EXAMPLE.read_text().replace("    firewall_port: 2\n", "", 1)
    no_fw = model.parse(text, "no-fw.yaml")
    with pytest.raises(PolicyError, match="hv1 has no firewall_port"):
        no_fw.with_policy(no_fw.policy.with_default("steer"))


@pytest.mark.parametrize("segment_mode", ["allow", "mirror"])
@pytest.mark.parametrize("src,dst", [("web1", "web2"), ("web2", "web1"), ("web1", "web3"),
                                     ("web3", "web1")])
def test_a_vm_steer_rule_on_a_segment_that_does_not_steer_delivers_through_the_firewall(
        net, segment_mode, src, dst):
    """The VM's rule steers what it sends and receives; the frame back from
    the firewall goes on, though the pair itself has no steered return."""
    for steered in (["web1"], ["web1", "web2"]):
        policy = net.policy.with_default(segment_mode)
        for vm in steered:
            policy = policy.with_vm(vm, VMRule("steer"))
        trace = fabric(net, policy).run(src, unicast(net, src, dst))
        assert len(trace.firewall_crossings) == 1, (steered, trace.hops[-1].entries)
        dst_vm = net.vm(dst)
        assert vm_ports(trace) == {(dst_vm.hypervisor, dst_vm.port)}
