"""Ryu app: program every hypervisor bridge from the network file.

Thin glue. The flows come from controller.compiler; this app reads back what
a switch holds, applies the difference in one atomic bundle, learns hosts
on learning ports, and keeps per-switch state for the REST API.

Load with ryu-manager (network file in $VGUARD_NETWORK) or, simpler, via
`python -m controller --network FILE`.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

from controller import shim

shim.apply()  # before ryu.app.wsgi is imported

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from ryu.base import app_manager  # noqa: E402
from ryu.controller import ofp_event  # noqa: E402
from ryu.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,  # noqa: E402
                                    MAIN_DISPATCHER, set_ev_cls)
from ryu.lib import hub  # noqa: E402
from ryu.lib.packet import ethernet, packet  # noqa: E402
from ryu.ofproto import ofproto_v1_3  # noqa: E402

from controller import learning, model, openflow  # noqa: E402
from controller.compiler import LearnedHost, compile_network  # noqa: E402
from controller.model import Hypervisor  # noqa: E402
from controller.pipeline import (COOKIE_TAG, COOKIE_TAG_MASK, INGRESS,  # noqa: E402
                                 KIND_LEARNED, KIND_STATIC, cookie_kind)
from controller.reconcile import plan  # noqa: E402

from apps.rest_api import RestApi  # noqa: E402

MAX_RESYNCS = 3   # re-reads of a switch after failed commits before giving up
LEARN_BATCH_SECONDS = 0.05   # learns arriving together are compiled and sent once
# After a (re)start, wait this long for every hypervisor to connect before
# changing any: a host learned on one switch is still programmed on the
# others, and must be adopted from its own switch before it is judged stale.
STARTUP_GRACE_SECONDS = 5.0


@dataclass
class SwitchState:
    hv: Hypervisor
    datapath: object
    installed: set = field(default_factory=set)   # cookies the switch holds
    flow_count: int = 0
    reading: list | None = None                   # flow stats being collected
    pending: dict = field(default_factory=dict)   # barrier xid -> message xids
    failed_xids: set = field(default_factory=set)
    resyncs: int = 0
    read_once: bool = False
    synced: bool = False
    last_sync: float | None = None


class SegmentSwitch(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("VGUARD_NETWORK")
        if not path:
            raise SystemExit("VGUARD_NETWORK must name the network file")
        self.network = model.load(path)
        self.learned: frozenset[LearnedHost] = frozenset()
        self.switches: dict[int, SwitchState] = {}
        self.refused_learns: dict[str, int] = {}
        self.packet_ins = 0
        self._bundle_ids = itertools.count(1)
        self._sync_scheduled = False
        self._held_frames = []   # (datapath, in_port, frame) to re-inject after a sync
        self._starting = True
        hub.spawn_after(STARTUP_GRACE_SECONDS, self._end_startup)
        kwargs["wsgi"].register(RestApi, {"switch_app": self})
        self.logger.info("network file %s: %d segments, %d hypervisors, %d VMs",
                         path, len(self.network.segments), len(self.network.hypervisors),
                         len(self.network.vms))

    # ------------------------------------------------------------ connection

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_connected(self, ev):
        dp = ev.msg.datapath
        hv = self.network.hypervisor_by_dpid(dp.id)
        if hv is None:
            self.logger.warning("datapath %016x is not in the network file; "
                                "leaving it unprogrammed", dp.id)
            return
        self.logger.info("%s (datapath %016x) connected", hv.name, dp.id)
        state = self.switches[dp.id] = SwitchState(hv, dp)
        ofp = dp.ofproto
        opts = self.network.options
        # ADD fails harmlessly if the meter survives from an earlier run;
        # MODIFY then sets the configured rate either way.
        for command in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY):
            dp.send_msg(openflow.controller_meter(dp, opts.packet_in_rate,
                                                  opts.packet_in_burst, command))
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))
        self._read_flows(state)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev):
        state = self.switches.get(ev.datapath.id)
        if state is not None and state.datapath is ev.datapath:
            del self.switches[ev.datapath.id]
            self.logger.warning("%s disconnected; its flows stay in place "
                                "(fail_mode=secure)", state.hv.name)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_description(self, ev):
        state = self.switches.get(ev.msg.datapath.id)
        if state is None:
            return
        present = {p.port_no for p in ev.msg.body}
        hv = state.hv
        wanted = {vm.port: f"VM {vm.name}" for vm in self.network.vms
                  if vm.hypervisor == hv.name}
        wanted.update({p: role.replace("_", " ") for p, role in hv.special_ports().items()})
        wanted.update({lp.port: "learning port" for lp in hv.learning_ports})
        for port, what in sorted(wanted.items()):
            if port not in present:
                self.logger.warning("%s: port %d (%s) is missing on the bridge",
                                    hv.name, port, what)

    # ------------------------------------------------------ reconciliation

    def _read_flows(self, state: SwitchState) -> None:
        state.reading = []
        dp = state.datapath
        dp.send_msg(openflow.our_flows_request(dp, COOKIE_TAG, COOKIE_TAG_MASK))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flows_read(self, ev):
        state = self.switches.get(ev.msg.datapath.id)
        if state is None or state.reading is None:
            return
        state.reading.extend(ev.msg.body)
        if ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        entries, state.reading = state.reading, None
        state.installed = {e.cookie for e in entries}
        state.read_once = True
        adopted = self._adopt_learned(state.hv, entries)
        if self._starting:
            if all(s.read_once for s in self.switches.values()) and \
                    len(self.switches) == len(self.network.hypervisors):
                self._end_startup()
        elif adopted:
            self._sync_all()
        else:
            self._sync(state)

    def _end_startup(self) -> None:
        if self._starting:
            self._starting = False
            self._sync_all()

    def _adopt_learned(self, hv: Hypervisor, entries) -> bool:
        """Take back hosts learned before a restart, as the switch still holds them."""
        adopted = set()
        for e in entries:
            if cookie_kind(e.cookie) != KIND_LEARNED:
                continue
            mac, port = e.match.get("eth_src"), e.match.get("in_port")
            if mac is None or port is None:
                continue
            if learning.decide(self.network, self.learned | adopted, hv.name, port,
                               mac) is None:
                adopted.add(LearnedHost(mac, hv.name, port))
        if adopted:
            self.learned |= adopted
            self.logger.info("%s: adopted %d learned hosts from the switch",
                             hv.name, len(adopted))
        return bool(adopted)

    def _sync_all(self) -> None:
        if self._starting:
            return          # _end_startup syncs everything
        for state in self.switches.values():
            if state.reading is None and state.read_once:
                self._sync(state)

    def _sync(self, state: SwitchState) -> None:
        desired = compile_network(self.network, self.learned)[state.hv.name]
        change = plan(desired, state.installed)
        dp = state.datapath
        state.flow_count = len(desired)
        messages = ([openflow.flow_delete(dp, c) for c in change.delete]
                    + [openflow.flow_add(dp, f) for f in change.add])
        xids = set()
        if messages:
            for msg in openflow.bundle(dp, next(self._bundle_ids), messages):
                dp.send_msg(msg)
                xids.add(msg.xid)
            self.logger.info("%s: committing %d deletions and %d additions",
                             state.hv.name, len(change.delete), len(change.add))
        state.installed = {f.cookie for f in desired}
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.send_msg(barrier)
        state.pending[barrier.xid] = xids
        state.synced = False

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        state = self.switches.get(ev.msg.datapath.id)
        if state is None or ev.msg.xid not in state.pending:
            return
        xids = state.pending.pop(ev.msg.xid)
        if xids & state.failed_xids:
            state.failed_xids -= xids
            if state.resyncs < MAX_RESYNCS:
                state.resyncs += 1
                self.logger.error("%s: a commit failed; reading the switch again",
                                  state.hv.name)
                self._read_flows(state)
            else:
                self.logger.error("%s: commits keep failing; giving up", state.hv.name)
            return
        if not state.pending:
            state.synced, state.resyncs, state.last_sync = True, 0, time.time()
            self.logger.info("%s: in sync (%d flows)", state.hv.name, state.flow_count)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error(self, ev):
        msg = ev.msg
        state = self.switches.get(msg.datapath.id)
        ofp = msg.datapath.ofproto
        if msg.type == ofp.OFPET_METER_MOD_FAILED and msg.code == ofp.OFPMMFC_METER_EXISTS:
            return
        name = state.hv.name if state else f"{msg.datapath.id:016x}"
        self.logger.error("%s: switch error type=%d code=%d for xid %d",
                          name, msg.type, msg.code, msg.xid)
        if state is not None:
            state.failed_xids.add(msg.xid)

    # ------------------------------------------------------------ learning

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        state = self.switches.get(msg.datapath.id)
        # Only our learning entries send packets here; ignore anything else.
        if state is None or cookie_kind(msg.cookie) != KIND_STATIC or msg.table_id != INGRESS:
            return
        self.packet_ins += 1
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None:
            return
        port, mac = msg.match["in_port"], eth.src.lower()
        refusal = learning.decide(self.network, self.learned, state.hv.name, port, mac)
        if refusal == "already-learned":
            # Sent before the host's entry was committed: deliver it after.
            self._held_frames.append((msg.datapath, port, msg.data))
            self._schedule_sync()
            return
        if refusal is not None:
            self.refused_learns[refusal] = self.refused_learns.get(refusal, 0) + 1
            self.logger.warning("%s port %d: not learning %s (%s)",
                                state.hv.name, port, mac, refusal)
            return
        self.learned |= {LearnedHost(mac, state.hv.name, port)}
        self.logger.info("%s port %d: learned %s", state.hv.name, port, mac)
        self._held_frames.append((msg.datapath, port, msg.data))
        self._schedule_sync()

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def flow_removed(self, ev):
        msg = ev.msg
        state = self.switches.get(msg.datapath.id)
        if state is None or cookie_kind(msg.cookie) != KIND_LEARNED:
            return
        mac, port = msg.match.get("eth_src"), msg.match.get("in_port")
        gone = {h for h in self.learned
                if (h.mac, h.hypervisor, h.port) == (mac, state.hv.name, port)}
        if gone:
            self.learned -= gone
            self.logger.info("%s port %d: %s expired", state.hv.name, port, mac)
            state.installed.discard(msg.cookie)
            self._schedule_sync()

    def _schedule_sync(self) -> None:
        """Coalesce a burst of learning events into one sync of every switch."""
        if self._sync_scheduled:
            return
        self._sync_scheduled = True

        def run():
            hub.sleep(LEARN_BATCH_SECONDS)
            self._sync_scheduled = False
            self._sync_all()
            # The learning frames go back through the pipeline once the new
            # entries are committed (a switch handles messages in order), so
            # a host's first packet is not lost.
            held, self._held_frames = self._held_frames, []
            for dp, port, data in held:
                ofp, parser = dp.ofproto, dp.ofproto_parser
                dp.send_msg(parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, port,
                                                [parser.OFPActionOutput(ofp.OFPP_TABLE)],
                                                data))
        hub.spawn(run)

    # -------------------------------------------------------------- status

    def status(self) -> dict:
        datapaths = {}
        for hv in self.network.hypervisors:
            state = self.switches.get(hv.dpid)
            datapaths[hv.name] = {
                "dpid": f"{hv.dpid:016x}",
                "connected": state is not None,
                "synced": bool(state and state.synced),
                "flows": state.flow_count if state else None,
                "last_sync": state.last_sync if state else None,
            }
        return {"ready": all(d["synced"] for d in datapaths.values()),
                "datapaths": datapaths,
                "learned_hosts": [vars(h) for h in sorted(self.learned,
                                                          key=lambda h: h.mac)],
                "refused_learns": dict(self.refused_learns),
                "packet_ins": self.packet_ins}
