"""IDS alerts act, on real OVS: each response rule of the issue (severity
filter, allowlist, cap, TTL release, unknown address, bad records), the
alert token, a destination mirrored, a quarantine kept across a restart,
a followed eve.json rotated, and the lab's own IDS detector closing the
loop from a mirrored attack to a quarantine.

Lab: tests/networks/response.yaml (hypervisors rs1-rs3, core `rscore`, so it
runs beside labs of the example): web1 (rs1), web2 (rs2), web3 (rs3) in web;
db1 (rs1), db2 (rs3) in db; dns1 (rs2, allowlisted) in infra; web and db
both reach infra. Every test undoes what it acted on.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests import rest_client
from topologies import probes
from topologies.ids_detector import SCAN_ID, SIGNATURE_ID
from topologies.lab import Lab

from .conftest import NETWORKS, REPO, dump_flows

NETWORK = os.path.join(NETWORKS, "response.yaml")
TOKEN = "response-token-0123456789"
ALERT_TOKEN = "alert-only-token-0123456789"
RULES = {"rules": [{"severity": [1], "target": "source", "action": "quarantine",
                    "ttl": 600},
                   {"signature_id": [SCAN_ID], "target": "source", "action": "quarantine"},
                   {"category": ["Potentially Bad Traffic"], "target": "destination",
                    "action": "mirror", "ttl": 600}],
         "allowlist": ["dns1"], "max_per_minute": 10}
PEERS = {"web1": ["web2", "web3", "dns1"], "web3": ["web1", "web2", "dns1"],
         "db1": ["db2", "dns1"], "db2": ["db1", "dns1"], "dns1": ["web1", "db2"],
         "web2": ["web1", "web3"]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("response-lab")
    (tmp / "token").write_text(TOKEN + "\n")
    (tmp / "alert-token").write_text(ALERT_TOKEN + "\n")
    eve = tmp / "eve.json"
    with Lab(NETWORK, core="rscore",
             controller_args=["--token-file", str(tmp / "token"),
                              "--alert-token-file", str(tmp / "alert-token"),
                              "--state-file", str(tmp / "policy.json"),
                              "--eve-file", str(eve)]) as running:
        running.eve = eve
        running.pin_neighbours()
        yield running


@pytest.fixture(autouse=True)
def undo(lab):
    """Release whatever a test left acted on, and put the rules back."""
    yield
    for action in api(lab, "GET", "/api/v1/response")[1]["active"]:
        api(lab, "DELETE", f"/api/v1/response/actions/{action['vm']}")
    status, doc = api(lab, "PUT", "/api/v1/response", RULES)
    assert status == 200, doc


def api(lab, method, path, body=None, token=TOKEN, raw=None):
    status, text = rest_client.request(lab.rest_url, method, path, body, token,
                                       raw=raw, timeout=30)
    return status, json.loads(text)


def record(lab, src: str, dst: str, severity: int = 1, sid: int = 2100498,
           category: str = "Misc activity", event_type: str = "alert") -> dict:
    """A Suricata EVE alert record; src and dst are VM names or addresses."""
    def address(name):
        return str(lab.network.vm(name).ip) if name in PEERS else name
    return {"timestamp": "2026-12-02T19:00:00.000000+0000", "flow_id": 1,
            "event_type": event_type, "src_ip": address(src), "src_port": 40000,
            "dest_ip": address(dst), "dest_port": 80, "proto": "TCP",
            "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1,
                      "signature": "test signature", "category": category,
                      "severity": severity}}


def post(lab, *records, token=ALERT_TOKEN) -> dict:
    raw = "\n".join(json.dumps(r) for r in records).encode()
    status, doc = api(lab, "POST", "/api/v1/alerts", token=token, raw=raw)
    assert status == 200, doc
    if doc["applied"] is not None:
        lab.wait_datapath()
    return doc


def kinds(doc) -> list[tuple[str, str | None]]:
    return [(d["kind"], d["vm"]) for d in doc["decisions"]]


def cut_off(lab, vm: str) -> bool:
    """Nothing in or out: it reaches none of its peers, and none reaches it."""
    me = lab.host(vm)
    return not any(probes.reaches(me, str(lab.network.vm(p).ip)) for p in PEERS[vm]) and \
        not probes.reaches(lab.host(PEERS[vm][0]), str(lab.network.vm(vm).ip))


def connected(lab, vm: str) -> bool:
    me = lab.host(vm)
    return all(probes.reaches(me, str(lab.network.vm(p).ip)) for p in PEERS[vm])


def flows(lab) -> dict[str, list[str]]:
    """Every bridge's entries without their counters: what a change changes."""
    def bare(line):
        return " ".join(f for f in line.split() if not f.startswith(
            ("duration=", "n_packets=", "n_bytes=", "idle_age=", "hard_age=")))
    return {hv.name: sorted(map(bare, dump_flows(hv.name))) for hv in lab.network.hypervisors}


def response_events(lab, kind: str | None = None) -> list[dict]:
    events = api(lab, "GET", "/api/v1/events?source=response")[1]["events"]
    return [e for e in events if kind is None or e["kind"] == kind]


def test_past_the_cap_alerts_are_recorded_and_not_acted_on(lab):
    # First in the module, so the cap's minute holds no earlier action (one
    # could leave it while the test runs).
    assert api(lab, "GET", "/api/v1/response")[1]["new_actions_last_minute"] == 0
    assert api(lab, "PUT", "/api/v1/response", {**RULES, "max_per_minute": 2})[0] == 200
    doc = post(lab, record(lab, "web1", "web2"), record(lab, "web3", "web2"),
               record(lab, "db2", "db1"))
    assert kinds(doc) == [("acted", "web1"), ("acted", "web3"), ("capped", "db2")]
    assert cut_off(lab, "web1") and cut_off(lab, "web3")
    assert connected(lab, "db2")
    capped = response_events(lab, "capped")[-1]
    assert capped["vm"] == "db2" and capped["level"] == "warning"


def test_an_alert_quarantines_its_source_on_every_hypervisor_until_released(lab):
    assert connected(lab, "web1")
    doc = post(lab, record(lab, "web1", "web2"))
    assert kinds(doc) == [("acted", "web1")]
    assert doc["applied"]["ok"] and doc["applied"]["applied_to"] == ["rs1", "rs2", "rs3"]
    assert cut_off(lab, "web1")
    assert probes.reaches(lab.host("web2"), str(lab.network.vm("web3").ip)), \
        "only the VM the alert names is cut off"
    event = response_events(lab, "quarantined")[-1]
    assert event["vm"] == "web1" and event["rule"] == 0 and event["hypervisor"] == "rs1"
    assert event["alert"]["src_ip"] == "10.3.10.1" and event["expires"] is not None

    status, doc = api(lab, "DELETE", "/api/v1/response/actions/web1")
    assert status == 200 and doc["applied"]["ok"], doc
    lab.wait_datapath()
    assert connected(lab, "web1")
    released = response_events(lab, "released")[-1]
    assert released["vm"] == "web1" and released["released_by"].startswith("operator")
    assert api(lab, "DELETE", "/api/v1/response/actions/web1")[0] == 404


def test_an_alert_naming_a_vms_ipv6_address_acts_on_that_vm(lab):
    doc = post(lab, record(lab, "fd00:3:10::2", "web1"))
    assert kinds(doc) == [("acted", "web2")]
    assert cut_off(lab, "web2")


def test_an_alert_below_the_severity_the_rules_name_changes_nothing(lab):
    before = flows(lab)
    doc = post(lab, record(lab, "web3", "web1", severity=3))
    assert doc["decisions"] == [] and doc["applied"] is None
    assert flows(lab) == before
    assert connected(lab, "web3")


def test_an_allowlisted_vm_is_never_acted_on(lab):
    before = flows(lab)
    doc = post(lab, record(lab, "dns1", "web1"))
    assert kinds(doc) == [("allowlisted", "dns1")]
    assert flows(lab) == before and connected(lab, "dns1")
    assert response_events(lab, "allowlisted")[-1]["vm"] == "dns1"


def test_an_address_no_vm_owns_is_recorded_and_not_acted_on(lab):
    before = flows(lab)
    doc = post(lab, record(lab, "10.3.99.99", "web1"),
               record(lab, "fd00:3:99::1", "web2"))
    assert kinds(doc) == [("unowned", None), ("unowned", None)]
    assert flows(lab) == before
    assert [e["alert"]["src_ip"] for e in response_events(lab, "unowned")[-2:]] == \
        ["10.3.99.99", "fd00:3:99::1"]


def test_bad_records_are_counted_and_ignored_never_a_server_error(lab):
    before = flows(lab)
    good_shape = record(lab, "web3", "web1")
    missing = {k: v for k, v in good_shape.items() if k != "src_ip"}
    bad_address = {**good_shape, "src_ip": "10.3.10.300"}
    no_signature = {**good_shape, "alert": {"severity": 1}}
    lines = ["{not json", json.dumps(record(lab, "web3", "web1", event_type="flow")),
             json.dumps(missing), json.dumps(bad_address), json.dumps(no_signature),
             json.dumps([1, 2]), json.dumps("alert"), "\x00\xff garbage"]
    status, doc = api(lab, "POST", "/api/v1/alerts", token=ALERT_TOKEN,
                      raw="\n".join(lines).encode("utf-8", "surrogateescape"))
    assert status == 200 and doc["alerts"] == 0 and doc["ignored_records"] == len(lines), doc
    status, doc = api(lab, "POST", "/api/v1/alerts", token=ALERT_TOKEN,
                      raw=bytes(range(256)) * 4)
    assert status == 200 and doc["alerts"] == 0, doc
    assert api(lab, "POST", "/api/v1/alerts", token=ALERT_TOKEN,
               raw=b" " * (2 << 20))[0] == 413
    assert api(lab, "POST", "/api/v1/alerts", token=ALERT_TOKEN, raw=b"\n")[0] == 400
    assert flows(lab) == before and connected(lab, "web3")
    intake = api(lab, "GET", "/api/v1/response")[1]["intake"]
    assert intake["ignored_records"] >= len(lines) + 1


def test_alerts_need_a_token_and_the_alert_token_changes_no_policy(lab):
    raw = json.dumps(record(lab, "web3", "web1")).encode()
    assert api(lab, "POST", "/api/v1/alerts", token=None, raw=raw)[0] == 401
    assert api(lab, "POST", "/api/v1/alerts", token="wrong-token-0123456789", raw=raw)[0] == 401
    assert api(lab, "PUT", "/api/v1/policy/default", {"mode": "deny"},
               token=ALERT_TOKEN)[0] == 401
    assert api(lab, "PUT", "/api/v1/response", {"rules": []}, token=ALERT_TOKEN)[0] == 401
    assert api(lab, "GET", "/api/v1/policy")[1]["policy"]["default"] == "allow"
    assert connected(lab, "web3"), "no refused request acted"
    doc = post(lab, record(lab, "10.3.99.98", "web1"), token=TOKEN)   # the write token too
    assert kinds(doc) == [("unowned", None)]


def test_a_ttl_releases_by_itself_and_a_repeated_alert_extends_it(lab):
    rules = {**RULES, "rules": [{"severity": [1], "target": "source",
                                 "action": "quarantine", "ttl": 10}]}
    assert api(lab, "PUT", "/api/v1/response", rules)[0] == 200
    first = post(lab, record(lab, "web3", "web1"))
    assert kinds(first) == [("acted", "web3")]
    time.sleep(1)
    again = post(lab, record(lab, "web3", "web2"))
    assert kinds(again) == [("extended", "web3")] and again["applied"] is None
    assert again["decisions"][0]["expires"] > first["decisions"][0]["expires"]
    since = first["decisions"][0]["expires"] - 10
    assert [e["vm"] for e in response_events(lab, "quarantined") if e["time"] >= since] == \
        ["web3"], "a repeated alert writes no second action"
    assert cut_off(lab, "web3")
    expires = again["decisions"][0]["expires"]
    assert probes.wait_for(lambda: not api(lab, "GET", "/api/v1/response")[1]["active"],
                           seconds=expires - time.time() + 3)
    assert time.time() >= expires - 0.2, "not released before its TTL"
    lab.wait_datapath()
    assert connected(lab, "web3")
    released = response_events(lab, "released")[-1]
    assert released["vm"] == "web3" and released["released_by"] == "expiry"


def test_a_mirror_rule_copies_what_the_destination_sends_and_receives(lab):
    web2 = lab.network.vm("web2")

    def copies() -> int:
        """Copies of web3<->web2 pings the sensors get (a frame is copied
        where the policy decides it: on the hypervisor it enters by)."""
        caps = [probes.Capture(lab.host(f"{hv.name}ids"), f"icmp and host {web2.ip}").start()
                for hv in lab.network.hypervisors]
        assert probes.ping(lab.host("web3"), str(web2.ip), count=3)[1] == 3
        for cap in caps:
            cap.stop()
        total = sum(cap.count() for cap in caps)
        for cap in caps:
            cap.close()
        return total

    assert copies() == 0
    doc = post(lab, record(lab, "web3", "web2", severity=3,
                           category="Potentially Bad Traffic"))
    assert kinds(doc) == [("acted", "web2")]
    assert copies() == 6, "each echo and reply once"
    assert api(lab, "DELETE", "/api/v1/response/actions/web2?action=mirror")[0] == 200
    lab.wait_datapath()
    assert copies() == 0


def test_a_quarantine_and_its_trail_survive_a_controller_restart(lab):
    post(lab, record(lab, "db1", "db2"))
    assert cut_off(lab, "db1")
    lab.restart_controller()
    lab.wait_datapath()
    active = api(lab, "GET", "/api/v1/response")[1]["active"]
    assert [a["vm"] for a in active] == ["db1"]
    assert cut_off(lab, "db1")
    assert any(e["vm"] == "db1" for e in response_events(lab, "quarantined"))


def test_a_followed_eve_file_acts_and_survives_rotation(lab):
    def active():
        return {a["vm"] for a in api(lab, "GET", "/api/v1/response")[1]["active"]}

    def write(path, rec):
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    write(lab.eve, record(lab, "web1", "web2"))
    assert probes.wait_for(lambda: active() == {"web1"}, seconds=5)
    lab.wait_datapath()
    assert cut_off(lab, "web1")
    # logrotate `create`: renamed, the writer still appends to the old file
    # until it reopens, then a new file.
    os.rename(lab.eve, f"{lab.eve}.1")
    write(f"{lab.eve}.1", record(lab, "web3", "web2"))
    write(lab.eve, record(lab, "db2", "db1"))
    assert probes.wait_for(lambda: active() == {"web1", "web3", "db2"}, seconds=5)
    intake = api(lab, "GET", "/api/v1/response")[1]["intake"]["eve_file"]
    assert intake["rotations"] == 1 and intake["error"] is None, intake


def test_the_lab_ids_detects_a_mirrored_attack_and_the_attacker_is_quarantined(lab):
    """The whole loop: mirroring brings the attack to the sensors, the
    project's detector writes EVE, the controller follows it and acts."""
    status, doc = api(lab, "PUT", "/api/v1/policy/default", {"mode": "mirror"})
    assert status == 200, doc
    sensors = [lab.host(f"{hv.name}ids") for hv in lab.network.hypervisors]
    detectors = [s.popen(["/usr/bin/python3", os.path.join(REPO, "topologies",
                                                           "ids_detector.py"),
                          "--iface", probes.intf(s), "--eve", str(lab.eve),
                          "--seconds", "60"]) for s in sensors]
    try:
        time.sleep(0.5)          # the sensors' sockets are open
        assert connected(lab, "web3") and connected(lab, "db2")
        # web3 sends the payload signature to web1 (severity 1: rule 0).
        lab.host("web3").cmd(
            "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(b'xx VGUARD-ATTACK xx', ('{lab.network.vm('web1').ip}', 9))\"")
        # db2 scans db1's ports (severity 2, signature 9000002: rule 1).
        db1 = lab.network.vm("db1").ip
        lab.host("db2").cmd(
            "python3 -c \"import socket\nfor p in range(20, 40):\n s=socket.socket()\n"
            f" s.settimeout(0.05)\n s.connect_ex(('{db1}', p))\n s.close()\"")

        def active():
            return {a["vm"]: a for a in api(lab, "GET", "/api/v1/response")[1]["active"]}
        assert probes.wait_for(lambda: {"web3", "db2"} <= active().keys(), seconds=10), \
            active()
        now = active()
        assert now["web3"]["alert"]["signature_id"] == SIGNATURE_ID
        assert now["db2"]["alert"]["signature_id"] == SCAN_ID
        assert now["db2"]["expires"] is None, "the scan rule holds until released"
        lab.wait_datapath()
        assert cut_off(lab, "web3") and cut_off(lab, "db2")
        assert probes.reaches(lab.host("web1"), str(lab.network.vm("web2").ip)) and \
            probes.reaches(lab.host("db1"), str(lab.network.vm("dns1").ip)), \
            "the victims are not cut off"
    finally:
        for d in detectors:
            d.terminate()
        for d in detectors:
            assert d.wait(timeout=5) == 0
        assert api(lab, "PUT", "/api/v1/policy/default", {"mode": "allow"})[0] == 200


def test_the_cli_shows_the_rules_the_actions_and_the_trail_and_releases(lab):
    def cli(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "controller.cli", "--url", lab.rest_url,
                               "--token", TOKEN, *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO)

    post(lab, record(lab, "db2", "db1"))
    shown = cli("response")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^db2\s+quarantine\s+0\s", shown.stdout, re.M), shown.stdout
    assert "allowlist: dns1" in shown.stdout
    trail = cli("events", "--source", "response")
    assert re.search(r"quarantined\s+db2\s+rs3\s+db2 quarantined by response rule 0",
                     trail.stdout), trail.stdout
    released = cli("release", "db2")
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == "released from the IDS's automatic quarantine"
    lab.wait_datapath()
    assert connected(lab, "db2")
    assert cli("release", "db2").stdout.startswith("no change")
