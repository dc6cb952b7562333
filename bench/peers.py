"""The controllers measured side by side: vguard and the baselines a user
would pick instead, each started as its own process on a given OpenFlow
port and stopped by its process group.

  normal          OVS NORMAL (no controller: one NORMAL flow per bridge); the ceiling
  simple_switch   Ryu's ryu.app.simple_switch_13 (with the eventlet shim)
  faucet          Faucet 1.10.12 from .venv-faucet, configured from the same file
  vguard          this controller (python -m controller)
  responder       bench.ofload's trivial controller (the load generator's ceiling)
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

from controller import model
from topologies.lab import stop_process_group

from .common import REPO, free_port, ofctl, wait_for

FAUCET = os.path.join(REPO, ".venv-faucet", "bin", "faucet")
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _get(url: str, timeout: float = 2.0) -> str:
    with _http.open(url, timeout=timeout) as r:
        return r.read().decode()


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Peer:
    """A controller process. Subclasses give the command and how to read
    readiness and packet-ins; None means 'this peer cannot tell'."""
    name = "peer"

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.workdir = tempfile.mkdtemp(prefix=f"bq-{self.name}-")
        self.log_path = os.path.join(self.workdir, "controller.log")

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict:
        return {}

    def start(self, port: int) -> float:
        """Start listening on 127.0.0.1:port; returns the start time."""
        self.port = port
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(port), cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.environment()})
        return t0

    def wait_listening(self, timeout: float = 30.0) -> None:
        if not wait_for(lambda: self.alive() and listening(self.port), timeout, 0.05):
            raise RuntimeError(f"{self.name} is not listening on {self.port} "
                               f"after {timeout:.0f} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n"
                               f"{self.log_tail()}")
        return self.proc is not None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process_group(proc)

    def kill(self) -> None:
        """SIGKILL at once: a crash, not a shutdown."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def ready(self) -> bool | None:
        return None

    def packet_ins(self) -> int | None:
        return None

    def rss_mb(self) -> float | None:
        """Resident memory of the controller process."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
            return kb / 1024
        except (OSError, StopIteration, AttributeError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


class Normal(Peer):
    """OVS NORMAL: no controller; every hypervisor bridge gets one NORMAL flow
    (the bridges stay in secure mode, which changes nothing for NORMAL)."""
    name = "OVS NORMAL"

    def __init__(self, bridges):
        super().__init__()
        self.bridges = list(bridges)

    def start(self, port: int) -> float:
        t0 = time.monotonic()
        for br in self.bridges:
            ofctl(br, "add-flow", "priority=0,actions=NORMAL")
        return t0

    def wait_listening(self, timeout: float = 0) -> None:
        pass

    def alive(self) -> bool:
        return True

    def rss_mb(self):
        return None


class SimpleSwitch(Peer):
    """ryu.app.simple_switch_13: a reactive learning switch; it logs one
    'packet in' line per packet-in, which is how they are counted."""
    name = "simple_switch_13"

    def command(self, port: int) -> list[str]:
        code = ("from controller import shim; shim.apply(); from ryu.cmd import manager; "
                f"manager.main(args=['--ofp-listen-host', '127.0.0.1', "
                f"'--ofp-tcp-listen-port', '{port}', 'ryu.app.simple_switch_13'])")
        return [sys.executable, "-c", code]

    def packet_ins(self) -> int:
        with open(self.log_path, errors="replace") as f:
            return sum(1 for ln in f if ln.startswith("packet in "))


def faucet_config(network: model.Network, **dp_options) -> dict:
    """faucet.yaml for a network file: a VLAN per segment, VM and learning
    ports as native_vlan, uplinks tagged with every segment. dp_options:
    Faucet's own dp settings; max_hosts=N goes to every VLAN and learning
    port instead (0: no limit)."""
    limit = dp_options.pop("max_hosts", None)
    vlans = {s.name: {"vid": s.vlan} for s in network.segments}
    if limit is not None:
        for vlan in vlans.values():
            vlan["max_hosts"] = limit
    dps = {}
    for hv in network.hypervisors:
        interfaces = {}
        for vm in network.vms:
            if vm.hypervisor == hv.name:
                interfaces[vm.port] = {"name": vm.name, "native_vlan": vm.segment}
        for lp in hv.learning_ports:
            interfaces[lp.port] = {"name": f"learn{lp.port}", "native_vlan": lp.segment}
            if limit is not None:
                interfaces[lp.port]["max_hosts"] = limit
        if hv.uplink_port is not None:
            interfaces[hv.uplink_port] = {"name": "uplink",
                                          "tagged_vlans": list(vlans)}
        dps[hv.name] = {"dp_id": hv.dpid, "hardware": "Open vSwitch",
                        "interfaces": interfaces, **dp_options}
    return {"vlans": vlans, "dps": dps}


class Faucet(Peer):
    """Faucet 1.10.12 in its own venv; packet-ins and readiness from its
    Prometheus endpoint (of_packet_ins_total, dp_status)."""
    name = "Faucet"

    def __init__(self, network: model.Network, **options):
        super().__init__()
        if not os.path.exists(FAUCET):
            raise RuntimeError(f"{FAUCET} is missing: run bash scripts/setup.sh")
        self.network = network
        self.config = os.path.join(self.workdir, "faucet.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump(faucet_config(network, **options), f)
        self.prom_port = free_port()

    def command(self, port: int) -> list[str]:
        return [FAUCET, "--ryu-ofp-listen-host", "127.0.0.1",
                "--ryu-ofp-tcp-listen-port", str(port)]

    def environment(self) -> dict:
        # faucet execs osken-manager from PATH (same PID): its venv comes first.
        return {"PATH": f"{os.path.dirname(FAUCET)}:{os.environ.get('PATH', '')}",
                "FAUCET_CONFIG": self.config,
                "FAUCET_LOG": os.path.join(self.workdir, "faucet.log"),
                "FAUCET_EXCEPTION_LOG": os.path.join(self.workdir, "faucet_exception.log"),
                "FAUCET_PROMETHEUS_ADDR": "127.0.0.1",
                "FAUCET_PROMETHEUS_PORT": str(self.prom_port)}

    def _metric(self, name: str) -> list[float]:
        text = _get(f"http://127.0.0.1:{self.prom_port}/")
        return [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith(name + "{")]

    def ready(self) -> bool:
        try:
            up = self._metric("dp_status")
        except OSError:
            return False
        return len(up) == len(self.network.hypervisors) and all(v == 1 for v in up)

    def packet_ins(self) -> int | None:
        try:
            return int(sum(self._metric("of_packet_ins_total")))
        except OSError:
            return None


class Vguard(Peer):
    """This controller; readiness and packet-ins from GET /api/v1/health.
    token: the REST API's bearer token (written to a file it is given), for
    set_default."""
    name = "vguard"

    def __init__(self, network_path: str, label: str = "vguard", args=(), env=None,
                 token: str | None = None):
        self.name = label
        super().__init__()
        self.network_path, self.args, self.env = network_path, list(args), env or {}
        self.rest_port = free_port()
        self.token = token
        if "--state-file" not in self.args:
            # Policy changes die with this run: the default state file is
            # named after the network file only, and a later run on a file
            # of the same name would start from this run's last mode.
            self.args += ["--state-file", os.path.join(self.workdir, "policy.json")]
        if token is not None:
            path = os.path.join(self.workdir, "api-token")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(token + "\n")
            self.args += ["--token-file", path]

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "controller", "--network", self.network_path,
                "--ofp-host", "127.0.0.1", "--ofp-port", str(port),
                "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port), *self.args]

    def environment(self) -> dict:
        return self.env

    def health(self) -> dict:
        return json.loads(_get(f"http://127.0.0.1:{self.rest_port}/api/v1/health"))

    def ready(self) -> bool:
        try:
            return bool(self.health().get("ready"))
        except (OSError, ValueError):
            return False

    def packet_ins(self) -> int | None:
        try:
            return self.health().get("packet_ins")
        except (OSError, ValueError):
            return None

    def set_default(self, mode: str) -> dict:
        """PUT /api/v1/policy/default {"mode": mode}; the controller answers
        once every connected hypervisor confirmed the change. Its answer;
        raises unless every hypervisor has the change."""
        return self._write("PUT", "/api/v1/policy/default", {"mode": mode})

    def reload(self) -> dict:
        """POST /api/v1/reload: the network file read again, the difference
        confirmed by every connected hypervisor; as set_default."""
        return self._write("POST", "/api/v1/reload")

    def cpu_seconds(self) -> float:
        """User and system CPU the controller process has used (all threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _write(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token}"})
        try:
            with _http.open(req, timeout=120) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.name}: {method} {path}: {e.code} "
                               f"{e.read().decode(errors='replace')}") from None
        if not answer.get("ok") or answer.get("offline") or answer.get("failed"):
            raise RuntimeError(f"{self.name}: {method} {path}: {answer}")
        return answer


class Responder(Peer):
    """bench.ofload's trivial controller: every packet-in gets a packet-out."""
    name = "trivial responder"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "bench.ofload", "responder", "--port", str(port)]


def bring_up(peer: Peer, port: int, bridges, timeout: float = 60.0,
             prompt: bool = True) -> dict:
    """Start a peer for a lab's bridges and wait until every bridge is
    connected to it and it says it is ready (if it can say). Seconds from
    the start to each of: listening, connected, ready. prompt: point the
    bridges at it again as soon as it listens, so they connect at once
    rather than when OVS's reconnect backoff (up to 8 s) runs out."""
    from .common import connections, repoint
    bridges = list(bridges)
    t0 = peer.start(port)
    peer.wait_listening(timeout)
    out = {"listening_s": time.monotonic() - t0}
    if prompt and not isinstance(peer, Normal):
        repoint(bridges)
    if isinstance(peer, Normal):      # no process: ready once its flows are in
        return {"listening_s": None, "connected_s": None, "ready_s": out["listening_s"]}
    if not wait_for(lambda: peer.alive() and connections(port) >= len(bridges), timeout,
                    0.05):
        raise RuntimeError(f"{peer.name}: bridges not connected after {timeout:.0f} s")
    out["connected_s"] = time.monotonic() - t0
    if peer.ready() is not None and not wait_for(peer.ready, timeout, 0.05):
        raise RuntimeError(f"{peer.name}: not ready after {timeout:.0f} s:\n"
                           f"{peer.log_tail()}")
    out["ready_s"] = time.monotonic() - t0
    return out
