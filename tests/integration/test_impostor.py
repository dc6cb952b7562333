"""A second OpenFlow connection claiming a connected hypervisor's datapath
id, on real OVS (a bridge named imp0 given hv1's datapath id) and emulated
(from an address outside the hypervisor's connect_from): refused, alarmed,
counted; the real hypervisor keeps its connection and gets every change;
a change that cannot reach the hypervisor it is for answers 202, and takes
effect when that hypervisor is back."""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import time

import pytest

from bench import ofload
from tests import rest_client
from topologies import probes
from topologies.lab import Lab

from .conftest import EXAMPLE, dump_flows

TOKEN = "impostor-token-0123456789abcdef"
IMPOSTOR = "imp0"


def wait_for(condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def vsctl(*args, check=True) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True,
                          text=True, check=check).stdout.strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("impostor")
    text = open(EXAMPLE).read()
    # Both hypervisors' bridges connect from 127.0.0.1 only.
    text = text.replace("    dpid: 1\n", "    dpid: 1\n    connect_from: [127.0.0.1/32]\n")
    text = text.replace("    dpid: 2\n", "    dpid: 2\n    connect_from: [127.0.0.1/32]\n")
    path = tmp / "impostor.yaml"
    path.write_text(text)
    (tmp / "token").write_text(TOKEN + "\n")
    vsctl("--if-exists", "del-br", IMPOSTOR)      # left by a killed run of this test
    with Lab(str(path), controller_args=["--token-file", str(tmp / "token")]) as running:
        running.pin_neighbours()
        yield running
    vsctl("--if-exists", "del-br", IMPOSTOR)


def call(lab, method, path, body=None):
    status, text = rest_client.request(lab.rest_url, method, path, body, TOKEN,
                                       "application/json", timeout=30)
    return status, json.loads(text)


def refused(lab) -> dict:
    return lab.status()["refused_connections"]


def emulated_claim(port: int, dpid: int, source: str) -> bytes:
    """Connect from `source` as a switch with `dpid`: handshake, then read
    until the controller closes. Everything it sent, after the features request."""
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(ofload.message(ofload.HELLO))
    received, features_asked = b"", False
    try:
        while True:
            header = s.recv(8, socket.MSG_WAITALL)
            if len(header) < 8:
                return received          # closed by the controller
            _v, kind, length, xid = struct.unpack("!BBHI", header)
            body = s.recv(length - 8, socket.MSG_WAITALL) if length > 8 else b""
            if kind == ofload.FEATURES_REQUEST:
                features_asked = True
                s.sendall(ofload.message(ofload.FEATURES_REPLY,
                                         struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0x4F, 0),
                                         xid))
            elif features_asked and kind != ofload.ECHO_REQUEST:
                received += header + body
    finally:
        s.close()


def test_a_second_bridge_with_a_connected_dpid_is_refused_and_orphans_nothing(lab):
    before = refused(lab).get("hv1", 0)
    vsctl("add-br", IMPOSTOR, "--", "set", "bridge", IMPOSTOR, "datapath_type=netdev",
          "fail_mode=secure", "other-config:datapath-id=0000000000000001",
          "protocols=OpenFlow13")
    vsctl("set-controller", IMPOSTOR, f"tcp:127.0.0.1:{lab.ofp_port}")
    wait_for(lambda: refused(lab).get("hv1", 0) > before, "the impostor to be refused")
    assert "ALARM: refused an OpenFlow connection claiming hv1" in lab.log_tail(200)
    assert dump_flows(IMPOSTOR) == [], "the impostor learned nothing of the policy"
    metrics = rest_client.request(lab.rest_url, "GET", "/metrics")[1]
    assert 'vguard_refused_connections_total{hypervisor="hv1"}' in metrics
    vsctl("del-br", IMPOSTOR)
    time.sleep(1.0)                       # its disconnection has been handled
    health = lab.status()
    assert health["ready"] and health["datapaths"]["hv1"]["connected"], health
    # hv1 still gets changes: quarantine a VM of hv1, and it is cut off.
    assert probes.ping(lab.host("web1"), "10.0.10.2", count=2)[1] == 2
    status, doc = call(lab, "PUT", "/api/v1/policy/vms/web2", {"mode": "quarantine"})
    assert status == 200 and "hv1" in doc["applied_to"] and doc["pending"] == [], doc
    lab.wait_datapath()
    assert probes.ping(lab.host("web1"), "10.0.10.2", count=2)[1] == 0
    status, _ = call(lab, "DELETE", "/api/v1/policy/vms/web2")
    assert status == 200


def test_a_claim_from_outside_connect_from_is_refused_even_first(lab):
    assert probes.ping(lab.host("web1"), "10.0.10.3", count=2)[1] == 2
    vsctl("del-controller", "hv2")
    try:
        wait_for(lambda: not lab.status()["datapaths"]["hv2"]["connected"],
                 "hv2 to disconnect")
        before = refused(lab).get("hv2", 0)
        sent = emulated_claim(lab.ofp_port, 2, "127.0.0.5")
        assert refused(lab).get("hv2", 0) == before + 1
        assert sent == b"", "nothing is sent to a refused connection"
        # A change for hv2 while it is away is not in force there, and says so.
        status, doc = call(lab, "PUT", "/api/v1/policy/vms/web3", {"mode": "quarantine"})
        assert status == 202 and doc["pending"] == ["hv2"], doc
        assert "NOT in force on hv2" in doc["warning"]
    finally:
        vsctl("set-controller", "hv2", f"tcp:127.0.0.1:{lab.ofp_port}")
    lab.wait_ready()
    lab.wait_datapath()
    assert probes.ping(lab.host("web1"), "10.0.10.3", count=2)[1] == 0, \
        "in force once hv2 is back"
    status, doc = call(lab, "DELETE", "/api/v1/policy/vms/web3")
    assert status == 200 and doc["pending"] == [], doc
