"""Flow records on real OVS: the switches' IPFIX samples, collected by the
controller, joined to VMs, segments, verdicts and rules, against what real
pings and crafted frames did.

tests/networks/flowrec.yaml samples every packet, so counts are exact: each
frame is judged (and recorded) once, by the hypervisor where it enters.
tests/networks/remote_mirror.yaml (three hypervisors, ERSPAN mirroring)
keeps the default sampling: every refused packet, 1 in 100 allowed ones.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest

from tests import rest_client
from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS

N = 10
TOKEN = "flowrec-token-0123456789"
INTAKE = 500              # records/s the lab's collector decodes


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flowrec")
    (tmp / "token").write_text(TOKEN + "\n")
    with Lab(os.path.join(NETWORKS, "flowrec.yaml"), core="frcore",
             controller_args=["--token-file", str(tmp / "token"),
                              "--state-file", str(tmp / "policy.json"),
                              "--flow-intake", str(INTAKE)]) as running:
        running.pin_neighbours()
        running.flow_log = tmp / "policy.flows.jsonl"
        yield running


def flows(lab, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, text = rest_client.request(lab.rest_url, "GET", f"/api/v1/flows?{query}")
    assert status == 200, text
    return json.loads(text)


def icmp_between(lab, src: str, dst: str, **params) -> list[dict]:
    return [r for r in flows(lab, vm=src, limit=1000, **params)["flows"]
            if r["src_vm"] == src and r["dst_vm"] == dst and r["proto"] == "icmp"]


def packets_once(lab, src: str, dst: str, want: int, **params) -> list[dict]:
    """The records of src -> dst once their packets add up to `want` (they
    arrive a second or so after the frames: the switch aggregates first);
    a few seconds more must not raise them past it."""
    probes.wait_for(lambda: sum(r["packets"] for r in icmp_between(lab, src, dst, **params))
                    >= want, 15)
    time.sleep(2.5)           # two more export rounds: a double count would show
    return icmp_between(lab, src, dst, **params)


def test_allowed_frames_are_recorded_once_where_they_enter(lab):
    sent, received = probes.ping(lab.host("web1"), "10.61.1.2", count=N, interval=0.05)
    assert (sent, received) == (N, N)
    there = packets_once(lab, "web1", "web2", N)
    back = icmp_between(lab, "web2", "web1")
    assert sum(r["packets"] for r in there) == N, there
    assert {r["hypervisor"] for r in there} == {"fr1"}, there
    assert sum(r["packets"] for r in back) == N and {r["hypervisor"] for r in back} == {"fr2"}
    r = there[0]
    assert (r["src_segment"], r["dst_segment"], r["verdict"], r["reason"]) == \
        ("web", "web", "allowed", "policy-allow")
    assert (r["src_ip"], r["dst_ip"], r["mirrored"], r["steered"]) == \
        ("10.61.1.1", "10.61.1.2", False, False)
    assert r["rule"]["table"] == "policy" and r["bytes"] == N * 84      # IP bytes, as IPFIX counts octets
    assert r["first_seen"] <= r["last_seen"] <= time.time() + 1


def test_steered_and_mirrored_pair(lab):
    sent, received = probes.ping(lab.host("web1"), "10.61.2.1", count=N, interval=0.05)
    assert received == N
    there = packets_once(lab, "web1", "db1", N)
    assert sum(r["packets"] for r in there) == N, there
    assert all(r["steered"] and r["mirrored"] and r["verdict"] == "allowed" and
               r["reason"] == "policy-steer-mirror" for r in there), there


def test_policy_refusal_is_recorded_with_its_rule(lab):
    sent, received = probes.ping(lab.host("web1"), "10.61.3.1", count=N, interval=0.05)
    assert received == 0
    refused = packets_once(lab, "web1", "ops1", N, verdict="refused")
    assert sum(r["packets"] for r in refused) == N, refused
    assert {(r["reason"], r["rule"]["priority"], r["hypervisor"]) for r in refused} == \
        {("policy-deny", 0, "fr1")}
    assert not icmp_between(lab, "web1", "ops1", verdict="allowed")


def test_spoofed_frames_are_refused_by_port_security(lab):
    ops1 = lab.host("ops1")
    probes.craft(ops1, "ipv4", count=7, src_mac="02:61:00:00:03:01",
                 dst_mac="02:61:00:00:01:01", src_ip="10.61.1.2", dst_ip="10.61.1.1")

    def spoofed():
        return [r for r in flows(lab, vm="ops1", verdict="refused", limit=1000)["flows"]
                if r["src_ip"] == "10.61.1.2" and r["proto"] == "udp"]
    assert probes.wait_for(lambda: sum(r["packets"] for r in spoofed()) >= 7, 15)
    assert {(r["reason"], r["src_segment"], r["dst_vm"], r["dst_port"]) for r in spoofed()} \
        == {("port-security", "ops", "web1", 9)}


def test_matrix_log_filters_and_pages(lab):
    status, text = rest_client.request(lab.rest_url, "GET", "/api/v1/flows/matrix")
    assert status == 200, text
    matrix = json.loads(text)
    pairs = {(p["src_segment"], p["dst_segment"]): p for p in matrix["segment_pairs"]}
    assert pairs[("web", "db")]["packets"] >= N and pairs[("web", "db")]["refused_packets"] == 0
    assert pairs[("web", "ops")]["refused_packets"] >= N
    vm_pairs = {(p["src_vm"], p["dst_vm"]): p for p in matrix["vm_pairs"]}
    assert vm_pairs[("web1", "ops1")]["refused_packets"] >= N
    # The log holds what the API shows, one JSON object per line.
    lines = [json.loads(line) for line in lab.flow_log.read_text().splitlines()]
    assert any(r["src_vm"] == "web1" and r["dst_vm"] == "ops1" and r["verdict"] == "refused"
               for r in lines)
    assert all({"src_vm", "dst_vm", "verdict", "reason", "rule", "packets", "bytes",
                "first_seen", "last_seen"} <= r.keys() for r in lines)
    # Paging and filters; bad ones get a 400 that says why.
    page = flows(lab, limit=1)
    assert len(page["flows"]) == 1 and page["total"] >= 2
    older = flows(lab, limit=1, offset=1)["flows"][0]
    assert older["last_seen"] <= page["flows"][0]["last_seen"]
    assert all(r["hypervisor"] == "fr2" for r in flows(lab, hypervisor="fr2")["flows"])
    assert flows(lab, since=time.time() + 3600)["total"] == 0
    for bad in ("verdict=maybe", "limit=0", "since=soon", "colour=red"):
        status, text = rest_client.request(lab.rest_url, "GET", f"/api/v1/flows?{bad}")
        assert status == 400 and "error" in json.loads(text), (bad, text)


def _forged(domain: int) -> bytes:
    """One IPFIX message: a template (observation point, packets) and a
    data record naming an observation point no entry has."""
    template = struct.pack("!HHHHHH", 300, 2, 138, 4, 2, 8)
    data = struct.pack("!IQ", 0xDEADBEEF, 1)
    sets = struct.pack("!HH", 2, 4 + len(template)) + template + \
        struct.pack("!HH", 300, 4 + len(data)) + data
    return struct.pack("!HHIII", 10, 16 + len(sets), int(time.time()), 1, domain) + sets


def test_a_flood_of_samples_is_bounded_and_counted(lab):
    before = lab.status()["flow_collector"]
    message = _forged(0x6101)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.time()
    sent = 0
    while time.time() - start < 2.0:
        for _ in range(200):
            sock.sendto(message, ("127.0.0.1", lab.flow_port))
        sent += 200
        time.sleep(0.001)
    sock.sendto(b"not ipfix at all", ("127.0.0.1", lab.flow_port))
    sock.close()
    began = time.time()
    health = lab.status()            # the API answers while the backlog drains
    assert time.time() - began < 2.0
    probes.wait_for(lambda: lab.status()["flow_collector"]["malformed"] > before["malformed"])
    after = lab.status()["flow_collector"]
    seconds = time.time() - start + 1
    decoded = after["unknown_rule"] - before["unknown_rule"]
    dropped = after["dropped_messages"] - before["dropped_messages"]
    kernel = (after["kernel_drops"] or 0) - (before["kernel_drops"] or 0)
    assert sent > 2 * INTAKE * 4, sent        # a flood, well past the intake
    assert 0 < decoded <= INTAKE * seconds, (decoded, seconds)
    # Past the bound the collector stops reading: the kernel drops the rest.
    assert kernel > 0 and decoded + dropped + kernel >= sent * 0.95, \
        (sent, decoded, dropped, kernel)
    assert health["ready"]
    # Real records still flow after it.
    probes.ping(lab.host("web2"), "10.61.1.1", count=3, interval=0.05)
    assert probes.wait_for(lambda: flows(lab, vm="web2", limit=1)["total"] > 0, 10)


def test_second_shape_default_sampling_and_erspan_mirror(tmp_path):
    """remote_mirror.yaml under the default sampling: every refused packet,
    about 1 in 100 allowed (north's traffic mirrored over ERSPAN)."""
    with Lab(os.path.join(NETWORKS, "remote_mirror.yaml"), core="rmcore") as lab:
        lab.pin_neighbours()
        sent, received = probes.ping(lab.host("n1"), "10.71.1.2", count=1000,
                                     interval=0.002, timeout=1)
        assert received >= 990
        probes.ping(lab.host("n1"), "10.71.2.1", count=N, interval=0.05)   # north/south: isolated

        def refused():
            return sum(r["packets"] for r in icmp_between(lab, "n1", "s1", verdict="refused"))
        assert probes.wait_for(lambda: refused() >= N, 15)
        time.sleep(2.5)
        assert refused() == N
        mirrored = icmp_between(lab, "n1", "n2")
        sampled = sum(r["sampled"] for r in mirrored)
        # Binomial(1000, 0.01): 0 or more than 40 is far below one in 10^4.
        # OVS counts each sample as 1/probability packets (an estimate).
        assert 1 <= sampled <= 40, mirrored
        assert sum(r["packets"] for r in mirrored) == pytest.approx(sampled * 100, rel=0.02)
        assert all(r["mirrored"] and r["sampling"] == pytest.approx(0.01, abs=1e-4) and
                   r["hypervisor"] == "rm1" for r in mirrored), mirrored
