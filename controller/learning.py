"""Which source MACs a learning port may add: pure decisions, no I/O.

A learning port serves hosts that are not in the network file. Its MACs are
pinned to it once learned; a MAC that belongs to a declared VM or gateway or
is already learned elsewhere is a spoof and is refused, and each port learns at most
its max_hosts MACs, so a MAC flood fills nothing but its own small quota.
"""
from __future__ import annotations

from .compiler import LearnedHost
from .model import Network


def decide(net: Network, learned: frozenset[LearnedHost], hypervisor: str,
           port: int, mac: str) -> str | None:
    """None if the MAC may be learned on (hypervisor, port), else the reason not."""
    hv = net.hypervisor(hypervisor)
    lp = next((p for p in hv.learning_ports if p.port == port), None)
    if lp is None:
        return "not-a-learning-port"
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        return "invalid-source-mac"
    if any(vm.mac == mac for vm in net.vms):
        return "declared-vm-mac"
    if any(gw.mac == mac for seg in net.segments for gw in seg.gateways):
        return "gateway-mac"        # a host posing as the way out
    for host in learned:
        if host.mac == mac:
            return "already-learned" if (host.hypervisor, host.port) == (hypervisor, port) \
                else "learned-elsewhere"
    if sum(1 for h in learned if (h.hypervisor, h.port) == (hypervisor, port)) >= lp.max_hosts:
        return "port-full"
    return None
