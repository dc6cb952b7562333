"""The lab's physical router, and a host behind it: the world outside.

When the network file declares gateways, the lab adds `rtr` on the core:
one interface per declared gateway, an access port of its segment's VLAN
(the kernel here has no 802.1Q, so no trunk), with the gateway's MAC and
address, and forwarding on; and `wan`, a host behind it on a link of its
own (198.51.100.0/24, TEST-NET-2, which exists only in the two hosts'
namespaces). VMs of a segment with a gateway address get their default
route through it, as DHCP would give them.
"""
from __future__ import annotations

import ipaddress

from controller import model

ROUTER, OUTSIDE = "rtr", "wan"
WAN = ipaddress.IPv4Network("198.51.100.0/24")
ROUTER_WAN_IP, OUTSIDE_IP = "198.51.100.1", "198.51.100.7"
DEFAULT_PREFIX = 8                 # a segment without a subnet (as the lab's VMs)


def gateways(network: model.Network) -> list[tuple[model.Segment, model.Gateway]]:
    """Every declared gateway with its segment, in file order."""
    return [(seg, gw) for seg in network.segments for gw in seg.gateways]


def router_intf(index: int) -> str:
    return f"{ROUTER}-eth{index}"


def wan_intf() -> str:
    return f"{ROUTER}-wan"


def _prefix(seg: model.Segment) -> int:
    return seg.subnet.prefixlen if seg.subnet is not None else DEFAULT_PREFIX


def configure(network: model.Network, router, outside, core_ports: list[str], run,
              host_run) -> None:
    """After the lab started: tag the router's core ports (core_ports[i] for
    gateway i) with their segment's VLAN, address its interfaces, turn
    forwarding on, and route the VMs and the outside host through it.
    run(argv) runs in the root namespace, host_run(host, cmd) in a host."""
    for i, ((seg, gw), port) in enumerate(zip(gateways(network), core_ports)):
        run(["ovs-vsctl", "set", "port", port, f"tag={seg.vlan}"])
        intf = router_intf(i)
        host_run(router, f"ip link set {intf} address {gw.mac}")
        if gw.ip is not None:
            host_run(router, f"ip addr add {gw.ip}/{_prefix(seg)} dev {intf}")
    host_run(router, f"ip addr add {ROUTER_WAN_IP}/{WAN.prefixlen} dev {wan_intf()}")
    host_run(router, "sysctl -qw net.ipv4.ip_forward=1")
    host_run(outside, f"ip route add default via {ROUTER_WAN_IP}")


def default_routes(network: model.Network) -> dict[str, str]:
    """segment -> the address of its first gateway that has one."""
    routes = {}
    for seg, gw in gateways(network):
        if gw.ip is not None:
            routes.setdefault(seg.name, str(gw.ip))
    return routes
