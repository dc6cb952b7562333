"""Where each bound VM runs, from the ports its hypervisors report (pure).

A VM bound by `interface:` (the OVS port name) or `iface_id:` (the
Interface's external_ids:iface-id, which libvirt and OpenStack set) has no
fixed place: it is wherever the management plane attached its interface,
on the ofport OVS gave it. Only the ports the hypervisors report bind (names
from OpenFlow port descriptions and port-status, iface-ids from OVSDB).
What a guest sends can only choose between ports already bound to it: while
two are (a live migration overlaps, or an impostor claims a running VM) the
VM stays where it was until its first frame arrives at the other one (QEMU
announces a resumed guest with a RARP), or until the old port goes.

No clock, no I/O: every call takes `now` and returns the lifecycle events
it caused; `locations()` and `candidates()` are what the compiler needs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from .model import Network
from .pipeline import ETH_TYPE_IP, INGRESS


@dataclass(frozen=True)
class Port:
    """A port as a hypervisor reports it. pending: OpenFlow reports it, but
    the hypervisor's OVSDB has not yet said whose it is (iface-id)."""
    hypervisor: str
    ofport: int
    name: str
    iface_id: str | None = None
    pending: bool = False


@dataclass(frozen=True)
class Event:
    time: float
    kind: str          # up, down, moved, claimed, unknown-port
    vm: str | None
    hypervisor: str
    ofport: int
    detail: str
    warning: bool = False

    def to_dict(self) -> dict:
        return {"time": self.time, "kind": self.kind, "vm": self.vm,
                "hypervisor": self.hypervisor, "ofport": self.ofport,
                "detail": self.detail, "level": "warning" if self.warning else "info"}


Place = tuple[str, int]          # (hypervisor, ofport)


def iface_ids_from_flows(net: Network, entries) -> dict[int, str]:
    """ofport -> iface-id, from the port-security entries a switch still
    holds (entries: (table, {field: value})) for VMs bound by iface-id. A
    controller that restarts while OVSDB is unreachable keeps what was
    bound: these stand in for OVSDB until it answers."""
    by_mac = {vm.mac: vm.iface_id for vm in net.vms if vm.iface_id}
    out = {}
    for table, match in entries:
        mac, port = match.get("eth_src"), match.get("in_port")
        if table == INGRESS and match.get("eth_type") == ETH_TYPE_IP and mac in by_mac \
                and port is not None:
            out[port] = by_mac[mac]
    return out


class Bindings:
    """The ports every hypervisor reports, and which of them each bound VM
    runs on. Feed it every port change; it says what changed."""

    def __init__(self, net: Network):
        self._ports: dict[Place, Port] = {}
        self._first_seen: dict[Place, float] = {}
        self._active: dict[str, Place] = {}        # vm -> the port it runs on
        self._since: dict[str, float] = {}         # vm -> when it came up or went down
        self._unknown_told: set[tuple[str, str]] = set()
        self._claimed: dict[Place, str] = {}       # ports bound to a VM -> the VM
        self._candidates: frozenset | None = None  # cached until something changes
        self._use(net)

    def _use(self, net: Network) -> None:
        self._by_name = {vm.interface: vm.name for vm in net.vms if vm.interface}
        self._by_iface_id = {vm.iface_id: vm.name for vm in net.vms if vm.iface_id}
        self._macs = {vm.name: vm.mac for vm in net.vms}
        self._static = {vm.name: (vm.hypervisor, vm.port) for vm in net.vms
                        if vm.port is not None}
        self._how = {vm.name: ("interface", vm.interface) if vm.interface else
                     ("iface_id", vm.iface_id) for vm in net.vms
                     if vm.interface or vm.iface_id}
        # Ports the file gives a role by number: never "unknown".
        self._known = {(vm.hypervisor, vm.port) for vm in net.vms if vm.port is not None}
        for hv in net.hypervisors:
            self._known |= {(hv.name, p) for p in hv.special_ports()}
            self._known |= {(hv.name, lp.port) for lp in hv.learning_ports}
        self._claimed = {place: vm for place, port in self._ports.items()
                         if (vm := self.claimant(port)) is not None}
        self._candidates = None

    # ------------------------------------------------------------ queries

    def claimant(self, port: Port) -> str | None:
        """The VM the management plane bound this port to, if any."""
        if port.iface_id is not None and port.iface_id in self._by_iface_id:
            return self._by_iface_id[port.iface_id]
        return self._by_name.get(port.name)

    def _claims(self) -> dict[str, list[Place]]:
        """vm -> the ports bound to it, oldest first."""
        out: dict[str, list[Place]] = {}
        for place in sorted(self._claimed, key=lambda p: (self._first_seen[p], p)):
            out.setdefault(self._claimed[place], []).append(place)
        return out

    def locations(self) -> dict[str, Place]:
        """vm -> (hypervisor, ofport) it runs on, for every bound VM that is up."""
        return dict(self._active)

    def candidates(self) -> frozenset[tuple[str, str, int]]:
        """(vm, hypervisor, ofport): ports bound to a VM after the one it runs
        on (a migration's destination); a frame from the VM's MAC there moves
        it. Older ports still bound to it (the source) forward nothing."""
        if self._candidates is not None:
            return self._candidates
        out = set()
        for vm, places in self._claims().items():
            active = self._active.get(vm)
            for place in places:
                if active is not None and place != active and \
                        self._first_seen[place] > self._first_seen[active]:
                    out.add((vm, *place))
        self._candidates = frozenset(out)
        return self._candidates

    def binding(self, vm: str) -> dict:
        """How a VM is bound and where it is, for the API. A VM the file
        places is up while its hypervisor reports its port."""
        if vm in self._static:
            place = self._static[vm]
            return {"by": "port", "hypervisor": place[0], "ofport": place[1],
                    "up": place in self._ports, "since": self._first_seen.get(place),
                    "candidates": []}
        by, key = self._how[vm]
        place = self._active.get(vm)
        return {"by": by, by: key, "up": place is not None,
                "hypervisor": place[0] if place else None,
                "ofport": place[1] if place else None,
                "since": self._since.get(vm),
                "candidates": [{"hypervisor": h, "ofport": p}
                               for v, h, p in sorted(self.candidates()) if v == vm]}

    # ------------------------------------------------------------ changes

    def hypervisor_ports(self, hypervisor: str, ports: list[Port], now: float) -> list[Event]:
        """Everything one hypervisor has now (on connect, or after an OVSDB
        update): ports it no longer reports are gone."""
        new = {(p.hypervisor, p.ofport): p for p in ports if p.hypervisor == hypervisor}
        for place in [pl for pl in self._ports if pl[0] == hypervisor]:
            if new.get(place) != self._ports[place]:
                self._drop(place)
        events = []
        for place, port in new.items():
            if place not in self._ports:
                events += self._add(port, now)
        return events + self._settle(now)

    def port_added(self, port: Port, now: float) -> list[Event]:
        place = (port.hypervisor, port.ofport)
        if self._ports.get(place) == port:
            return []
        self._drop(place)
        return self._add(port, now) + self._settle(now)

    def port_removed(self, hypervisor: str, ofport: int, now: float) -> list[Event]:
        if (hypervisor, ofport) not in self._ports:
            return []
        self._drop((hypervisor, ofport))
        return self._settle(now)

    def frame_seen(self, hypervisor: str, ofport: int, mac: str, now: float) -> list[Event]:
        """A frame from `mac` arrived on a candidate port: if it is the VM's
        own MAC and the port was bound after the one the VM runs on (the
        destination of a migration), the VM runs there now. Never back: a
        source still sending cannot make the VM flap."""
        place = (hypervisor, ofport)
        port = self._ports.get(place)
        vm = self.claimant(port) if port else None
        if vm is None or self._macs[vm] != mac:
            return []
        active = self._active.get(vm)
        if active == place or (active is not None and
                               self._first_seen[place] <= self._first_seen[active]):
            return []
        return self._settle(now, chosen={vm: place})

    def with_network(self, net: Network, now: float) -> tuple["Bindings", list[Event]]:
        """A copy for a changed inventory (a reload, a VM added or removed at
        run time), and what would change; this one is left as it is, so a
        change the switches refuse changes nothing."""
        other = copy.deepcopy(self)
        other._use(net)
        return other, other._settle(now)      # a VM no longer bound loses its port

    # ------------------------------------------------------------ internals

    def _add(self, port: Port, now: float) -> list[Event]:
        place = (port.hypervisor, port.ofport)
        self._ports[place] = port
        self._first_seen[place] = now
        self._candidates = None
        if (vm := self.claimant(port)) is not None:
            self._claimed[place] = vm
        key = (port.hypervisor, port.name)
        if self.claimant(port) is None and place not in self._known \
                and not port.pending and key not in self._unknown_told:
            self._unknown_told.add(key)
            return [Event(now, "unknown-port", None, port.hypervisor, port.ofport,
                          f"port {port.name!r} (ofport {port.ofport}) matches no VM: "
                          "everything it sends is dropped")]
        return []

    def _drop(self, place: Place) -> None:
        self._ports.pop(place, None)
        self._first_seen.pop(place, None)
        self._claimed.pop(place, None)
        self._candidates = None

    def _settle(self, now: float, chosen: dict | None = None) -> list[Event]:
        """Give every VM its port after a change (`chosen`: where a guest
        showed it runs); the events it made."""
        chosen = chosen or {}
        self._candidates = None
        claims = self._claims()
        events = []
        for vm in sorted(set(claims) | set(self._active)):
            places = claims.get(vm, [])
            before = self._active.get(vm)
            if chosen.get(vm) in places:
                after = chosen[vm]
            elif before in places:
                after = before
            elif places:
                after = places[-1]         # the newest port bound to it
            else:
                after = None
            if after is None:
                self._active.pop(vm, None)
            else:
                self._active[vm] = after
            if before != after:
                self._since[vm] = now
                events.append(self._change(now, vm, before, after, vm in chosen))
            for other in places:
                if other != after and self._first_seen[other] == now and after is not None:
                    events.append(Event(
                        now, "claimed", vm, *other,
                        f"{vm} runs on {after[0]} port {after[1]}; its interface also "
                        f"appeared on {other[0]} port {other[1]}: it stays until its "
                        "first frame arrives there (a live migration) or the old port "
                        "goes (if this is no migration, something else claims it)",
                        warning=True))
        return events

    def _change(self, now: float, vm: str, before: Place | None, after: Place | None,
                by_guest: bool) -> Event:
        if before is None:
            return Event(now, "up", vm, *after, f"{vm} is up on {after[0]} port {after[1]}")
        if after is None:
            return Event(now, "down", vm, *before,
                         f"{vm} is down: its port on {before[0]} (ofport {before[1]}) is gone")
        why = ("its first frame arrived there" if by_guest
               else "its old port is gone")
        return Event(now, "moved", vm, *after,
                     f"{vm} moved from {before[0]} port {before[1]} to {after[0]} port "
                     f"{after[1]} ({why})")
