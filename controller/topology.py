"""The topology the web console draws: a networkx graph built from the
model and what is connected (pure, no Ryu).

Nodes are the hypervisors, the VMs where they run now, each hypervisor's
firewall and IDS ports, the physical network its uplink joins (`core`) and
the central IDS that remote copies go to. Ids carry their kind
(`hv:hv1`, `vm:web1`, `fw:hv1`, `ids:hv1`), since a VM and a hypervisor may
share a name. The document is networkx's node-link form with a position
per node, so the page needs no graph library of its own.
"""
from __future__ import annotations

import networkx as nx

from . import views
from .model import Network

CORE = "core"
CENTRAL_IDS = "ids:central"
# networkx's spring layout runs on numpy below 500 nodes and needs scipy
# above; past a few hundred nodes a drawing is unreadable anyway, so large
# networks keep the plain rows the layout starts from.
SPRING_LIMIT = 300
# Nodes whose place the layout keeps: the backbone the rest hangs from.
ANCHORS = ("core", "remote-ids", "hypervisor", "stopped-vm")


def graph(net: Network, datapaths: dict | None = None,
          ports_down: dict | None = None) -> nx.Graph:
    """`net` with bound VMs placed where they run (fabric.placed_network);
    datapaths: fabric.status()["datapaths"] (None: nothing is known about
    the switches); ports_down: hypervisor -> ports reported down."""
    datapaths, ports_down = datapaths or {}, ports_down or {}
    g = nx.Graph(segments=[{"name": s.name, "vlan": s.vlan} for s in net.segments])
    vlans = [s.vlan for s in net.segments]
    if any(hv.uplink_port is not None for hv in net.hypervisors):
        g.add_node(CORE, kind="core", label="physical network")
    if net.mirror_tunnel is not None:
        t = net.mirror_tunnel
        g.add_node(CENTRAL_IDS, kind="remote-ids", label=f"IDS {t.remote_ip}", via=t.kind)
    elif net.mirror_vlan is not None and CORE in g:
        g.add_node(CENTRAL_IDS, kind="remote-ids", label="central IDS", via="vlan")
        g.add_edge(CORE, CENTRAL_IDS, kind="mirror", vlan=net.mirror_vlan)
    for hv in net.hypervisors:
        state = datapaths.get(hv.name, {})
        node = f"hv:{hv.name}"
        down = set(ports_down.get(hv.name, ()))
        g.add_node(node, kind="hypervisor", label=hv.name, dpid=f"{hv.dpid:016x}",
                   connected=state.get("connected"), synced=state.get("synced"),
                   firewall=state.get("firewall"), flows=state.get("flows"),
                   mirror=views.mirror_path(net, hv))

        def link(other, kind, port, **extra):
            g.add_edge(node, other, kind=kind, port=port, down=port in down, **extra)

        if hv.uplink_port is not None:
            link(CORE, "uplink", hv.uplink_port, vlans=vlans)
        if hv.firewall_port is not None:
            g.add_node(f"fw:{hv.name}", kind="firewall", label="firewall",
                       hypervisor=hv.name, state=state.get("firewall"))
            link(f"fw:{hv.name}", "firewall", hv.firewall_port)
        if hv.ids_port is not None:
            g.add_node(f"ids:{hv.name}", kind="ids", label="IDS", hypervisor=hv.name)
            link(f"ids:{hv.name}", "ids", hv.ids_port)
        elif hv.mirror_port is not None and net.mirror_tunnel is not None:
            link(CENTRAL_IDS, "mirror", hv.mirror_port, via=net.mirror_tunnel.kind)
        for vm in net.vms:
            if vm.hypervisor == hv.name:
                g.add_node(f"vm:{vm.name}", **_vm(vm, "vm"))
                link(f"vm:{vm.name}", "vm", vm.port)
    for vm in net.vms:
        if vm.hypervisor is None:          # bound, and not running anywhere now
            g.add_node(f"vm:{vm.name}", **_vm(vm, "stopped-vm"))
    return g


def _vm(vm, kind: str) -> dict:
    return {"kind": kind, "label": vm.name, "segment": vm.segment,
            "hypervisor": vm.hypervisor, "port": vm.port, "mac": vm.mac,
            "ip": None if vm.ip is None else str(vm.ip)}


def document(g: nx.Graph) -> dict:
    """Node-link JSON, each node with `x` and `y` in 0..1 (y downwards)."""
    positions = layout(g)
    doc = nx.node_link_data(g, edges="edges")
    for node in doc["nodes"]:
        node["x"], node["y"] = (round(v, 4) for v in positions[node["id"]])
    return doc


_cache: dict = {}


def layout(g: nx.Graph) -> dict:
    """node -> (x, y). The same graph always gets the same drawing (a fixed
    seed, memoized: the page asks every 2 s), so nothing jumps about."""
    key = (tuple((n, d["kind"]) for n, d in g.nodes(data=True)), tuple(g.edges))
    if key not in _cache:
        if len(_cache) >= 16:
            _cache.clear()
        _cache[key] = _layout(g)
    return _cache[key]


def _layout(g: nx.Graph) -> dict:
    start = _rows(g)
    fixed = [n for n, d in g.nodes(data=True) if d["kind"] in ANCHORS]
    if len(g) <= SPRING_LIMIT and len(fixed) < len(g):
        # The backbone stays where _rows put it; what hangs from a
        # hypervisor (VMs, firewall, IDS) settles around it without overlap.
        moved = nx.spring_layout(g, pos=start, fixed=fixed, seed=1, iterations=60,
                                 k=0.6 / max(len(g), 1) ** 0.5)
        start = {n: (float(x), float(y)) for n, (x, y) in moved.items()}
    return _fit(start)


def _rows(g: nx.Graph) -> dict:
    """The core and central IDS on top, hypervisors in a row below, each
    one's VMs and ports under it, VMs that run nowhere along the bottom."""
    hvs = [n for n, d in g.nodes(data=True) if d["kind"] == "hypervisor"]
    pos = {CORE: (0.5, 0.0), CENTRAL_IDS: (0.9 if CORE in g else 0.5, 0.0)}
    for i, hv in enumerate(hvs):
        x = (i + 0.5) / len(hvs)
        pos[hv] = (x, 0.35)
        below = sorted(n for n in g[hv] if n not in pos)
        width = 0.8 / len(hvs)
        for j, n in enumerate(below):
            pos[n] = (x - width / 2 + width * (j + 0.5) / len(below),
                      0.6 if g.nodes[n]["kind"] == "vm" else 0.45)
    stopped = sorted(n for n in g if n not in pos)
    for j, n in enumerate(stopped):
        pos[n] = ((j + 0.5) / len(stopped), 1.0)
    return {n: pos[n] for n in g}


def _fit(pos: dict) -> dict:
    """Scale into 0..1 on both axes, keeping a margin for labels."""
    if not pos:
        return {}
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]

    def scale(v, low, high):
        return 0.5 if high - low < 1e-9 else 0.05 + 0.9 * (v - low) / (high - low)
    return {n: (scale(x, min(xs), max(xs)), scale(y, min(ys), max(ys)))
            for n, (x, y) in pos.items()}
