"""Mirror-to-IDS in the compiled pipeline, executed by the table simulator."""
from __future__ import annotations

import pathlib
from dataclasses import replace

import pytest

from controller import model
from controller.compiler import compile_network
from controller.policy import PolicyError, VMRule
from controller.tablesim import CENTRAL_IDS, Fabric, Frame
from tests.test_compiler import EXAMPLE

HV1_IDS = ("hv1", 3)          # hv1's own IDS port; hv2 copies to the central IDS


@pytest.fixture(scope="module")
def net() -> model.Network:
    return model.load(str(EXAMPLE))


def fabric(net, policy) -> Fabric:
    return Fabric(net, compile_network(net.with_policy(policy)))


def unicast(net, src, dst) -> Frame:
    a, b = net.vm(src), net.vm(dst)
    return Frame.ipv4(a.mac, b.mac, a.ip)


def copies(trace) -> list:
    return [(hv, port, f) for hv, port, f in trace.deliveries
            if (hv, port) in (HV1_IDS, CENTRAL_IDS)]


def receivers(trace) -> set:
    return {(hv, port) for hv, port, _ in trace.deliveries
            if (hv, port) not in (HV1_IDS, CENTRAL_IDS)}


def test_without_mirroring_the_ids_sees_nothing(net):
    fab = fabric(net, net.policy)
    for src, dst in (("web1", "web2"), ("web1", "web3"), ("web3", "web1")):
        assert copies(fab.run(src, unicast(net, src, dst))) == []


@pytest.mark.parametrize("src,dst,ids", [
    ("web1", "web2", HV1_IDS),          # same hypervisor, local IDS
    ("web1", "web3", HV1_IDS),          # across: copied where it enters, once
    ("web3", "web1", CENTRAL_IDS),      # across, from hv2: over the mirror VLAN
])
def test_mirrored_frame_reaches_the_ids_once_identical_to_what_the_vm_gets(net, src, dst, ids):
    fab = fabric(net, net.policy.with_default("mirror"))
    frame = unicast(net, src, dst)
    trace = fab.run(src, frame)
    dst_vm = net.vm(dst)
    assert receivers(trace) == {(dst_vm.hypervisor, dst_vm.port)}
    got = copies(trace)
    assert [(hv, port) for hv, port, _ in got] == [ids]
    delivered = next(f for hv, port, f in trace.deliveries if port == dst_vm.port)
    assert got[0][2] == delivered == frame


def test_mirroring_changes_nothing_delivered_and_copies_each_delivered_frame_once(net):
    plain, mirrored = fabric(net, net.policy), fabric(net, net.policy.with_default("mirror"))
    for src in net.vms:
        for dst in net.vms:
            if dst is src:
                continue
            frame = unicast(net, src.name, dst.name)
            trace = mirrored.run(src.name, frame)
            assert receivers(plain.run(src.name, frame)) == receivers(trace)
            assert len(copies(trace)) == (1 if receivers(trace) else 0)
        bcast = Frame.arp(src.mac, src.ip)
        assert receivers(plain.run(src.name, bcast)) == receivers(mirrored.run(src.name, bcast))


def test_a_broadcast_is_copied_once_though_it_reaches_many(net):
    fab = fabric(net, net.policy.with_default("mirror"))
    web1 = net.vm("web1")
    trace = fab.run("web1", Frame.arp(web1.mac, web1.ip))
    assert len(receivers(trace)) == 2              # web2 here, web3 on hv2
    assert len(copies(trace)) == 1


def test_segment_mirror_copies_only_that_segment(net):
    fab = fabric(net, net.policy.with_segment("dmz", "mirror"))
    assert len(copies(fab.run("web1", unicast(net, "web1", "web2")))) == 1
    assert copies(fab.run("app1", unicast(net, "app1", "db1"))) == []
    assert copies(fab.run("app1", unicast(net, "app1", "app2"))) == []


def test_pair_mirror_allows_and_copies_the_pair_only(net):
    fab = fabric(net, net.policy.with_pair("dmz", "internal", "mirror"))
    trace = fab.run("web1", unicast(net, "web1", "app1"))
    assert receivers(trace) == {("hv1", 12)} and len(copies(trace)) == 1
    assert copies(fab.run("web1", unicast(net, "web1", "web2"))) == []
    assert receivers(fab.run("web1", unicast(net, "web1", "mgmt1"))) == set()


@pytest.mark.parametrize("direction,sent,received", [
    ("both", 1, 1), ("sent", 1, 0), ("received", 0, 1)])
def test_vm_mirror_copies_the_chosen_direction(net, direction, sent, received):
    fab = fabric(net, net.policy.with_vm("web1", VMRule("mirror", direction)))
    assert len(copies(fab.run("web1", unicast(net, "web1", "web3")))) == sent
    assert len(copies(fab.run("web3", unicast(net, "web3", "web1")))) == received
    assert copies(fab.run("web2", unicast(net, "web2", "web3"))) == []


def test_two_mirrored_vms_talking_get_one_copy_per_frame(net):
    policy = net.policy.with_vm("web1", VMRule("mirror")).with_vm("web2", VMRule("mirror"))
    fab = fabric(net, policy.with_default("mirror"))
    assert len(copies(fab.run("web1", unicast(net, "web1", "web2")))) == 1


def test_denied_frames_are_copied_only_when_asked(net):
    frame = unicast(net, "web1", "app1")
    assert copies(fabric(net, net.policy.with_default("mirror")).run("web1", frame)) == []
    fab = fabric(net, replace(net.policy, mirror_denied=True))
    trace = fab.run("web1", frame)
    assert receivers(trace) == set() and len(copies(trace)) == 1


def test_mirror_vlan_never_reaches_a_vm_and_a_vm_cannot_enter_it(net):
    fab = fabric(net, net.policy.with_default("mirror"))
    web3 = net.vm("web3")
    # A copy on the mirror VLAN arriving at hv1's uplink is dropped there.
    tagged = unicast(net, "web3", "web1").with_tags(net.mirror_vlan)
    assert fab.send(("hv1", 1), tagged) == set()
    # A VM that tags its own frames with the mirror VLAN reaches nothing.
    assert fab.send("web3", Frame.ipv4(web3.mac, net.vm("web1").mac, web3.ip,
                                       vlans=(net.mirror_vlan,))) == set()


def test_quarantined_vm_reaches_nothing_and_nothing_reaches_it(net):
    fab = fabric(net, net.policy.with_vm("web1", VMRule("quarantine")))
    out = fab.run("web1", unicast(net, "web1", "web2"))
    assert receivers(out) == set()
    assert [(hv, port) for hv, port, _ in copies(out)] == [HV1_IDS]   # the IDS sees it try
    assert receivers(fab.run("web2", unicast(net, "web2", "web1"))) == set()
    assert receivers(fab.run("web2", unicast(net, "web2", "web3"))) == {("hv2", 10)}


def test_mirroring_needs_a_way_to_an_ids(net):
    text = EXAMPLE.read_text().replace("mirror:\n  vlan: 900", "")
    no_vlan = model.parse(text, "no-mirror-vlan.yaml")
    with pytest.raises(PolicyError, match="hv2 has no ids_port"):
        no_vlan.with_policy(no_vlan.policy.with_default("mirror"))


# -- remote mirroring: hypervisors with no IDS of their own

REMOTE = pathlib.Path(__file__).parent / "networks" / "remote_mirror.yaml"
RSPAN = "mirror:\n  vlan: 900\n"


def remote_net(mirror_section: str | None = None) -> model.Network:
    text = REMOTE.read_text()
    if mirror_section is not None:
        text = text.replace("mirror:\n  erspan: {remote_ip: 198.18.7.10, port: 90, session: 7}\n",
                            mirror_section).replace(", mirror_port: 91", "")
    return model.parse(text, str(REMOTE))


@pytest.mark.parametrize("variant", ["erspan", "rspan"])
@pytest.mark.parametrize("src,dst,ids", [
    ("n1", "n2", CENTRAL_IDS),      # both ends remote mirrors, each way
    ("n2", "n1", CENTRAL_IDS),
    ("n2", "n3", CENTRAL_IDS),      # to the hypervisor with its own IDS
    ("n3", "n1", ("rm3", 2)),       # from it: its own IDS port
])
def test_remote_mirrors_copy_each_frame_exactly_once(variant, src, dst, ids):
    net = remote_net(None if variant == "erspan" else RSPAN)
    fab = Fabric(net, compile_network(net))
    a, b = net.vm(src), net.vm(dst)
    frame = Frame.ipv4(a.mac, b.mac, a.ip)
    trace = fab.run(src, frame)
    idses = (CENTRAL_IDS, ("rm3", 2))
    got = [(hv, port, f) for hv, port, f in trace.deliveries if (hv, port) in idses]
    assert [(hv, port) for hv, port, _ in got] == [ids]
    assert got[0][2] == frame                          # the original, untagged
    assert {(hv, port) for hv, port, _ in trace.deliveries
            if (hv, port) not in idses} == {(b.hypervisor, b.port)}


def test_tunnel_copies_leave_by_the_tunnel_port_and_the_uplink_carries_none():
    net = remote_net()
    assert [(hv.name, hv.mirror_port) for hv in net.hypervisors] == [
        ("rm1", 90), ("rm2", 91), ("rm3", None)]
    fab = Fabric(net, compile_network(net))
    n1, n2 = net.vm("n1"), net.vm("n2")
    trace = fab.run("n1", Frame.ipv4(n1.mac, n2.mac, n1.ip))
    assert [f.vlans for _, f in trace.uplink_hops] == [(410,)]   # the frame itself only


def test_frames_entering_by_a_tunnel_port_are_dropped():
    net = remote_net()
    fab = Fabric(net, compile_network(net))
    n1, n2 = net.vm("n1"), net.vm("n2")
    assert fab.send(("rm1", 90), Frame.ipv4(n2.mac, n1.mac, n2.ip)) == set()


def test_a_mirror_copy_back_on_an_uplink_is_dropped_and_counted_apart():
    net = remote_net(RSPAN)
    flows = compile_network(net)["rm1"]
    back = [f for f in flows if f.reason == "mirror-copy-returned"]
    assert len(back) == 1 and back[0].is_drop
    n2 = net.vm("n2")
    copy = Frame.ipv4(n2.mac, net.vm("n1").mac, n2.ip, vlans=(900,))
    assert Fabric(net, compile_network(net)).send(("rm1", 1), copy) == set()


@pytest.mark.parametrize("mirror,problem", [
    ("mirror: {vlan: 900, erspan: {remote_ip: 198.18.7.10, port: 90}}", "one way"),
    ("mirror: {erspan: {remote_ip: 198.18.7.300, port: 90}}", "mirror.erspan.remote_ip"),
    ("mirror: {erspan: {remote_ip: 224.0.0.5, port: 90}}", "not a unicast"),
    ("mirror: {erspan: {remote_ip: 198.18.7.10}}", "port"),
    ("mirror: {erspan: {remote_ip: 198.18.7.10, port: 90, session: 1024}}", "session"),
    ("mirror: {gre: {remote_ip: 198.18.7.10, port: 1}}", "rm1.mirror_port: port 1 is already"),
    ("mirror: {gre: {remote_ip: 198.18.7.10, port: 10}}", "vms.n1"),
    ("mirror: {vlan: 900}", "rm2.mirror_port: there is no mirror.erspan"),
])
def test_bad_mirror_sections_are_refused_with_the_place(mirror, problem):
    text = REMOTE.read_text().replace(
        "mirror:\n  erspan: {remote_ip: 198.18.7.10, port: 90, session: 7}", mirror)
    with pytest.raises(model.NetworkFileError, match=problem):
        model.parse(text, "remote.yaml")


def test_mirror_port_on_a_hypervisor_with_its_own_ids_is_refused():
    text = REMOTE.read_text().replace("ids_port: 2}", "ids_port: 2, mirror_port: 92}")
    with pytest.raises(model.NetworkFileError, match="rm3.mirror_port: it has an ids_port"):
        model.parse(text, "remote.yaml")


def test_gre_is_the_same_path():
    net = remote_net("mirror:\n  gre: {remote_ip: 198.18.7.10, port: 90}\n")
    assert net.mirror_tunnel.kind == "gre" and net.hypervisor("rm2").mirror_port == 90
    fab = Fabric(net, compile_network(net))
    n1, n2 = net.vm("n1"), net.vm("n2")
    trace = fab.run("n2", Frame.ipv4(n2.mac, n1.mac, n2.ip))
    assert [(hv, port) for hv, port, _ in trace.deliveries] .count(CENTRAL_IDS) == 1
