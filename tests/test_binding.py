"""VMs bound by interface name or iface-id: boot, stop, ofport change,
migration with and without overlap, impostors; then the compiled flows of
each state, run on the table simulator."""
from __future__ import annotations

import pytest

from controller import model
from controller.binding import Bindings, Port
from controller.compiler import compile_network
from controller.tablesim import Fabric, Frame

# Three hypervisors, names unlike the example's; one VM placed by the file,
# two bound by interface name, one by iface-id.
NETWORK = """
segments:
  blue: {vlan: 301}
  gold: {vlan: 302}
hypervisors:
  north: {dpid: 0x11, uplink_port: 7}
  south: {dpid: 0x12, uplink_port: 7}
  east:  {dpid: 0x13, uplink_port: 7}
vms:
  anchor: {hypervisor: north, port: 20, segment: blue, mac: "02:0b:00:00:00:01", ip: 10.3.0.1}
  roamer: {interface: vnet-roamer, segment: blue, mac: "02:0b:00:00:00:02", ip: 10.3.0.2}
  other:  {interface: vnet-other, segment: gold, mac: "02:0b:00:00:00:03", ip: 10.3.0.3}
  cloud:  {iface_id: 7d1c-aa01, segment: blue, mac: "02:0b:00:00:00:04", ip: 10.3.0.4}
policy:
  default: allow
ovsdb: tcp:192.0.2.10:6640
"""


@pytest.fixture
def net():
    return model.parse(NETWORK, "bound.yaml")


def kinds(events):
    return [(e.kind, e.vm, e.hypervisor, e.ofport) for e in events]


def fabric(net, b: Bindings) -> Fabric:
    placed = net.placed(b.locations())
    return Fabric(placed, compile_network(placed, candidates=b.candidates()))


def reaches(fab: Fabric, net, src: str, dst: str, at=None) -> set:
    """Ports a unicast from src to dst reaches; src sends from `at` or its place."""
    s, d = fab.network.vm(src), net.vm(dst)
    return fab.run(at or (s.hypervisor, s.port), Frame.ipv4(s.mac, d.mac, s.ip)).ports


# ------------------------------------------------------------ the file

def test_a_vm_is_placed_or_bound_in_exactly_one_way(net):
    roamer, cloud = net.vm("roamer"), net.vm("cloud")
    assert roamer.bound and (roamer.hypervisor, roamer.port, roamer.interface) == \
        (None, None, "vnet-roamer")
    assert cloud.iface_id == "7d1c-aa01" and not net.vm("anchor").bound
    assert {hv.ovsdb for hv in net.hypervisors} == {"tcp:192.0.2.10:6640"}
    bad = {
        "both": NETWORK.replace("{interface: vnet-roamer,", "{interface: vnet-roamer, "
                                "hypervisor: north, port: 3,"),
        "port only": NETWORK.replace("{interface: vnet-roamer,", "{port: 3,"),
        "none": NETWORK.replace("{interface: vnet-roamer,", "{"),
        "twice": NETWORK.replace("vnet-other", "vnet-roamer"),
        "bad name": NETWORK.replace("vnet-roamer", "'vnet roamer'"),
        "too long": NETWORK.replace("vnet-roamer", "vnet-roamer-0123"),
        "no ovsdb": NETWORK.replace("ovsdb: tcp:192.0.2.10:6640", ""),
        "bad ovsdb": NETWORK.replace("tcp:192.0.2.10:6640", "http://x"),
    }
    messages = {}
    for case, text in bad.items():
        with pytest.raises(model.NetworkFileError) as e:
            model.parse(text, "bad.yaml")
        messages[case] = str(e.value)
    assert "vms.roamer: say where the VM is in one way" in messages["both"]
    assert "vms.roamer: say where the VM is in one way" in messages["port only"]
    assert "vms.roamer: say where the VM is in one way" in messages["none"]
    assert "vms.other.interface: interface 'vnet-roamer' is already bound to VM 'roamer'" \
        in messages["twice"]
    assert "vms.roamer.interface: invalid interface 'vnet roamer'" in messages["bad name"]
    assert "vms.roamer.interface: invalid interface" in messages["too long"]
    assert "vms.cloud.iface_id: binding by iface_id reads OVSDB, but hypervisor north " \
        "has no ovsdb address" in messages["no ovsdb"]
    assert "ovsdb: invalid OVSDB address 'http://x'" in messages["bad ovsdb"]


# ------------------------------------------------------------ lifecycle

def test_boot_stop_and_ofport_change(net):
    b = Bindings(net)
    assert b.locations() == {}
    assert kinds(b.port_added(Port("south", 31, "vnet-roamer"), 1.0)) == \
        [("up", "roamer", "south", 31)]
    assert b.locations() == {"roamer": ("south", 31)}
    assert b.binding("roamer")["up"] and b.binding("roamer")["since"] == 1.0
    # A port-status for what is known already changes nothing.
    assert b.port_added(Port("south", 31, "vnet-roamer"), 2.0) == []
    assert kinds(b.port_removed("south", 31, 3.0)) == [("down", "roamer", "south", 31)]
    assert b.locations() == {} and not b.binding("roamer")["up"]
    # Rebooted: OVS gives it another ofport.
    assert kinds(b.port_added(Port("south", 44, "vnet-roamer"), 4.0)) == \
        [("up", "roamer", "south", 44)]


def test_migration_without_overlap_moves_the_vm(net):
    b = Bindings(net)
    b.port_added(Port("south", 31, "vnet-roamer"), 1.0)
    assert kinds(b.port_removed("south", 31, 2.0)) == [("down", "roamer", "south", 31)]
    assert kinds(b.port_added(Port("east", 5, "vnet-roamer"), 2.1)) == \
        [("up", "roamer", "east", 5)]


def test_overlap_keeps_the_source_until_the_guest_speaks_at_the_destination(net):
    b = Bindings(net)
    b.port_added(Port("south", 31, "vnet-roamer"), 1.0)
    events = b.port_added(Port("east", 5, "vnet-roamer"), 2.0)
    assert kinds(events) == [("claimed", "roamer", "east", 5)] and events[0].warning
    assert b.locations() == {"roamer": ("south", 31)}
    assert b.candidates() == {("roamer", "east", 5)}
    # A frame from another MAC on the destination port moves nothing...
    assert b.frame_seen("east", 5, "02:0b:00:00:00:99", 2.5) == []
    # ...nor does the VM's MAC on a port not bound to it.
    assert b.frame_seen("east", 6, "02:0b:00:00:00:02", 2.5) == []
    moved = b.frame_seen("east", 5, "02:0b:00:00:00:02", 3.0)
    assert kinds(moved) == [("moved", "roamer", "east", 5)]
    assert "its first frame arrived there" in moved[0].detail
    assert b.locations() == {"roamer": ("east", 5)}
    # The source still sending cannot take it back (no flapping).
    assert b.candidates() == frozenset()
    assert b.frame_seen("south", 31, "02:0b:00:00:00:02", 3.5) == []
    # Then the source port goes: nothing changes any more.
    assert b.port_removed("south", 31, 4.0) == []
    assert b.candidates() == frozenset()


def test_overlap_ends_when_the_source_port_goes(net):
    b = Bindings(net)
    b.port_added(Port("south", 31, "vnet-roamer"), 1.0)
    b.port_added(Port("east", 5, "vnet-roamer"), 2.0)
    moved = b.port_removed("south", 31, 3.0)
    assert kinds(moved) == [("moved", "roamer", "east", 5)]
    assert "its old port is gone" in moved[0].detail


def test_bound_by_iface_id_whatever_the_port_is_named(net):
    b = Bindings(net)
    assert kinds(b.port_added(Port("north", 40, "tap1234", "7d1c-aa01"), 1.0)) == \
        [("up", "cloud", "north", 40)]
    assert b.binding("cloud")["by"] == "iface_id"
    # The name alone binds nothing for an iface-id VM.
    assert kinds(b.port_added(Port("south", 8, "cloud"), 2.0))[0][0] == "unknown-port"
    # OVSDB removes the iface-id: the port stops being the VM's.
    events = b.hypervisor_ports("north", [Port("north", 40, "tap1234")], 3.0)
    assert ("down", "cloud", "north", 40) in kinds(events)


def test_a_port_ovsdb_has_not_reported_yet_is_not_called_unknown(net):
    b = Bindings(net)
    assert b.port_added(Port("north", 40, "tap9", pending=True), 1.0) == []
    assert kinds(b.port_added(Port("north", 40, "tap9", "7d1c-aa01"), 1.1)) == \
        [("up", "cloud", "north", 40)]


def test_unknown_ports_are_told_once_and_file_ports_never(net):
    b = Bindings(net)
    first = b.port_added(Port("east", 9, "stray0"), 1.0)
    assert kinds(first) == [("unknown-port", None, "east", 9)]
    b.port_removed("east", 9, 2.0)
    assert b.port_added(Port("east", 9, "stray0"), 3.0) == []
    assert b.port_added(Port("north", 20, "north-p20"), 3.0) == []    # anchor's port
    assert b.port_added(Port("north", 7, "north-p7"), 3.0) == []      # the uplink


def test_a_reconnect_with_the_same_ports_changes_nothing(net):
    b = Bindings(net)
    ports = [Port("south", 31, "vnet-roamer"), Port("south", 7, "south-p7")]
    assert kinds(b.hypervisor_ports("south", ports, 1.0)) == [("up", "roamer", "south", 31)]
    assert b.hypervisor_ports("south", ports, 5.0) == []
    assert b.binding("roamer")["since"] == 1.0
    # Ports it no longer reports are gone.
    assert kinds(b.hypervisor_ports("south", ports[1:], 6.0)) == \
        [("down", "roamer", "south", 31)]


def test_a_vm_removed_from_the_inventory_is_gone(net):
    b = Bindings(net)
    b.port_added(Port("south", 31, "vnet-roamer"), 1.0)
    smaller = model.parse(NETWORK.replace(
        '  roamer: {interface: vnet-roamer, segment: blue, mac: "02:0b:00:00:00:02", '
        'ip: 10.3.0.2}\n', ""), "smaller.yaml")
    after, events = b.with_network(smaller, 2.0)
    assert kinds(events) == [("down", "roamer", "south", 31)]
    assert after.locations() == {} and b.locations() == {"roamer": ("south", 31)}


# ------------------------------------------------------------ the flows

def test_the_flows_follow_the_vm(net):
    b = Bindings(net)
    fab = fabric(net, b)
    # Not up: nothing is delivered to it, and no port sends as it.
    assert reaches(fab, net, "anchor", "roamer") == set()
    b.port_added(Port("south", 31, "vnet-roamer"), 1.0)
    fab = fabric(net, b)
    assert reaches(fab, net, "anchor", "roamer") == {("south", 31)}
    assert reaches(fab, net, "roamer", "anchor") == {("north", 20)}
    # Migrated to east: delivered there, and nothing left on the old port.
    b.port_removed("south", 31, 2.0)
    b.port_added(Port("east", 5, "vnet-roamer"), 2.1)
    fab = fabric(net, b)
    assert reaches(fab, net, "anchor", "roamer") == {("east", 5)}
    assert reaches(fab, net, "roamer", "anchor", at=("south", 31)) == set()
    placed = net.placed(b.locations())
    assert all(("in_port", 31) not in f.match
               for f in compile_network(placed, candidates=b.candidates())["south"])


def test_during_an_overlap_the_destination_only_reports_the_guest(net):
    b = Bindings(net)
    b.port_added(Port("south", 31, "vnet-roamer"), 1.0)
    b.port_added(Port("east", 5, "vnet-roamer"), 2.0)
    fab = fabric(net, b)
    roamer, anchor = net.vm("roamer"), net.vm("anchor")
    assert reaches(fab, net, "anchor", "roamer") == {("south", 31)}
    # The destination forwards nothing yet, but the guest's frame reaches the
    # controller: that is the activation.
    trace = fab.run(("east", 5), Frame.ipv4(roamer.mac, anchor.mac, roamer.ip))
    assert trace.ports == set() and [hv for hv, _ in trace.packet_ins] == ["east"]
    impostor = fab.run(("east", 5), Frame.ipv4("02:0b:00:00:00:99", anchor.mac, roamer.ip))
    assert impostor.ports == set() and impostor.packet_ins == []


def test_after_a_restart_the_switchs_own_entries_stand_in_for_ovsdb(net):
    from controller.binding import iface_ids_from_flows
    placed = net.placed({"cloud": ("north", 40), "roamer": ("south", 31)})
    held = [(f.table, dict(f.match)) for f in compile_network(placed)["north"]]
    assert iface_ids_from_flows(net, held) == {40: "7d1c-aa01"}
    b = Bindings(net)
    events = b.port_added(Port("north", 40, "tap-any", "7d1c-aa01"), 1.0)
    assert kinds(events) == [("up", "cloud", "north", 40)]
