"""pipeline.Flow <-> OpenFlow 1.3 messages, for one Ryu datapath.

Only message building lives here; sending and event handling are in apps/.
The datapath's own ofproto/parser modules are used, so this module has no
Ryu import and stays importable by pure tests.
"""
from __future__ import annotations

import struct

from .pipeline import (ETH_TYPE_IP, ETH_TYPE_PROBE, ETH_TYPE_RARP,
                       KIND_LEARNED, PROBE_MAC, Flow)

ETH_TYPE_8021Q = 0x8100


def actions(dp, flow: Flow) -> list:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    out = []
    if flow.sample is not None:
        probability, collector_set, domain = flow.sample
        out.append(parser.NXActionSample(probability, collector_set, domain,
                                         flow.observation_point))
    for action in flow.actions:
        name, args = action[0], action[1:]
        if name == "output":
            out.append(parser.OFPActionOutput(args[0]))
        elif name == "controller":
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, args[0]))
        elif name == "push_vlan":
            out.append(parser.OFPActionPushVlan(ETH_TYPE_8021Q))
        elif name == "set_vlan":
            out.append(parser.OFPActionSetField(vlan_vid=ofp.OFPVID_PRESENT | args[0]))
        elif name == "pop_vlan":
            out.append(parser.OFPActionPopVlan())
        else:
            raise ValueError(f"unknown action {action!r}")
    return out


def flow_add(dp, flow: Flow):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    inst = []
    if flow.meter is not None:
        inst.append(parser.OFPInstructionMeter(flow.meter))
    if flow.actions or flow.sample is not None:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions(dp, flow)))
    if flow.write_metadata is not None:
        inst.append(parser.OFPInstructionWriteMetadata(*flow.write_metadata))
    if flow.goto is not None:
        inst.append(parser.OFPInstructionGotoTable(flow.goto))
    # Learned hosts expire when silent; the controller is told so it can forget them.
    flags = ofp.OFPFF_SEND_FLOW_REM if flow.kind == KIND_LEARNED else 0
    return parser.OFPFlowMod(dp, cookie=flow.cookie, table_id=flow.table,
                             command=ofp.OFPFC_ADD, idle_timeout=flow.idle_timeout,
                             priority=flow.priority, flags=flags,
                             match=parser.OFPMatch(**dict(flow.match)), instructions=inst)


def flow_delete(dp, cookie: int):
    """Delete exactly the entry that carries this cookie, in any table."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
                             table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                             match=parser.OFPMatch())


def _bundle_flags(ofp) -> int:
    return ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED


def bundle_staged(dp, bundle_id: int, messages: list) -> list:
    """Open a bundle, add the messages, close it: nothing takes effect yet."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    flags = _bundle_flags(ofp)
    return ([parser.ONFBundleCtrlMsg(dp, bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, [])]
            + [parser.ONFBundleAddMsg(dp, bundle_id, flags, m, []) for m in messages]
            + [parser.ONFBundleCtrlMsg(dp, bundle_id, ofp.ONF_BCT_CLOSE_REQUEST, flags, [])])


def bundle_commit(dp, bundle_id: int):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.ONFBundleCtrlMsg(dp, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST,
                                   _bundle_flags(ofp), [])


def bundle_discard(dp, bundle_id: int):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.ONFBundleCtrlMsg(dp, bundle_id, ofp.ONF_BCT_DISCARD_REQUEST,
                                   _bundle_flags(ofp), [])


def meter(dp, meter_id: int, rate: int, burst: int, command: int):
    """A packets-per-second meter that drops above `rate` (CONTROLLER_METER,
    DHCP_METER)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    band = parser.OFPMeterBandDrop(rate=rate, burst_size=burst)
    return parser.OFPMeterMod(dp, command=command,
                              flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
                              meter_id=meter_id, bands=[band])


def our_flows_request(dp, cookie: int, cookie_mask: int):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      cookie, cookie_mask, parser.OFPMatch())


def probe_frame(vlan: int, payload: bytes) -> bytes:
    """A firewall health probe: 802.1Q-tagged, local-experimental EtherType,
    from and to the controller's own MAC. Not IP, so firewall rules that
    filter IP traffic let it through; only a firewall that bridges nothing
    loses it."""
    mac = bytes.fromhex(PROBE_MAC.replace(":", ""))
    return (mac + mac + struct.pack("!HHH", ETH_TYPE_8021Q, vlan, ETH_TYPE_PROBE)
            + payload.ljust(46, b"\0"))


def announcement(mac: str, vlan: int) -> bytes:
    """A RARP request from `mac` to everyone, tagged with its segment's VLAN:
    what QEMU sends for a resumed guest, so learning switches of the
    physical network learn where the VM is now."""
    m = bytes.fromhex(mac.replace(":", ""))
    return (b"\xff" * 6 + m + struct.pack("!HHH", ETH_TYPE_8021Q, vlan, ETH_TYPE_RARP)
            + struct.pack("!HHBBH", 1, ETH_TYPE_IP, 6, 4, 3) + m + bytes(4) + m + bytes(4)
            ).ljust(64, b"\0")


def packet_out(dp, port: int, frame: bytes):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER,
                               [parser.OFPActionOutput(port)], frame)


def reinject(dp, in_port: int, frame: bytes):
    """A frame back into the tables as if it had just arrived on in_port."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, in_port,
                               [parser.OFPActionOutput(ofp.OFPP_TABLE)], frame)


def error_description(msg) -> str:
    """What an OpenFlow error message says. OVS reports bundle errors as ONF
    experimenter errors: then the experimenter's own type says what went wrong."""
    if msg.type == msg.datapath.ofproto.OFPET_EXPERIMENTER:
        return (f"switch error experimenter={getattr(msg, 'experimenter', '?')} "
                f"exp_type={getattr(msg, 'exp_type', '?')}")
    return f"switch error type={msg.type} code={msg.code}"
