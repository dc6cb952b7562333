"""The REST API on a real lab: policy modes switched live, persistence across
a controller restart, bad and unauthenticated requests changing nothing,
the audit against flows deleted by hand, and a change one switch rejects
kept by none.

Lab: tests/networks/rest_lab.yaml (hypervisors ra1, ra2, core `racore`, so
it can run beside labs of the example). blue1, blue2, red1 on ra1; blue3,
red2 on ra2; each hypervisor has its IDS host (ra1ids, ra2ids). Segments
are in one /8 with static neighbours, so a cross-segment `allow` shows with
a plain ping (ARP never crosses segments; a router would do it in real life).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from controller.enforcement import DATAPATH_WINDOW_MS
from topologies import firewall, probes
from tests import rest_client
from topologies.lab import Lab

from .conftest import NETWORKS, REPO, dump_flows

NETWORK = os.path.join(NETWORKS, "rest_lab.yaml")
TOKEN = "lab-token-0123456789abcdef"
ECHO, REPLY = "icmp[icmptype] == icmp-echo", "icmp[icmptype] == icmp-echoreply"
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest-lab")
    (tmp / "token").write_text(TOKEN + "\n")
    state = tmp / "policy.json"
    with Lab(NETWORK, core="racore",
             controller_args=["--token-file", str(tmp / "token"),
                              "--state-file", str(state)]) as running:
        running.state_file = state
        running.pin_neighbours()
        yield running


def api(lab, method, path, body=None, token=TOKEN, raw=None, content_type=None):
    """(status, JSON answer) of one request."""
    status, text = rest_client.request(lab.rest_url, method, path, body, token,
                                       content_type or "application/json", raw, timeout=30)
    return status, json.loads(text)


def applied(lab, method, path, body=None):
    """A confirmed change, in force in the datapath too when this returns."""
    status, doc = api(lab, method, path, body)
    assert status == 200 and doc["ok"], doc
    assert doc["applied_to"] == ["ra1", "ra2"] and doc["failed"] == {}, doc
    assert doc["datapath_window_ms"] == DATAPATH_WINDOW_MS, doc
    lab.wait_datapath()
    return doc


def ip(lab, vm):
    return str(lab.network.vm(vm).ip)


def reaches(lab, src, dst):
    return probes.reaches(lab.host(src), ip(lab, dst))


def path_of(lab, src, dst) -> str:
    """What OVS does with an echo request from src to dst now, and what the
    firewall counted: for a failure's message."""
    a, b = lab.network.vm(src), lab.network.vm(dst)
    trace = subprocess.run(["ovs-appctl", "ofproto/trace", a.hypervisor,
                            f"in_port={a.port},icmp,dl_src={a.mac},dl_dst={b.mac},"
                            f"nw_src={a.ip},nw_dst={b.ip}"], capture_output=True, text=True)
    cached = subprocess.run(["ovs-appctl", "dpctl/dump-flows"], capture_output=True,
                            text=True).stdout
    cached = "\n".join(line for line in cached.splitlines() if a.mac in line)
    return (f"trace on {a.hypervisor}:\n{trace.stdout[-3000:]}\nfirewall counters: "
            f"{firewall.counters(lab.host(firewall.HOST))}\ndatapath flows from "
            f"{src}:\n{cached[-3000:]}")


def cookies(bridge):
    return sorted(re.search(r"cookie=(0x[0-9a-f]+)", f).group(1) for f in dump_flows(bridge))


def test_modes_switch_live_while_traffic_flows(lab):
    # Traffic no change touches: it must not lose a packet meanwhile.
    steady = lab.host("red1").popen(["ping", "-n", "-i", "0.05", "-W", "1", ip(lab, "red2")],
                                    stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)

    # Isolated, as the network file says.
    assert api(lab, "GET", "/api/v1/matrix")[1]["modes"]["blue"]["red"] == "deny"
    assert not reaches(lab, "blue1", "red1")

    applied(lab, "PUT", "/api/v1/policy/pairs/blue/red", {"mode": "allow"})
    assert reaches(lab, "blue1", "red1") and reaches(lab, "blue3", "red1")
    between = f"host {ip(lab, 'blue1')} and host {ip(lab, 'red1')}"
    with probes.capture(lab.host("ra1ids"), f"icmp and {between}") as before:
        assert probes.ping(lab.host("blue1"), ip(lab, "red1"), count=5)[1] == 5
    assert before.count() == 0, "allow copies nothing to the IDS"
    before.close()

    applied(lab, "PUT", "/api/v1/policy/pairs/red/blue", {"mode": "mirror"})
    with probes.capture(lab.host("ra1ids"), f"icmp and {between}") as ids:
        assert probes.ping(lab.host("blue1"), ip(lab, "red1"), count=5)[1] == 5
    copies = (ids.count(ECHO), ids.count(REPLY))
    ids.close()
    assert copies == (5, 5), "the IDS gets one copy of each frame, both directions"

    fw = lab.host(firewall.HOST)
    firewall.rules(fw, f'ip saddr {ip(lab, "blue1")} ip daddr {ip(lab, "red1")} '
                       'counter comment "blue1->red1"')
    applied(lab, "PUT", "/api/v1/policy/pairs/blue/red", {"mode": "steer"})
    assert probes.ping(lab.host("blue1"), ip(lab, "red1"), count=5)[1] == 5
    assert firewall.counters(fw)["blue1->red1"] == 5, "steered through the firewall"

    doc = applied(lab, "PUT", "/api/v1/policy/vms/blue1", {"mode": "quarantine"})
    assert doc["changed"] and doc["policy"]["vms"]["blue1"]["mode"] == "quarantine"
    assert not reaches(lab, "blue1", "blue2") and not reaches(lab, "blue1", "red1")
    assert not reaches(lab, "blue3", "blue1")
    assert reaches(lab, "blue2", "blue3"), "the rest of blue is unaffected"
    _check_counters_and_metrics(lab)

    applied(lab, "DELETE", "/api/v1/policy/vms/blue1")
    assert reaches(lab, "blue1", "blue2")
    # Seen once in CI (not reproduced since, nor under load): the steered
    # path failing just after the release. If it comes back, say where.
    assert reaches(lab, "blue1", "red1"), path_of(lab, "blue1", "red1")
    applied(lab, "DELETE", "/api/v1/policy/pairs/blue/red")
    assert not reaches(lab, "blue1", "red1")

    steady.send_signal(signal.SIGINT)
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+)", steady.communicate(timeout=10)[0])}
    # Lost: unanswered while a later one was (those still in flight at the end are not).
    lost = sorted(set(range(1, max(answered) + 1)) - answered)
    assert len(answered) > 100 and lost == [], f"icmp_seq lost: {lost}"


def _check_counters_and_metrics(lab):
    """Mirrored and quarantined traffic shows in /counters and /metrics (the
    switches' counters are polled every 2 s)."""
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        counters = api(lab, "GET", "/api/v1/counters")[1]
        if counters["dropped"].get("quarantine", {}).get("packets"):
            break
        time.sleep(0.5)
    assert counters["dropped"]["quarantine"]["packets"] > 0, counters
    assert counters["hypervisors"]["ra1"]["mirrored"]["packets"] > 0, counters
    with _http.open(lab.rest_url + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert re.search(r'^vguard_flows\{hypervisor="ra1"\} [1-9]', metrics, re.M)
    assert re.search(r'^vguard_hypervisors_connected 2\.0', metrics, re.M)
    assert re.search(r'^vguard_mirrored_packets_total\{hypervisor="ra1"\} [1-9]', metrics,
                     re.M)
    assert re.search(r'^vguard_dropped_packets_total\{hypervisor="ra1",'
                     r'reason="quarantine"\} [1-9]', metrics, re.M)
    assert re.search(r'^vguard_policy_change_seconds_count [1-9]', metrics, re.M)


def test_a_change_survives_a_controller_restart(lab):
    applied(lab, "PUT", "/api/v1/policy/pairs/blue/red", {"mode": "allow"})
    applied(lab, "PUT", "/api/v1/policy/vms/blue2", {"mode": "quarantine"})
    saved = json.loads(lab.state_file.read_text())["policy"]
    assert saved["vms"] == {"blue2": {"mode": "quarantine", "direction": "both"}}
    with open(lab.controller_log, "rb") as f:
        mark = len(f.read())

    lab.restart_controller()

    policy = api(lab, "GET", "/api/v1/policy")[1]["policy"]
    assert policy["pairs"] == [{"segments": ["blue", "red"], "mode": "allow"}]
    assert policy["vms"] == {"blue2": {"mode": "quarantine", "direction": "both"}}
    assert not reaches(lab, "blue2", "blue1") and reaches(lab, "blue1", "red1")
    with open(lab.controller_log, "rb") as f:
        log = f.read()[mark:].decode(errors="replace")
    assert "policy restored from" in log
    # The switches already held the saved policy: nothing to commit.
    assert "committing" not in log, log[-2000:]

    applied(lab, "DELETE", "/api/v1/policy/vms/blue2")
    applied(lab, "DELETE", "/api/v1/policy/pairs/blue/red")
    assert reaches(lab, "blue2", "blue1")


BAD_REQUESTS = [
    # (method, path, body bytes, content type, token, status, part of the message)
    ("PUT", "/api/v1/policy/default", b'{"mode": "allow"', None, TOKEN, 400, "malformed JSON"),
    ("PUT", "/api/v1/policy/default", b'{"mode": "open"}', None, TOKEN, 400,
     "invalid mode 'open'"),
    ("PUT", "/api/v1/policy/default", b'{"mode": 1}', None, TOKEN, 400, "must be a string"),
    ("PUT", "/api/v1/policy/default", b"{}", None, TOKEN, 400, "missing field 'mode'"),
    ("PUT", "/api/v1/policy/default", b'{"mode": "deny", "x": 1}', None, TOKEN, 400,
     "unknown field 'x'"),
    ("PUT", "/api/v1/policy/default", b'["deny"]', None, TOKEN, 400, "JSON object"),
    ("PUT", "/api/v1/policy/default", b'{"mode": "deny"}', "text/plain", TOKEN, 415,
     "application/json"),
    ("PUT", "/api/v1/policy/segments/green", b'{"mode": "deny"}', None, TOKEN, 404,
     "unknown segment 'green'"),
    ("PUT", "/api/v1/policy/pairs/blue/blue", b'{"mode": "allow"}', None, TOKEN, 404,
     "two different segments"),
    ("DELETE", "/api/v1/policy/vms/ghost", None, None, TOKEN, 404, "unknown VM 'ghost'"),
    ("PUT", "/api/v1/policy/vms/blue1", b'{"mode": "quarantine", "direction": "sent"}',
     None, TOKEN, 400, "mirror only"),
    ("POST", "/api/v1/policy/default", b'{"mode": "deny"}', None, TOKEN, 405, "allowed: PUT"),
    ("PUT", "/api/v1/policy/default", b'{"mode": "deny"}', None, None, 401, "Bearer"),
    ("PUT", "/api/v1/policy/vms/blue1", b'{"mode": "quarantine"}', None,
     TOKEN[:-1] + "x", 401, "not valid"),
]


def test_bad_and_unauthenticated_requests_change_nothing(lab):
    policy = api(lab, "GET", "/api/v1/policy")[1]
    flows = {hv: cookies(hv) for hv in ("ra1", "ra2")}
    state = lab.state_file.read_bytes() if lab.state_file.exists() else None
    answers = [api(lab, method, path, raw=body, token=token, content_type=ctype)
               for method, path, body, ctype, token, _, _ in BAD_REQUESTS]
    for (method, path, body, _, _, status, says), (got, doc) in zip(BAD_REQUESTS, answers):
        assert (got, says in doc.get("error", "")) == (status, True), (method, path, body, doc)
    assert api(lab, "GET", "/api/v1/policy")[1] == policy
    assert {hv: cookies(hv) for hv in ("ra1", "ra2")} == flows
    assert (lab.state_file.read_bytes() if lab.state_file.exists() else None) == state
    assert reaches(lab, "blue1", "blue3"), "the lab still works"


def test_the_audit_finds_a_flow_deleted_by_hand(lab):
    audit = api(lab, "GET", "/api/v1/audit")[1]
    assert audit["in_sync"] and audit["offline"] == [], audit
    for hv in ("ra1", "ra2"):
        doc = audit["hypervisors"][hv]
        assert doc["answered"] and doc["missing"] == doc["unexpected"] == [], doc
        assert doc["intended"] == doc["installed"] == len(dump_flows(hv))

    blue3 = lab.network.vm("blue3")
    deliver = next(f for f in dump_flows("ra2")
                   if "table=3" in f and f"dl_dst={blue3.mac}" in f)
    cookie = re.search(r"cookie=(0x[0-9a-f]+)", deliver).group(1)
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", "ra2",
                    f"cookie={cookie}/-1"], check=True)
    stray = "0x5ec0010000000042"
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", "ra1",
                    f"cookie={stray},table=3,priority=5,dl_dst=02:00:00:00:99:99,"
                    "actions=drop"], check=True)

    status, audit = api(lab, "GET", "/api/v1/audit")
    assert status == 200 and not audit["in_sync"]
    ra1, ra2 = audit["hypervisors"]["ra1"], audit["hypervisors"]["ra2"]
    assert ra2["missing"] == [{"cookie": f"0x{int(cookie, 16):016x}", "table": 3,
                               "table_name": "forward", "priority": 200,
                               "match": {"eth_dst": blue3.mac}, "reason": "deliver"}], ra2
    assert ra2["unexpected"] == [] and ra1["missing"] == []
    assert [(e["cookie"], e["table"], e["priority"]) for e in ra1["unexpected"]] == \
        [(stray, 3, 5)]
    cli = subprocess.run([sys.executable, "-m", "controller.cli", "--url", lab.rest_url,
                          "audit"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert cli.returncode == 1 and f"missing    0x{int(cookie, 16):016x}" in cli.stdout

    # A restart reconciles by cookie: the audit is clean again.
    lab.restart_controller()
    assert api(lab, "GET", "/api/v1/audit")[1]["in_sync"]


def test_a_change_one_hypervisor_rejects_is_kept_nowhere(lab):
    # Make ra1's policy table full: OVS then refuses any new entry in it.
    table2 = sum(1 for f in dump_flows("ra1") if "table=2" in f)
    subprocess.run(["ovs-vsctl", "--", "--id=@ft", "create", "Flow_Table",
                    f"flow_limit={table2}", "overflow_policy=refuse", "--",
                    "set", "Bridge", "ra1", "flow_tables:2=@ft"], check=True)
    try:
        policy = api(lab, "GET", "/api/v1/policy")[1]
        flows = {hv: cookies(hv) for hv in ("ra1", "ra2")}
        status, doc = api(lab, "PUT", "/api/v1/policy/pairs/blue/red", {"mode": "allow"})
        assert status == 502 and not doc["ok"] and doc["applied_to"] == [], doc
        assert list(doc["failed"]) == ["ra1"] and "switch error" in doc["failed"]["ra1"]
        assert "ra1" in doc["error"]
        assert api(lab, "GET", "/api/v1/policy")[1] == policy
        assert {hv: cookies(hv) for hv in ("ra1", "ra2")} == flows, "ra2 kept nothing"
        assert not reaches(lab, "blue3", "red2")
    finally:
        subprocess.run(["ovs-vsctl", "clear", "Bridge", "ra1", "flow_tables"], check=True)
    applied(lab, "PUT", "/api/v1/policy/pairs/blue/red", {"mode": "allow"})
    assert reaches(lab, "blue3", "red2")
    applied(lab, "DELETE", "/api/v1/policy/pairs/blue/red")
