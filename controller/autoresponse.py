"""The IDS's automatic actions on the network (pure, no Ryu, no clock).

controller/response.py decides what an alert does; this module puts that
into the network's terms: which VM owns an alert's address (a declared
address, or the one its DHCP lease gave it), what the switches get while
actions are in force (Policy.with_responses: on top of the operator's
policy, which itself never changes), and the audit trail the API serves
with the lifecycle events and the state file keeps across restarts.

Two trails, so that a flood of forged or repeated alerts cannot push the
record of real actions out: `actions` (a VM quarantined, mirrored or
released) and `ignored` (an alert that extended an action, or was capped,
allowlisted or about an address no VM owns).
"""
from __future__ import annotations

from collections import Counter, deque

from .model import Network
from .response import Address, Alert, Decision, Response, ResponseError, Responder

ACTIONS_KEPT = 1000       # quarantines, mirrors and releases the trail keeps
IGNORED_KEPT = 200        # alerts that changed nothing
ACTED = {"quarantine": "quarantined", "mirror": "mirrored"}


def owners(net: Network) -> dict[Address, str]:
    """address -> the VM that owns it, in the placed and leased network."""
    out: dict[Address, str] = {}
    for vm in net.vms:
        if vm.ip is not None:
            out[vm.ip] = vm.name
        for address in vm.ipv6 or ():
            out[address] = vm.name
    return out


def _event(now: float, kind: str, vm: str | None, hypervisor: str | None, detail: str,
           warning: bool, **extra) -> dict:
    """In the shape of a lifecycle event (binding.Event.to_dict), and more."""
    return {"time": now, "kind": kind, "vm": vm, "hypervisor": hypervisor or "-",
            "ofport": 0, "detail": detail, "level": "warning" if warning else "info",
            "source": "response", **extra}


def _alert_text(alert: Alert) -> str:
    return (f"alert {alert.signature_id} \"{alert.signature}\" (severity {alert.severity}) "
            f"{alert.src_ip} -> {alert.dest_ip}")


def _until(expires: float | None) -> str:
    return "until released" if expires is None else "with a TTL"


class AutoResponse:
    def __init__(self, response: Response, state: dict | None = None):
        if state is not None and not isinstance(state, dict):
            raise ResponseError("response state: must be a mapping")
        self.responder = Responder(response) if not state else \
            Responder.from_dict(state.get("responder", {}), response)
        self.actions: deque = deque(_events(state, "actions"), maxlen=ACTIONS_KEPT)
        self.ignored: deque = deque(_events(state, "ignored"), maxlen=IGNORED_KEPT)
        self.counts: Counter = Counter()   # decisions by kind, and "bad" records

    # -- what the switches get
    def policy(self, net: Network):
        """net's policy with the actions in force on top."""
        active = self.responder.active()
        if not active:
            return net.policy
        names = {vm.name for vm in net.vms}
        by_kind = {kind: [a.vm for a in active if a.action == kind and a.vm in names]
                   for kind in ("quarantine", "mirror")}
        return net.policy.with_responses(by_kind["quarantine"], by_kind["mirror"])

    def in_force(self) -> dict[str, list[str]]:
        """vm -> the kinds of action in force on it."""
        out: dict[str, list[str]] = {}
        for a in self.responder.active():
            out.setdefault(a.vm, []).append(a.action)
        return out

    # -- what changes it
    def alerts(self, alerts: list[Alert], response: Response, net: Network,
               now: float) -> tuple[list[Decision], list[dict]]:
        """Decide every alert by the rules in force (net: as placed and
        leased now): the decisions, and the events they wrote."""
        self.responder.set_response(response)
        by_address = owners(net)
        where = {vm.name: vm.hypervisor for vm in net.vms}
        decisions, events = [], []
        for alert in alerts:
            for d in self.responder.decide(alert, by_address.get, now):
                decisions.append(d)
                self.counts[d.kind] += 1
                events.append(self._record(d, where.get(d.vm), now))
        return decisions, events

    def _record(self, d: Decision, hypervisor: str | None, now: float) -> dict:
        extra = {"action": d.action, "rule": d.rule, "alert": d.alert.to_dict(),
                 "expires": d.expires}
        alert = _alert_text(d.alert)
        if d.kind == "acted":
            event = _event(now, ACTED[d.action], d.vm, hypervisor,
                           f"{d.vm} {ACTED[d.action]} by response rule {d.rule}, "
                           f"{_until(d.expires)}: {alert}", True, **extra)
            self.actions.append(event)
            return event
        detail = {"extended": f"{d.vm}: its {d.action} extended by a repeated alert",
                  "capped": f"{d.vm} NOT {ACTED[d.action]}: more than "
                            f"{self.responder.response.max_per_minute} new actions a minute",
                  "allowlisted": f"{d.vm} NOT {ACTED[d.action]}: it is on the allowlist",
                  "unowned": f"no VM owns the address: nothing {ACTED[d.action]}"}[d.kind]
        event = _event(now, d.kind, d.vm, hypervisor, f"{detail}; {alert}",
                       d.kind == "capped", **extra)
        self.ignored.append(event)
        return event

    def due(self, now: float) -> bool:
        """Is an action's TTL up?"""
        return any(a.expires is not None and a.expires <= now
                   for a in self.responder.active())

    def expire(self, net: Network, now: float) -> list[dict]:
        """Release the actions whose TTL is up; the events written."""
        return self._released(self.responder.expire(now), net, now)

    def release(self, vm: str, action: str | None, by: str, net: Network,
                now: float) -> list[dict]:
        """Release a VM's actions (all, or one kind); the events written."""
        return self._released(self.responder.release(vm, action, by), net, now)

    def _released(self, gone: list, net: Network, now: float) -> list[dict]:
        where = {vm.name: vm.hypervisor for vm in net.vms}
        events = [_event(now, "released", a.vm, where.get(a.vm),
                         f"{a.vm} released from {a.action} (by {a.released_by})", False,
                         action=a.action, rule=a.rule, alert=a.alert.to_dict(),
                         since=a.since, expires=a.expires, released_by=a.released_by)
                  for a in gone]
        self.actions.extend(events)
        return events

    # -- kept across restarts
    def to_state(self) -> dict:
        return {"responder": self.responder.to_dict(), "actions": list(self.actions),
                "ignored": list(self.ignored)}

    def status(self, now: float) -> dict:
        return {"active": [a.to_dict() for a in self.responder.active()],
                "new_actions_last_minute": self.responder.recent(now),
                "counts": dict(sorted(self.counts.items()))}


def _events(state: dict | None, key: str) -> list:
    events = (state or {}).get(key, [])
    if not isinstance(events, list) or not all(
            isinstance(e, dict) and isinstance(e.get("time"), (int, float)) for e in events):
        raise ResponseError(f"response state.{key}: must be a list of events")
    return events

