"""Ryu app: the shim between OpenFlow, OVSDB and the fabric.

controller.fabric decides everything. This app turns Ryu events into its
calls and carries out what they return: flow reads (apps/flow_reads.py),
frames, and syncs (a bundle per switch, two phases across switches,
confirmed: apps/commit.py). apps/ovsdb.py follows the hypervisors' OVSDB,
apps/intent.py changes the network from outside, apps/alerts.py takes IDS
alerts, apps/rest_api.py serves the API.

Load with ryu-manager (network file in $VGUARD_NETWORK) or, simpler, via
`python -m controller --network FILE`.
"""
from __future__ import annotations

import os
import signal
import time

from controller import shim

shim.apply()  # before ryu.app.wsgi is imported

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from ryu.base import app_manager  # noqa: E402
from ryu.controller import ofp_event  # noqa: E402
from ryu.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,  # noqa: E402
                                    HANDSHAKE_DISPATCHER, MAIN_DISPATCHER, set_ev_cls)
from ryu.lib import hub  # noqa: E402
from ryu.ofproto import ofproto_v1_3 as ofp13  # noqa: E402

from controller import openflow  # noqa: E402
from controller.fabric import SAVE, SYNC, Fabric, FlowEntry, PortDesc, ReadFlows  # noqa: E402
from controller.pipeline import CONTROLLER_METER, DHCP_METER  # noqa: E402

from apps import alerts, collector, intent, ovsdb, rest_api  # noqa: E402
from apps.commit import Change, Committer  # noqa: E402
from apps.flow_reads import FlowReads  # noqa: E402
from apps.supervise import supervised  # noqa: E402

TICK_SECONDS = 0.1           # the fabric's clock: firewall probes, end of start-up
COUNTER_POLL_SECONDS = 2.0   # how fresh the per-rule counters in the API are, at best
# The poll's budget: a big fabric gets staler counters, not a controller
# busy parsing them (100 hypervisors x 10,000 entries: one round per 50 s).
COUNTER_ENTRIES_PER_SECOND = 20_000
AUDIT_READ_SECONDS = 5.0     # how long the audit waits for a switch's flows
HANDSHAKE_SECONDS = 10.0     # an OpenFlow peer that is no switch by then is closed


def _port(desc) -> PortDesc:
    name = desc.name.decode(errors="replace") if isinstance(desc.name, bytes) else desc.name
    return PortDesc(desc.port_no, name.rstrip("\0"), not desc.state & ofp13.OFPPS_LINK_DOWN)


class SegmentSwitch(app_manager.RyuApp):
    OFP_VERSIONS = [ofp13.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("VGUARD_NETWORK")
        if not path:
            raise SystemExit("VGUARD_NETWORK must name the network file")
        state_file = os.environ.get("VGUARD_STATE_FILE") or None
        self.fabric = Fabric(logger=self.logger, now=time.time(),
                             **intent.initial(path, state_file, self.logger))
        network = self.fabric.network
        self.intent = intent.Intent(self.fabric, self._put_in_force, state_file, self.logger)
        self.datapaths = {}         # hypervisor -> its connected Ryu datapath
        self.names = {}             # dpid -> hypervisor
        self.committer = Committer(self.logger)
        self.reads = FlowReads()
        self._commit_lock = hub.Semaphore(1)
        self._sync_scheduled = self._save_scheduled = False
        supervised("fabric clock", self._tick, self.logger)
        supervised("counter poll", self._poll_counters, self.logger)
        for address in sorted({hv.ovsdb for hv in network.hypervisors if hv.ovsdb}):
            follower = ovsdb.Follower(address, self._ovsdb_changed, self.logger)
            supervised(f"OVSDB {address}", follower.run, self.logger)
        self.collector = collector.from_environment(self)
        if self.collector is not None:
            supervised("flow collector", self.collector.run, self.logger)
            supervised("flow log flush", self.collector.flush_loop, self.logger)
        self.alerts = alerts.AlertIntake(self)
        eve_file = os.environ.get("VGUARD_EVE_FILE")
        if eve_file:
            supervised("EVE file", lambda: self.alerts.follow(eve_file), self.logger)
        rest_api.register(kwargs["wsgi"], self)
        # SIGHUP reloads the network file (from a greenthread: it commits).
        signal.signal(signal.SIGHUP, lambda *_: hub.spawn(self.intent.reload_on_signal))
        self.logger.info("network file %s: %d segments, %d hypervisors, %d VMs", path,
                         len(network.segments), len(network.hypervisors), len(network.vms))

    # ------------------------------------------------------ events in

    def _current(self, dp) -> str | None:
        """The hypervisor of a datapath, if it is the connection in use."""
        name = self.names.get(dp.id)
        return name if name is not None and self.datapaths.get(name) is dp else None

    @set_ev_cls(ofp_event.EventOFPStateChange, HANDSHAKE_DISPATCHER)
    def connection_opened(self, ev):
        hub.spawn_after(HANDSHAKE_SECONDS, self._close_unless_switch, ev.datapath)

    def _close_unless_switch(self, dp) -> None:
        """A peer that never completed the handshake would hold its
        connection for ever (Ryu sends it no echo): close it."""
        if dp.is_active and dp.state != MAIN_DISPATCHER and dp.state != DEAD_DISPATCHER:
            self.logger.warning("closing the OpenFlow connection from %s: no handshake "
                                "within %.0f s", dp.address, HANDSHAKE_SECONDS)
            dp.close()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_connected(self, ev):
        dp = ev.msg.datapath
        hv = self.fabric.network.hypervisor_by_dpid(dp.id)
        if hv is None:
            self.logger.warning("datapath %016x is not in the network file; "
                                "leaving it unprogrammed", dp.id)
            return
        first = self.datapaths.get(hv.name)
        if self.fabric.connection_refused(hv.name, dp.address[0],
                                          first is not None and first.is_active):
            dp.close()      # before anything is sent to it: it learns nothing
            return
        self.datapaths[hv.name], self.names[dp.id] = dp, hv.name
        opts = self.fabric.network.options
        # ADD fails harmlessly if the meter survives from an earlier run;
        # MODIFY then sets the configured rate either way.
        for command in (dp.ofproto.OFPMC_ADD, dp.ofproto.OFPMC_MODIFY):
            dp.send_msg(openflow.meter(dp, CONTROLLER_METER, opts.packet_in_rate,
                                       opts.packet_in_burst, command))
            dp.send_msg(openflow.meter(dp, DHCP_METER, opts.dhcp_rate, opts.dhcp_rate,
                                       command))
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))
        self._do(self.fabric.connected(hv.name, time.time()))

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev):
        name = self._current(ev.datapath)
        if name is not None:
            del self.datapaths[name]
            self.reads.forget(ev.datapath.id)
            self._do(self.fabric.disconnected(name))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_description(self, ev):
        name = self._current(ev.msg.datapath)
        if name is not None:
            self._do(self.fabric.ports_described(
                name, [_port(p) for p in ev.msg.body if p.port_no < ofp13.OFPP_MAX],
                time.time()))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev):
        name = self._current(ev.msg.datapath)
        if name is not None and ev.msg.desc.port_no < ofp13.OFPP_MAX:
            self._do(self.fabric.port_changed(name, _port(ev.msg.desc),
                                              ev.msg.reason == ofp13.OFPPR_DELETE, time.time()))

    def _ovsdb_changed(self, address: str, by_dpid: dict) -> None:
        self._do(self.fabric.iface_ids_changed(address, by_dpid, time.time()))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flows_read(self, ev):
        read, name = self.reads.reply(ev.msg), self._current(ev.msg.datapath)
        if read is not None and name is not None:
            entries, reconcile = read
            self._do(self.fabric.flows_read(
                name, [FlowEntry(e.cookie, e.table_id, e.match, e.packet_count, e.byte_count)
                       for e in entries], reconcile, time.time()))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        name = self._current(msg.datapath)
        if name is not None:
            self._do(self.fabric.packet_in(name, msg.cookie, msg.table_id,
                                           msg.match["in_port"], msg.data, time.time()))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def flow_removed(self, ev):
        name = self._current(ev.msg.datapath)
        if name is not None:
            self._do(self.fabric.flow_removed(name, ev.msg.cookie, ev.msg.match))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        self.committer.barrier_replied(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error(self, ev):
        msg = ev.msg
        if (msg.type, msg.code) == (ofp13.OFPET_METER_MOD_FAILED, ofp13.OFPMMFC_METER_EXISTS):
            return
        description = openflow.error_description(msg)
        self.logger.error("%s: %s for xid %d", self.names.get(msg.datapath.id,
                                                              f"{msg.datapath.id:016x}"),
                          description, msg.xid)
        self.committer.error_received(msg.datapath.id, msg.xid, description)

    def _tick(self) -> None:
        while True:
            hub.sleep(TICK_SECONDS)
            self._do(self.fabric.tick(time.time()))

    def _poll_counters(self) -> None:
        while True:
            busy, entries = self.reads.busy(), 0    # busy: the last read is unanswered
            for name, dp in list(self.datapaths.items()):
                switch = self.fabric.switches.get(name)
                if dp.id not in busy and switch is not None:
                    self.reads.request(dp)
                    entries += len(switch.desired)
            hub.sleep(max(COUNTER_POLL_SECONDS, entries / COUNTER_ENTRIES_PER_SECOND))

    # ----------------------------------------------------- actions out

    def _do(self, actions: list) -> None:
        for action in actions:
            if action == SYNC:
                self._sync_later()
                continue
            if action == SAVE:
                self._save_later()
                continue
            dp = self.datapaths.get(action.hypervisor)
            if dp is None:
                continue
            if isinstance(action, ReadFlows):
                self.reads.request(dp, reconcile=True)
            elif action.through_pipeline:
                dp.send_msg(openflow.reinject(dp, action.port, action.frame))
            else:
                dp.send_msg(openflow.packet_out(dp, action.port, action.frame))

    def _save_later(self) -> None:
        """Write the state file (DHCP leases changed) from a greenthread."""
        if self.intent.state_file and not self._save_scheduled:
            self._save_scheduled = True

            def run():
                hub.sleep(0)
                self._save_scheduled = False
                try:
                    self.intent.save_state()
                except OSError as e:
                    self.logger.error("could not save %s: %s", self.intent.state_file, e)
            hub.spawn(run)

    def _sync_later(self) -> None:
        """A sync from a greenthread of its own (a commit waits for replies the
        event handlers deliver). It yields once first, so packet-ins already
        queued join it; requests that come while it is pending are served by it."""
        if self._sync_scheduled:
            return
        self._sync_scheduled = True

        def run():
            hub.sleep(0)
            self._sync_scheduled = False
            self._put_in_force()
        hub.spawn(run)

    def _put_in_force(self, network=None, inventory: dict | None = None) -> dict:
        """Commit what the fabric plans (for `network`, if given) on every
        ready switch, all or nothing, confirmed."""
        with self._commit_lock:
            plan = self.fabric.plan(time.time(), network)
            changes = []
            for name, change in plan.changes.items():
                dp = self.datapaths[name]
                changes.append(Change(name, dp, [openflow.flow_delete(dp, c)
                                                 for c in change.delete]
                                      + [openflow.flow_add(dp, f) for f in change.add]))
            # A change of network is all or nothing across switches; a sync
            # brings each in line on its own (one that fails is read again).
            outcome = self.committer.commit(changes, two_phase=plan.new_network)
            actions = self.fabric.applied(plan, outcome, time.time(), inventory)
        self._do(actions)
        return self.fabric.result(plan, outcome)

    def read_flows_now(self, timeout: float = AUDIT_READ_SECONDS) -> dict:
        """Every connected switch's entries read now, between commits (for the
        audit): hypervisor -> Ryu flow stats, or None if it did not answer."""
        with self._commit_lock:
            return self.reads.audit(dict(self.datapaths), timeout)
