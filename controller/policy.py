"""The policy: which traffic is allowed, and how allowed traffic is treated.

Pure Python. The scopes, the most specific wins:
    vms.<vm>          traffic a VM sends or receives (mirror it, quarantine it)
    pairs [a, b]      traffic between two segments (both directions)
    external.<seg>    traffic between a segment and its gateways (north-south,
                      both directions); not given: the mode inside the segment
    segments.<seg>    traffic inside one segment
    default           traffic inside every segment not named above
Traffic between two segments that no pair names is denied.

Segment, pair and default modes: deny | allow | mirror (allow, and copy to
the IDS) | steer (allow, through the physical firewall) | steer-mirror
(both). VM modes: allow (no override) | mirror (copy what the VM sends,
receives or both, of what the other scopes allow) | steer (send what the
VM sends or receives, of what the other scopes allow, through the firewall)
| quarantine (nothing in or out). Mirroring never changes what is delivered.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable

SCOPE_MODES = ("deny", "allow", "mirror", "steer", "steer-mirror")
VM_MODES = ("allow", "mirror", "steer", "quarantine")
DIRECTIONS = ("both", "sent", "received")


class PolicyError(ValueError):
    def __init__(self, place: str, problem: str):
        self.place, self.problem = place, problem
        super().__init__(f"{place}: {problem}")


@dataclass(frozen=True)
class VMRule:
    mode: str = "allow"
    direction: str = "both"        # what mirror copies: sent, received or both

    @property
    def mirrors_sent(self) -> bool:
        return self.mode == "mirror" and self.direction in ("both", "sent")

    @property
    def mirrors_received(self) -> bool:
        return self.mode == "mirror" and self.direction in ("both", "received")


@dataclass(frozen=True)
class Policy:
    default: str = "allow"
    segments: tuple = ()          # ((segment, mode), ...) sorted
    pairs: tuple = ()             # (((a, b), mode), ...) with a < b, sorted
    vms: tuple = ()               # ((vm, VMRule), ...) sorted
    mirror_denied: bool = False   # also copy frames the policy denies
    external: tuple = ()          # ((segment, mode), ...) sorted

    def mode(self, src: str, dst: str) -> str:
        """The mode for traffic from segment src to segment dst."""
        if src == dst:
            return self._by_segment.get(src, self.default)
        return self._by_pair.get(tuple(sorted((src, dst))), "deny")

    def external_mode(self, segment: str) -> str:
        """The mode between a segment's VMs and its gateways."""
        return self._by_external.get(segment) or self.mode(segment, segment)

    def vm_rule(self, vm: str) -> VMRule:
        return self._by_vm.get(vm, VMRule())

    # Look-ups the compiler makes per VM, kept as dicts once built.
    @cached_property
    def _by_segment(self) -> dict:
        return dict(self.segments)

    @cached_property
    def _by_pair(self) -> dict:
        return dict(self.pairs)

    @cached_property
    def _by_external(self) -> dict:
        return dict(self.external)

    @cached_property
    def _by_vm(self) -> dict:
        return dict(self.vms)

    def _modes(self) -> set:
        return ({self.default} | {m for _, m in self.segments} | {m for _, m in self.pairs}
                | {m for _, m in self.external} | {r.mode for _, r in self.vms})

    @property
    def mirrors_anything(self) -> bool:
        return bool(self._modes() & {"mirror", "steer-mirror"}) or self.mirror_denied

    @property
    def steers_anything(self) -> bool:
        return bool(self._modes() & {"steer", "steer-mirror"})

    # -- changes: each returns a new Policy; None removes an override
    def with_default(self, mode: str) -> "Policy":
        return replace(self, default=_mode(mode, SCOPE_MODES, "default"))

    def with_segment(self, segment: str, mode: str | None) -> "Policy":
        entries = dict(self.segments)
        _set(entries, segment, None if mode is None
             else _mode(mode, SCOPE_MODES, f"segments.{segment}"))
        return replace(self, segments=tuple(sorted(entries.items())))

    def with_pair(self, a: str, b: str, mode: str | None) -> "Policy":
        if a == b:
            raise PolicyError("pairs", "a pair needs two different segments")
        entries = dict(self.pairs)
        _set(entries, tuple(sorted((a, b))), None if mode is None
             else _mode(mode, SCOPE_MODES, f"pairs.{a},{b}"))
        return replace(self, pairs=tuple(sorted(entries.items())))

    def with_external(self, segment: str, mode: str | None) -> "Policy":
        entries = dict(self.external)
        _set(entries, segment, None if mode is None
             else _mode(mode, SCOPE_MODES, f"external.{segment}"))
        return replace(self, external=tuple(sorted(entries.items())))

    def with_vm(self, vm: str, rule: VMRule | None) -> "Policy":
        entries = dict(self.vms)
        _set(entries, vm, None if rule is None or rule == VMRule() else rule)
        return replace(self, vms=tuple(sorted(entries.items())))

    def with_responses(self, quarantined, mirrored) -> "Policy":
        """The policy the switches get while the IDS's automatic actions
        (controller/response.py) are in force: quarantine beats every rule;
        mirror copies all a VM sends and receives, unless the operator
        steers it (its traffic keeps passing the firewall) or quarantines it."""
        entries = dict(self.vms)
        for vm in mirrored:
            if entries.get(vm, VMRule()).mode in ("allow", "mirror"):
                entries[vm] = VMRule("mirror")
        for vm in quarantined:
            entries[vm] = VMRule("quarantine")
        return replace(self, vms=tuple(sorted(entries.items())))

    def to_dict(self) -> dict:
        """The policy in the network file's own form."""
        return {
            "default": self.default,
            "segments": dict(self.segments),
            "pairs": [{"segments": list(pair), "mode": mode} for pair, mode in self.pairs],
            "external": dict(self.external),
            "vms": {vm: {"mode": r.mode, "direction": r.direction} for vm, r in self.vms},
            "mirror_denied": self.mirror_denied,
        }


def _set(entries: dict, key, value) -> None:
    if value is None:
        entries.pop(key, None)
    else:
        entries[key] = value


def _mode(value: Any, allowed: tuple, place: str) -> str:
    if value not in allowed:
        raise PolicyError(place, f"invalid mode {value!r} (one of: {', '.join(allowed)})")
    return value


def vm_rule(value: Any, place: str) -> VMRule:
    """A VM rule from its file/REST form: "mirror" or {mode:, direction:}."""
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise PolicyError(place, f"must be a mode or a mapping, got {value!r}")
    unknown = set(value) - {"mode", "direction"}
    if unknown:
        raise PolicyError(f"{place}.{sorted(unknown)[0]}",
                          "unknown key (allowed: mode, direction)")
    mode = _mode(value.get("mode", "allow"), VM_MODES, f"{place}.mode")
    direction = value.get("direction", "both")
    if direction not in DIRECTIONS:
        raise PolicyError(f"{place}.direction", f"invalid direction {direction!r} "
                                                f"(one of: {', '.join(DIRECTIONS)})")
    if direction != "both" and mode != "mirror":
        raise PolicyError(f"{place}.direction", "a direction applies to mode mirror only")
    return VMRule(mode, direction)


def parse(raw: Any, segments: set, vms: set, place: str = "policy") -> Policy:
    """Build a Policy from the file's `policy:` mapping; PolicyError names the place."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyError(place, f"must be a mapping, got {type(raw).__name__}")
    known = ("default", "segments", "pairs", "external", "vms", "mirror_denied")
    for key in raw:
        if key not in known:
            raise PolicyError(f"{place}.{key}", f"unknown key (allowed: {', '.join(known)})")
    policy = Policy().with_default(_in(raw, "default", "allow", place))
    for name, mode in _mapping(raw.get("segments"), f"{place}.segments").items():
        _known(name, segments, "segment", f"{place}.segments.{name}")
        policy = _at(f"{place}.segments.{name}", policy.with_segment, name, mode)
    seen = set()
    for i, rule in enumerate(_list(raw.get("pairs"), f"{place}.pairs")):
        where = f"{place}.pairs[{i}]"
        rule = _mapping(rule, where)
        for key in rule:
            if key not in ("segments", "mode"):
                raise PolicyError(f"{where}.{key}", "unknown key (allowed: segments, mode)")
        pair = rule.get("segments")
        if not isinstance(pair, list) or len(pair) != 2:
            raise PolicyError(f"{where}.segments", "must list two different segments")
        for seg in pair:
            _known(seg, segments, "segment", f"{where}.segments")
        if pair[0] == pair[1]:
            raise PolicyError(f"{where}.segments", "must list two different segments")
        if frozenset(pair) in seen:
            raise PolicyError(f"{where}.segments", f"pair {pair} is already given a mode")
        seen.add(frozenset(pair))
        if "mode" not in rule:
            raise PolicyError(where, "missing required key 'mode'")
        policy = _at(f"{where}.mode", policy.with_pair, pair[0], pair[1], rule["mode"])
    for name, mode in _mapping(raw.get("external"), f"{place}.external").items():
        _known(name, segments, "segment", f"{place}.external.{name}")
        policy = _at(f"{place}.external.{name}", policy.with_external, name, mode)
    for name, value in _mapping(raw.get("vms"), f"{place}.vms").items():
        _known(name, vms, "VM", f"{place}.vms.{name}")
        policy = policy.with_vm(name, vm_rule(value, f"{place}.vms.{name}"))
    denied = raw.get("mirror_denied", False)
    if not isinstance(denied, bool):
        raise PolicyError(f"{place}.mirror_denied", f"must be true or false, got {denied!r}")
    return replace(policy, mirror_denied=denied)


def _at(place: str, change: Callable, *args) -> Policy:
    """Apply a change, reporting a bad mode at `place`."""
    try:
        return change(*args)
    except PolicyError as e:
        raise PolicyError(place, e.problem) from None


def _in(raw: dict, key: str, default, place: str):
    value = raw.get(key, default)
    if value not in SCOPE_MODES:
        raise PolicyError(f"{place}.{key}",
                          f"invalid mode {value!r} (one of: {', '.join(SCOPE_MODES)})")
    return value


def _mapping(value: Any, place: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyError(place, f"must be a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, place: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(place, f"must be a list, got {type(value).__name__}")
    return value


def _known(name: Any, known: set, what: str, place: str) -> None:
    if not isinstance(name, str) or name not in known:
        raise PolicyError(place, f"unknown {what} {name!r}")
