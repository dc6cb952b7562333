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

import ipaddress
from collections import deque
from dataclasses import dataclass, field, replace

from . import dhcp, learning, model, openflow, views
from .autoresponse import AutoResponse
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
REFUSALS_LOGGED_EVERY = 10.0  # seconds: one log line per port and reason at most
RETURNED_COPIES_LOGGED_EVERY = 300.0   # seconds, per hypervisor
PORT_ROLE_NAMES = {"uplink_port": "uplink port", "firewall_port": "firewall port",
                   "ids_port": "IDS port", "mirror_port": "mirror tunnel port"}


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
SAVE = "save"        # the state to keep across restarts changed (DHCP leases)
DHCP_SNOOPED = ("dhcp-server", "dhcp-uplink", "dhcp-client")   # entries that copy DHCP up


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
    # It holds what the compile held at the last plan committed to it: the
    # next change is only among the entries touched since (else a full diff).
    in_line: bool = False
    given_up: bool = False        # its commits kept failing: left alone until it reconnects
    synced: bool = False
    last_sync: float | None = None
    firewall: str = "unknown"     # as its committed flows treat its firewall: up, down, unknown

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
    pending: list = field(default_factory=list)   # hypervisors it changes that cannot take it now
    incremental: set = field(default_factory=set)  # switches whose change is only the touched
    unmeasured: frozenset = frozenset()   # of firewalls_down: no probe has returned yet


class Fabric:
    def __init__(self, network: Network, logger, now: float, inventory: dict | None = None,
                 file_document: dict | None = None, file_policy=None,
                 leases: dict | None = None, file_response=None,
                 response_state: dict | None = None):
        self.network = network
        self.inventory = dict(inventory or {})   # VMs changed at run time: name -> body|None
        self.file_document = file_document       # the network file as last read
        self.file_policy = file_policy or network.policy   # the network file's own
        self.file_response = file_response or network.response
        # The IDS's automatic actions in force, and their audit trail.
        self.response = AutoResponse(network.response, response_state)
        self.logger = logger
        self.bindings = Bindings(network)
        self.learned: frozenset[LearnedHost] = frozenset()
        self.compiled: Compiled | None = None
        self.switches: dict[str, Switch] = {}
        self.held_when_gone: dict[str, set] = {}    # cookies a disconnected switch held
        self.events = deque(maxlen=EVENTS_KEPT)
        self.refused_learns: dict[str, int] = {}
        self.refused_connections: dict[str, int] = {}   # hypervisor -> how many
        self.learn_bans: dict[tuple[str, int], float] = {}   # (hv, port) -> banned until
        self.bans = self.banned_learns = 0
        self._offers: dict[tuple[str, int], deque] = {}     # new MACs offered, last second
        self._refusals_logged: dict[tuple, tuple] = {}
        self.packet_ins = 0
        # Mirror-VLAN copies that came back on a hypervisor's uplink: count
        # since start, and the switch counter and time last seen/logged.
        self.copies_returned: dict[str, int] = {}
        self._returned_seen: dict[str, tuple[int, float | None]] = {}
        steering = network.steering
        self.firewalls = FirewallHealth(steering.probe_interval, steering.probe_misses)
        self.starting, self.started_at = True, now
        self.next_probe = 0.0
        self._measured: set[str] = set()   # firewalls that returned a probe once
        self.held: list[SendFrame] = []    # frames to re-inject after the next commit
        self.to_announce: set[str] = set()  # VMs that came up or moved
        # hypervisor -> {interface name: iface-id}, from its OVSDB; until it
        # first answers, -> {ofport: iface-id} from the flows its switch holds
        self.iface_ids: dict[str, dict[str, str]] = {}
        self.flow_iface_ids: dict[str, dict[int, str]] = {}
        self.ovsdb_answered: set[str] = set()
        self.leases: dict[str, dhcp.Lease] = dict(leases or {})   # ip: dhcp VM -> its lease
        self.dhcp_counts: dict[str, int] = {}     # snooped messages, by what became of them

    # ------------------------------------------------------------ switches

    def connection_refused(self, name: str, address: str, already_connected: bool
                           ) -> str | None:
        """Why an OpenFlow connection claiming hypervisor `name`'s datapath id
        is refused, or None. The first connection is never displaced: a
        second one is an impostor, or a twin of a connection not yet known
        dead (it is refused until the echo timeout closes the first)."""
        hv = self.network.hypervisor(name)
        if not hv.accepts_connection_from(address):
            why = (f"it comes from {address}, not from "
                   f"{', '.join(str(n) for n in hv.connect_from)} (connect_from)")
        elif already_connected:
            why = "the hypervisor is connected already; the first connection stays"
        else:
            return None
        self.refused_connections[name] = self.refused_connections.get(name, 0) + 1
        self.logger.error("ALARM: refused an OpenFlow connection claiming %s "
                          "(datapath %016x): %s", name, hv.dpid, why)
        return why

    def connected(self, name: str, now: float) -> list:
        hv = self.network.hypervisor(name)
        self.logger.info("%s (datapath %016x) connected", name, hv.dpid)
        self.switches[name] = Switch(name)
        self.held_when_gone.pop(name, None)
        if hv.firewall_port is not None:
            self.firewalls.watch(name)
            if self.network.policy.steers_anything and self.firewalls.unknown(name):
                self.logger.warning("%s: the firewall is unknown until a probe returns; "
                                    "steered traffic is %s meanwhile", name,
                                    self._fails())
        return [ReadFlows(name)]

    def disconnected(self, name: str) -> list:
        switch = self.switches.pop(name, None)
        if switch is not None:
            if switch.read_once:
                self.held_when_gone[name] = switch.installed
            self.firewalls.forget(name)   # unknown again when it returns
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
        port, candidates = desc.number, self.bindings.candidates()
        if deleted:
            switch.port_names.pop(port, None)
            actions = self._lifecycle(self.bindings.port_removed(name, port, now), candidates)
        else:
            switch.port_names[port] = desc.name
            actions = self._lifecycle(self.bindings.port_added(self._port(switch, port), now),
                                      candidates)
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
        self._copies_came_back(name, switch, now)
        if not reconcile:
            return []
        switch.reading, switch.read_once, switch.in_line = False, True, False
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

    def _copies_came_back(self, name: str, switch: Switch, now: float) -> None:
        """Mirror copies that the physical network sent back to this uplink:
        counted, and explained once every RETURNED_COPIES_LOGGED_EVERY."""
        if self.network.mirror_vlan is None:
            return
        total = sum(switch.counters.get(cookie, (0, 0))[0]
                    for cookie, f in switch.desired.items()
                    if f.reason == "mirror-copy-returned")
        before, logged = self._returned_seen.get(name, (0, None))
        new = total - before if total >= before else total   # counters restart with entries
        if new and (logged is None or now - logged >= RETURNED_COPIES_LOGGED_EVERY):
            self.logger.warning(
                "%s: %d mirror copies came back on its uplink in VLAN %d (dropped here). "
                "The physical network floods that VLAN (RSPAN: the IDS gets each copy "
                "once, the others are wasted) or learns MACs in it (then copies go "
                "unicast to hypervisors and miss the IDS): turn MAC learning off in "
                "VLAN %d on every switch (an RSPAN VLAN; OVS: flood_vlans), or mirror "
                "through mirror.erspan", name, new, self.network.mirror_vlan,
                self.network.mirror_vlan)
            logged = now
        if new:
            self.copies_returned[name] = self.copies_returned.get(name, 0) + new
        self._returned_seen[name] = (total, logged)

    # ------------------------------------------------------------ learning

    def packet_in(self, name: str, cookie: int, table: int, in_port: int, frame: bytes,
                  now: float) -> list:
        switch = self.switches.get(name)
        # Only our learning entries send packets here; ignore anything else.
        if switch is None or cookie_kind(cookie) != KIND_STATIC or table != INGRESS \
                or len(frame) < 14:
            return []
        self.packet_ins += 1
        snooped = switch.desired.get(cookie)
        if snooped is not None and snooped.reason in DHCP_SNOOPED:
            return self._dhcp_seen(name, snooped.reason != "dhcp-client", frame, now)
        if in_port == self.network.hypervisor(name).firewall_port:
            self.firewalls.probe_returned(name, now)
            # A firewall that was down or unknown is up at once, not at the next tick.
            return self._firewalls_evaluated(now) if name in self.firewalls.down else []
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
        if refusal != "not-a-learning-port":
            if self._banned(name, in_port, now):
                return []
            if self._flooded(name, in_port, mac, now):
                return self._ban(name, in_port, now)
        if refusal is not None:
            self._refused(name, in_port, mac, refusal, now)
            return []
        self.learned |= {LearnedHost(mac, name, in_port)}
        self.logger.info("%s port %d: learned %s", name, in_port, mac)
        self.held.append(held)
        return self._sync()

    def _banned(self, name: str, port: int, now: float) -> bool:
        until = self.learn_bans.get((name, port))
        if until is None:
            return False
        if now < until:
            self.banned_learns += 1
            return True
        del self.learn_bans[(name, port)]
        self.logger.info("%s port %d: the learning ban is over", name, port)
        return False

    def _flooded(self, name: str, port: int, mac: str, now: float) -> bool:
        """Count a new MAC offered on a learning port; True once it offers
        more than options.learn_ban_rate within a second."""
        offers = self._offers.setdefault((name, port), deque())
        offers.append((now, mac))
        while offers and offers[0][0] <= now - 1.0:
            offers.popleft()
        return len(offers) > self.network.options.learn_ban_rate

    def _ban(self, name: str, port: int, now: float) -> list:
        """A MAC flood: no learning from the port for a while, and the hosts
        it learned in the flood's second forgotten (they would hold its
        slots for learned_idle_timeout)."""
        opts = self.network.options
        recent = {mac for _t, mac in self._offers.pop((name, port), ())}
        undone = {h for h in self.learned
                  if (h.hypervisor, h.port) == (name, port) and h.mac in recent}
        self.learned -= undone
        self.learn_bans[(name, port)] = now + opts.learn_ban_seconds
        self.bans += 1
        self.logger.warning("%s port %d: more than %d new MACs within a second, a MAC "
                            "flood: not learning from it for %d s; forgot the %d hosts it "
                            "learned in that second", name, port, opts.learn_ban_rate,
                            opts.learn_ban_seconds, len(undone))
        return self._sync() if undone else []

    def _refused(self, name: str, port: int, mac: str, reason: str, now: float) -> None:
        """Count a refused learn; log it once per port and reason per
        REFUSALS_LOGGED_EVERY seconds, with how many were not logged."""
        self.refused_learns[reason] = self.refused_learns.get(reason, 0) + 1
        key = (name, port, reason)
        last, quiet = self._refusals_logged.get(key, (None, 0))
        if last is not None and now - last < REFUSALS_LOGGED_EVERY:
            self._refusals_logged[key] = (last, quiet + 1)
            return
        self._refusals_logged[key] = (now, 0)
        self.logger.warning("%s port %d: not learning %s (%s)%s", name, port, mac, reason,
                            f"; {quiet} more refused for this since the last such line"
                            if quiet else "")

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
        switch.in_line = False
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

    # ---------------------------------------------------------------- DHCP

    def _dhcp_seen(self, name: str, from_server: bool, frame: bytes, now: float) -> list:
        """A DHCP message a switch copied up: a trusted server's, or an
        `ip: dhcp` VM's. An ACK pins the VM to its address; a NAK, RELEASE or
        DECLINE unpins it. Broadcast ones arrive from every hypervisor."""
        message = dhcp.parse(frame)
        if message is None:
            return self._dhcp_count("malformed")
        sender = ":".join(f"{b:02x}" for b in frame[6:12])
        if not from_server and message.chaddr != sender:
            # A client speaks for itself only: a RELEASE naming another VM's
            # MAC must not unpin that VM.
            return self._dhcp_count("chaddr-not-sender")
        vm = next((v for v in self.network.vms if v.dhcp and v.mac == message.chaddr), None)
        if vm is None:
            return self._dhcp_count("not-for-a-dhcp-vm")
        lease = self.leases.get(vm.name)
        if from_server and message.kind == dhcp.ACK:
            problem = self._lease_problem(vm, message.yiaddr)
            if problem:
                self.logger.warning("%s: DHCP ACK for %s (%s) not taken: %s", name, vm.name,
                                    message.yiaddr, problem)
                return self._dhcp_count("refused")
            server = sender
            new = dhcp.lease_from(message, server, now)
            self.leases[vm.name] = new
            self._dhcp_count("ack")
            if lease is None or lease.ip != new.ip:
                self._lease_event(now, vm, name, f"{vm.name} leased {new.ip} from {server}")
                return [SAVE] + self._sync()
            # A renewal: keep the new end, without writing on every broadcast copy.
            return [SAVE] if new.expires - lease.expires > 60 else []
        if dhcp.ends_lease(message, lease, from_server):
            del self.leases[vm.name]
            self._dhcp_count(message.name.lower())
            self._lease_event(now, vm, name, f"{vm.name} gave up {lease.ip} "
                                             f"(DHCP {message.name})")
            return [SAVE] + self._sync()
        return self._dhcp_count(message.name.lower())

    def _dhcp_count(self, what: str) -> list:
        self.dhcp_counts[what] = self.dhcp_counts.get(what, 0) + 1
        return []

    def _lease_problem(self, vm: model.VM, ip: str) -> str | None:
        """Why a server's address cannot be pinned to `vm`, or None."""
        try:
            dhcp.check_address(ip)
        except ValueError as e:
            return str(e)
        address = ipaddress.IPv4Address(ip)
        subnet = self.network.segment(vm.segment).subnet
        if subnet is not None and (address not in subnet or (subnet.prefixlen < 31 and address in (
                subnet.network_address, subnet.broadcast_address))):
            return f"not a host address of segment {vm.segment}'s subnet {subnet}"
        for other in self.network.vms:
            if other.ip == address and other.name != vm.name:
                return f"it is VM {other.name}'s"
        for other, lease in self.leases.items():
            if lease.ip == ip and other != vm.name:
                return f"VM {other} holds it"
        for seg in self.network.segments:
            if any(gw.ip == address for gw in seg.gateways):
                return f"it is a gateway of segment {seg.name}"
        return None

    def _lease_event(self, now: float, vm: model.VM, hypervisor: str, detail: str) -> None:
        self.events.append(Event(now, "lease", vm.name, hypervisor, 0, detail))
        self.logger.info("%s: %s", hypervisor, detail)

    def _leases_expired(self, now: float) -> list:
        ended = [vm for vm, lease in self.leases.items() if lease.expires <= now]
        for name in ended:
            lease = self.leases.pop(name)
            self._dhcp_count("expired")
            where = self.bindings.locations().get(name, (self.network.vm(name).hypervisor,))[0]
            self._lease_event(now, self.network.vm(name), where or "-",
                              f"{name}'s lease of {lease.ip} ended")
        return [SAVE] + self._sync() if ended else []

    # ---------------------------------------------------------------- time

    def tick(self, now: float) -> list:
        """End the start-up grace; probe the firewalls. They are probed
        whether the policy steers or not, so that their state is measured,
        not assumed, when it starts to."""
        actions = self._leases_expired(now) + self._responses_expired(now)
        if self.starting and now - self.started_at >= STARTUP_GRACE_SECONDS:
            actions += self._end_startup()
        if now < self.next_probe:
            return actions
        steering = self.network.steering
        self.next_probe = now + steering.probe_interval
        vlan = self.network.segments[0].vlan
        for name, switch in sorted(self.switches.items()):
            port = self.network.hypervisor(name).firewall_port
            if port is not None and switch.read_once:
                actions.append(SendFrame(name, port, openflow.probe_frame(vlan, name.encode())))
        return actions + self._firewalls_evaluated(now)

    def _firewalls_evaluated(self, now: float) -> list:
        """Firewalls that went down or came back: logged, and the switches
        re-programmed if the policy steers."""
        went, back = self.firewalls.evaluate(now)
        if not self.network.policy.steers_anything:
            return []
        for name in sorted(went):
            self.logger.warning("%s: the firewall is not returning steered traffic; "
                                "steered traffic is %s", name, self._fails())
        for name in sorted(back):
            self.logger.info("%s: the firewall returns traffic; steering %s", name,
                             "resumes" if name in self._measured else "begins")
            self._measured.add(name)
        return self._sync() if went or back else []

    def _fails(self) -> str:
        return ("DROPPED (fail-closed)" if self.network.steering.fail == "closed"
                else "DELIVERED DIRECTLY, UNFILTERED (fail-open)")

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
        return self._placed(self.network, self.bindings)

    def _placed(self, network: Network, bindings: Bindings) -> Network:
        """`network` as it runs: bound VMs where they are, `ip: dhcp` VMs at
        their leased addresses."""
        placed = network.leased({vm: lease.ip for vm, lease in self.leases.items()}
                                ).placed(bindings.locations())
        policy = self.response.policy(placed)
        return placed if policy is placed.policy else replace(placed, policy=policy)

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
            candidates = self.bindings.candidates()
            actions = self._lifecycle(self.bindings.hypervisor_ports(
                switch.name, [self._port(switch, no) for no in switch.port_names], now),
                candidates)
        return actions + self._startup_check()

    def _lifecycle(self, events: list[Event], candidates=None) -> list:
        """Log lifecycle events and keep them for the API; a VM that came,
        went or moved re-programs the switches, and so does a change of the
        ports bound to a VM elsewhere (candidates: as they were before), whose
        activation entries come and go without an event."""
        for event in events:
            if event.kind in ("up", "moved"):
                self.to_announce.add(event.vm)
            self.events.append(event)
            (self.logger.warning if event.warning else self.logger.info)(
                "%s: %s", event.hypervisor, event.detail)
        if any(e.kind in ("up", "down", "moved", "claimed") for e in events) or \
                (candidates is not None and candidates != self.bindings.candidates()):
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

    # ------------------------------------------------------- IDS response

    def alerts(self, alerts: list, now: float) -> tuple[list, list]:
        """Decide IDS alerts (controller/response.py): the decisions, and
        the actions they need (SYNC if one acted, SAVE if the trail of
        actions changed)."""
        decisions, events = self.response.alerts(alerts, self.network.response,
                                                 self.placed_network, now)
        for e in events:
            if e["level"] == "warning":           # acted, or capped
                self.logger.warning("IDS response: %s", e["detail"])
        changed = any(d.kind in ("acted", "extended") for d in decisions)
        acted = any(d.kind == "acted" for d in decisions)
        return decisions, (self._sync() if acted else []) + ([SAVE] if changed else [])

    def release(self, vm: str, action: str | None, by: str, now: float) -> tuple[list, list]:
        """An operator releases a VM's automatic actions: (events, actions)."""
        events = self.response.release(vm, action, by, self.placed_network, now)
        return events, self._response_released(events)

    def _responses_expired(self, now: float) -> list:
        if not self.response.due(now):
            return []
        return self._response_released(self.response.expire(self.placed_network, now))

    def _response_released(self, events: list) -> list:
        for e in events:
            self.logger.info("IDS response: %s", e["detail"])
        return self._sync() + [SAVE] if events else []

    def set_response(self, response) -> list:
        """New response rules (ResponseError if they cannot work here);
        they change no entry, so nothing is committed."""
        self.network = self.network.with_response(response)
        return [SAVE]

    # -------------------------------------------------------------- commits

    def plan(self, now: float, network: Network | None = None) -> SyncPlan:
        """What every ready switch must change to hold the intent: the
        network in force, or `network` (a policy, inventory or file change)."""
        new_network = network is not None
        if new_network:
            bindings, events = self.bindings.with_network(network, now)
        else:
            network, bindings, events = self.network, self.bindings, []
        firewalls_down = self.firewalls_down(network)
        placed = self._placed(network, bindings)
        # Only the slices of hosts that came, went or moved, when nothing else
        # changed; a full compile otherwise (and after a refused change).
        if self.compiled is not None and self.compiled.same_base(placed, firewalls_down):
            self.compiled.update(placed, self.learned, bindings.candidates())
        else:
            self.compiled = Compiled(placed, self.learned, firewalls_down,
                                     bindings.candidates())
        desired, touched = self.compiled.desired, self.compiled.take_touched()
        ready = {n: s for n, s in self.switches.items() if s.ready and n in desired}
        changes, incremental = {}, set()
        for n, switch in ready.items():
            if switch.in_line and touched is not None:
                changes[n] = _diff_among(touched.get(n, ()), desired[n], switch.installed)
                incremental.add(n)
            else:
                changes[n] = diff(desired[n], switch.installed)
            switch.in_line = False        # until applied() knows the commit took it
        for n, change in sorted(changes.items()):
            if not change.empty:
                self.logger.info("%s: committing %d deletions and %d additions",
                                 n, len(change.delete), len(change.add))
        # Hypervisors that cannot take it now, and whose entries it changes
        # (or whose entries nobody knows: never connected since the start).
        pending = sorted(n for n in desired if n not in ready and (
            self._held(n) is None or self._held(n) != desired[n].keys())) \
            if new_network else []
        return SyncPlan(network, bindings, events, ready, changes,
                        {n: desired[n] for n in ready}, firewalls_down, new_network, pending,
                        incremental,
                        frozenset(n for n in firewalls_down if self.firewalls.unknown(n)))

    def firewalls_down(self, network: Network) -> frozenset:
        """The hypervisors whose steered traffic fails. Firewall health
        matters only to a policy that steers (so it recompiles nothing else)."""
        return frozenset(self.firewalls.down) if network.policy.steers_anything \
            else frozenset()

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
                # A VM that left or has a fixed address now holds no lease.
                dhcp_vms = {vm.name for vm in self.network.vms if vm.dhcp}
                self.leases = {vm: lease for vm, lease in self.leases.items()
                               if vm in dhcp_vms}
            for name, switch in current.items():
                self._in_sync(switch, plan, name, now)
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
                    _take(switch, plan.changes[name])    # to be put back by the next sync
                else:
                    self._in_sync(switch, plan, name, now)
            elif name in outcome.failed:
                actions += self._resync_after_failure(switch, outcome.failed[name],
                                                      plan.new_network)
            # else: its bundle was discarded; it holds what it held.
        return actions

    def _held(self, name: str) -> set | None:
        """What a hypervisor's switch holds as far as known: read or committed
        while connected; as it was when it went away; None if never seen."""
        switch = self.switches.get(name)
        return switch.installed if switch is not None else self.held_when_gone.get(name)

    def result(self, plan: SyncPlan, outcome: Outcome) -> dict:
        """The answer to a change of network."""
        offline = sorted(hv.name for hv in self.network.hypervisors
                         if hv.name not in self.switches)
        return {"ok": outcome.ok, "seconds": round(outcome.seconds, 4),
                "applied_to": sorted(plan.switches) if outcome.ok else [],
                "failed": outcome.failed, "offline": offline,
                # Hypervisors this change is for that did not take it (offline,
                # or not in sync): it reaches them when they are read again.
                "pending": plan.pending if outcome.ok else []}

    def _in_sync(self, switch: Switch, plan: SyncPlan, name: str, now: float) -> None:
        """The switch took its change of `plan`: it holds what the compile held."""
        if name in plan.incremental:
            _take(switch, plan.changes[name])   # O(change), not O(table)
        else:                                   # after a read or a full diff: rebuild
            switch.desired = dict(plan.desired[name])   # a copy: the compile moves on
            switch.installed = set(switch.desired)
        switch.in_line = True
        switch.firewall = "up" if name not in plan.firewalls_down else \
            "unknown" if name in plan.unmeasured else "down"
        switch.resyncs = 0
        if not switch.synced:
            self.logger.info("%s: in sync (%d flows)", name, len(switch.desired))
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
        changes on top; a policy or response rules changed through the API
        stay), and the file's own network. NetworkFileError, PolicyError or
        ResponseError if unusable."""
        fresh = model.from_document(document, self.network.source, self.inventory)
        network = fresh
        if self.network.policy != self.file_policy:
            network = fresh.with_policy(self.network.policy)
        if self.network.response != self.file_response:
            network = network.with_response(self.network.response)
        return network, fresh

    # -------------------------------------------------------------- status

    def port_roles(self, hv: Hypervisor) -> dict[int, str]:
        roles = {vm.port: f"VM {vm.name}" for vm in self.placed_network.vms
                 if vm.hypervisor == hv.name}
        roles.update({p: PORT_ROLE_NAMES[role] for p, role in hv.special_ports().items()})
        roles.update({lp.port: "learning port" for lp in hv.learning_ports})
        return roles

    def firewall_state(self, hv: Hypervisor) -> str:
        """As the flows committed to the hypervisor treat it: "up", "down"
        once steered traffic fails closed or open there (not when a probe is
        first missed), "unknown" while none of its probes has returned."""
        if hv.firewall_port is None:
            return "none"
        if not self.network.policy.steers_anything:
            return "unused"
        switch = self.switches.get(hv.name)
        return switch.firewall if switch is not None else "unknown"

    def committed(self) -> tuple[dict, dict]:
        """The entries each switch was given ({hv: Flows}: its last commit
        if it is connected, else what the controller intends for it), and
        how far to trust them ({hv: note}), for the trace. The Flows are
        live views, not copies (a large fabric's are a million entries):
        read them before the greenthread yields."""
        if self.compiled is None:       # no commit yet: what the first will hold
            self.compiled = Compiled(self.placed_network, self.learned,
                                     self.firewalls_down(self.network),
                                     self.bindings.candidates())
        intended = self.compiled.desired
        flows, notes = {}, {}
        for hv in self.network.hypervisors:
            switch = self.switches.get(hv.name)
            if switch is not None and switch.last_sync is not None:
                flows[hv.name] = switch.desired.values()
                notes[hv.name] = "in sync" if switch.synced else \
                    "not in sync: it may hold other entries (see /api/v1/audit)"
            else:
                flows[hv.name] = intended.get(hv.name, {}).values()
                notes[hv.name] = "not connected or never synced: the entries it will get"
        return flows, notes

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
        # Not ready while a steered hypervisor's firewall is unmeasured.
        return {"ready": all(d["synced"] and d["firewall"] != "unknown"
                             for d in datapaths.values()),
                "datapaths": datapaths,
                "learned_hosts": [vars(h) for h in sorted(self.learned, key=lambda h: h.mac)],
                "refused_learns": dict(self.refused_learns),
                "refused_connections": dict(self.refused_connections),
                "learn_bans": [{"hypervisor": hv, "port": port, "until": until}
                               for (hv, port), until in sorted(self.learn_bans.items())],
                "bans": self.bans, "banned_learns": self.banned_learns,
                "mirror_copies_returned": dict(self.copies_returned),
                "dhcp": dict(self.dhcp_counts),
                "packet_ins": self.packet_ins}


def _diff_among(cookies, desired: dict, installed: set) -> Plan:
    """The change that brings `installed` to `desired`, when they can differ
    only in `cookies`."""
    return Plan(delete=tuple(sorted(c for c in cookies if c in installed and c not in desired)),
                add=tuple(desired[c] for c in sorted(cookies)
                          if c in desired and c not in installed))


def _take(switch: Switch, change: Plan) -> None:
    """A switch committed `change`: what it holds now."""
    for cookie in change.delete:
        switch.installed.discard(cookie)
        switch.desired.pop(cookie, None)
    for f in change.add:
        switch.installed.add(f.cookie)
        switch.desired[f.cookie] = f


def _consequence(what: str) -> str:
    if what in ("IDS port", "mirror tunnel port"):
        return "mirrored copies are lost until it is back"
    if what == "uplink port":
        return "VMs on other hypervisors are unreachable"
    return "frames for it are dropped"

