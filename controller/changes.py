"""Write requests of the REST API -> a new Policy (pure, no Ryu).

Everything a client can get wrong is caught here and raised as a
RequestError with the HTTP status and a message that says what to fix:
the body's media type, size and JSON syntax, its shape, unknown names,
invalid modes. Valid modes come from controller.policy, so a new mode
there is accepted here without a change.
"""
from __future__ import annotations

import json
from typing import Any

from .model import Network
from .policy import DIRECTIONS, SCOPE_MODES, VM_MODES, Policy, PolicyError, vm_rule

MAX_BODY = 64 * 1024


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def json_body(content_type: str | None, body: bytes) -> dict:
    """The request body as a JSON object."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise RequestError(415, "the body must be JSON, sent with 'Content-Type: "
                                f"application/json' (got {content_type or 'none'!r})")
    if len(body) > MAX_BODY:
        raise RequestError(413, f"the body is larger than {MAX_BODY} bytes")
    if not body.strip():
        raise RequestError(400, "the body is empty: send a JSON object such as "
                                '{"mode": "allow"}')
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON: {e.msg} at line {e.lineno} "
                                f"column {e.colno}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise RequestError(400, f"the body must be a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}[type(value)]


def _fields(body: dict, required: tuple, optional: tuple = ()) -> None:
    for key in body:
        if key not in required + optional:
            raise RequestError(400, f"unknown field {key!r} (allowed: "
                                    f"{', '.join(required + optional)})")
    for key in required:
        if key not in body:
            raise RequestError(400, f"missing field {key!r}")


def _choice(body: dict, key: str, allowed: tuple) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise RequestError(400, f"field {key!r} must be a string, got {_kind(value)}")
    if value not in allowed:
        raise RequestError(400, f"invalid {key} {value!r} (one of: {', '.join(allowed)})")
    return value


def scope_mode(body: dict) -> str:
    """{"mode": <deny|allow|mirror...>} for the default, a segment or a pair."""
    _fields(body, ("mode",))
    return _choice(body, "mode", SCOPE_MODES)


def vm_mode(body: dict):
    """{"mode": <allow|mirror|quarantine...>, "direction": <both|sent|received>}."""
    _fields(body, ("mode",), ("direction",))
    _choice(body, "mode", VM_MODES)
    if "direction" in body:
        _choice(body, "direction", DIRECTIONS)
    try:
        return vm_rule(body, "body")
    except PolicyError as e:
        raise RequestError(400, e.problem) from None


def segment(net: Network, name: str) -> str:
    if name not in {s.name for s in net.segments}:
        raise RequestError(404, f"unknown segment {name!r} (known: "
                                f"{', '.join(s.name for s in net.segments)})")
    return name


def vm(net: Network, name: str) -> str:
    if name not in {v.name for v in net.vms}:
        raise RequestError(404, f"unknown VM {name!r}")
    return name


def pair(net: Network, a: str, b: str) -> tuple[str, str]:
    segment(net, a)
    segment(net, b)
    if a == b:
        # Not a 400: the request is well formed, there is just no such pair.
        raise RequestError(404, f"no pair {a}/{b}: a pair joins two different segments "
                                f"(traffic inside {a} is set with /policy/segments/{a})")
    return a, b


# -- the changes, by route: (policy, network, path parameters, body) -> Policy

def set_default(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_default(scope_mode(body))


def set_segment(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_segment(segment(net, params["segment"]), scope_mode(body))


def clear_segment(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_segment(segment(net, params["segment"]), None)


def set_external(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_external(segment(net, params["segment"]), scope_mode(body))


def clear_external(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_external(segment(net, params["segment"]), None)


def set_pair(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    a, b = pair(net, params["a"], params["b"])
    return policy.with_pair(a, b, scope_mode(body))


def clear_pair(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    a, b = pair(net, params["a"], params["b"])
    return policy.with_pair(a, b, None)


def set_vm(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_vm(vm(net, params["vm"]), vm_mode(body))


def clear_vm(policy: Policy, net: Network, params: dict, body: dict) -> Policy:
    return policy.with_vm(vm(net, params["vm"]), None)
