"""The IPFIX collector (Ryu glue): the switches' samples in, flow records out.

One UDP socket, read by one greenthread. Intake is bounded: once
`intake` records were decoded in a second, the greenthread stops reading
until the next, so the socket's buffer fills and the kernel drops the
rest (its count is read from /proc/net/udp and reported): a flood costs
the controller nothing past the bound. It also yields to the other
greenthreads every YIELD_EVERY datagrams, since a green socket with data
waiting never does, and a flood would hold OpenFlow and REST back.
Datagrams from addresses no hypervisor may connect from (connect_from)
are refused.
"""
from __future__ import annotations

import json
import os
import socket
import time

from ryu.lib import hub

from controller import ipfix
from controller.compiler import judgement
from controller.flowlog import FlowLog
from controller.flows import Directory, FlowStore, parse_address

INTAKE = 10_000              # records per second decoded, at most (half a core here)
YIELD_EVERY = 32
RECEIVE_BUFFER = 4 << 20
REINDEX_SECONDS = 1.0           # a hypervisor's rule index is rebuilt at most this often
BIND_RETRY_SECONDS = 5.0        # between tries to listen, while the port is taken


def from_environment(app) -> "Collector | None":
    """The collector the launcher's settings ask for (None: --flow-collector off)."""
    env = os.environ
    where = env.get("VGUARD_FLOW_COLLECTOR", "127.0.0.1:4739")
    if where == "off":
        return None
    path = env.get("VGUARD_FLOW_LOG", "off")
    log = None if path == "off" else FlowLog(
        path, int(env.get("VGUARD_FLOW_LOG_MAX_BYTES", 64 << 20)),
        float(env.get("VGUARD_FLOW_LOG_RETENTION", 168)))
    return Collector(app, parse_address(where), log, env.get("VGUARD_FLOW_TEMPLATES"),
                     int(env.get("VGUARD_FLOW_INTAKE", INTAKE)))


class Collector:
    def __init__(self, app, address: tuple[str, int], log: FlowLog | None,
                 templates_file: str | None, intake: int = INTAKE):
        self.app, self.address, self.log, self.intake = app, address, log, intake
        self.logger = app.logger
        self.templates_file = templates_file
        self.templates = self._load_templates()
        self.store = FlowStore()
        self.counts = dict(messages=0, records=0, dropped_messages=0, malformed=0,
                           unknown_template=0, unknown_domain=0, unknown_rule=0,
                           refused_sources=0)
        self._indexes: dict[str, tuple[dict, dict, float]] = {}
        self._directory: Directory | None = None
        self._domains: tuple = (None, {})
        self._window, self._taken = 0, 0
        self._warned_malformed = 0.0
        self.sock = None
        self._bind_failed = False

    # -- the loop
    def run(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            sock.bind(self.address)
        except OSError as e:
            sock.close()
            if not self._bind_failed:
                self.logger.error("flow collector: cannot listen on udp %s:%d: %s; no flow "
                                  "records until it can (retrying)", *self.address, e)
            self._bind_failed = True
            hub.sleep(BIND_RETRY_SECONDS)
            return
        self.sock, self._bind_failed = sock, False
        self.logger.info("flow collector: IPFIX on udp %s:%d", *self.address)
        try:
            read = 0
            while True:
                data, source = self.sock.recvfrom(65535)
                now = time.time()
                self.take(data, source[0], now)
                read += 1
                if self._taken >= self.intake:
                    hub.sleep(self._window + 1 - now)     # this second's budget is spent
                elif read % YIELD_EVERY == 0:
                    hub.sleep(0)
        finally:
            self.sock.close()
            self.sock = None

    def flush_loop(self) -> None:
        while True:
            hub.sleep(1.0)
            if self.log is not None:
                self.log.flush()

    def take(self, data: bytes, source: str, now: float) -> None:
        self.counts["messages"] += 1
        second = int(now)
        if second != self._window:
            self._window, self._taken = second, 0
        if self._taken >= self.intake:
            self.counts["dropped_messages"] += 1
            return
        net = self.app.fabric.network
        if not any(hv.accepts_connection_from(source) for hv in net.hypervisors):
            self.counts["refused_sources"] += 1
            return
        known = len(self.templates.known)
        try:
            records, unknown = ipfix.decode(data, source, self.templates)
        except ipfix.IPFIXError as e:
            self.counts["malformed"] += 1
            if now - self._warned_malformed > 60:
                self._warned_malformed = now
                self.logger.warning("flow collector: malformed IPFIX from %s: %s "
                                    "(more are counted, not logged, for a minute)", source, e)
            return
        finally:
            if len(self.templates.known) != known:
                self._save_templates()
        self.counts["unknown_template"] += unknown
        self._taken += len(records)
        for sample in records:
            self._join(sample, net, now)

    def _join(self, sample: dict, net, now: float) -> None:
        hv = self._hypervisor(net, sample["domain"])
        if hv is None:
            self.counts["unknown_domain"] += 1
            return
        entry, judged = self._entry(net, hv, sample.get("observation_point"), now)
        if entry is None:
            self.counts["unknown_rule"] += 1
            return
        probability = (entry.sample[0] / 65535) if entry.sample else 0.0
        record = self.store.add(sample, hv.name, entry, judged, probability,
                                self._names(), now)
        self.counts["records"] += 1
        if self.log is not None:
            self.log.write(record.to_dict())

    # -- lookups
    def _hypervisor(self, net, domain: int):
        if self._domains[0] is not net:
            self._domains = (net, {hv.observation_domain: hv for hv in net.hypervisors})
        return self._domains[1].get(domain)

    def _names(self) -> Directory:
        """Rebuilt only when the network or the learned hosts change (both
        are replaced, never mutated)."""
        fabric = self.app.fabric
        d = self._directory
        if d is None or d.net is not fabric.network or d.learned is not fabric.learned:
            self._directory = Directory(fabric.network, fabric.learned)
        return self._directory

    def _entry(self, net, hv, point: int | None, now: float) -> tuple:
        """(entry, its judgement) of `hv` with that observation point: among
        those its switch holds, else among those it held before the last
        rebuild (a sample may be in flight across a change); (None, None)."""
        current, previous, built = self._indexes.get(hv.name, ({}, {}, 0.0))
        found = current.get(point) or previous.get(point)
        if found is None and now - built >= REINDEX_SECONDS:
            current, previous = self._index(net, hv), current
            self._indexes[hv.name] = (current, previous, now)
            found = current.get(point) or previous.get(point)
        return found or (None, None)

    def _index(self, net, hv) -> dict:
        flows, _ = self.app.fabric.committed()
        index = {}
        for f in flows.get(hv.name, ()):
            judged = judgement(net, hv, f) if f.sample is not None else None
            if judged is not None:
                index[f.observation_point] = (f, judged)
        return index

    # -- what it says about itself
    def status(self) -> dict:
        return {"listen": f"{self.address[0]}:{self.address[1]}", "intake_per_second":
                self.intake, **self.counts, "kernel_drops": self._kernel_drops(),
                "templates": len(self.templates.known), "kept": len(self.store.records),
                "log": self.log.path if self.log is not None else None}

    def _kernel_drops(self) -> int | None:
        if self.sock is None:
            return None
        try:
            inode = os.fstat(self.sock.fileno()).st_ino
        except OSError:
            return None
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table) as f:
                    for line in f:
                        fields = line.split()
                        if len(fields) > 12 and fields[9] == str(inode):
                            return int(fields[-1])
            except OSError:
                continue
        return None

    def _load_templates(self) -> ipfix.Templates:
        if self.templates_file and os.path.exists(self.templates_file):
            try:
                with open(self.templates_file) as f:
                    return ipfix.Templates.from_dict(json.load(f))
            except (OSError, ValueError, TypeError) as e:
                self.logger.warning("flow collector: %s unreadable (%s); templates come "
                                    "again from the switches within 10 minutes",
                                    self.templates_file, e)
        return ipfix.Templates()

    def _save_templates(self) -> None:
        if not self.templates_file:
            return
        tmp = self.templates_file + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.templates.to_dict(), f)
            os.replace(tmp, self.templates_file)
        except OSError as e:
            self.logger.warning("flow collector: cannot save templates to %s: %s",
                                self.templates_file, e)
