"""IDS alerts act: Suricata alerts decide quarantines and mirrors (pure).

Suricata writes its alerts as EVE JSON records. The network file's
`response:` rules say which alerts act on which VM (the source, the
destination or both ends), how (quarantine or mirror) and for how long. The
`Responder` turns an alert into decisions and keeps the actions in force;
the caller installs and removes the flows. An alert is untrusted input from
the wire, so a bad record is counted and skipped, never raised; a bad rule
is the operator's mistake and is refused with the place named.

Guards against an IDS turned into a weapon: an allowlist of VMs that never
act automatically, and a cap on new actions per sliding minute (a repeated
alert on a VM already acted on only extends that action and costs nothing).

No Ryu, no I/O, no clock: time is passed in as `now` (seconds).
"""
from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TARGETS = ("source", "destination", "both")
ACTIONS = ("quarantine", "mirror")
WINDOW = 60.0                   # seconds the cap counts new actions over
DEFAULT_MAX_PER_MINUTE = 10
RULE_KEYS = ("severity", "signature_id", "category", "target", "action", "ttl")
RESPONSE_KEYS = ("rules", "allowlist", "max_per_minute")


class ResponseError(ValueError):
    """A rule or saved state that cannot be used: "<place>: <problem>"."""

    def __init__(self, message: str):
        super().__init__(message)
        self.place, _, self.problem = message.partition(": ")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --- alerts -----------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    timestamp: str
    src_ip: Address
    dest_ip: Address
    src_port: int | None
    dest_port: int | None
    proto: str
    signature_id: int
    signature: str
    severity: int
    category: str

    def to_dict(self) -> dict:
        return {"timestamp": self.timestamp, "src_ip": str(self.src_ip),
                "dest_ip": str(self.dest_ip), "src_port": self.src_port,
                "dest_port": self.dest_port, "proto": self.proto,
                "signature_id": self.signature_id, "signature": self.signature,
                "severity": self.severity, "category": self.category}

    @classmethod
    def from_dict(cls, d: dict, where: str = "alert") -> Alert:
        """The inverse of to_dict (the saved state); ResponseError if it is
        not one."""
        alert = _alert_from_record(d) if isinstance(d, dict) else None
        if alert is None:
            raise ResponseError(f"{where}: not a valid alert")
        return alert


def _address(v: Any) -> Address | None:
    if not isinstance(v, str):
        return None
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        return None


def _port(v: Any) -> int | None:
    return v if _is_int(v) and 0 <= v <= 65535 else None


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _alert_from_record(r: dict) -> Alert | None:
    """An Alert from the flat shape of Alert.to_dict, None if it is not one."""
    src, dest = _address(r.get("src_ip")), _address(r.get("dest_ip"))
    sid, sev = r.get("signature_id"), r.get("severity")
    if src is None or dest is None or not _is_int(sid):
        return None
    if not _is_int(sev) or not 1 <= sev <= 255:
        return None
    return Alert(timestamp=_text(r.get("timestamp")), src_ip=src, dest_ip=dest,
                 src_port=_port(r.get("src_port")), dest_port=_port(r.get("dest_port")),
                 proto=_text(r.get("proto")).upper(), signature_id=sid,
                 signature=_text(r.get("signature")), severity=sev,
                 category=_text(r.get("category")))


def _alert_from_eve(record: Any) -> Alert | None:
    if not isinstance(record, dict) or record.get("event_type") != "alert":
        return None
    a = record.get("alert")
    if not isinstance(a, dict):
        return None
    # EVE keeps the addresses at the top and the signature under "alert".
    flat = {k: record.get(k) for k in ("timestamp", "src_ip", "dest_ip",
                                       "src_port", "dest_port", "proto")}
    flat.update({k: a.get(k) for k in ("signature_id", "signature",
                                       "severity", "category")})
    return _alert_from_record(flat)


def parse_eve(text: str) -> tuple[list[Alert], int]:
    """The alerts in one EVE JSON object or in newline-delimited ones, and
    how many records were not usable alerts (bad JSON, other event types,
    bad addresses or signature)."""
    stripped = text.strip()
    if not stripped:
        return [], 0
    try:
        records = [json.loads(stripped)]      # one object, perhaps pretty-printed
    except ValueError:
        records = []
        for line in stripped.splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append(None)          # counted below as ignored
    alerts = [a for a in map(_alert_from_eve, records) if a is not None]
    return alerts, len(records) - len(alerts)


# --- rules ------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    target: str
    action: str
    severity: tuple[int, ...] | None = None
    signature_id: tuple[int, ...] | None = None
    category: tuple[str, ...] | None = None
    ttl: float | None = None

    def matches(self, alert: Alert) -> bool:
        """Every selector the rule has matches (any value of each)."""
        return ((self.severity is None or alert.severity in self.severity)
                and (self.signature_id is None or alert.signature_id in self.signature_id)
                and (self.category is None or alert.category in self.category))

    def to_dict(self) -> dict:
        d: dict = {}
        for key in ("severity", "signature_id", "category"):
            if getattr(self, key) is not None:
                d[key] = list(getattr(self, key))
        d["target"], d["action"] = self.target, self.action
        if self.ttl is not None:
            d["ttl"] = self.ttl
        return d


@dataclass(frozen=True)
class Response:
    rules: tuple[Rule, ...] = ()
    allowlist: frozenset[str] = frozenset()
    max_per_minute: int = DEFAULT_MAX_PER_MINUTE

    def first_match(self, alert: Alert) -> tuple[int, Rule] | None:
        for i, rule in enumerate(self.rules):
            if rule.matches(alert):
                return i, rule
        return None

    def to_dict(self) -> dict:
        return {"rules": [r.to_dict() for r in self.rules],
                "allowlist": sorted(self.allowlist),
                "max_per_minute": self.max_per_minute}


def _unknown_keys(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ResponseError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                            f"allowed: {', '.join(allowed)}")


def _int_list(v: Any, where: str, lo: int, hi: int | None) -> tuple[int, ...]:
    span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if not isinstance(v, list) or not v:
        raise ResponseError(f"{where}: must be a non-empty list of integers {span}")
    for i, x in enumerate(v):
        if not _is_int(x) or x < lo or (hi is not None and x > hi):
            raise ResponseError(f"{where}[{i}]: must be an integer {span}, not {x!r}")
    return tuple(v)


def _str_list(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not v:
        raise ResponseError(f"{where}: must be a non-empty list of strings")
    for i, x in enumerate(v):
        if not isinstance(x, str) or not x.strip():
            raise ResponseError(f"{where}[{i}]: must be a non-empty string, not {x!r}")
    return tuple(v)


def _choice(v: Any, choices: tuple[str, ...], where: str) -> str:
    if v is None:
        raise ResponseError(f"{where}: required ({', '.join(choices)})")
    if v not in choices:
        said = ", ".join(choices[:-1]) + " or " + choices[-1]
        raise ResponseError(f"{where}: must be {said}, not {v!r}")
    return v


def _ttl(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if (not isinstance(v, (int, float)) or isinstance(v, bool)
            or not math.isfinite(v) or v <= 0):
        raise ResponseError(f"{where}: must be a positive number of seconds, not {v!r}")
    return v


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ResponseError(f"{where}: must be a mapping")
    _unknown_keys(raw, RULE_KEYS, where)
    selectors = {}
    if "severity" in raw:
        selectors["severity"] = _int_list(raw["severity"], f"{where}.severity", 1, 255)
    if "signature_id" in raw:
        selectors["signature_id"] = _int_list(raw["signature_id"],
                                              f"{where}.signature_id", 0, None)
    if "category" in raw:
        selectors["category"] = _str_list(raw["category"], f"{where}.category")
    if not selectors:
        raise ResponseError(f"{where}: needs at least one of severity, signature_id, "
                            "category (a rule matching every alert is refused)")
    return Rule(target=_choice(raw.get("target"), TARGETS, f"{where}.target"),
                action=_choice(raw.get("action"), ACTIONS, f"{where}.action"),
                ttl=_ttl(raw.get("ttl"), f"{where}.ttl"), **selectors)


def parse_response(raw: Any) -> Response:
    """The `response:` mapping of a network file; None: nothing acts."""
    if raw is None:
        return Response()
    if not isinstance(raw, dict):
        raise ResponseError("response: must be a mapping")
    _unknown_keys(raw, RESPONSE_KEYS, "response")
    rules_raw = raw.get("rules", [])
    if rules_raw is None:
        rules_raw = []
    if not isinstance(rules_raw, list):
        raise ResponseError("response.rules: must be a list")
    rules = tuple(_parse_rule(r, f"response.rules[{i}]") for i, r in enumerate(rules_raw))
    allow_raw = raw.get("allowlist", [])
    if allow_raw is None:
        allow_raw = []
    if not isinstance(allow_raw, list):
        raise ResponseError("response.allowlist: must be a list of VM names")
    for i, name in enumerate(allow_raw):
        if not isinstance(name, str) or not name.strip():
            raise ResponseError(f"response.allowlist[{i}]: must be a VM name, not {name!r}")
    cap = raw.get("max_per_minute", DEFAULT_MAX_PER_MINUTE)
    if not _is_int(cap) or cap < 0:
        raise ResponseError(f"response.max_per_minute: must be an integer >= 0, not {cap!r}")
    return Response(rules=rules, allowlist=frozenset(allow_raw), max_per_minute=cap)


# --- deciding ---------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """A quarantine or mirror in force on a VM (or, once returned by expire
    or release, one that was)."""
    vm: str
    action: str
    rule: int
    alert: Alert
    since: float
    expires: float | None               # None: until released
    released_by: str | None = None      # "expiry", "operator", ...

    def to_dict(self) -> dict:
        return {"vm": self.vm, "action": self.action, "rule": self.rule,
                "alert": self.alert.to_dict(), "since": self.since,
                "expires": self.expires, "released_by": self.released_by}

    @classmethod
    def from_dict(cls, d: Any, where: str = "action") -> Action:
        if not isinstance(d, dict):
            raise ResponseError(f"{where}: must be a mapping")
        vm, kind, rule = d.get("vm"), d.get("action"), d.get("rule")
        since, expires = d.get("since"), d.get("expires")
        if not isinstance(vm, str) or not vm:
            raise ResponseError(f"{where}.vm: must be a VM name, not {vm!r}")
        _choice(kind, ACTIONS, f"{where}.action")
        if not _is_int(rule) or rule < 0:
            raise ResponseError(f"{where}.rule: must be a rule index, not {rule!r}")
        for key, v in (("since", since), ("expires", expires)):
            if (v is not None or key == "since") and (
                    not isinstance(v, (int, float)) or isinstance(v, bool)):
                raise ResponseError(f"{where}.{key}: must be a time in seconds, not {v!r}")
        by = d.get("released_by")
        return cls(vm=vm, action=kind, rule=rule,
                   alert=Alert.from_dict(d.get("alert"), f"{where}.alert"),
                   since=since, expires=expires,
                   released_by=by if isinstance(by, str) else None)


@dataclass(frozen=True)
class Decision:
    """What one alert did to one target address. kind: acted, extended,
    capped, allowlisted or unowned (vm None)."""
    kind: str
    vm: str | None
    action: str
    rule: int | None
    alert: Alert
    expires: float | None               # of the action in force, if acted/extended

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vm": self.vm, "action": self.action,
                "rule": self.rule, "alert": self.alert.to_dict(), "expires": self.expires}


def _later(old: float | None, new: float | None) -> float | None:
    """The later of two expiries, None (until released) being the latest."""
    return None if old is None or new is None else max(old, new)


class Responder:
    """The actions in force and the cap's window of recent new actions."""

    def __init__(self, response: Response):
        self.response = response
        self._active: dict[tuple[str, str], Action] = {}
        self._window: list[float] = []      # times of new actions, oldest first

    def set_response(self, response: Response) -> None:
        """New rules apply to the next alerts; actions in force stay."""
        self.response = response

    def recent(self, now: float) -> int:
        """New actions in the cap's window (the last minute)."""
        return sum(1 for t in self._window if t > now - WINDOW)

    def active(self) -> list[Action]:
        return sorted(self._active.values(), key=lambda a: (a.since, a.vm, a.action))

    def decide(self, alert: Alert, owner_of: Callable[[Address], str | None],
               now: float) -> list[Decision]:
        """What the first rule matching `alert` does to each target; [] if
        no rule matches. An action past its expiry that expire() has not
        removed yet is still in force (its flows are), so it is extended."""
        match = self.response.first_match(alert)
        if match is None:
            return []
        index, rule = match
        addresses = {"source": [alert.src_ip], "destination": [alert.dest_ip],
                     "both": [alert.src_ip, alert.dest_ip]}[rule.target]
        expires = None if rule.ttl is None else now + rule.ttl
        decisions, seen = [], set()
        for address in dict.fromkeys(addresses):       # deduplicated, in order
            vm = owner_of(address)
            if vm is not None and vm in seen:
                continue                               # two addresses of one VM
            seen.add(vm)
            decisions.append(self._decide_one(vm, rule, index, alert, now, expires))
        return decisions

    def _decide_one(self, vm: str | None, rule: Rule, index: int, alert: Alert,
                    now: float, expires: float | None) -> Decision:
        def decision(kind: str, until: float | None = None) -> Decision:
            return Decision(kind=kind, vm=vm, action=rule.action, rule=index,
                            alert=alert, expires=until)

        if vm is None:
            return decision("unowned")
        if vm in self.response.allowlist:
            return decision("allowlisted")
        key = (vm, rule.action)
        old = self._active.get(key)
        if old is not None:
            extended = replace(old, expires=_later(old.expires, expires))
            self._active[key] = extended
            return decision("extended", extended.expires)
        self._window = [t for t in self._window if t > now - WINDOW]
        if len(self._window) >= self.response.max_per_minute:
            return decision("capped")
        self._window.append(now)
        self._active[key] = Action(vm=vm, action=rule.action, rule=index, alert=alert,
                                   since=now, expires=expires)
        return decision("acted", expires)

    def expire(self, now: float) -> list[Action]:
        """Removes and returns the actions whose time is up."""
        gone = [a for a in self.active() if a.expires is not None and a.expires <= now]
        for a in gone:
            del self._active[(a.vm, a.action)]
        return [replace(a, released_by="expiry") for a in gone]

    def release(self, vm: str, action: str | None = None,
                by: str = "operator") -> list[Action]:
        """Removes and returns the VM's actions (all, or of one kind)."""
        if action is not None:
            _choice(action, ACTIONS, "release.action")
        gone = [a for a in self.active()
                if a.vm == vm and (action is None or a.action == action)]
        for a in gone:
            del self._active[(a.vm, a.action)]
        return [replace(a, released_by=by) for a in gone]

    def to_dict(self) -> dict:
        return {"active": [a.to_dict() for a in self.active()],
                "window": list(self._window)}

    @classmethod
    def from_dict(cls, data: Any, response: Response) -> Responder:
        """A responder with the saved state of to_dict and these rules."""
        if not isinstance(data, dict):
            raise ResponseError("responder state: must be a mapping")
        r = cls(response)
        active, window = data.get("active", []), data.get("window", [])
        if not isinstance(active, list):
            raise ResponseError("responder state.active: must be a list")
        if not isinstance(window, list) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in window):
            raise ResponseError("responder state.window: must be a list of times")
        for i, d in enumerate(active):
            a = Action.from_dict(d, f"responder state.active[{i}]")
            r._active[(a.vm, a.action)] = replace(a, released_by=None)
        r._window = sorted(window)
        return r
