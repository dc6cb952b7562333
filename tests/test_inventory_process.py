"""Run-time inventory and reload on a real controller process (no switch
connected): PUT/DELETE /api/v1/vms/{vm} checked exactly as the network file
is, persisted and restored; POST /api/v1/reload and SIGHUP applying a
changed file, a bad one changing nothing."""
from __future__ import annotations

import json
import signal
import time

from .test_model import EXAMPLE
from .test_rest_process import CLI_NOT_IN_FORCE, NOT_IN_FORCE, TOKEN, Controller, cli

NEW_VM = {"interface": "vnet7", "segment": "dmz", "mac": "02:00:00:00:10:77",
          "ip": "10.0.10.77"}


def start(tmp_path):
    network = tmp_path / "network.yaml"
    network.write_text(EXAMPLE.read_text())
    state = tmp_path / "state.json"
    c = Controller(tmp_path, "--state-file", str(state), env={"VGUARD_API_TOKEN": TOKEN},
                   network=network).start()
    return c, network, state


def vms(c) -> dict:
    return {v["name"]: v for v in c.json("GET", "/api/v1/vms")[1]}


def test_vms_are_added_replaced_and_removed_as_the_file_would_have_them(tmp_path):
    c, _network, state = start(tmp_path)
    try:
        status, doc = c.json("PUT", "/api/v1/vms/web9", NEW_VM)
        assert status == NOT_IN_FORCE and doc["ok"] and doc["changed"], doc
        assert vms(c)["web9"]["binding"] == {"by": "interface", "interface": "vnet7",
                                            "up": False, "hypervisor": None, "ofport": None,
                                            "since": None, "candidates": []}
        assert json.loads(state.read_text())["vms"] == {"web9": NEW_VM}
        # The file's own messages, and 400 for a VM wrong on its own...
        for body, says in (({**NEW_VM, "mac": "zz"}, "vms.web9.mac: not a MAC address"),
                           ({**NEW_VM, "segment": "dmzz"}, "vms.web9.segment: unknown"),
                           ({**NEW_VM, "hypervisor": "hv1"}, "vms.web9: say where the VM"),
                           ({**NEW_VM, "colour": "red"}, "vms.web9.colour: unknown key")):
            status, doc = c.json("PUT", "/api/v1/vms/web9", body)
            assert (status, says in doc["error"]) == (400, True), doc
        # ...409 for one that clashes with the rest of the network.
        status, doc = c.json("PUT", "/api/v1/vms/web8", {**NEW_VM, "interface": "vnet8"})
        assert status == 409 and "already used by VM 'web9'" in doc["error"], doc
        # Replace a VM of the file; remove one; a VM with a policy rule stays.
        assert c.json("PUT", "/api/v1/vms/web2", {"hypervisor": "hv1", "port": 21,
                                                  "segment": "dmz", "mac": "02:00:00:00:10:02",
                                                  "ip": "10.0.10.2"})[0] == NOT_IN_FORCE
        assert vms(c)["web2"]["port"] == 21
        assert c.json("PUT", "/api/v1/policy/vms/web3", {"mode": "quarantine"})[0] == \
            NOT_IN_FORCE
        status, doc = c.json("DELETE", "/api/v1/vms/web3")
        assert status == 409 and "web3" in doc["error"], doc
        assert c.json("DELETE", "/api/v1/vms/web1")[0] == NOT_IN_FORCE
        assert "web1" not in vms(c)
        assert c.json("DELETE", "/api/v1/vms/web1")[0] == 404
        assert c.json("PUT", "/api/v1/vms/web9", NEW_VM, token=None)[0] == 401
        saved = json.loads(state.read_text())["vms"]
        assert saved["web1"] is None and saved["web2"]["port"] == 21
    finally:
        c.stop()
    # Restored at start, on top of the file.
    c.start()
    try:
        now = vms(c)
        assert "web9" in now and "web1" not in now and now["web2"]["port"] == 21
        assert "policy and 3 VM changes restored from" in c.log.read_text()
    finally:
        c.stop()


def test_reload_applies_a_changed_file_and_a_bad_one_changes_nothing(tmp_path):
    c, network, state = start(tmp_path)
    try:
        network.write_text(network.read_text().replace("ip: 10.0.10.3}", "ip: 10.0.10.33}"))
        status, doc = c.json("POST", "/api/v1/reload")
        assert status == NOT_IN_FORCE and doc["ok"] and doc["changed"], doc
        assert vms(c)["web3"]["ip"] == "10.0.10.33"
        good = network.read_text()
        network.write_text(good.replace('mac: "02:00:00:00:10:03"', 'mac: "02:00:00:00:10:01"'))
        status, doc = c.json("POST", "/api/v1/reload")
        assert status == 400 and "vms.web3.mac" in doc["error"] and \
            "nothing changed" in doc["error"], doc
        assert vms(c)["web3"]["mac"] == "02:00:00:00:10:03"
        # SIGHUP does the same.
        network.write_text(good.replace("ip: 10.0.10.33}", "ip: 10.0.10.34}"))
        c.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while vms(c)["web3"]["ip"] != "10.0.10.34" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vms(c)["web3"]["ip"] == "10.0.10.34"
        network.write_text("segments: {}\n")
        c.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "SIGHUP: not reloaded" not in c.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "SIGHUP: not reloaded, nothing changed" in c.log.read_text()
        assert vms(c)["web3"]["ip"] == "10.0.10.34"
    finally:
        c.stop()


def test_the_cli_adds_removes_and_reloads(tmp_path):
    c, network, _state = start(tmp_path)
    try:
        run = cli(c, "vm", "add", "web9", "--segment", "dmz", "--mac", NEW_VM["mac"],
                  "--ip", NEW_VM["ip"], "--interface", "vnet7")
        assert run.returncode == CLI_NOT_IN_FORCE and "applied" in run.stderr, run.stderr
        row = next(line for line in cli(c, "vms").stdout.splitlines()
                   if line.startswith("web9"))
        assert row.split()[1:3] == ["interface", "down"], row
        run = cli(c, "vm", "add", "web8", "--segment", "dmz", "--mac", "zz", "--ip", "1.2.3.4",
                  "--interface", "vnet8")
        assert run.returncode == 1 and "vms.web8.mac: not a MAC address" in run.stderr
        assert cli(c, "vm", "remove", "web9").returncode == CLI_NOT_IN_FORCE
        assert cli(c, "reload").stdout.startswith("no change")
        assert cli(c, "events").returncode == 0
        assert cli(c, "vm", "web1", "mirror").returncode == CLI_NOT_IN_FORCE   # the mode
    finally:
        c.stop()
