"""Gateways on real OVS (tests/networks/gateways.yaml): VMs reach a host
behind the lab's router through their segment's gateway, and the external
scope decides it at run time (REST): deny cuts a segment off both ways,
mirror copies its north-south traffic once. A router VM forwards from any
address, other VMs cannot. (No hub baseline here: the lab's core carries
segments as VLANs, which a hub's untagged floods never reach.)"""
import json
import time

import pytest

from tests import rest_client
from topologies import probes, router
from topologies.lab import Lab

from .conftest import NETWORKS

NETWORK = f"{NETWORKS}/gateways.yaml"
CORE = "nxcore"
TOKEN = "gateways-test-token"


def reaches_outside(lab, vm: str) -> bool:
    return probes.reaches(lab.host(vm), router.OUTSIDE_IP)


def put_external(lab, segment: str, mode: str | None) -> dict:
    method, body = ("PUT", {"mode": mode}) if mode else ("DELETE", None)
    status, text = rest_client.request(lab.rest_url, method,
                                       f"/api/v1/policy/external/{segment}", body,
                                       token=TOKEN)
    assert status == 200, text
    return json.loads(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    token = tmp_path_factory.mktemp("gateways") / "token"
    token.write_text(TOKEN)
    with Lab(NETWORK, core=CORE, controller_args=["--token-file", str(token)]) as running:
        yield running


def test_vms_reach_the_host_behind_their_gateway_and_others_do_not(lab):
    assert reaches_outside(lab, "w1") and reaches_outside(lab, "w2")
    assert reaches_outside(lab, "d1"), "the router's MAC on db's VLAN is db's gateway"
    v1 = lab.host("v1")
    v1.cmd("ip addr add 10.61.0.99/24 dev v1-eth0; ip route add default via 10.61.0.1")
    try:
        assert not reaches_outside(lab, "v1"), "dev declares no gateway"
    finally:
        v1.cmd("ip route del default; ip addr del 10.61.0.99/24 dev v1-eth0")


def test_external_deny_cuts_one_segment_both_ways_and_is_undone(lab):
    put_external(lab, "web", "deny")
    try:
        assert not reaches_outside(lab, "w1") and not reaches_outside(lab, "w2")
        assert reaches_outside(lab, "d1")
        # Nothing from the router gets in either (it pings the VM itself).
        assert not probes.reaches(lab.host(router.ROUTER), "10.61.0.11")
        assert probes.reaches(lab.host("w1"), "10.61.0.12"), "inside web: unchanged"
    finally:
        put_external(lab, "web", None)
    assert reaches_outside(lab, "w1")


def test_external_mirror_copies_north_south_traffic_once(lab):
    put_external(lab, "web", "mirror")
    try:
        assert reaches_outside(lab, "w2")       # ARP settled
        w2 = lab.network.vm("w2")
        with probes.capture(lab.host("nx2ids"), f"icmp and ether host {w2.mac}") as ids, \
                probes.capture(lab.host("w2"), "icmp") as back:
            sent, answered = probes.ping(lab.host("w2"), router.OUTSIDE_IP, count=10)
        assert sent == answered == 10
        assert ids.count() == 20, "each request and each reply copied once"
        assert back.count() == 10
        ids.close()
        back.close()
    finally:
        put_external(lab, "web", None)


def test_a_router_vm_forwards_from_any_address_and_a_vm_cannot_spoof(lab):
    t1 = lab.network.vm("t1")
    with probes.capture(lab.host("t1"), "udp port 9") as cap:
        probes.craft(lab.host("r1"), "ipv4", count=3, src_mac=lab.network.vm("r1").mac,
                     src_ip="10.99.0.5", dst_mac=t1.mac, dst_ip=t1.ip)
        probes.craft(lab.host("w1"), "ipv4", count=3, src_mac=lab.network.vm("w1").mac,
                     src_ip="10.99.0.6", dst_mac=lab.network.vm("w2").mac,
                     dst_ip="10.61.0.12")
        time.sleep(0.3)
    got = cap.packets()
    cap.close()
    assert len(got) == 3 and all("10.99.0.5" in line for line in got)
