"""The REST API of a real controller process with no switch connected:
schemathesis against the OpenAPI document, the CLI, persistence across a
restart, read-only and insecure modes, metrics. No Mininet needed."""
from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from topologies.lab import free_ports

from . import rest_client
from .test_model import EXAMPLE

REPO = str(EXAMPLE.parent.parent)
TOKEN = "test-token-0123456789abcdef"
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# No switch is connected to these controllers: a change is in force on no
# hypervisor yet, and the answer says so (202, pending: every hypervisor).
NOT_IN_FORCE = 202
CLI_NOT_IN_FORCE = 4


class Controller:
    """`python -m controller` on free ports, stopped by its PID."""

    def __init__(self, tmp_path, *args, env=None, network=EXAMPLE):
        self.args, self.env, self.network = list(args), env or {}, network
        self.log = tmp_path / "controller.log"
        self.proc = None

    def start(self) -> "Controller":
        self.ofp_port, rest_port = free_ports(2)
        ofp_port = self.ofp_port
        self.url = f"http://127.0.0.1:{rest_port}"
        cmd = [sys.executable, "-m", "controller", "--network", str(self.network),
               "--ofp-port", str(ofp_port), "--rest-port", str(rest_port), *self.args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VGUARD_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env={**env, **self.env, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if self.call("GET", "/api/v1/health")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the controller did not serve its API within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(self, method, path, body=None, token=None, content_type="application/json",
             raw=None, timeout=10):
        return rest_client.request(self.url, method, path, body, token, content_type, raw,
                                   timeout)

    def json(self, method, path, body=None, token=TOKEN):
        status, text = self.call(method, path, body, token)
        return status, json.loads(text)


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest")
    (tmp / "token").write_text(TOKEN + "\n")
    c = Controller(tmp, "--state-file", str(tmp / "state" / "policy.json"),
                   "--token-file", str(tmp / "token")).start()
    yield c
    c.stop()


def cli(controller, *args, token=TOKEN):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VGUARD_")}
    if token:
        env["VGUARD_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "controller.cli", "--url", controller.url,
                           *args], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=env)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    # Every check schemathesis has; writes carry the token. Bounded: 30
    # examples per operation, a fixed seed so a failure can be replayed.
    # A controller of its own: the fuzzing leaves any policy behind.
    controller = Controller(tmp_path, "--state-file", str(tmp_path / "policy.json"),
                            env={"VGUARD_API_TOKEN": TOKEN}).start()
    # A VM body can be schema-valid and still not fit the network (a MAC
    # in use, a port taken): PUT /vms/{vm} runs apart, without the check
    # that every schema-valid request is accepted.
    vm_path = "^/api/v1/vms/"
    try:
        runs = [_schemathesis(controller, tmp_path, "--exclude-path-regex", vm_path),
                _schemathesis(controller, tmp_path, "--include-path-regex", vm_path,
                              "--exclude-checks", "positive_data_acceptance")]
    finally:
        controller.stop()
    for run, least in zip(runs, (300, 20)):
        summary = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert run.returncode == 0 and summary, run.stdout[-4000:]
        generated, passed = map(int, summary.groups())
        assert generated == passed and generated > least, run.stdout[-1000:]
    assert "Traceback" not in controller.log.read_text()


def _schemathesis(controller, cwd, *options):
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", *options,
         f"{controller.url}/api/v1/openapi.json", "--checks", "all",
         "--max-examples", "30", "--seed", "20261126", "--workers", "1",
         "--generation-database", "none", "--request-timeout", "10",
         "-H", f"Authorization: Bearer {TOKEN}", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_reads_and_changes_the_policy(controller):
    run = cli(controller, "set", "pair", "dmz", "internal", "mirror")
    assert run.returncode == CLI_NOT_IN_FORCE and "applied" in run.stderr, run.stderr
    assert "WARNING: NOT in force on hv1, hv2" in run.stderr
    run = cli(controller, "matrix")
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()[2:]}
    assert rows["dmz"] == ["allow", "mirror", "deny"], run.stdout
    assert rows["internal"] == ["mirror", "allow", "deny"], run.stdout
    run = cli(controller, "quarantine", "web2")
    assert run.returncode == CLI_NOT_IN_FORCE, run.stderr
    vms = {line.split()[0]: line for line in cli(controller, "vms").stdout.splitlines()}
    assert "quarantine" in vms["web2"] and "quarantine" not in vms["web1"]
    policy = cli(controller, "policy").stdout
    assert re.search(r"pair\s+dmz <-> internal\s+mirror", policy), policy
    assert cli(controller, "release", "web2").returncode == CLI_NOT_IN_FORCE
    assert cli(controller, "release", "web2").stdout.startswith("no change")
    assert cli(controller, "set", "pair", "dmz", "internal", "deny").returncode == CLI_NOT_IN_FORCE
    for command in (["status"], ["counters"], ["audit"]):
        assert cli(controller, *command).returncode == 0, command
    run = cli(controller, "trace", "web1", "web3")
    assert run.returncode == 0 and run.stdout.startswith("delivered: delivered to VM web3")
    assert "hv1, in by VM web1 (port 10)" in run.stdout and "uplink (port 1, VLAN 10)" in \
        run.stdout and "note: hv1 not connected" in run.stdout, run.stdout
    run = cli(controller, "trace", "web1", "app1", "--proto", "tcp", "--dport", "5432")
    assert run.stdout.startswith("dropped: the policy denies"), run.stdout
    assert "rule: table policy, priority 0, policy-deny" in run.stdout
    assert cli(controller, "set", "external", "dmz", "deny").returncode == CLI_NOT_IN_FORCE
    assert re.search(r"external\s+dmz <-> its gateways\s+deny", cli(controller, "policy").stdout)


def test_cli_fails_clearly(controller):
    run = cli(controller, "set", "segment", "dmz", "opne")
    assert run.returncode == 1 and "400" in run.stderr and "invalid mode 'opne'" in run.stderr
    run = cli(controller, "vm", "ghost", "mirror")
    assert run.returncode == 1 and "unknown VM 'ghost'" in run.stderr
    run = cli(controller, "set", "default", "deny", token=None)
    assert run.returncode == 1 and "401" in run.stderr and "--token" in run.stderr
    run = cli(controller, "set", "pair", "dmz", "allow")
    assert run.returncode == 2 and "usage: set pair A B MODE" in run.stderr
    run = subprocess.run([sys.executable, "-m", "controller.cli", "--url",
                          f"http://127.0.0.1:{free_ports(1)[0]}", "matrix"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 3 and "cannot reach the controller" in run.stderr


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/v1/nothing", 404),
    ("GET", "/api/v1/%FF%FE", 404),
    ("DELETE", "/api/v1/policy/vms/%FF", 404),
    ("DELETE", "/api/v1/policy/segments/a%0Ab", 404),
    ("PUT", "/api/v1/policy/pairs/dmz", 404),
    ("POST", "/api/v1/policy/vms/web1", 405),
    ("HEAD", "/api/v1/health", 405),
])
def test_odd_requests_get_a_json_4xx(controller, method, path, status):
    got, text = controller.call(method, path, token=TOKEN)
    assert got == status
    if method != "HEAD":
        assert "error" in json.loads(text)


def test_a_write_that_cannot_be_saved_is_rolled_back(tmp_path):
    state = tmp_path / "policy.json"
    c = Controller(tmp_path, "--state-file", str(state),
                   env={"VGUARD_API_TOKEN": TOKEN}).start()
    try:
        state.mkdir()              # the rename onto it fails
        status, doc = c.json("PUT", "/api/v1/policy/default", {"mode": "deny"})
        assert status == 503 and "rolled back" in doc["error"], doc
        assert c.json("GET", "/api/v1/policy")[1]["policy"]["default"] == "allow"
    finally:
        c.stop()


def test_changes_survive_a_restart_and_the_file_says_what_is_in_force(tmp_path):
    state = tmp_path / "policy.json"
    c = Controller(tmp_path, "--state-file", str(state),
                   env={"VGUARD_API_TOKEN": TOKEN}).start()
    try:
        assert c.json("PUT", "/api/v1/policy/vms/db1", {"mode": "quarantine"})[0] == \
            NOT_IN_FORCE
        assert c.json("PUT", "/api/v1/policy/segments/dmz", {"mode": "deny"})[0] == \
            NOT_IN_FORCE
        # No change: still 200, nothing rewritten.
        saved = state.read_text()
        status, doc = c.json("PUT", "/api/v1/policy/segments/dmz", {"mode": "deny"})
        assert status == 200 and doc["changed"] is False and state.read_text() == saved
    finally:
        c.stop()
    assert json.loads(saved)["policy"]["vms"] == {"db1": {"mode": "quarantine",
                                                          "direction": "both"}}
    c.start()
    try:
        policy = c.json("GET", "/api/v1/policy")[1]["policy"]
        assert policy["vms"] == {"db1": {"mode": "quarantine", "direction": "both"}}
        assert policy["segments"] == {"dmz": "deny"}
        assert "policy restored from" in c.log.read_text()
    finally:
        c.stop()


def test_without_a_token_the_api_is_read_only(tmp_path):
    c = Controller(tmp_path, "--state-file", str(tmp_path / "p.json")).start()
    try:
        status, doc = c.json("PUT", "/api/v1/policy/default", {"mode": "deny"})
        assert status == 403 and "--token-file" in doc["error"]
        assert c.json("GET", "/api/v1/policy", token=None)[0] == 200
        assert not (tmp_path / "p.json").exists()
    finally:
        c.stop()


def test_insecure_rest_accepts_writes_and_says_so_loudly(tmp_path):
    c = Controller(tmp_path, "--state-file", str(tmp_path / "p.json"),
                   "--insecure-rest").start()
    try:
        status, doc = c.json("PUT", "/api/v1/policy/default", {"mode": "deny"}, token=None)
        assert status == NOT_IN_FORCE and doc["ok"] and doc["pending"] == ["hv1", "hv2"], doc
        log = c.log.read_text()
        assert "INSECURE: --insecure-rest" in log
        assert "INSECURE: unauthenticated PUT /api/v1/policy/default" in log
    finally:
        c.stop()


def test_metrics_are_prometheus_text(controller):
    # Per-switch families (flows, mirrored, dropped) have samples only with
    # switches connected: the lab test checks those.
    before = metrics(controller.url)
    # Already allow: nothing changes, so 200 although no switch is connected.
    assert controller.json("PUT", "/api/v1/policy/default", {"mode": "allow"})[0] == 200
    after = metrics(controller.url)
    assert after["vguard_hypervisors_connected"][()] == 0
    assert after["vguard_hypervisor_connected"][(("hypervisor", "hv1"),)] == 0
    assert after["vguard_packet_ins_total"][()] == 0
    count = "vguard_policy_change_seconds_count"
    assert after[count][()] == before.get(count, {}).get((), 0) + 1
    applied = (("outcome", "applied"),)
    assert after["vguard_policy_changes_total"][applied] == \
        before.get("vguard_policy_changes_total", {}).get(applied, 0) + 1


def metrics(url: str) -> dict:
    """GET /metrics parsed: sample name -> {sorted label items: value}."""
    with _http.open(url + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return out


def test_idle_connections_do_not_stop_health_or_metrics(tmp_path):
    """2,000 connections that never finish their request headers (beyond
    eventlet's default pool of 1,024): health and metrics still answer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    c = Controller(tmp_path).start()
    idle = []
    try:
        host, port = c.url.removeprefix("http://").split(":")
        for _ in range(2000):
            s = socket.create_connection((host, int(port)))
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")    # never finished
            idle.append(s)
        started = time.monotonic()
        assert c.call("GET", "/api/v1/health", timeout=5)[0] == 200
        assert c.call("GET", "/metrics", timeout=5)[0] == 200
        assert time.monotonic() - started < 5
    finally:
        for s in idle:
            s.close()
        c.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _raw_get(url: str, path: str, method: str = "GET"):
    """(status, headers, body) for a path sent exactly as given (urllib
    would not touch it either, but http.client says so plainly)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


CONSOLE = os.path.join(REPO, "apps", "console")


@pytest.mark.parametrize("path, name, content_type", [
    ("/", "index.html", "text/html"), ("/ui", "index.html", "text/html"),
    ("/ui/", "index.html", "text/html"), ("/ui/index.html", "index.html", "text/html"),
    ("/ui/console.js", "console.js", "text/javascript"),
    ("/ui/console.css", "console.css", "text/css")])
def test_the_console_files_are_served_with_their_types(controller, path, name, content_type):
    status, headers, body = _raw_get(controller.url, path)
    assert status == 200
    assert headers["Content-Type"] == f"{content_type}; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    with open(os.path.join(CONSOLE, name), "rb") as f:
        assert body == f.read()


@pytest.mark.parametrize("path", [
    "/ui/../rest_api.py", "/ui/../../README.md", "/ui/%2e%2e/rest_api.py",
    "/ui/..%2frest_api.py", "/ui/%2e%2e%2f%2e%2e%2fREADME.md", "/ui/console.js/../../rest_api.py",
    "/ui//etc/passwd", "/ui/%2fetc%2fpasswd", "/ui/openapi.yaml", "/ui/console.js%00",
    "/ui/.", "/ui/CONSOLE.JS", "/ui/console"])
def test_the_console_serves_nothing_but_its_files(controller, path):
    status, _headers, body = _raw_get(controller.url, path)
    assert status == 404, (path, body[:200])
    assert b"import" not in body and b"root:" not in body and b"vguard" not in body.lower()


def test_the_console_only_reads(controller):
    status, headers, _ = _raw_get(controller.url, "/ui/console.js", "POST")
    assert status == 405 and headers["Allow"] == "GET"
