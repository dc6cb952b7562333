"""The web console's topology graph (controller/topology.py), on the bundled
example and on networks of other shapes: ERSPAN to a central IDS, VMs bound
by interface that run nowhere yet, then somewhere."""
from __future__ import annotations

import json
import os

import pytest

from controller import model, topology

from .test_model import EXAMPLE

NETWORKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "networks")


def edges(g) -> set:
    """{(one end, other end, kind, port)} with the ends sorted."""
    return {(*sorted((a, b)), d["kind"], d.get("port")) for a, b, d in g.edges(data=True)}


def test_the_example_hypervisors_vms_ports_and_physical_network():
    net = model.load(str(EXAMPLE))
    g = topology.graph(net)
    kinds = dict(g.nodes(data="kind"))
    assert {n for n, k in kinds.items() if k == "hypervisor"} == {"hv:hv1", "hv:hv2"}
    assert {n for n, k in kinds.items() if k == "vm"} == {f"vm:{v.name}" for v in net.vms}
    assert kinds["fw:hv1"] == kinds["fw:hv2"] == "firewall"
    assert kinds["ids:hv1"] == "ids" and "ids:hv2" not in kinds   # hv2 has no IDS port
    # hv2's copies cross the uplink in the mirror VLAN to the central IDS.
    assert kinds["ids:central"] == "remote-ids" and g.nodes["ids:central"]["via"] == "vlan"
    assert g.nodes["hv:hv2"]["mirror"] == {"via": "vlan", "vlan": 900, "port": 1}
    assert g.edges["core", "ids:central"]["vlan"] == 900
    assert {("hv:hv1", "vm:web1", "vm", 10), ("hv:hv2", "vm:web3", "vm", 10),
            ("core", "hv:hv1", "uplink", 1), ("fw:hv2", "hv:hv2", "firewall", 2),
            ("hv:hv1", "ids:hv1", "ids", 3)} <= edges(g)
    assert g.edges["core", "hv:hv1"]["vlans"] == [10, 20, 30]
    assert g.graph["segments"][0] == {"name": "dmz", "vlan": 10}
    # Every VM hangs from its own hypervisor only.
    for vm in net.vms:
        assert list(g[f"vm:{vm.name}"]) == [f"hv:{vm.hypervisor}"]
    assert g.nodes["vm:db1"]["segment"] == "internal" and g.nodes["vm:db1"]["ip"] == "10.0.20.2"


def test_switch_state_and_ports_down_are_shown_where_known():
    net = model.load(str(EXAMPLE))
    assert topology.graph(net).nodes["hv:hv1"]["connected"] is None      # nothing known
    datapaths = {"hv1": {"connected": True, "synced": True, "flows": 90, "firewall": "down"},
                 "hv2": {"connected": False, "synced": False, "flows": None,
                         "firewall": "unknown"}}
    g = topology.graph(net, datapaths, {"hv1": [3]})
    assert (g.nodes["hv:hv1"]["connected"], g.nodes["hv:hv1"]["synced"]) == (True, True)
    assert g.nodes["hv:hv2"]["connected"] is False
    assert g.nodes["fw:hv1"]["state"] == "down" and g.nodes["fw:hv2"]["state"] == "unknown"
    assert g.edges["hv:hv1", "ids:hv1"]["down"] is True
    assert g.edges["hv:hv1", "vm:web1"]["down"] is False


def test_erspan_to_a_central_ids_and_a_hypervisor_with_its_own():
    net = model.load(os.path.join(NETWORKS, "remote_mirror.yaml"))
    g = topology.graph(net)
    central = g.nodes["ids:central"]
    assert central["kind"] == "remote-ids" and central["via"] == "erspan"
    assert central["label"] == "IDS 198.18.7.10"
    mirrored = {a if b == "ids:central" else b for a, b, d in g.edges(data=True)
                if d["kind"] == "mirror"}
    assert mirrored == {"hv:rm1", "hv:rm2"}            # rm3 keeps its copies local
    assert g.edges["hv:rm2", "ids:central"]["port"] == 91
    assert ("hv:rm3", "ids:rm3", "ids", 2) in edges(g)
    assert not any(k == "firewall" for _, k in g.nodes(data="kind"))


def test_bound_vms_that_run_nowhere_then_where_they_run():
    net = model.load(os.path.join(NETWORKS, "lifecycle.yaml"))
    g = topology.graph(net)
    assert g.nodes["vm:mover"]["kind"] == "stopped-vm" and not list(g["vm:mover"])
    placed = net.placed({"mover": ("lc3", 7)})
    g = topology.graph(placed)
    assert g.nodes["vm:mover"]["kind"] == "vm"
    assert ("hv:lc3", "vm:mover", "vm", 7) in edges(g)
    assert g.nodes["vm:sitter"]["kind"] == "stopped-vm"


@pytest.mark.parametrize("name", [str(EXAMPLE), os.path.join(NETWORKS, "remote_mirror.yaml"),
                                  os.path.join(NETWORKS, "lifecycle.yaml")])
def test_the_document_is_node_link_json_with_positions_on_the_page(name):
    g = topology.graph(model.load(name))
    doc = topology.document(g)
    assert json.loads(json.dumps(doc)) == doc
    assert {n["id"] for n in doc["nodes"]} == set(g.nodes)
    assert len(doc["edges"]) == g.number_of_edges()
    for node in doc["nodes"]:
        assert 0 <= node["x"] <= 1 and 0 <= node["y"] <= 1, node
    places = [(n["x"], n["y"]) for n in doc["nodes"]]
    assert len(set(places)) == len(places), "two nodes drawn on the same spot"
    # The backbone on top: the physical network above every hypervisor.
    y = {n["id"]: n["y"] for n in doc["nodes"]}
    assert all(y["core"] < y[n] for n in g if n.startswith("hv:"))


def test_the_same_graph_is_always_drawn_the_same():
    net = model.load(str(EXAMPLE))
    first = topology.document(topology.graph(net))
    topology._cache.clear()                  # computed again, not remembered
    assert topology.document(topology.graph(net)) == first


def test_a_large_network_keeps_the_plain_rows():
    # Past the spring layout's limit (and its need for scipy): rows, quickly.
    net = model.load(str(EXAMPLE))
    vms = tuple(model.VM(f"v{i}", "hv1" if i % 2 else "hv2", 100 + i, "dmz",
                         f"02:00:00:01:{i // 256:02x}:{i % 256:02x}", None)
                for i in range(topology.SPRING_LIMIT + 50))
    doc = topology.document(topology.graph(net.__class__(
        net.source, net.segments, net.hypervisors, vms)))
    y = {n["id"]: n["y"] for n in doc["nodes"]}
    assert len({y[f"vm:v{i}"] for i in range(len(vms))}) == 1     # one row of VMs
