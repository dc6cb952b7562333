"""What the network does with a frame now, and why: the trace.

Pure Python. It builds the frame an operator asks about (from a VM, to a
VM, an address or a MAC, by protocol) and runs it through the entries the
controller committed to every switch (controller/tablesim.py: the core is
modelled as a learning switch that has seen every VM, a firewall as
passing what it is given). The answer says whether it is delivered, which
entry decided and for which reason, every copy to an IDS, every firewall
crossing, and the path hop by hop.
"""
from __future__ import annotations

import ipaddress

from .model import MAC_RE, Network
from .pipeline import POLICY, Flow
from .tablesim import BROADCAST, CENTRAL_IDS, Fabric, Frame, SwitchCache

PROTOCOLS = ("icmp", "tcp", "udp", "arp")
IP_PROTO = {"icmp": 1, "tcp": 6, "udp": 17}
SOURCE_PORT = 40000

# What a deciding entry's reason means, for the answer's `reason`.
REASONS = {
    "policy-deny": "the policy denies this segment pair (no scope allows it)",
    "port-security": "port security: not from the VM's own MAC and address",
    "quarantine": "a quarantined VM: nothing in or out",
    "unknown-destination": "unknown destination: no host has that MAC",
    "unknown-port": "the frame came in on a port the controller does not know",
    "steer-fail-closed": "steered, and the hypervisor's firewall is down (fail closed)",
    "external-deny": "north-south: the segment's external mode is deny",
    "uplink-cross-segment": "from the uplink into another segment",
    "firewall-unexpected-return": "back from the firewall, but not as it was steered",
    "rogue-dhcp": "a DHCP server message from a port that is no declared server",
    "double-tagged": "a tag inside the tag",
    "no-route": "no way out of this hypervisor for that destination",
}


class TraceError(ValueError):
    """A question the trace cannot answer; status: as REST says it (400 a
    bad question, 404 nothing by that name, 409 not now)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def frame_for(net: Network, src: str, dst: str, proto: str = "icmp",
              dport: int | None = None) -> tuple[Frame, str]:
    """The frame `src` sends to `dst` (a VM name, an IPv4 address or a MAC),
    and what the destination is (a VM's name, "gateway", or the MAC). `net`
    has VMs placed where they run."""
    vms = {vm.name: vm for vm in net.vms}
    if src not in vms:
        raise TraceError(f"unknown VM {src!r}", 404)
    sender = vms[src]
    if sender.port is None:
        raise TraceError(f"VM {src} is not running anywhere", 409)
    if sender.ip is None:
        raise TraceError(f"VM {src} has no address yet (ip: dhcp, no lease)", 409)
    if proto not in PROTOCOLS:
        raise TraceError(f"proto must be one of {', '.join(PROTOCOLS)}, not {proto!r}")
    mac, what = _destination(net, sender, dst)
    if proto == "arp":
        return Frame.arp(sender.mac, str(sender.ip), eth_dst=BROADCAST), what
    if proto == "udp":
        return Frame.udp(sender.mac, mac, str(sender.ip), SOURCE_PORT, dport or 9), what
    return Frame(sender.mac, mac, ipv4_src=str(sender.ip), ip_proto=IP_PROTO[proto]), what


def _destination(net: Network, sender, dst: str) -> tuple[str, str]:
    """(the destination MAC, what it is: a VM's name, "gateway" or the MAC)."""
    for vm in net.vms:
        if vm.name == dst:
            return vm.mac, vm.name
    try:
        address = ipaddress.IPv4Address(dst)
    except ValueError:
        address = None
    if address is not None:
        for vm in net.vms:
            if vm.ip == address:
                return vm.mac, vm.name
        segment = net.segment(sender.segment)
        for gw in segment.gateways:
            if gw.ip == address or segment.subnet is None or address not in segment.subnet:
                # Not on the sender's link: it goes to its gateway, as routing does.
                return gw.mac, "gateway"
        raise TraceError(f"no host has {dst} in segment {sender.segment}, and the segment "
                         "has no gateway to reach it by", 404)
    mac = dst.lower()
    if not MAC_RE.match(mac):
        raise TraceError(f"dst {dst!r} is no VM, IPv4 address or MAC", 404)
    for seg in net.segments:
        if any(gw.mac == mac for gw in seg.gateways):
            return mac, "gateway"
    return mac, mac


def trace(net: Network, flows_by_hv: dict[str, list[Flow]], src: str, dst: str,
          proto: str = "icmp", dport: int | None = None,
          switches: SwitchCache | None = None) -> dict:
    """The answer for the frame `src` sends to `dst` (see the module doc).
    switches: the parsed entries kept from earlier traces (a large fabric's
    take seconds to parse; only the switches the frame reaches are)."""
    frame, destination = frame_for(net, src, dst, proto, dport)
    roles = _port_roles(net)
    fabric = Fabric(net, flows_by_hv, firewall=lambda hv, f: f, core="learning",
                    cache=switches if switches is not None else SwitchCache())
    result = fabric.run(src, frame)
    ids = {(hv.name, hv.ids_port) for hv in net.hypervisors if hv.ids_port} | {CENTRAL_IDS}
    tunnels = {(hv.name, hv.mirror_port) for hv in net.hypervisors if hv.mirror_port}
    copies = [{"hypervisor": hv, "port": port} for hv, port, _ in result.deliveries
              if (hv, port) in ids]
    copies += [{"hypervisor": hv.hypervisor, "port": port, "via": "tunnel"}
               for hv in result.hops for port, _ in hv.outputs
               if (hv.hypervisor, port) in tunnels]
    delivered = sorted({roles.get((hv, port), f"{hv}:{port}") for hv, port, _ in
                        result.deliveries if (hv, port) not in ids})
    sender = net.vm(src)
    out_to_gateway = destination == "gateway" and any(
        hv == sender.hypervisor for hv, _ in result.uplink_hops)
    if out_to_gateway:
        delivered.append("gateway (by the uplink)")
    verdict = "delivered" if delivered else "dropped"
    # Delivered: the policy entry that let it through where it entered.
    decided = _deciding(result, ids, tunnels) if verdict == "dropped" else next(
        (f for f in result.hops[0].entries if f.table == POLICY), None)
    reason = decided.reason if decided else ""
    return {
        "frame": {"src": src, "dst": dst, "proto": proto, "dport": dport,
                  "eth_src": frame.eth_src, "eth_dst": frame.eth_dst,
                  "destination": destination},
        "verdict": verdict,
        "delivered_to": delivered,
        "reason": reason if verdict == "dropped" else "delivered",
        "explanation": REASONS.get(reason, reason) if verdict == "dropped" else
        f"delivered to {', '.join(delivered)}",
        "rule": Flow.describe(decided) if decided else None,
        "copies": copies,
        "steered": [hv for hv, _ in result.firewall_crossings],
        "path": [{"hypervisor": hop.hypervisor, "in_port": hop.in_port,
                  "in": roles.get((hop.hypervisor, hop.in_port), "port"),
                  "entries": [Flow.describe(f) for f in hop.entries],
                  "outputs": [{"port": port, "to": roles.get((hop.hypervisor, port), "port"),
                               "vlan": list(f.vlans)} for port, f in hop.outputs]}
                 for hop in result.hops],
    }


def _deciding(result, ids, tunnels) -> Flow | None:
    """The entry that ended the frame's way: the last entry of the first
    hop that sent it nowhere but to an IDS; else the last of the first hop."""
    for hop in result.hops:
        onward = [p for p, _ in hop.outputs
                  if (hop.hypervisor, p) not in ids and (hop.hypervisor, p) not in tunnels]
        if not onward and hop.entries:
            return hop.entries[-1]
    return result.hops[0].entries[-1] if result.hops and result.hops[0].entries else None


def _port_roles(net: Network) -> dict[tuple[str, int], str]:
    roles = {}
    for hv in net.hypervisors:
        for port, role in hv.special_ports().items():
            roles[(hv.name, port)] = role.replace("_port", "")
        for lp in hv.learning_ports:
            roles[(hv.name, lp.port)] = "learning port"
    for vm in net.vms:
        if vm.port is not None:
            roles[(vm.hypervisor, vm.port)] = f"VM {vm.name}"
    return roles
