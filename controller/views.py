"""What the REST API's reads show, computed from the model (pure, no Ryu).

The app hands over plain data (the network in force, per-switch cookies and
counters); these functions turn it into the JSON documents. Matches are
shown as {field: value} or {field: [value, mask]}.
"""
from __future__ import annotations

from .model import Hypervisor, Network
from .pipeline import TABLE_NAMES, Flow


def segments(net: Network) -> list[dict]:
    overrides = dict(net.policy.segments)
    return [{"name": s.name, "vlan": s.vlan,
             "subnet": str(s.subnet) if s.subnet else None,
             "mode": net.policy.mode(s.name, s.name),
             "override": s.name in overrides,
             "vms": [v.name for v in net.vms if v.segment == s.name]}
            for s in net.segments]


def vms(net: Network, bindings: dict[str, dict], leases: dict | None = None) -> list[dict]:
    """`net` with bound VMs placed where they run (and `ip: dhcp` VMs at
    their leases); `bindings`: vm -> how it is bound and whether it is up
    (controller/binding.py); leases: vm -> dhcp.Lease."""
    leases = leases or {}
    out = []
    for v in net.vms:
        rule = net.policy.vm_rule(v.name)
        segment_mode = net.policy.mode(v.segment, v.segment)
        out.append({"name": v.name, "hypervisor": v.hypervisor, "port": v.port,
                    "binding": bindings[v.name],
                    "segment": v.segment, "mac": v.mac,
                    "ip": None if v.ip is None else str(v.ip),
                    "dhcp": ({"lease": leases[v.name].to_dict() if v.name in leases else None}
                             if v.dhcp else None),
                    "router": v.router, "dhcp_server": v.dhcp_server,
                    "ipv6": None if v.ipv6 is None else [str(a) for a in v.ipv6],
                    "ipv6_router": v.ipv6_router,
                    "mode": rule.mode,
                    "direction": rule.direction if rule.mode == "mirror" else None,
                    "segment_mode": segment_mode,
                    "effective": effective_mode(rule.mode, segment_mode)})
    return out


def effective_mode(vm_mode: str, segment_mode: str) -> str:
    """One word for a VM: its own override if it has one, else its segment's.
    Traffic to other segments follows the pairs (see the matrix)."""
    return segment_mode if vm_mode == "allow" else vm_mode


def matrix(net: Network) -> dict:
    names = [s.name for s in net.segments]
    return {"segments": names,
            "modes": {a: {b: net.policy.mode(a, b) for b in names} for a in names}}


def match_doc(match) -> dict:
    """A Flow's match tuple or an OpenFlow match's items, as JSON."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in match}


def mirror_path(net: Network, hv: Hypervisor) -> dict | None:
    """Where the hypervisor's mirror copies go (compiler.mirror_actions)."""
    if hv.ids_port is not None:
        return {"via": "ids_port", "port": hv.ids_port}
    if hv.mirror_port is not None:
        tunnel = net.mirror_tunnel
        return {"via": tunnel.kind, "port": hv.mirror_port,
                "remote_ip": str(tunnel.remote_ip), "session": tunnel.session}
    if net.mirror_vlan is not None and hv.uplink_port is not None:
        return {"via": "vlan", "vlan": net.mirror_vlan, "port": hv.uplink_port}
    return None


def _mirror_action(net: Network, hv: Hypervisor, action: tuple) -> bool:
    return action in (("output", hv.ids_port), ("output", hv.mirror_port)) or (
        net.mirror_vlan is not None and action == ("set_vlan", net.mirror_vlan))


def _delivers(net: Network, hv: Hypervisor, flow: Flow) -> bool:
    """Does the entry send the frame on (not just copy it to the IDS)?"""
    return flow.goto is not None or any(
        a[0] in ("output", "controller") and not _mirror_action(net, hv, a)
        for a in flow.actions)


def _add(total: dict, packets: int, octets: int) -> None:
    total["packets"] += packets
    total["bytes"] += octets


def counters(net: Network, switches: list[tuple[Hypervisor, dict, dict]]) -> dict:
    """Per hypervisor and in total: packets/bytes by rule reason, what was
    copied to the IDS, and what was dropped, by reason. `switches` holds
    (hypervisor, {cookie: Flow} last committed, {cookie: (packets, bytes)})."""
    per_hv, mirrored, dropped = {}, {"packets": 0, "bytes": 0}, {}
    for hv, desired, counts in switches:
        doc = {"reasons": {}, "mirrored": {"packets": 0, "bytes": 0}, "dropped": {}}
        for cookie, (packets, octets) in counts.items():
            flow = desired.get(cookie)
            if flow is None or not flow.reason:
                continue
            _add(doc["reasons"].setdefault(flow.reason, {"packets": 0, "bytes": 0}),
                 packets, octets)
            if any(_mirror_action(net, hv, a) for a in flow.actions):
                _add(doc["mirrored"], packets, octets)
                _add(mirrored, packets, octets)
            if not _delivers(net, hv, flow):
                _add(doc["dropped"].setdefault(flow.reason, {"packets": 0, "bytes": 0}),
                     packets, octets)
                _add(dropped.setdefault(flow.reason, {"packets": 0, "bytes": 0}),
                     packets, octets)
        per_hv[hv.name] = doc
    return {"hypervisors": per_hv, "mirrored": mirrored, "dropped": dropped}


def audit(intended: list[Flow], installed: list[tuple[int, int, int, dict]]) -> dict:
    """Intended flows versus those a switch holds; `installed` holds
    (cookie, table, priority, match) read from it just now."""
    want = {f.cookie: f for f in intended}
    have = {entry[0]: entry for entry in installed}
    missing = [{"cookie": f"0x{c:016x}", "table": f.table,
                "table_name": TABLE_NAMES.get(f.table), "priority": f.priority,
                "match": match_doc(f.match), "reason": f.reason}
               for c, f in sorted(want.items()) if c not in have]
    unexpected = [{"cookie": f"0x{c:016x}", "table": table,
                   "table_name": TABLE_NAMES.get(table), "priority": priority,
                   "match": match, "reason": None}
                  for c, (_, table, priority, match) in sorted(have.items())
                  if c not in want]
    return {"intended": len(want), "installed": len(have),
            "missing": missing, "unexpected": unexpected,
            "in_sync": not missing and not unexpected}
