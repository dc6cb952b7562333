"""Run-time inventory and reload on real OVS: a VM replaced and removed
through the REST API, and the network file reloaded, each applied as the
difference only: an unrelated ping stream loses nothing, and the entries
nothing changed keep their cookies and go on counting (never re-added).

Lab: its own file (iv1, iv2, core `ivcore`), written to a temporary
directory so the tests can edit and reload it.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from tests import rest_client
from topologies import probes
from topologies.lab import Lab

from .conftest import dump_flows

NETWORK = """\
segments:
  sky:  {vlan: 610}
  moss: {vlan: 620}
hypervisors:
  iv1: {dpid: 0xe1, uplink_port: 1}
  iv2: {dpid: 0xe2, uplink_port: 1}
vms:
  near:  {hypervisor: iv1, port: 10, segment: sky, mac: "02:61:00:00:00:01", ip: 10.61.0.1}
  far:   {hypervisor: iv2, port: 10, segment: sky, mac: "02:61:00:00:00:02", ip: 10.61.0.2}
  spare: {interface: iv-spare, segment: moss, mac: "02:62:00:00:00:01", ip: 10.62.0.1}
policy:
  default: allow
"""
TOKEN = "inventory-token-0123456789"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inventory")
    (tmp / "token").write_text(TOKEN + "\n")
    path = tmp / "network.yaml"
    path.write_text(NETWORK)
    with Lab(str(path), core="ivcore", placement={"spare": "iv1"},
             controller_args=["--token-file", str(tmp / "token")]) as running:
        running.file = path
        running.pin_neighbours()
        yield running


def call(lab, method, path, body=None):
    status, text = rest_client.request(lab.rest_url, method, path, body, TOKEN,
                                       "application/json", None, timeout=30)
    return status, json.loads(text)


def entries(bridge) -> dict[str, tuple[float, int]]:
    """cookie -> (duration s, packets) of every entry of ours."""
    out = {}
    for line in dump_flows(bridge):
        cookie = re.search(r"cookie=(0x[0-9a-f]+)", line).group(1)
        duration = float(re.search(r"duration=([\d.]+)s", line).group(1))
        out[cookie] = (duration, int(re.search(r"n_packets=(\d+)", line).group(1)))
    return out


def stream(lab) -> probes.PingStream:
    """near -> far every 10 ms, running for a second before the changes."""
    s = probes.PingStream(lab.host("near"), "10.61.0.2")
    time.sleep(1)
    return s


def lost_across(s: probes.PingStream, changed_at: float) -> list[int]:
    s.stop()
    assert s.answered_after(changed_at) > 10, "it ran across the changes"
    return s.lost()


def unchanged_kept_counting(before: dict, after: dict) -> list[str]:
    """Cookies in both whose entry was re-added (younger) or reset (fewer packets)."""
    return [c for c in before.keys() & after.keys()
            if after[c][0] < before[c][0] or after[c][1] < before[c][1]]


def test_a_vm_replaced_and_removed_at_run_time_touches_nothing_else(lab):
    spare = lab.host("spare")
    assert not probes.reaches(spare, "10.61.0.1"), "moss and sky are isolated"
    before = {hv: entries(hv) for hv in ("iv1", "iv2")}
    ping = stream(lab)
    changed = time.time()
    # Into sky, same interface: it reaches near now.
    status, doc = call(lab, "PUT", "/api/v1/vms/spare",
                       {"interface": "iv-spare", "segment": "sky", "mac": "02:62:00:00:00:01",
                        "ip": "10.62.0.1"})
    assert status == 200 and doc["applied_to"] == ["iv1", "iv2"], doc
    lab.wait_datapath()
    assert probes.reaches(spare, "10.61.0.1")
    status, doc = call(lab, "DELETE", "/api/v1/vms/spare")
    assert status == 200, doc
    lab.wait_datapath()
    assert not probes.reaches(spare, "10.61.0.1"), "a removed VM's port is unknown"
    assert lost_across(ping, changed) == []
    after = {hv: entries(hv) for hv in ("iv1", "iv2")}
    for hv in before:
        assert unchanged_kept_counting(before[hv], after[hv]) == [], hv
        assert len(before[hv].keys() & after[hv].keys()) > 20
    assert "spare" not in {v["name"] for v in lab.api("/api/v1/vms")}
    # Back as the file says: the run-time removal is undone by putting it again.
    status, _ = call(lab, "PUT", "/api/v1/vms/spare",
                     {"interface": "iv-spare", "segment": "moss", "mac": "02:62:00:00:00:01",
                      "ip": "10.62.0.1"})
    assert status == 200


def test_a_reload_applies_only_the_difference_and_a_bad_one_nothing(lab):
    before = {hv: entries(hv) for hv in ("iv1", "iv2")}
    ping = stream(lab)
    changed = time.time()
    text = lab.file.read_text()
    lab.file.write_text(text.replace("policy:", '  extra: {hypervisor: iv2, port: 20, '
                                     'segment: sky, mac: "02:61:00:00:00:03", '
                                     'ip: 10.61.0.3}\npolicy:'))
    status, doc = call(lab, "POST", "/api/v1/reload")
    assert status == 200 and doc["changed"], doc
    assert "extra" in {v["name"] for v in lab.api("/api/v1/vms")}
    # A file the controller cannot use: nothing changes, and it says why.
    lab.file.write_text(lab.file.read_text().replace('"02:61:00:00:00:03"',
                                                     '"02:61:00:00:00:01"'))
    middle = {hv: set(entries(hv)) for hv in ("iv1", "iv2")}
    status, doc = call(lab, "POST", "/api/v1/reload")
    assert status == 400 and "vms.extra.mac" in doc["error"], doc
    assert {hv: set(entries(hv)) for hv in ("iv1", "iv2")} == middle
    assert lost_across(ping, changed) == []
    after = {hv: entries(hv) for hv in ("iv1", "iv2")}
    for hv in before:
        assert unchanged_kept_counting(before[hv], after[hv]) == [], hv
    added = {hv: len(after[hv].keys() - before[hv].keys()) for hv in after}
    # extra's entries only: elsewhere just its destination (table 1)
    assert added["iv2"] >= 5 and added["iv1"] == 1, added
    lab.file.write_text(text)
