"""DHCP: clients pass port security, only declared servers serve, and DHCP
snooping pins an `ip: dhcp` VM to its lease (parser, table simulator, the
fabric, the state file)."""
from __future__ import annotations

import logging

import pytest
import yaml
from scapy.all import BOOTP, DHCP, IP, UDP, Ether

from controller import dhcp, model, store
from controller.compiler import compile_network
from controller.policy import Policy
from controller.tablesim import BROADCAST, Fabric, Frame
from tests.test_fabric import Lab

NETWORK = """
ovsdb: unix:/var/run/test-fabric-db.sock
segments:
  north: {vlan: 310, subnet: 10.31.0.0/24}
  south: {vlan: 320, subnet: 10.32.0.0/24, dhcp: uplink}
hypervisors:
  hx: {dpid: 0x31, uplink_port: 1, ids_port: 2, firewall_port: 3,
       learning_ports: [{port: 30, segment: north, max_hosts: 2}]}
  hy: {dpid: 0x32, uplink_port: 1}
  hz: {dpid: 0x33, uplink_port: 4, ovsdb: "tcp:127.0.0.1:16640"}
vms:
  anchor: {hypervisor: hx, port: 10, segment: north, mac: "02:31:00:00:00:01", ip: 10.31.0.1,
           dhcp_server: true}
  roamer: {interface: tap-roamer, segment: north, mac: "02:31:00:00:00:02", ip: dhcp}
  tenant: {iface_id: 7f3c-tenant, segment: north, mac: "02:31:00:00:00:03", ip: 10.31.0.3}
  other:  {interface: tap-other, segment: south, mac: "02:32:00:00:00:01", ip: dhcp}
policy:
  default: allow
"""
ANCHOR, ROAMER, TENANT, OTHER = ("02:31:00:00:00:01", "02:31:00:00:00:02",
                                 "02:31:00:00:00:03", "02:32:00:00:00:01")
RELAY = "02:ee:00:00:00:99"          # a DHCP relay on the physical network


def message(kind: str, src_mac: str, chaddr: str, src_ip: str = "0.0.0.0",
            dst_ip: str = "255.255.255.255", yiaddr: str = "0.0.0.0",
            ciaddr: str = "0.0.0.0", lease: int | None = 3600, vlan=None) -> bytes:
    server = kind in ("offer", "ack", "nak")
    options = [("message-type", kind)] + ([("lease_time", lease)] if lease and server
                                          else []) + ["end"]
    frame = (Ether(src=src_mac, dst=BROADCAST)
             / IP(src=src_ip, dst=dst_ip)
             / UDP(sport=67 if server else 68, dport=68 if server else 67)
             / BOOTP(op=2 if server else 1, chaddr=bytes.fromhex(chaddr.replace(":", "")),
                     yiaddr=yiaddr, ciaddr=ciaddr)
             / DHCP(options=options))
    return bytes(frame)


def started(text: str = NETWORK) -> Lab:
    lab = Lab(text)
    lab.ports["hy"][20] = "tap-roamer"
    lab.ports["hz"][21] = "tap-other"
    lab.start()
    return lab


def snoop(lab: Lab, hv: str, reason: str, frame: bytes, in_port: int) -> None:
    """What the switch's snooping entry `reason` sends up."""
    cookie = next(c for c, f in lab.tables[hv].items() if f.reason == reason)
    lab.do(lab.fabric.packet_in(hv, cookie, 0, in_port, frame, lab.step()))
    lab.settle()


def ack(lab: Lab, yiaddr: str, chaddr: str = ROAMER, lease: int | None = 3600) -> None:
    snoop(lab, "hx", "dhcp-server", message("ack", ANCHOR, chaddr, "10.31.0.1",
                                            yiaddr=yiaddr, lease=lease), 10)


def ins(trace) -> list:
    """Where the switches sent frames up: (hypervisor, in_port)."""
    return [(hv, p.in_port) for hv, p in trace.packet_ins]


def sends(lab: Lab, src_ip: str) -> set:
    """Where roamer's IPv4 frame from src_ip to anchor is delivered."""
    return {(hv, p) for hv, p, _ in lab.data_plane().send(
        "roamer", Frame.ipv4(ROAMER, ANCHOR, src_ip))}


# ------------------------------------------------------------------ parsing

def test_a_dhcp_message_is_read_field_by_field():
    m = dhcp.parse(message("ack", ANCHOR, ROAMER, "10.31.0.1", yiaddr="10.31.0.50",
                           lease=600))
    assert (m.kind, m.name, m.chaddr, m.yiaddr, m.lease_seconds) == \
        (dhcp.ACK, "ACK", ROAMER, "10.31.0.50", 600)


@pytest.mark.parametrize("mangle", [
    lambda f: f[:200],                                     # cut short
    lambda f: f[:14] + bytes([0x45]) + f[15:23] + b"\x06" + f[24:],   # TCP, not UDP
    lambda f: f[:282] + b"\x00\x00\x00\x00" + f[286:],     # no magic cookie
    lambda f: f[:282] + b"\x35\xff" + f[284:],             # option longer than the frame
    lambda f: f[:12] + b"\x86\xdd" + f[14:],               # not IPv4
])
def test_malformed_messages_are_none_never_an_exception(mangle):
    frame = message("ack", ANCHOR, ROAMER, "10.31.0.1", yiaddr="10.31.0.50")
    assert dhcp.parse(frame) is not None
    assert dhcp.parse(mangle(frame)) is None


# ------------------------------------------------------------------ the tables

@pytest.fixture
def fab():
    net = model.parse(NETWORK, "dhcp.yaml")
    placed = net.placed({"roamer": ("hy", 20), "other": ("hz", 21)})
    return placed, Fabric(placed, compile_network(placed))


def test_a_client_asks_from_0_0_0_0_and_reaches_its_server(fab):
    net, f = fab
    discover = Frame.udp(ROAMER, BROADCAST, "0.0.0.0", 68, 67)
    trace = f.run("roamer", discover)
    assert ("hx", 10) in trace.ports                       # anchor, the server
    assert ins(trace) == [("hy", 20)]                      # roamer's: snooped
    # Before a lease an ip: dhcp VM sends nothing else.
    assert f.send("roamer", Frame.ipv4(ROAMER, ANCHOR, "10.31.0.77")) == set()
    assert f.send("roamer", Frame.arp(ROAMER, "10.31.0.77")) == set()
    assert {p for _, p, _ in f.send("roamer", Frame.arp(ROAMER, "0.0.0.0"))}, \
        "an ARP probe from 0.0.0.0 claims nothing"


def test_only_declared_servers_serve(fab):
    net, f = fab
    offer = Frame.udp(ANCHOR, BROADCAST, "10.31.0.1", 67, 68)
    trace = f.run("anchor", offer)
    assert ("hy", 20) in trace.ports and ins(trace) == [("hx", 10)]
    rogue = Frame.udp(ROAMER, BROADCAST, "0.0.0.0", 67, 68)
    trace = f.run("roamer", rogue)
    assert trace.deliveries == [] and trace.uplink_hops == []
    assert [x.reason for x in f.switches["hy"].trace] == ["rogue-dhcp"]
    # From a learning port neither.
    assert f.run(("hx", 30), Frame.udp("02:77:00:00:00:01", BROADCAST, "0.0.0.0", 67,
                                      68)).deliveries == []


def test_from_the_uplink_server_messages_pass_only_where_declared(fab):
    net, f = fab
    # north has no server on the physical network: dropped, even from a relay.
    assert f.send(("hy", 1), Frame.udp(RELAY, ROAMER, "10.31.0.254", 67, 68,
                                       vlans=(310,))) == set()
    # anchor's own, judged and snooped at hx, do pass on hy.
    trace = f.run(("hy", 1), Frame.udp(ANCHOR, ROAMER, "10.31.0.1", 67, 68, vlans=(310,)))
    assert trace.ports == {("hy", 20)} and trace.packet_ins == []
    # south's server is on the physical network: passes, and is snooped.
    trace = f.run(("hz", 4), Frame.udp(RELAY, OTHER, "10.32.0.254", 67, 68, vlans=(320,)))
    assert trace.ports == {("hz", 21)} and ins(trace) == [("hz", 4)]


def test_a_leased_vm_is_pinned_to_its_lease_as_a_declared_one():
    net = model.parse(NETWORK, "dhcp.yaml").leased({"roamer": "10.31.0.50"})
    placed = net.placed({"roamer": ("hy", 20), "other": ("hz", 21)})
    f = Fabric(placed, compile_network(placed))
    assert f.send("roamer", Frame.ipv4(ROAMER, ANCHOR, "10.31.0.50"))
    assert f.send("roamer", Frame.ipv4(ROAMER, ANCHOR, "10.31.0.51")) == set()
    # Its renewals and RELEASE, from the leased address, are snooped.
    trace = f.run("roamer", Frame.udp(ROAMER, ANCHOR, "10.31.0.50", 68, 67))
    assert trace.ports == {("hx", 10)} and ins(trace) == [("hy", 20)]


# ------------------------------------------------------------------ snooping

def test_an_ack_pins_the_lease_and_a_nak_unpins_it():
    lab = started()
    assert sends(lab, "10.31.0.50") == set()
    ack(lab, "10.31.0.50")
    assert lab.fabric.leases["roamer"].ip == "10.31.0.50" and lab.saves == 1
    assert lab.fabric.leases["roamer"].server == ANCHOR
    assert sends(lab, "10.31.0.50") == {("hx", 10)}
    assert sends(lab, "10.31.0.51") == set()
    lab.assert_in_sync()
    assert "lease" in lab.kinds()
    snoop(lab, "hx", "dhcp-server", message("nak", ANCHOR, ROAMER, "10.31.0.1"), 10)
    assert "roamer" not in lab.fabric.leases and sends(lab, "10.31.0.50") == set()
    lab.assert_in_sync()


def test_a_repeated_ack_renews_without_rewriting_anything():
    lab = started()
    ack(lab, "10.31.0.50")
    commits, saves = lab.commits, lab.saves
    ack(lab, "10.31.0.50")           # the same broadcast, seen by another switch
    assert (lab.commits, lab.saves) == (commits, saves)


def test_a_release_unpins_but_only_from_the_client_itself():
    lab = started()
    ack(lab, "10.31.0.50")
    forged = message("release", ROAMER, TENANT, "10.31.0.50", "10.31.0.1",
                     ciaddr="10.31.0.50")
    snoop(lab, "hy", "dhcp-client", forged, 20)
    assert "roamer" in lab.fabric.leases
    assert lab.fabric.status()["dhcp"]["chaddr-not-sender"] == 1
    release = message("release", ROAMER, ROAMER, "10.31.0.50", "10.31.0.1",
                      ciaddr="10.31.0.50")
    snoop(lab, "hy", "dhcp-client", release, 20)
    assert "roamer" not in lab.fabric.leases


@pytest.mark.parametrize("address,why", [
    ("10.31.0.3", "VM tenant's"),
    ("10.32.0.9", "subnet 10.31.0.0/24"),
    ("10.31.0.255", "subnet 10.31.0.0/24"),
    ("0.0.0.0", "not a host address"),
])
def test_an_ack_for_an_address_the_vm_may_not_have_is_refused(address, why, caplog):
    lab = started()
    with caplog.at_level(logging.WARNING, logger="test_fabric"):
        ack(lab, address)
    assert "roamer" not in lab.fabric.leases
    assert why in caplog.text and lab.fabric.status()["dhcp"]["refused"] == 1


def test_two_vms_cannot_hold_one_address():
    lab = started()
    snoop(lab, "hz", "dhcp-uplink", message("ack", RELAY, OTHER, "10.32.0.254",
                                            yiaddr="10.32.0.50"), 4)
    assert lab.fabric.leases["other"].ip == "10.32.0.50"
    ack(lab, "10.32.0.50")            # anchor gives roamer other's: outside north anyway
    assert "roamer" not in lab.fabric.leases


def test_a_lease_ends_by_itself():
    lab = started()
    ack(lab, "10.31.0.50", lease=120)
    lab.tick(60)
    assert "roamer" in lab.fabric.leases
    lab.tick(61)
    lab.settle()
    assert "roamer" not in lab.fabric.leases and sends(lab, "10.31.0.50") == set()
    assert lab.fabric.status()["dhcp"]["expired"] == 1
    lab.assert_in_sync()


def test_messages_for_vms_with_fixed_addresses_change_nothing():
    lab = started()
    ack(lab, "10.31.0.60", chaddr=TENANT)
    assert lab.fabric.leases == {}
    assert lab.fabric.status()["dhcp"]["not-for-a-dhcp-vm"] == 1


def test_leases_survive_a_restart_through_the_state_file(tmp_path):
    net = model.parse(NETWORK, "dhcp.yaml")
    path = str(tmp_path / "state.json")
    running = {"roamer": dhcp.Lease("10.31.0.50", 4e9, ANCHOR),
               "other": dhcp.Lease("10.32.0.50", 1.0, RELAY)}      # long over
    store.save(path, Policy(), net.policy, net.source, {}, running)
    _network, _changes, leases, _ = store.restore(path, net, yaml.safe_load(NETWORK),
                                               logging.getLogger("test_dhcp"))
    assert leases == {"roamer": running["roamer"]}


@pytest.mark.parametrize("change,problem", [
    (("ip: 10.31.0.1,\n           dhcp_server: true", "ip: dhcp,\n           dhcp_server: true"),
     "dhcp_server: a DHCP server needs a fixed address"),
    (("dhcp: uplink}", "dhcp: relay}"), "segments.south.dhcp: must be uplink"),
    (("dhcp_server: true", "dhcp_server: 1"), "dhcp_server: must be true or false"),
])
def test_bad_dhcp_settings_are_refused_with_the_place(change, problem):
    text = NETWORK.replace(*change)
    assert text != NETWORK
    with pytest.raises(model.NetworkFileError, match=problem):
        model.parse(text, "dhcp.yaml")
