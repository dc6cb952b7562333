"""The table simulator itself: it must execute OpenFlow 1.3 the way OVS does."""
from __future__ import annotations

import pytest

from controller import model
from controller.pipeline import (DESTINATION, FORWARD, INGRESS, MULTICAST, OFPVID_NONE,
                                 OFPVID_PRESENT, POLICY, flow)
from controller.tablesim import (BROADCAST, AmbiguousMatch, BadFlow, Fabric, ForwardingLoop,
                            Frame, Switch)

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def frame(**kw) -> Frame:
    return Frame.ipv4(kw.pop("src", A), kw.pop("dst", B), kw.pop("ip", "10.0.0.1"), **kw)


def test_highest_priority_match_wins_and_miss_drops():
    sw = Switch([flow(INGRESS, 10, in_port=1, actions=[("output", 2)]),
                 flow(INGRESS, 20, in_port=1, eth_src=A, actions=[("output", 3)])])
    assert sw.process(1, frame()) == [(3, frame())]
    assert sw.process(1, frame(src=B)) == [(2, frame(src=B))]
    assert sw.process(5, frame()) == []


def test_two_matching_entries_of_equal_priority_is_an_error():
    sw = Switch([flow(INGRESS, 10, in_port=1), flow(INGRESS, 10, eth_src=A)])
    with pytest.raises(AmbiguousMatch):
        sw.process(1, frame())


def test_vlan_vid_matching_follows_openflow_13():
    sw = Switch([flow(INGRESS, 30, vlan_vid=OFPVID_NONE, actions=[("output", 1)]),
                 flow(INGRESS, 20, vlan_vid=OFPVID_PRESENT | 10, actions=[("output", 2)]),
                 flow(INGRESS, 10, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT),
                      actions=[("output", 3)])])
    assert [p for p, _ in sw.process(9, frame())] == [1]
    assert [p for p, _ in sw.process(9, frame(vlans=[10]))] == [2]
    assert [p for p, _ in sw.process(9, frame(vlans=[11, 10]))] == [3]   # outer tag counts
    assert [p for p, _ in sw.process(9, frame(vlans=[0]))] == [3]        # priority tag


def test_eth_dst_mask_selects_group_addresses():
    sw = Switch([flow(DESTINATION, 10, eth_dst=MULTICAST, actions=[("output", 1)])],)
    sw.tables[0] = sw.tables.pop(DESTINATION)           # start the pipeline there
    assert sw.process(9, frame(dst=BROADCAST)) != []
    assert sw.process(9, frame(dst="01:00:5e:00:00:01")) != []
    assert sw.process(9, frame(dst=B)) == []


def test_actions_then_metadata_then_goto_and_metadata_mask():
    sw = Switch([
        flow(INGRESS, 10, vlan_vid=OFPVID_PRESENT | 5, actions=[("pop_vlan",)],
             write_metadata=(0x5, 0xF), goto=DESTINATION),
        flow(DESTINATION, 10, vlan_vid=OFPVID_NONE, write_metadata=(0x30, 0xF0),
             goto=POLICY),
        flow(POLICY, 10, metadata=(0x35, 0xFF), goto=FORWARD),
        flow(FORWARD, 10, eth_dst=B, actions=[("push_vlan",), ("set_vlan", 7),
                                              ("output", 2), ("pop_vlan",),
                                              ("output", 3)]),
    ])
    assert sw.process(1, frame(vlans=[5])) == [(2, frame(vlans=[7])), (3, frame())]
    assert sw.process(1, frame(vlans=[6])) == []


def test_output_to_in_port_is_dropped_and_packet_in_is_recorded():
    sw = Switch([flow(INGRESS, 10, actions=[("output", 1), ("output", 2),
                                            ("controller", 128)])])
    assert sw.process(1, frame()) == [(2, frame())]
    assert [(p.in_port, p.max_len) for p in sw.packet_ins] == [(1, 128)]


def test_ip_and_arp_fields_need_their_eth_type():
    sw = Switch([flow(INGRESS, 10, eth_type=0x0800, ipv4_src="10.0.0.1",
                      actions=[("output", 2)])])
    assert sw.process(1, frame()) != []
    assert sw.process(1, Frame.arp(A, "10.0.0.1")) == []
    with pytest.raises(BadFlow):
        Switch([flow(INGRESS, 10, ipv4_src="10.0.0.1")])


def test_fabric_gives_up_after_max_hops():
    # Output to the in_port is dropped, so a frame from the core can never be
    # sent back to it: the hop limit is a safety net. Exercise it with 0 hops.
    net = model.parse("""
segments: {a: {vlan: 5}}
hypervisors: {h1: {dpid: 1, uplink_port: 1}, h2: {dpid: 2, uplink_port: 1}}
vms: {}
""")
    to_core = [flow(INGRESS, 10, actions=[("output", 1)])]
    assert Fabric(net, {"h1": to_core, "h2": to_core}).send(("h1", 2), frame()) == set()
    with pytest.raises(ForwardingLoop):
        Fabric(net, {"h1": to_core, "h2": to_core}, max_hops=0).run(("h1", 2), frame())


def test_with_ovs_default_vlan_limit_an_inner_tag_shows_as_eth_type():
    sw = Switch([flow(INGRESS, 10, vlan_vid=OFPVID_PRESENT | 5, actions=[("pop_vlan",)],
                      goto=DESTINATION),
                 flow(DESTINATION, 20, eth_type=0x8100, actions=[("output", 2)]),
                 flow(DESTINATION, 10, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT),
                      actions=[("output", 3)]),
                 flow(DESTINATION, 5, actions=[("output", 4)])])
    double = frame(vlans=[5, 7])
    assert sw.process(1, double) == [(2, frame(vlans=[7]))]        # not re-parsed
    all_tags = Switch(sw.flows, vlan_limit=None)
    assert all_tags.process(1, double) == [(3, frame(vlans=[7]))]
    assert sw.process(1, frame(vlans=[5])) == [(4, frame())]


def test_ip_fields_of_a_frame_with_unparsed_tags_do_not_match():
    by_ip = [flow(INGRESS, 10, eth_type=0x0800, ipv4_src="10.0.0.1",
                  actions=[("output", 2)])]
    assert Switch(by_ip).process(1, frame(vlans=[5])) != []
    assert Switch(by_ip).process(1, frame(vlans=[5, 6])) == []
    assert Switch(by_ip, vlan_limit=None).process(1, frame(vlans=[5, 6])) != []
