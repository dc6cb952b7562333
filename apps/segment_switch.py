"""Ryu app: program every hypervisor bridge from the network file.

The flows come from controller.compiler (incrementally, by host) and where
bound VMs run from controller.binding; this app feeds them the switches'
ports (OpenFlow) and iface-ids (apps/ovsdb.py), reads back what a switch
holds, commits the difference (apps/commit.py: a bundle per switch, two
phases across switches, confirmed), learns hosts on learning ports, probes
the firewalls while the policy steers, reloads the file, and keeps
per-switch state for the REST API (apps/rest_api.py). The per-switch sync
state, startup adoption and learning still live here, not yet in a pure
core.

Load with ryu-manager (network file in $VGUARD_NETWORK) or, simpler, via
`python -m controller --network FILE`.
"""
from __future__ import annotations

import os
import signal
import time
from collections import deque
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

from controller import learning, model, openflow, store, views  # noqa: E402
from controller.binding import Bindings, Port, iface_ids_from_flows  # noqa: E402
from controller.compiler import Compiled, LearnedHost  # noqa: E402
from controller.health import FirewallHealth  # noqa: E402
from controller.model import Hypervisor  # noqa: E402
from controller.policy import PolicyError  # noqa: E402
from controller.pipeline import (COOKIE_TAG, COOKIE_TAG_MASK, INGRESS,  # noqa: E402
                                 KIND_LEARNED, KIND_STATIC, cookie_kind)
from controller.reconcile import plan  # noqa: E402

from apps.commit import Change, Committer  # noqa: E402
from apps.supervise import supervised  # noqa: E402
from apps import ovsdb, rest_api  # noqa: E402

MAX_RESYNCS = 3   # re-reads of a switch after failed commits before giving up
# Learns are not held back on a timer: the sync they start yields once (so
# packet-ins already queued join it), and those arriving while it commits
# join the next one, so a burst still costs few syncs.
LEARN_BATCH_SECONDS = 0.0
# After a (re)start, wait this long for every hypervisor to connect before
# changing any: a host learned on one switch is still programmed on the
# others, and must be adopted from its own switch before it is judged stale.
STARTUP_GRACE_SECONDS = 5.0
COUNTER_POLL_SECONDS = 2.0   # how fresh the per-rule counters in the API are
PORT_ROLE_NAMES = {"uplink_port": "uplink port", "firewall_port": "firewall port",
                   "ids_port": "IDS port"}
EVENTS_KEPT = 1000           # lifecycle events the API shows


@dataclass
class SwitchState:
    hv: Hypervisor
    datapath: object
    installed: set = field(default_factory=set)   # cookies the switch holds
    desired: dict = field(default_factory=dict)   # cookie -> Flow, as last committed
    flow_count: int = 0
    read_xid: int | None = None                   # the flow-stats read to reconcile from
    parts: dict = field(default_factory=dict)     # xid -> flow stats parts so far
    counters: dict = field(default_factory=dict)  # cookie -> (packets, bytes)
    ports_down: set = field(default_factory=set)
    resyncs: int = 0
    read_once: bool = False
    ports_read: bool = False                      # its port list, for bound VMs
    port_names: dict = field(default_factory=dict)   # ofport -> name
    synced: bool = False
    last_sync: float | None = None
    firewall_down: bool = False    # its committed flows treat its firewall as down


def _name(desc) -> str:
    """The port name of an OpenFlow port description."""
    name = desc.name.decode(errors="replace") if isinstance(desc.name, bytes) else desc.name
    return name.rstrip("\0")


class SegmentSwitch(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("VGUARD_NETWORK")
        if not path:
            raise SystemExit("VGUARD_NETWORK must name the network file")
        try:
            self.file_document = model.read_document(path)   # the file as last read
            self.network = model.from_document(self.file_document, path)
        except model.NetworkFileError as e:
            raise SystemExit(f"error: {e}") from None
        self.file_policy = self.network.policy   # the network file's own
        self.inventory: dict = {}                # VMs changed at run time: name -> body|None
        self._restore_state()
        self.write_lock = hub.Semaphore(1)       # read-modify-apply-save, one at a time
        self.learned: frozenset[LearnedHost] = frozenset()
        self.switches: dict[int, SwitchState] = {}
        self.refused_learns: dict[str, int] = {}
        self.packet_ins = 0
        self.bindings = Bindings(self.network)
        self.lifecycle_events = deque(maxlen=EVENTS_KEPT)   # not .events: RyuApp has one
        self.compiled: Compiled | None = None    # the intent last compiled
        self.committer = Committer(self.logger)
        self._lock = hub.Semaphore(1)       # one commit at a time
        self._sync_scheduled = False
        self._held_frames = []   # (datapath, in_port, frame) to re-inject after a sync
        self._to_announce = set()   # VMs that came up or moved, announced after a sync
        self._starting = True
        hub.spawn_after(STARTUP_GRACE_SECONDS, self._end_startup)
        supervised("counter poll", self._poll_counters, self.logger)
        steering = self.network.steering
        self.firewalls = FirewallHealth(steering.probe_interval, steering.probe_misses)
        supervised("firewall probes", self._probe_firewalls, self.logger)
        # hypervisor -> {interface name: iface-id}, from its OVSDB; until it
        # first answers, -> {ofport: iface-id} from the flows its switch holds
        self.iface_ids: dict[str, dict[str, str]] = {}
        self.flow_iface_ids: dict[str, dict[int, str]] = {}
        self.ovsdb = {address: ovsdb.Follower(address, self._ovsdb_changed, self.logger)
                      for address in sorted({hv.ovsdb for hv in self.network.hypervisors
                                             if hv.ovsdb})}
        for address, follower in self.ovsdb.items():
            supervised(f"OVSDB {address}", follower.run, self.logger)
        self._setup_rest(kwargs["wsgi"])
        # SIGHUP reloads the network file (from a greenthread: it commits).
        signal.signal(signal.SIGHUP, lambda *_: hub.spawn(self._reload_on_signal))
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
        if hv.firewall_port is not None:
            self.firewalls.watch(hv.name, time.monotonic())
        ofp = dp.ofproto
        opts = self.network.options
        # ADD fails harmlessly if the meter survives from an earlier run;
        # MODIFY then sets the configured rate either way.
        for command in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY):
            dp.send_msg(openflow.controller_meter(dp, opts.packet_in_rate,
                                                  opts.packet_in_burst, command))
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))
        self._reconcile_from_switch(state)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev):
        state = self.switches.get(ev.datapath.id)
        if state is not None and state.datapath is ev.datapath:
            del self.switches[ev.datapath.id]
            self.firewalls.forget(state.hv.name)   # a fresh grace period on return
            self.logger.warning("%s disconnected; its flows stay in place "
                                "(fail_mode=secure)", state.hv.name)

    @property
    def placed_network(self):
        """The network in force, bound VMs where they run now."""
        return self.network.placed(self.bindings.locations())

    def _port_roles(self, hv: Hypervisor) -> dict[int, str]:
        roles = {vm.port: f"VM {vm.name}" for vm in self.placed_network.vms
                 if vm.hypervisor == hv.name}
        roles.update({p: PORT_ROLE_NAMES[role] for p, role in hv.special_ports().items()})
        roles.update({lp.port: "learning port" for lp in hv.learning_ports})
        return roles

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_description(self, ev):
        state = self.switches.get(ev.msg.datapath.id)
        if state is None:
            return
        ofp = ev.msg.datapath.ofproto
        present = {p.port_no: p for p in ev.msg.body if p.port_no < ofp.OFPP_MAX}
        state.port_names = {no: _name(p) for no, p in present.items()}
        state.ports_read = True
        self._ports_changed(state)
        port = state.hv.firewall_port
        if port is not None:
            self.firewalls.port_changed(state.hv.name, up=port in present and not (
                present[port].state & ofp.OFPPS_LINK_DOWN))
        for port, what in sorted(self._port_roles(state.hv).items()):
            if port not in present:
                self.logger.warning("%s: %s %d is missing on the bridge: %s",
                                    state.hv.name, what, port, self._consequence(what))
                state.ports_down.add(port)
            elif present[port].state & ofp.OFPPS_LINK_DOWN:
                self.logger.warning("%s: %s %d is down: %s", state.hv.name, what, port,
                                    self._consequence(what))
                state.ports_down.add(port)

    def _port(self, state: SwitchState, ofport: int) -> Port:
        """A port as the bindings see it: its name from OpenFlow, its
        iface-id from OVSDB (pending while OVSDB has not reported it: the
        two channels race when a tap is added)."""
        name = state.port_names[ofport]
        if state.hv.ovsdb is not None and state.hv.name not in self.iface_ids:
            iface_id = self.flow_iface_ids.get(state.hv.name, {}).get(ofport)
            return Port(state.hv.name, ofport, name, iface_id, pending=iface_id is None)
        ids = self.iface_ids.get(state.hv.name, {})
        return Port(state.hv.name, ofport, name, ids.get(name),
                    pending=state.hv.ovsdb is not None and name not in ids)

    def _ports_changed(self, state: SwitchState) -> None:
        """Tell the bindings everything the hypervisor has now."""
        if state.ports_read:
            self._lifecycle(self.bindings.hypervisor_ports(
                state.hv.name, [self._port(state, no) for no in state.port_names],
                time.time()))
        self._startup_check()

    def _ovsdb_changed(self, address: str, by_dpid: dict) -> None:
        """An OVSDB replica changed: new iface-ids for its hypervisors."""
        for hv in self.network.hypervisors:
            if hv.ovsdb != address:
                continue
            ids = by_dpid.get(hv.dpid, {})
            if ids != self.iface_ids.get(hv.name):
                self.iface_ids[hv.name] = ids
                state = self.switches.get(hv.dpid)
                if state is not None:
                    self._ports_changed(state)
        self._startup_check()

    def _lifecycle(self, events) -> None:
        """Log lifecycle events, keep them for the API, and re-program every
        switch if a VM came, went or moved."""
        for event in events:
            if event.kind in ("up", "moved"):
                self._to_announce.add(event.vm)
            self.lifecycle_events.append(event)
            (self.logger.warning if event.warning else self.logger.info)(
                "%s: %s", event.hypervisor, event.detail)
        if any(e.kind in ("up", "down", "moved", "claimed") for e in events):
            self._sync_later()

    @staticmethod
    def _consequence(what: str) -> str:
        if what == "IDS port":
            return "mirrored copies are lost until it is back"
        if what == "uplink port":
            return "VMs on other hypervisors are unreachable"
        return "frames for it are dropped"

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev):
        msg = ev.msg
        state = self.switches.get(msg.datapath.id)
        if state is None:
            return
        ofp = msg.datapath.ofproto
        port = msg.desc.port_no
        if port < ofp.OFPP_MAX:
            if msg.reason == ofp.OFPPR_DELETE:
                state.port_names.pop(port, None)
                self._lifecycle(self.bindings.port_removed(state.hv.name, port, time.time()))
            else:
                state.port_names[port] = _name(msg.desc)
                self._lifecycle(self.bindings.port_added(self._port(state, port),
                                                         time.time()))
        what = self._port_roles(state.hv).get(port)
        if what is None:
            return
        down = msg.reason == ofp.OFPPR_DELETE or bool(msg.desc.state & ofp.OFPPS_LINK_DOWN)
        if port == state.hv.firewall_port:
            self.firewalls.port_changed(state.hv.name, up=not down)
        if down and port not in state.ports_down:
            state.ports_down.add(port)
            self.logger.warning("%s: %s %d is down: %s", state.hv.name, what, port,
                                self._consequence(what))
        elif not down and port in state.ports_down:
            state.ports_down.discard(port)
            self.logger.info("%s: %s %d is up again", state.hv.name, what, port)

    # ------------------------------------------------------ reconciliation

    def _read_flows(self, state: SwitchState) -> int:
        """Ask the switch for our flows; returns the request's xid."""
        dp = state.datapath
        request = openflow.our_flows_request(dp, COOKIE_TAG, COOKIE_TAG_MASK)
        dp.send_msg(request)
        return request.xid

    def _reconcile_from_switch(self, state: SwitchState) -> None:
        state.read_xid = self._read_flows(state)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flows_read(self, ev):
        """The one reader of flow stats: a reconciliation read, an audit
        read, or the counter poll; every complete reply refreshes the counters."""
        state = self.switches.get(ev.msg.datapath.id)
        if state is None:
            return
        xid = ev.msg.xid
        state.parts.setdefault(xid, []).extend(ev.msg.body)
        if ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        entries = state.parts.pop(xid)
        state.counters = {e.cookie: (e.packet_count, e.byte_count) for e in entries}
        audit = self._audit_reads.get((ev.msg.datapath.id, xid))
        if audit is not None:
            audit[1].extend(entries)
            audit[0].set()
        if xid != state.read_xid:
            return          # a counter poll or an audit, not a reconciliation
        state.read_xid = None
        state.installed = {e.cookie for e in entries}
        state.read_once = True
        self._adopt_learned(state.hv, entries)
        if state.hv.ovsdb is not None and state.hv.name not in self.iface_ids:
            # OVSDB has not answered yet (after a restart it may be away):
            # the switch's own entries say which ports were bound.
            self.flow_iface_ids[state.hv.name] = iface_ids_from_flows(
                self.network, [(e.table_id, dict(e.match.items())) for e in entries])
            self._ports_changed(state)
        if not self._startup_check():
            # Adopted hosts change every switch, so sync them all.
            self._sync_later()

    def _startup_check(self) -> bool:
        """While starting: end it once every hypervisor's flows and ports
        are read. True while still starting."""
        if self._starting and len(self.switches) == len(self.network.hypervisors) and \
                all(s.read_once and s.ports_read for s in self.switches.values()) and \
                all(f.synced for f in self.ovsdb.values()):
            self._end_startup()
        return self._starting

    def _end_startup(self) -> None:
        if self._starting:
            self._starting = False
            self._sync_later()

    def _adopt_learned(self, hv: Hypervisor, entries) -> None:
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

    def _sync_later(self, delay: float = 0.0) -> None:
        """Bring every switch in line with the intent, from a greenthread of
        its own (commits wait for replies the event handlers deliver).
        Requests that arrive while one is pending are served by it."""
        if self._sync_scheduled or self._starting:
            return
        self._sync_scheduled = True

        def run():
            hub.sleep(delay)
            self._sync_scheduled = False
            with self._lock:
                self._sync_all()
            self._reinject_held_frames()
            self._announce_moved()
        hub.spawn(run)

    def _sync_all(self) -> None:
        """Commit the difference on every switch that has been read. Holds the lock."""
        ready = [s for s in self.switches.values()
                 if s.read_xid is None and s.read_once and s.ports_read]
        outcome, desired, firewalls_down = self._commit(ready, self.network)
        for state in ready:
            if state.hv.name in outcome.failed:
                self._resync_after_failure(state, outcome.failed[state.hv.name])
            else:
                self._now_in_sync(state, desired[state.hv.name], firewalls_down)

    def _commit(self, states: list[SwitchState], network, bindings=None):
        """Compile `network` (its bound VMs where `bindings` say) for these
        switches and commit the differences."""
        bindings = bindings or self.bindings
        firewalls_down = frozenset(self.firewalls.down)
        placed = network.placed(bindings.locations())
        # Only the slices of hosts that came, went or moved, when nothing else
        # changed; a full compile otherwise (and after a refused change).
        if self.compiled is not None and self.compiled.same_base(placed, firewalls_down):
            self.compiled.update(placed, self.learned, bindings.candidates())
        else:
            self.compiled = Compiled(placed, self.learned, firewalls_down,
                                     bindings.candidates())
        desired = self.compiled.desired
        changes = []
        for state in states:
            change = plan(desired[state.hv.name], state.installed)
            dp = state.datapath
            if not change.empty:
                self.logger.info("%s: committing %d deletions and %d additions",
                                 state.hv.name, len(change.delete), len(change.add))
            changes.append(Change(state.hv.name, dp,
                                  [openflow.flow_delete(dp, c) for c in change.delete]
                                  + [openflow.flow_add(dp, f) for f in change.add]))
        return self.committer.commit(changes), desired, firewalls_down

    def _now_in_sync(self, state: SwitchState, desired: dict, firewalls_down) -> None:
        state.desired = dict(desired)         # a copy: the compiled state moves on
        state.firewall_down = state.hv.name in firewalls_down
        state.installed = set(state.desired)
        state.flow_count = len(desired)
        state.resyncs = 0
        if not state.synced:
            self.logger.info("%s: in sync (%d flows)", state.hv.name, state.flow_count)
        state.synced, state.last_sync = True, time.time()

    def _resync_after_failure(self, state: SwitchState, why: str) -> None:
        state.synced = False
        if state.resyncs < MAX_RESYNCS:
            state.resyncs += 1
            self.logger.error("%s: commit failed (%s); reading the switch again",
                              state.hv.name, why)
            self._reconcile_from_switch(state)
        else:
            self.logger.error("%s: commits keep failing (%s); giving up", state.hv.name, why)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        self.committer.barrier_replied(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error(self, ev):
        msg = ev.msg
        state = self.switches.get(msg.datapath.id)
        ofp = msg.datapath.ofproto
        if msg.type == ofp.OFPET_METER_MOD_FAILED and msg.code == ofp.OFPMMFC_METER_EXISTS:
            return
        name = state.hv.name if state else f"{msg.datapath.id:016x}"
        if msg.type == ofp.OFPET_EXPERIMENTER:
            # OVS reports bundle errors this way (ONF extension): the
            # experimenter's own error type is what says what went wrong.
            description = (f"switch error experimenter={getattr(msg, 'experimenter', '?')} "
                           f"exp_type={getattr(msg, 'exp_type', '?')}")
        else:
            description = f"switch error type={msg.type} code={msg.code}"
        self.logger.error("%s: %s for xid %d", name, description, msg.xid)
        self.committer.error_received(msg.datapath.id, msg.xid, description)

    # ------------------------------------------------------------ policy

    def apply_policy(self, policy) -> dict:
        """Put a new policy in force; PolicyError if the network cannot carry it."""
        return self.apply_network(self.network.with_policy(policy))

    def apply_network(self, network, inventory: dict | None = None) -> dict:
        """Put a new network (its policy, its VMs, the whole file) in force
        on every connected hypervisor, all or nothing, and confirmed; only
        the entries that differ change. inventory: the run-time VM changes
        it holds, if they change too. Call from a greenthread (a REST
        handler), not an event handler."""
        bindings, events = self.bindings.with_network(network, time.time())
        with self._lock:
            states = [s for s in self.switches.values()
                      if s.read_once and s.ports_read and s.read_xid is None]
            outcome, desired, firewalls_down = self._commit(states, network, bindings)
            if outcome.ok:
                self.network, self.bindings = network, bindings
                if inventory is not None:
                    self.inventory = inventory
                for state in states:
                    self._now_in_sync(state, desired[state.hv.name], firewalls_down)
                self._lifecycle(events)
            elif outcome.committed:
                # Phase two failed somewhere: put back the ones that committed.
                self.logger.error("policy change failed on %s; restoring %s",
                                  sorted(outcome.failed), outcome.committed)
                for state in states:
                    if state.hv.name in outcome.committed:
                        state.installed = set(desired[state.hv.name])
                    elif state.hv.name in outcome.failed:
                        self._reconcile_from_switch(state)    # unsure what it holds
                self._sync_all()
        offline = sorted(hv.name for hv in self.network.hypervisors
                         if hv.dpid not in self.switches)
        return {"ok": outcome.ok, "seconds": round(outcome.seconds, 4),
                "applied_to": sorted(s.hv.name for s in states) if outcome.ok else [],
                "failed": outcome.failed, "offline": offline}

    # ------------------------------------------------------------ learning

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        state = self.switches.get(msg.datapath.id)
        # Only our learning entries send packets here; ignore anything else.
        if state is None or cookie_kind(msg.cookie) != KIND_STATIC or msg.table_id != INGRESS:
            return
        self.packet_ins += 1
        if msg.match["in_port"] == state.hv.firewall_port:
            self.firewalls.probe_returned(state.hv.name, time.monotonic())
            return
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None:
            return
        port, mac = msg.match["in_port"], eth.src.lower()
        if any((hv, p) == (state.hv.name, port) for _vm, hv, p in self.bindings.candidates()):
            # A migrating VM's frame at its destination: it runs there now.
            events = self.bindings.frame_seen(state.hv.name, port, mac, time.time())
            if events:
                self._held_frames.append((msg.datapath, port, msg.data))
                self._lifecycle(events)
            return
        refusal = learning.decide(self.network, self.learned, state.hv.name, port, mac)
        if refusal == "already-learned":
            # Sent before the host's entry was committed: deliver it after.
            self._held_frames.append((msg.datapath, port, msg.data))
            self._sync_later(LEARN_BATCH_SECONDS)
            return
        if refusal is not None:
            self.refused_learns[refusal] = self.refused_learns.get(refusal, 0) + 1
            self.logger.warning("%s port %d: not learning %s (%s)",
                                state.hv.name, port, mac, refusal)
            return
        self.learned |= {LearnedHost(mac, state.hv.name, port)}
        self.logger.info("%s port %d: learned %s", state.hv.name, port, mac)
        self._held_frames.append((msg.datapath, port, msg.data))
        self._sync_later(LEARN_BATCH_SECONDS)

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
            self._sync_later(LEARN_BATCH_SECONDS)

    def _reinject_held_frames(self) -> None:
        """Learning frames go back through the pipeline once their entries
        are committed, so a host's first packets are not lost."""
        held, self._held_frames = self._held_frames, []
        for dp, port, data in held:
            ofp, parser = dp.ofproto, dp.ofproto_parser
            dp.send_msg(parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, port,
                                            [parser.OFPActionOutput(ofp.OFPP_TABLE)], data))

    def _announce_moved(self) -> None:
        """Once a VM that came up or moved is programmed, tell the physical
        network where it is: a RARP from its MAC out its hypervisor's uplink
        (the guest's own may have come before its port was programmed)."""
        vms, self._to_announce = self._to_announce, set()
        net = self.placed_network
        for name in sorted(vms):
            vm = next((v for v in net.vms if v.name == name and v.port is not None), None)
            hv = net.hypervisor(vm.hypervisor) if vm else None
            state = self.switches.get(hv.dpid) if hv else None
            if state is not None and hv.uplink_port is not None:
                frame = openflow.announcement(vm.mac, net.segment(vm.segment).vlan)
                state.datapath.send_msg(openflow.packet_out(state.datapath,
                                                            hv.uplink_port, frame))

    # -------------------------------------------------------------- status

    def _poll_counters(self) -> None:
        """Read every switch's counters now and then (the same request as a
        reconciliation read; the reply handler tells them apart)."""
        while True:
            hub.sleep(COUNTER_POLL_SECONDS)
            for state in list(self.switches.values()):
                if not state.parts:          # the previous poll has answered
                    self._read_flows(state)

    def _probe_firewalls(self) -> None:
        """Send a probe out of every firewall port while the policy steers;
        when a firewall stops or starts returning them, recompile: steered
        traffic then fails closed or open as the network file says."""
        steering = self.network.steering
        probing = False
        while True:
            hub.sleep(steering.probe_interval)
            if not self.network.policy.steers_anything:
                probing = False
                continue
            if not probing:
                probing = True
                self.firewalls.restart(time.monotonic())
            vlan = self.network.segments[0].vlan
            for state in list(self.switches.values()):
                port = state.hv.firewall_port
                if port is not None and state.read_once:
                    dp = state.datapath
                    frame = openflow.probe_frame(vlan, state.hv.name.encode())
                    dp.send_msg(openflow.packet_out(dp, port, frame))
            went, back = self.firewalls.evaluate(time.monotonic())
            for hv in sorted(went):
                self.logger.warning(
                    "%s: the firewall is not returning steered traffic; steered traffic "
                    "is %s", hv, "DROPPED (fail-closed)" if steering.fail == "closed"
                    else "DELIVERED DIRECTLY, UNFILTERED (fail-open)")
            for hv in sorted(back):
                self.logger.info("%s: the firewall returns traffic again; steering resumes",
                                 hv)
            if went or back:
                self._sync_later()

    def _firewall_state(self, hv: Hypervisor) -> str:
        """As the flows committed to the hypervisor treat it: "down" once
        steered traffic fails closed or open there, not when first missed."""
        if hv.firewall_port is None:
            return "none"
        if not self.network.policy.steers_anything:
            return "unused"
        state = self.switches.get(hv.dpid)
        return "down" if state is not None and state.firewall_down else "up"

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
                "firewall": self._firewall_state(hv),
            }
        return {"ready": all(d["synced"] for d in datapaths.values()),
                "datapaths": datapaths,
                "learned_hosts": [vars(h) for h in sorted(self.learned,
                                                          key=lambda h: h.mac)],
                "refused_learns": dict(self.refused_learns),
                "packet_ins": self.packet_ins}

    # ------------------------------------------------ REST API support
    # The state file (the policy in force, across restarts) and a fresh
    # read of what the switches hold, for the audit. The API itself is
    # apps/rest_api.py.

    AUDIT_READ_SECONDS = 5.0     # how long the audit waits for a switch's flows

    def _restore_state(self) -> None:
        """The saved policy and run-time VM changes, if any, on top of the file."""
        self.state_file = os.environ.get("VGUARD_STATE_FILE") or None
        if not self.state_file:
            return
        try:
            saved = store.load(self.state_file, self.network, self.file_document)
            if saved is None:
                self.logger.info("no state file %s yet: the policy is the network "
                                 "file's", self.state_file)
                return
            policy, doc = saved
            self.inventory = store.inventory(doc, self.state_file)
            self.network = model.from_document(self.file_document, self.network.source,
                                               self.inventory).with_policy(policy)
        except store.StateFileError as e:
            raise SystemExit(f"error: {e}") from None
        self.logger.info("policy%s restored from %s (saved %s)",
                         f" and {len(self.inventory)} VM changes" if self.inventory else "",
                         self.state_file, doc.get("saved_at"))
        if store.file_policy_changed(doc, self.file_policy):
            self.logger.warning("the network file's policy changed since %s was saved; "
                                "the saved policy stays in force (delete the state file "
                                "to use the file's)", self.state_file)

    def _setup_rest(self, wsgi) -> None:
        self._audit_reads = {}                        # (dpid, xid) -> (event, entries)
        rest_api.register(wsgi, self)

    def save_state(self) -> None:
        """Save the policy in force and the run-time VM changes to the state
        file; OSError if it cannot."""
        store.save(self.state_file, self.network.policy, self.file_policy,
                   self.network.source, self.inventory)

    # ------------------------------------------------------------ reload

    def reload(self) -> dict:
        """Read the network file again and put only the difference in force,
        hitless (unchanged entries keep their cookies, so they are not
        touched). NetworkFileError or PolicyError if it cannot be used, and
        then nothing changes. Call with write_lock held, from a greenthread."""
        document = model.read_document(self.network.source)
        network = model.from_document(document, self.network.source, self.inventory)
        # A policy changed through the API stays in force; else the file's.
        if self.network.policy != self.file_policy:
            network = network.with_policy(self.network.policy)
        result = self.apply_network(network)
        if result["ok"]:
            self.file_document, self.file_policy = document, model.from_document(
                document, self.network.source).policy
            self.logger.info("reloaded %s", self.network.source)
        return result

    def _reload_on_signal(self) -> None:
        with self.write_lock:
            try:
                result = self.reload()
            except (model.NetworkFileError, PolicyError) as e:
                self.logger.error("SIGHUP: not reloaded, nothing changed: %s", e)
                return
            if not result["ok"]:
                self.logger.error("SIGHUP: reload not applied, nothing changed: %s",
                                  result["failed"])
            elif self.state_file:
                self.save_state()

    def read_installed_flows(self, timeout: float | None = None) -> dict:
        """Read our flows from every connected switch now (not the counter
        poll), between commits. Per hypervisor: (the flows last committed
        there, or None if none were yet; [(cookie, table, priority, match)]
        read back, or None if the switch did not answer in time)."""
        with self._lock:
            pending = []
            for state in list(self.switches.values()):
                dp = state.datapath
                request = openflow.our_flows_request(dp, COOKIE_TAG, COOKIE_TAG_MASK)
                dp.set_xid(request)          # known before the reply can arrive
                read = (hub.Event(), [])
                self._audit_reads[(dp.id, request.xid)] = read
                dp.send_msg(request)
                pending.append((state, request.xid, read))
            deadline = time.monotonic() + (timeout or self.AUDIT_READ_SECONDS)
            out = {}
            for state, xid, (event, entries) in pending:
                answered = event.wait(max(0.0, deadline - time.monotonic()))
                self._audit_reads.pop((state.datapath.id, xid), None)
                if not answered:
                    state.parts.pop(xid, None)   # or the counter poll waits for it forever
                installed = [(e.cookie, e.table_id, e.priority,
                              views.match_doc(e.match.items())) for e in entries]
                committed = list(state.desired.values()) if state.last_sync else None
                out[state.hv.name] = (committed, installed if answered else None)
            return out
