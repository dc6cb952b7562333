"""The shim (apps/segment_switch.py) in the real controller process, against
emulated switches (bench/ofload: bundles, barriers and flow stats handled as
OVS handles them): the start-up commits exactly the compiled entries, in one
bundle per switch; a port-status binds a VM, and a migration moves it, each
committing only where something changes."""
from __future__ import annotations

import asyncio
import socket
import time

from bench import ofload
from controller import model
from controller.compiler import compile_network

from .test_rest_process import Controller

NETWORK = """
segments:
  aqua: {vlan: 610}
  rose: {vlan: 620}
hypervisors:
  so1: {dpid: 0x5a01, uplink_port: 1}
  so2: {dpid: 0x5a02, uplink_port: 1, ids_port: 2}
  so3: {dpid: 0x5a03, uplink_port: 1}
vms:
  base1: {hypervisor: so1, port: 10, segment: aqua, mac: "02:61:00:00:00:01", ip: 10.61.0.1}
  base2: {hypervisor: so2, port: 10, segment: rose, mac: "02:62:00:00:00:01", ip: 10.62.0.1}
  base3: {hypervisor: so3, port: 10, segment: rose, mac: "02:62:00:00:00:02", ip: 10.62.0.2}
  walker: {interface: tap-walker, segment: rose, mac: "02:62:00:00:00:09", ip: 10.62.0.9}
mirror: {vlan: 690}
policy:
  default: allow
  segments: {rose: mirror}
"""
HVS = ("so1", "so2", "so3")


def test_the_shim_commits_what_the_core_compiles(tmp_path):
    path = tmp_path / "shim.yaml"
    path.write_text(NETWORK)
    net = model.load(str(path))

    def expected(where: dict) -> dict:
        return {hv: {f.cookie for f in flows}
                for hv, flows in compile_network(net.placed(where)).items()}

    def held(switches) -> dict:
        return {hv: {c for c, _ in sw.flows.values()} for hv, sw in zip(HVS, switches)}

    def wait_for(switches, want: dict) -> None:
        deadline = time.monotonic() + 10
        while held(switches) != want:
            assert time.monotonic() < deadline, "switches never held the compiled entries"
            time.sleep(0.01)

    def scenario(switches, loop):
        wait_for(switches, expected({}))
        assert [s.commits for s in switches] == [1, 1, 1], "one bundle per switch"
        assert all(s.flow_mods == s.bundled for s in switches), "nothing outside a bundle"
        before = [s.commits for s in switches]
        loop.call_soon_threadsafe(switches[0].port_status, ofload.PPR_ADD, 33, "tap-walker")
        wait_for(switches, expected({"walker": ("so1", 33)}))
        loop.call_soon_threadsafe(switches[0].port_status, ofload.PPR_DELETE, 33, "tap-walker")
        loop.call_soon_threadsafe(switches[2].port_status, ofload.PPR_ADD, 34, "tap-walker")
        wait_for(switches, expected({"walker": ("so3", 34)}))
        time.sleep(0.3)                   # nothing more follows
        assert held(switches) == expected({"walker": ("so3", 34)})
        return [s.commits - b for s, b in zip(switches, before)]

    c = Controller(tmp_path, network=path).start()
    try:
        result = asyncio.run(ofload.run(
            "127.0.0.1", c.ofp_port, [hv.dpid for hv in net.hypervisors], [1, 2, 10], [10],
            ofload.Shape(), [("hold", scenario)], connect_timeout=20, report_flows=True))
    finally:
        c.stop()
    commits = result["phases"][0]["result"]
    # Boot and migration change every switch (the VM's destination entries),
    # in at most one bundle per event each (events close together may share one).
    assert all(1 <= n <= 3 for n in commits), commits


HANDSHAKE_SECONDS = 10     # apps/segment_switch.py's (not imported: it would load Ryu here)


def test_an_openflow_peer_that_never_says_hello_is_closed(tmp_path):
    c = Controller(tmp_path).start()
    try:
        s = socket.create_connection(("127.0.0.1", c.ofp_port))
        s.settimeout(HANDSHAKE_SECONDS + 10)
        started, received = time.monotonic(), b""
        while chunk := s.recv(4096):         # until the controller closes it
            received += chunk
        assert time.monotonic() - started < HANDSHAKE_SECONDS + 5
        assert received[:2] == b"\x04\x00", "only the controller's HELLO"
        assert "no handshake within" in c.log.read_text()
    finally:
        c.stop()
