"""The fabric: every hypervisor's switch as the controller knows it, driven
by events. Pure: no Ryu, no clock, no sockets.

The shim (apps/segment_switch.py) turns OpenFlow and OVSDB messages into the
calls below, each with `now` (wall-clock seconds), and carries out what
they return: ReadFlows (read a switch's flows to reconcile from), SendFrame,
and SYNC (bring every switch in line with the intent). A sync, or a change
of network (policy, inventory, reload), is three steps around the shim's
confirmed two-phase commit: plan() says what each ready switch must change,
the shim commits that, and applied() records the outcome (in sync; read
again after a failure; put back after a half-done change) and says what
follows. Everything the controller decides lives here, so every lifecycle,
learning and failure case is a unit test (tests/test_fabric.py).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from . import learning, model, openflow, views
from .binding import Bindings, Event, Port, iface_ids_from_flows
from .compiler import Compiled, LearnedHost
from .health import FirewallHealth
from .model import Hypervisor, Network
from .pipeline import INGRESS, KIND_LEARNED, KIND_STATIC, cookie_kind
from .reconcile import Plan, plan as diff

MAX_RESYNCS = 3   # re-reads of a switch after failed commits before giving up
# After a (re)start, wait this long for every hypervisor to connect before
# changing any: a host learned on one switch is still programmed on the
# others, and must be adopted from its own switch before it is judged stale.
STARTUP_GRACE_SECONDS = 5.0
EVENTS_KEPT = 1000           # lifecycle events the API shows
PORT_ROLE_NAMES = {"uplink_port": "uplink port", "firewall_port": "firewall port",
                   "ids_port": "IDS port"}


# ------------------------------------------------------------- what comes in

@dataclass(frozen=True)
class PortDesc:
    number: int
    name: str
    up: bool = True


@dataclass(frozen=True)
class FlowEntry:
    """One of our entries as a switch reports it."""
    cookie: int
    table: int
    match: dict
    packets: int = 0
    bytes: int = 0


@dataclass
class Outcome:
    """How a commit across switches ended."""
    ok: bool
    seconds: float
    committed: list = field(default_factory=list)   # names of switches that committed
    failed: dict = field(default_factory=dict)      # name -> why


# -------------------------------------------------------------- what goes out

@dataclass(frozen=True)
class ReadFlows:
    hypervisor: str


@dataclass(frozen=True)
class SendFrame:
    """Out of `port`; through_pipeline: into the tables as if it came in on `port`."""
    hypervisor: str
    port: int
    frame: bytes
    through_pipeline: bool = False


SYNC = "sync"


@dataclass
class Switch:
    name: str
    installed: set = field(default_factory=set)   # cookies the switch holds
    desired: dict = field(default_factory=dict)   # cookie -> Flow, as last committed
    counters: dict = field(default_factory=dict)  # cookie -> (packets, bytes)
    port_names: dict = field(default_factory=dict)   # ofport -> name
    ports_down: set = field(default_factory=set)
    reading: bool = True          # a read to reconcile from is outstanding
    read_once: bool = False
    ports_read: bool = False
    resyncs: int = 0
    given_up: bool = False        # its commits kept failing: left alone until it reconnects
    synced: bool = False
    last_sync: float | None = None
    firewall_down: bool = False   # its committed flows treat its firewall as down

    @property
    def ready(self) -> bool:
        """Known well enough to be committed to."""
        return self.read_once and self.ports_read and not self.reading and not self.given_up


@dataclass
class SyncPlan:
    network: Network
    bindings: Bindings
    events: list                  # lifecycle events the new network brings
    switches: dict                # name -> Switch, as planned for
    changes: dict                 # name -> reconcile.Plan
    desired: dict                 # name -> {cookie: Flow}
    firewalls_down: frozenset
    new_network: bool


class Fabric:
    def __init__(self, network: Network, logger, now: float, inventory: dict | None = None,
                 file_document: dict | None = None, file_policy=None):
        self.network = network
        self.inventory = dict(inventory or {})   # VMs changed at run time: name -> body|None
        self.file_document = file_document       # the network file as last read
        self.file_policy = file_policy or network.policy   # the network file's own
        self.logger = logger
        self.bindings = Bindings(network)
        self.learned: frozenset[LearnedHost] = frozenset()
        self.compiled: Compiled | None = None
        self.switches: dict[str, Switch] = {}
        self.events = deque(maxlen=EVENTS_KEPT)
        self.refused_learns: dict[str, int] = {}
        self.packet_ins = 0
        steering = network.steering
        self.firewalls = FirewallHealth(steering.probe_interval, steering.probe_misses)
        self.starting, self.started_at = True, now
        self.next_probe, self.probing = 0.0, False
        self.held: list[SendFrame] = []    # frames to re-inject after the next commit
        self.to_announce: set[str] = set()  # VMs that came up or moved
        # hypervisor -> {interface name: iface-id}, from its OVSDB; until it
        # first answers, -> {ofport: iface-id} from the flows its switch holds
        self.iface_ids: dict[str, dict[str, str]] = {}
        self.flow_iface_ids: dict[str, dict[int, str]] = {}
        self.ovsdb_answered: set[str] = set()

    # ------------------------------------------------------------ switches

    def connected(self, name: str, now: float) -> list:
        hv = self.network.hypervisor(name)
        self.logger.info("%s (datapath %016x) connected", name, hv.dpid)
        self.switches[name] = Switch(name)
        if hv.firewall_port is not None:
            self.firewalls.watch(name, now)
        return [ReadFlows(name)]

    def disconnected(self, name: str) -> list:
        if self.switches.pop(name, None) is not None:
            self.firewalls.forget(name)   # a fresh grace period on return
            self.logger.warning("%s disconnected; its flows stay in place "
                                "(fail_mode=secure)", name)
        return []

    def ports_described(self, name: str, ports: list[PortDesc], now: float) -> list:
        switch = self.switches.get(name)
        if switch is None:
            return []
        present = {p.number: p for p in ports}
        switch.port_names = {no: p.name for no, p in present.items()}
        switch.ports_read = True
        actions = self._ports_changed(switch, now)
        hv = self.network.hypervisor(name)
        if hv.firewall_port is not None:
            desc = present.get(hv.firewall_port)
            self.firewalls.port_changed(name, up=desc is not None and desc.up)
        for port, what in sorted(self.port_roles(hv).items()):
            if port not in present or not present[port].up:
                self.logger.warning("%s: %s %d is %s: %s", name, what, port,
                                    "down" if port in present else "missing on the bridge",
                                    _consequence(what))
                switch.ports_down.add(port)
        return actions

    def port_changed(self, name: str, desc: PortDesc, deleted: bool, now: float) -> list:
        switch = self.switches.get(name)
        if switch is None:
            return []
        port = desc.number
        if deleted:
            switch.port_names.pop(port, None)
            actions = self._lifecycle(self.bindings.port_removed(name, port, now))
        else:
            switch.port_names[port] = desc.name
            actions = self._lifecycle(self.bindings.port_added(self._port(switch, port), now))
        hv = self.network.hypervisor(name)
        what = self.port_roles(hv).get(port)
        if what is None:
            return actions
        down = deleted or not desc.up
        if port == hv.firewall_port:
            self.firewalls.port_changed(name, up=not down)
        if down and port not in switch.ports_down:
            switch.ports_down.add(port)
            self.logger.warning("%s: %s %d is down: %s", name, what, port, _consequence(what))
        elif not down and port in switch.ports_down:
            switch.ports_down.discard(port)
            self.logger.info("%s: %s %d is up again", name, what, port)
        return actions

    def iface_ids_changed(self, address: str, by_dpid: dict, now: float) -> list:
        """An OVSDB server answered or changed: {dpid: {interface: iface-id}}."""
        self.ovsdb_answered.add(address)
        actions = []
        for hv in self.network.hypervisors:
            if hv.ovsdb != address:
                continue
            ids = by_dpid.get(hv.dpid, {})
            if ids != self.iface_ids.get(hv.name):
                self.iface_ids[hv.name] = ids
                switch = self.switches.get(hv.name)
                if switch is not None:
                    actions += self._ports_changed(switch, now)
        return actions + self._startup_check()

    def flows_read(self, name: str, entries: list[FlowEntry], reconcile: bool,
                   now: float) -> list:
        """A complete flow-stats reply: counters always; reconcile: the read
        this switch is committed from."""
        switch = self.switches.get(name)
        if switch is None:
            return []
        switch.counters = {e.cookie: (e.packets, e.bytes) for e in entries}
        if not reconcile:
            return []
        switch.reading, switch.read_once = False, True
        switch.installed = {e.cookie for e in entries}
        self._adopt_learned(name, entries)
        actions = []
        hv = self.network.hypervisor(name)
        if hv.ovsdb is not None and name not in self.iface_ids:
            # OVSDB has not answered yet (after a restart it may be away):
            # the switch's own entries say which ports were bound.
            self.flow_iface_ids[name] = iface_ids_from_flows(
                self.network, [(e.table, e.match) for e in entries])
            actions += self._ports_changed(switch, now)
        # Adopted hosts change every switch, so sync them all.
        return actions + self._startup_check() + self._sync()

    # ------------------------------------------------------------ learning

    def packet_in(self, name: str, cookie: int, table: int, in_port: int, frame: bytes,
                  now: float) -> list:
        switch = self.switches.get(name)
        # Only our learning entries send packets here; ignore anything else.
        if switch is None or cookie_kind(cookie) != KIND_STATIC or table != INGRESS \
                or len(frame) < 14:
            return []
        self.packet_ins += 1
        if in_port == self.network.hypervisor(name).firewall_port:
            self.firewalls.probe_returned(name, now)
            return []
        mac = ":".join(f"{b:02x}" for b in frame[6:12])
        held = SendFrame(name, in_port, frame, through_pipeline=True)
        if (name, in_port) in {(hv, p) for _vm, hv, p in self.bindings.candidates()}:
            # A migrating VM's frame at its destination: it runs there now.
            events = self.bindings.frame_seen(name, in_port, mac, now)
            if events:
                self.held.append(held)
            return self._lifecycle(events)
        refusal = learning.decide(self.network, self.learned, name, in_port, mac)
        if refusal == "already-learned":
            # Sent before the host's entry was committed: deliver it after.
            self.held.append(held)
            return self._sync()
        if refusal is not None:
            self.refused_learns[refusal] = self.refused_learns.get(refusal, 0) + 1
            self.logger.warning("%s port %d: not learning %s (%s)", name, in_port, mac, refusal)
            return []
        self.learned |= {LearnedHost(mac, name, in_port)}
        self.logger.info("%s port %d: learned %s", name, in_port, mac)
        self.held.append(held)
        return self._sync()

    def flow_removed(self, name: str, cookie: int, match: dict) -> list:
        """A learned host's entry timed out on its switch: forget the host."""
        switch = self.switches.get(name)
        if switch is None or cookie_kind(cookie) != KIND_LEARNED:
            return []
        mac, port = match.get("eth_src"), match.get("in_port")
        gone = {h for h in self.learned if (h.mac, h.hypervisor, h.port) == (mac, name, port)}
        if not gone:
            return []
        self.learned -= gone
        self.logger.info("%s port %d: %s expired", name, port, mac)
        switch.installed.discard(cookie)
        return self._sync()

    def _adopt_learned(self, name: str, entries: list[FlowEntry]) -> None:
        """Take back hosts learned before a restart, as the switch still holds them."""
        adopted = set()
        for e in entries:
            mac, port = e.match.get("eth_src"), e.match.get("in_port")
            if cookie_kind(e.cookie) != KIND_LEARNED or mac is None or port is None:
                continue
            if learning.decide(self.network, self.learned | adopted, name, port, mac) is None:
                adopted.add(LearnedHost(mac, name, port))
        if adopted:
            self.learned |= adopted
            self.logger.info("%s: adopted %d learned hosts from the switch",
                             name, len(adopted))

    # ---------------------------------------------------------------- time

    def tick(self, now: float) -> list:
        """End the start-up grace; probe the firewalls while the policy steers."""
        actions = []
        if self.starting and now - self.started_at >= STARTUP_GRACE_SECONDS:
            actions += self._end_startup()
        if not self.network.policy.steers_anything:
            self.probing = False
            return actions
        if now < self.next_probe:
            return actions
        steering = self.network.steering
        self.next_probe = now + steering.probe_interval
        if not self.probing:
            # Probing starts: silence from before counts for nothing.
            self.probing = True
            self.firewalls.restart(now)
        vlan = self.network.segments[0].vlan
        for name, switch in sorted(self.switches.items()):
            port = self.network.hypervisor(name).firewall_port
            if port is not None and switch.read_once:
                actions.append(SendFrame(name, port, openflow.probe_frame(vlan, name.encode())))
        went, back = self.firewalls.evaluate(now)
        for name in sorted(went):
            self.logger.warning(
                "%s: the firewall is not returning steered traffic; steered traffic is %s",
                name, "DROPPED (fail-closed)" if steering.fail == "closed"
                else "DELIVERED DIRECTLY, UNFILTERED (fail-open)")
        for name in sorted(back):
            self.logger.info("%s: the firewall returns traffic again; steering resumes", name)
        return actions + (self._sync() if went or back else [])

    def _startup_check(self) -> list:
        """End the start-up once every hypervisor's flows and ports are read
        and every OVSDB has answered."""
        if self.starting and len(self.switches) == len(self.network.hypervisors) and \
                all(s.read_once and s.ports_read for s in self.switches.values()) and \
                {hv.ovsdb for hv in self.network.hypervisors if hv.ovsdb} <= \
                self.ovsdb_answered:
            return self._end_startup()
        return []

    def _end_startup(self) -> list:
        if not self.starting:
            return []
        self.starting = False
        return [SYNC]

    def _sync(self) -> list:
        return [] if self.starting else [SYNC]

    # ----------------------------------------------------------- lifecycle

    @property
    def placed_network(self) -> Network:
        """The network in force, bound VMs where they run now."""
        return self.network.placed(self.bindings.locations())

    def _port(self, switch: Switch, ofport: int) -> Port:
        """A port as the bindings see it: its name from OpenFlow, its
        iface-id from OVSDB (pending while OVSDB has not reported it: the
        two channels race when a tap is added)."""
        name, hv = switch.port_names[ofport], self.network.hypervisor(switch.name)
        if hv.ovsdb is not None and hv.name not in self.iface_ids:
            iface_id = self.flow_iface_ids.get(hv.name, {}).get(ofport)
            return Port(hv.name, ofport, name, iface_id, pending=iface_id is None)
        ids = self.iface_ids.get(hv.name, {})
        return Port(hv.name, ofport, name, ids.get(name),
                    pending=hv.ovsdb is not None and name not in ids)

    def _ports_changed(self, switch: Switch, now: float) -> list:
        """Tell the bindings everything the hypervisor has now."""
        actions = []
        if switch.ports_read:
            actions = self._lifecycle(self.bindings.hypervisor_ports(
                switch.name, [self._port(switch, no) for no in switch.port_names], now))
        return actions + self._startup_check()

    def _lifecycle(self, events: list[Event]) -> list:
        """Log lifecycle events and keep them for the API; a VM that came,
        went or moved re-programs the switches."""
        for event in events:
            if event.kind in ("up", "moved"):
                self.to_announce.add(event.vm)
            self.events.append(event)
            (self.logger.warning if event.warning else self.logger.info)(
                "%s: %s", event.hypervisor, event.detail)
        if any(e.kind in ("up", "down", "moved", "claimed") for e in events):
            return self._sync()
        return []

    def _announcements(self) -> list:
        """Once a VM that came up or moved is programmed, tell the physical
        network where it is: a RARP from its MAC out its hypervisor's uplink
        (the guest's own may have come before its port was programmed)."""
        names, self.to_announce = self.to_announce, set()
        net, out = self.placed_network, []
        placed = {v.name: v for v in net.vms if v.port is not None}
        for name in sorted(names & placed.keys()):
            vm = placed[name]
            hv = net.hypervisor(vm.hypervisor)
            if hv.name in self.switches and hv.uplink_port is not None:
                out.append(SendFrame(hv.name, hv.uplink_port, openflow.announcement(
                    vm.mac, net.segment(vm.segment).vlan)))
        return out

    # -------------------------------------------------------------- commits

    def plan(self, now: float, network: Network | None = None) -> SyncPlan:
        """What every ready switch must change to hold the intent: the
        network in force, or `network` (a policy, inventory or file change)."""
        new_network = network is not None
        if new_network:
            bindings, events = self.bindings.with_network(network, now)
        else:
            network, bindings, events = self.network, self.bindings, []
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
        ready = {n: s for n, s in self.switches.items() if s.ready and n in desired}
        changes = {n: diff(desired[n], s.installed) for n, s in ready.items()}
        for n, change in sorted(changes.items()):
            if not change.empty:
                self.logger.info("%s: committing %d deletions and %d additions",
                                 n, len(change.delete), len(change.add))
        return SyncPlan(network, bindings, events, ready, changes,
                        {n: desired[n] for n in ready}, firewalls_down, new_network)

    def applied(self, plan: SyncPlan, outcome: Outcome, now: float,
                inventory: dict | None = None) -> list:
        """Record how the commit of `plan` ended; inventory: the run-time VM
        changes a successful network change brings."""
        current = {n: s for n, s in plan.switches.items() if self.switches.get(n) is s}
        if outcome.ok:
            if plan.new_network:
                self.network, self.bindings = plan.network, plan.bindings
                if inventory is not None:
                    self.inventory = dict(inventory)
            for name, switch in current.items():
                self._in_sync(switch, plan.desired[name], plan.firewalls_down, now)
            actions = self._lifecycle(plan.events)
            held, self.held = self.held, []
            return actions + held + self._announcements()
        actions = []
        if plan.new_network and outcome.committed:
            self.logger.error("change failed on %s; restoring %s",
                              sorted(outcome.failed), outcome.committed)
            actions = [SYNC]      # put back the ones that committed
        for name, switch in current.items():
            if name in outcome.committed:
                if plan.new_network:
                    switch.installed = set(plan.desired[name])
                else:
                    self._in_sync(switch, plan.desired[name], plan.firewalls_down, now)
            elif name in outcome.failed:
                actions += self._resync_after_failure(switch, outcome.failed[name],
                                                      plan.new_network)
            # else: its bundle was discarded; it holds what it held.
        return actions

    def result(self, plan: SyncPlan, outcome: Outcome) -> dict:
        """The answer to a change of network."""
        offline = sorted(hv.name for hv in self.network.hypervisors
                         if hv.name not in self.switches)
        return {"ok": outcome.ok, "seconds": round(outcome.seconds, 4),
                "applied_to": sorted(plan.switches) if outcome.ok else [],
                "failed": outcome.failed, "offline": offline}

    def _in_sync(self, switch: Switch, desired: dict, firewalls_down, now: float) -> None:
        switch.desired = dict(desired)         # a copy: the compiled state moves on
        switch.firewall_down = switch.name in firewalls_down
        switch.installed = set(switch.desired)
        switch.resyncs = 0
        if not switch.synced:
            self.logger.info("%s: in sync (%d flows)", switch.name, len(desired))
        switch.synced, switch.last_sync = True, now

    def _resync_after_failure(self, switch: Switch, why: str, new_network: bool) -> list:
        """Read a switch again after its commit failed. A failed sync counts:
        after MAX_RESYNCS in a row the switch is left alone (until it
        reconnects), so that it does not hold back every other switch. A
        failed change of network does not: the sync after it is the old
        network, which this switch took before."""
        switch.synced = False
        if new_network:
            switch.reading = True
            return [ReadFlows(switch.name)]
        if switch.resyncs >= MAX_RESYNCS:
            self.logger.error("%s: commits keep failing (%s); giving up on it until it "
                              "reconnects", switch.name, why)
            switch.given_up = True
            return [SYNC]
        switch.resyncs += 1
        self.logger.error("%s: commit failed (%s); reading the switch again",
                          switch.name, why)
        switch.reading = True
        return [ReadFlows(switch.name)]

    # --------------------------------------------------------------- files

    def from_file(self, document: dict) -> tuple[Network, object]:
        """The network a re-read network file puts in force (the run-time VM
        changes on top; a policy changed through the API stays), and the
        file's own policy. NetworkFileError or PolicyError if unusable."""
        fresh = model.from_document(document, self.network.source, self.inventory)
        network = fresh
        if self.network.policy != self.file_policy:
            network = fresh.with_policy(self.network.policy)
        return network, fresh.policy

    # -------------------------------------------------------------- status

    def port_roles(self, hv: Hypervisor) -> dict[int, str]:
        roles = {vm.port: f"VM {vm.name}" for vm in self.placed_network.vms
                 if vm.hypervisor == hv.name}
        roles.update({p: PORT_ROLE_NAMES[role] for p, role in hv.special_ports().items()})
        roles.update({lp.port: "learning port" for lp in hv.learning_ports})
        return roles

    def firewall_state(self, hv: Hypervisor) -> str:
        """As the flows committed to the hypervisor treat it: "down" once
        steered traffic fails closed or open there, not when first missed."""
        if hv.firewall_port is None:
            return "none"
        if not self.network.policy.steers_anything:
            return "unused"
        switch = self.switches.get(hv.name)
        return "down" if switch is not None and switch.firewall_down else "up"

    def counters(self) -> dict:
        """Per-rule counters as the switches last reported them (views.counters)."""
        return views.counters(self.network, [(self.network.hypervisor(n), s.desired, s.counters)
                                             for n, s in sorted(self.switches.items())])

    def status(self) -> dict:
        datapaths = {}
        for hv in self.network.hypervisors:
            switch = self.switches.get(hv.name)
            datapaths[hv.name] = {
                "dpid": f"{hv.dpid:016x}",
                "connected": switch is not None,
                "synced": bool(switch and switch.synced),
                "flows": len(switch.desired) if switch else None,
                "last_sync": switch.last_sync if switch else None,
                "firewall": self.firewall_state(hv),
            }
        return {"ready": all(d["synced"] for d in datapaths.values()),
                "datapaths": datapaths,
                "learned_hosts": [vars(h) for h in sorted(self.learned, key=lambda h: h.mac)],
                "refused_learns": dict(self.refused_learns),
                "packet_ins": self.packet_ins}


def _consequence(what: str) -> str:
    if what == "IDS port":
        return "mirrored copies are lost until it is back"
    if what == "uplink port":
        return "VMs on other hypervisors are unreachable"
    return "frames for it are dropped"


__all__ = ["Fabric", "FlowEntry", "Outcome", "PortDesc", "ReadFlows", "SendFrame", "SYNC",
           "SyncPlan", "Plan"]
