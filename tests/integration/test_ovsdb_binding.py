"""VMs bound by iface-id, read from OVSDB by a monitor, on real OVS: boot,
live migration with overlap (the guest's RARP at the destination moves it),
an interface claiming a running VM, and OVSDB cut and back.

Lab: tests/networks/migration.yaml (mg1, mg2, core `mgcore`), its `ovsdb:`
pointed at a TCP relay to the machine's ovsdb-server that the tests can cut.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from topologies import probes
from topologies.lab import Lab, free_ports

from .conftest import NETWORKS

NETWORK = os.path.join(NETWORKS, "migration.yaml")
DB_SOCK = "/var/run/openvswitch/db.sock"


class Relay:
    """127.0.0.1:port -> the ovsdb-server's unix socket, which cut() stops
    (listener and connections) and restore() brings back on the same port."""

    def __init__(self):
        self.port = free_ports(1)[0]
        self.conns: list[socket.socket] = []
        self.listener = None
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(DB_SOCK)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        # shutdown() first: close() alone leaves a blocked accept() accepting.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.conns = []


@pytest.fixture(scope="module")
def relay():
    r = Relay()
    yield r
    r.cut()


@pytest.fixture(scope="module")
def lab(relay, tmp_path_factory):
    path = tmp_path_factory.mktemp("ovsdb") / "migration.yaml"
    path.write_text(open(NETWORK).read().replace(f"unix:{DB_SOCK}",
                                                 f"tcp:127.0.0.1:{relay.port}"))
    with Lab(str(path), core="mgcore", placement={"travel": "mg1", "other": "mg2"}) as running:
        running.pin_neighbours()
        yield running


def ip(lab, vm):
    return str(lab.network.vm(vm).ip)


def kinds(lab, vm) -> list[tuple[str, str]]:
    return [(e["kind"], e["hypervisor"]) for e in lab.api("/api/v1/events")["events"]
            if e["vm"] == vm]


def test_bound_by_iface_id_from_ovsdb(lab):
    lab.wait_bound("travel", "mg1")
    lab.wait_bound("other", "mg2")
    b = lab.binding("travel")
    assert (b["by"], b["iface_id"], b["up"]) == ("iface_id", "3f2a9c1e-travel", True)
    assert probes.reaches(lab.host("travel"), ip(lab, "watch"))
    assert not probes.reaches(lab.host("travel"), ip(lab, "other"))


def test_overlapping_migration_moves_on_the_guests_first_frame(lab):
    stream = probes.PingStream(lab.host("watch"), ip(lab, "travel"))
    time.sleep(1)
    done = threading.Event()
    seen_candidate = []

    def watch_overlap():        # the destination port, bound but not yet in use
        while not done.is_set():
            b = lab.binding("travel")
            if b["candidates"] and b["hypervisor"] == "mg1":
                seen_candidate.append(b)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_overlap)
    watcher.start()
    lab.migrate("travel", "mg2", overlap=True, copy_seconds=1.0)
    done.set()
    watcher.join()
    migrated = time.time()
    lab.wait_bound("travel", "mg2")
    stream.stop()
    assert seen_candidate, "during the overlap the VM stayed at the source"
    assert seen_candidate[0]["candidates"][0]["hypervisor"] == "mg2"
    moved = [e for e in lab.api("/api/v1/events")["events"]
             if e["vm"] == "travel" and e["kind"] == "moved"]
    assert moved and "its first frame arrived there" in moved[-1]["detail"], moved
    assert stream.answered_after(migrated) > 10 and len(stream.lost()) < 50, stream.lost()
    assert probes.reaches(lab.host("travel"), ip(lab, "stay"))
    assert not probes.reaches(lab.host("travel"), ip(lab, "other")), "still isolated"


def test_a_port_claiming_a_running_vm_is_a_warning_and_moves_nothing(lab):
    where = lab.binding("travel")["hypervisor"]
    elsewhere = "mg1" if where == "mg2" else "mg2"
    subprocess.run(["ovs-vsctl", "add-port", elsewhere, "impostor0", "--", "set",
                    "Interface", "impostor0", "type=internal",
                    "external_ids:iface-id=3f2a9c1e-travel"], check=True)
    try:
        assert probes.wait_for(lambda: ("claimed", elsewhere) in kinds(lab, "travel"))
        event = [e for e in lab.api("/api/v1/events")["events"] if e["kind"] == "claimed"][-1]
        assert event["level"] == "warning"
        lab.wait_datapath()
        assert lab.binding("travel")["hypervisor"] == where
        assert probes.reaches(lab.host("stay"), ip(lab, "travel"))
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-port", elsewhere, "impostor0"],
                       check=True)
    assert probes.wait_for(lambda: lab.binding("travel")["candidates"] == [])


def test_ovsdb_cut_keeps_what_is_bound_and_changes_resume(lab, relay):
    where = lab.binding("travel")["hypervisor"]
    relay.cut()
    assert probes.wait_for(lambda: "connection lost; bindings stay as they were"
                           in open(lab.controller_log).read())
    lab.wait_datapath()
    assert probes.reaches(lab.host("stay"), ip(lab, "travel")), "bound VMs keep working"
    # Meanwhile the VM is stopped and booted elsewhere: OpenFlow reports the
    # port, but only OVSDB can say whose it is.
    lab.stop_vm("travel")
    target = "mg1" if where == "mg2" else "mg2"
    lab.start_vm("travel", target)
    time.sleep(1)
    assert not lab.binding("travel")["up"]
    relay.restore()
    lab.wait_bound("travel", target)
    assert probes.reaches(lab.host("stay"), ip(lab, "travel"))


def test_a_restart_while_ovsdb_is_away_keeps_what_was_bound(lab, relay):
    lab.wait_bound("travel", lab.binding("travel")["hypervisor"])
    where = lab.binding("travel")["hypervisor"]
    relay.cut()
    try:
        lab.restart_controller()          # ready once the grace period ends
        assert lab.binding("travel")["hypervisor"] == where, \
            "bound from the entries the switch still held"
        lab.wait_datapath()
        assert probes.reaches(lab.host("stay"), ip(lab, "travel"))
    finally:
        relay.restore()
    lab.wait_bound("travel", where)
