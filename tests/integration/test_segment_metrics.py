"""Per segment-pair traffic in /metrics against real pings
(tests/networks/segmetrics.yaml: g1 on sm1 in green, a1 on sm2 in amber, y1
in grey on sm2). The pair is switched allow -> mirror -> deny -> a1
quarantined through the REST API; after N pings in each, /metrics must
count at least N for the pair and outcome within a few flow-stats polls
(2 s each), count them once across the two hypervisors, and show nothing
for pairs that did not talk."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests import rest_client
from topologies import probes
from topologies.lab import Lab

from .conftest import NETWORKS

N = 10
TOKEN = "segmetrics-token-0123456789"
DEADLINE = 15.0          # seconds: several 2 s polls
SAMPLE = re.compile(r'^vguard_segment_pair_packets_total\{(.*)\} (\S+)$')


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("segmetrics")
    (tmp / "token").write_text(TOKEN + "\n")
    with Lab(os.path.join(NETWORKS, "segmetrics.yaml"), core="smcore",
             controller_args=["--token-file", str(tmp / "token"),
                              "--state-file", str(tmp / "policy.json")]) as running:
        running.pin_neighbours()       # cross-segment pings without a router
        yield running


def pairs(lab) -> dict:
    """{(src, dst, outcome): packets} from /metrics."""
    status, text = rest_client.request(lab.rest_url, "GET", "/metrics")
    assert status == 200, text
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[(labels["src_segment"], labels["dst_segment"], labels["outcome"])] = \
                float(m.group(2))
    return out


def uplink_passed(lab, hv: str) -> int:
    """Frames the receiving hypervisor passed on as judged upstream, as the
    controller's last poll saw them."""
    status, text = rest_client.request(lab.rest_url, "GET", "/api/v1/counters")
    assert status == 200, text
    reasons = json.loads(text)["hypervisors"][hv]["reasons"]
    return reasons.get("uplink-pass", {}).get("packets", 0)


def wait_for(lab, want: dict, also=lambda: True) -> dict:
    """Poll /metrics until every key of `want` counts at least its value
    (and `also()` holds); the last reading."""
    deadline = time.monotonic() + DEADLINE
    while True:
        ready = also()
        seen = pairs(lab)
        if ready and all(seen.get(k, 0) >= v for k, v in want.items()):
            return seen
        assert time.monotonic() < deadline, (want, seen, lab.log_tail())
        time.sleep(0.2)


def change(lab, method: str, path: str, body=None) -> None:
    status, text = rest_client.request(lab.rest_url, method, path, body, TOKEN, timeout=30)
    assert status == 200, text
    lab.wait_datapath()


def ping(lab, src: str, dst: str) -> int:
    sent, received = probes.ping(lab.host(src), str(lab.network.vm(dst).ip), count=N,
                                 interval=0.05)
    assert sent == N
    return received


def unrelated(seen: dict) -> list:
    """Series naming two segments that never talked to each other: only
    green and amber cross; grey talks to no one but itself."""
    crossing = {("green", "amber"), ("amber", "green")}
    return [k for k in seen if k[0] != k[1] and "-" not in k[:2] and k[:2] not in crossing]


def test_segment_pair_metrics_follow_real_pings(lab):
    # allow, across the two hypervisors: counted where judged (sm1 for the
    # requests, sm2 for the replies), not again where received.
    base = uplink_passed(lab, "sm2")
    assert ping(lab, "g1", "a1") == N
    seen = wait_for(lab, {("green", "amber", "allowed"): N, ("amber", "green", "allowed"): N},
                    also=lambda: uplink_passed(lab, "sm2") >= base + N)
    # sm2's poll has seen the requests pass: had it counted them, 2N.
    assert seen[("green", "amber", "allowed")] < 2 * N, seen
    assert ("green", "amber", "mirrored") not in seen
    assert unrelated(seen) == [], seen

    # mirror: allowed and copied to sm1's IDS port, each once. The change
    # replaces the pair's entries, so their counts start again from 0.
    change(lab, "PUT", "/api/v1/policy/pairs/green/amber", {"mode": "mirror"})
    assert ping(lab, "g1", "a1") == N
    seen = wait_for(lab, {("green", "amber", "allowed"): N,
                          ("green", "amber", "mirrored"): N,
                          ("amber", "green", "mirrored"): N})
    assert seen[("green", "amber", "mirrored")] < 2 * N, seen
    assert unrelated(seen) == [], seen

    # deny (isolated): refused by table 2's default entry, which matches
    # nothing and so cannot name the pair: counted as ("-", "-").
    before = pairs(lab).get(("-", "-", "refused"), 0)
    change(lab, "PUT", "/api/v1/policy/pairs/green/amber", {"mode": "deny"})
    assert ping(lab, "g1", "a1") == 0
    seen = wait_for(lab, {("-", "-", "refused"): before + N})
    assert not any(k[:2] == ("green", "amber") and k[2] != "refused" for k in seen), seen
    assert unrelated(seen) == [], seen

    # a1 quarantined, the pair allowed again: g1's frames to it are refused
    # by its destination entry (amber known), its replies never sent.
    change(lab, "PUT", "/api/v1/policy/pairs/green/amber", {"mode": "allow"})
    change(lab, "PUT", "/api/v1/policy/vms/a1", {"mode": "quarantine"})
    assert ping(lab, "g1", "a1") == 0
    seen = wait_for(lab, {("-", "amber", "refused"): N})
    assert ("amber", "green", "allowed") not in seen, seen
    assert unrelated(seen) == [], seen
    change(lab, "DELETE", "/api/v1/policy/vms/a1")
