"""VMs bound by interface name on real OVS: boot, stop, ofport change and
migration between hypervisors, as a hypervisor does them to OVS (the tap
leaves one bridge, joins another under a new ofport).

Lab: tests/networks/lifecycle.yaml (lc1..lc3, core `lccore`): `fixed` is
placed by the file on lc1; `mover`, `sitter` (teal) and `outsider` (amber)
are bound by interface name and start on lc2, lc3 and lc1.
"""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests import rest_client
from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS, dump_flows

NETWORK = os.path.join(NETWORKS, "lifecycle.yaml")
START = {"mover": "lc2", "sitter": "lc3", "outsider": "lc1"}
TOKEN = "lifecycle-token-0123456789"
ECHO, REPLY = "icmp[icmptype] == icmp-echo", "icmp[icmptype] == icmp-echoreply"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    token = tmp_path_factory.mktemp("lifecycle") / "token"
    token.write_text(TOKEN + "\n")
    with Lab(NETWORK, core="lccore", placement=START,
             controller_args=["--token-file", str(token)]) as running:
        running.pin_neighbours()
        yield running


def ip(lab, vm):
    return str(lab.network.vm(vm).ip)


def events(lab, vm) -> list[tuple[str, str]]:
    return [(e["kind"], e["hypervisor"]) for e in lab.api("/api/v1/events")["events"]
            if e["vm"] == vm]


def test_bound_vms_start_where_their_interfaces_are(lab):
    for vm, hv in START.items():
        lab.wait_bound(vm, hv)
    b = lab.binding("mover")
    assert (b["by"], b["interface"], b["up"]) == ("interface", "vm-mover", True)
    assert lab.binding("fixed") == {"by": "port", "hypervisor": "lc1", "ofport": 10,
                                     "up": True, "since": lab.binding("fixed")["since"],
                                     "candidates": []}
    assert probes.reaches(lab.host("mover"), ip(lab, "fixed"))
    assert probes.reaches(lab.host("sitter"), ip(lab, "mover"))
    assert not probes.reaches(lab.host("mover"), ip(lab, "outsider")), "segments isolated"


def test_a_stopped_vm_gets_nothing_and_boots_on_a_new_ofport(lab):
    old = lab.ofport("mover")
    lab.stop_vm("mover")
    lab.wait_bound("mover", None)
    assert ("down", "lc2") in events(lab, "mover")
    mover = lab.network.vm("mover")
    assert not any(mover.mac in f for f in dump_flows("lc1") + dump_flows("lc3")), \
        "nothing anywhere delivers to a VM that is down"
    assert not any(f"in_port={old}" in f for f in dump_flows("lc2"))

    # An unknown port takes the freed ofport meanwhile: it stays unknown.
    subprocess.run(["ovs-vsctl", "add-port", "lc2", "stray0", "--", "set", "Interface",
                    "stray0", "type=internal", f"ofport_request={old}"], check=True)
    try:
        assert probes.wait_for(lambda: any(
            e["kind"] == "unknown-port" and "stray0" in e["detail"]
            for e in lab.api("/api/v1/events")["events"]))
        lab.start_vm("mover")            # same hypervisor, next free ofport
        new = lab.ofport("mover")
        assert new != old
        lab.wait_bound("mover", "lc2")
        assert probes.reaches(lab.host("mover"), ip(lab, "fixed"))
        assert probes.reaches(lab.host("fixed"), ip(lab, "mover"))
        log = open(lab.controller_log).read()
        assert len(re.findall(r"port 'stray0' .* matches no VM", log)) == 1, "told once"
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-port", "lc2", "stray0"], check=True)


def test_migration_under_a_ping_keeps_isolation_and_mirroring(lab):
    target = ip(lab, "mover")
    stream = probes.PingStream(lab.host("fixed"), target)
    time.sleep(1)
    lab.migrate("mover", "lc3")          # lc3 has no IDS port of its own
    moved = time.time()
    lab.wait_bound("mover", "lc3")
    time.sleep(0.5)
    stream.stop()
    assert stream.answered_after(moved) > 10, "reachable again at the destination"
    assert len(stream.lost()) < 50, f"lost {stream.lost()}"
    assert ("up", "lc3") in events(lab, "mover")

    # At the destination: reachable from both hypervisors, still isolated,
    # still unable to send as anyone else.
    assert probes.reaches(lab.host("sitter"), target)
    assert not probes.reaches(lab.host("mover"), ip(lab, "outsider"))
    mover = lab.host("mover")
    with probes.capture(lab.host("fixed"), "udp port 9") as cap:
        probes.craft(mover, "ipv4", count=3, src_mac=lab.network.vm("mover").mac,
                     src_ip="10.41.0.99", dst_mac=lab.network.vm("fixed").mac,
                     dst_ip=ip(lab, "fixed"))
    assert cap.count() == 0, "port security moved with the VM"
    cap.close()

    # Mirroring follows it: copied once each way, the replies from lc3 (no
    # IDS port of its own) to the central IDS over the mirror VLAN.
    status, text = rest_client.request(lab.rest_url, "PUT", "/api/v1/policy/segments/teal",
                                       {"mode": "mirror"}, TOKEN, "application/json", None)
    assert status == 200, text
    lab.wait_datapath()
    between = f"icmp and host {ip(lab, 'fixed')} and host {target}"
    with probes.capture(lab.host("lc1ids"), between) as local, \
            probes.capture(lab.host("ids"), between) as central:
        assert probes.ping(lab.host("fixed"), target, count=5)[1] == 5
    assert (local.count(ECHO), central.count(REPLY), central.count(ECHO)) == (5, 5, 0)
    local.close()
    central.close()
    status, _ = rest_client.request(lab.rest_url, "DELETE", "/api/v1/policy/segments/teal",
                                    None, TOKEN, "application/json", None)
    assert status == 200
