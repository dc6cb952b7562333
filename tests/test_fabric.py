"""The fabric (controller/fabric.py), driven as the shim drives it, against
in-memory switches that take or refuse commits, and the table simulator
for what the committed entries then do to frames. Every lifecycle case,
learning, start-up adoption, commit failure and rollback, firewall health.

After every settled step the switches hold exactly what a full compile of
the fabric's state says (assert_in_sync), so each case also checks that the
incremental path ends where the full one does."""
from __future__ import annotations

import logging
from collections import deque

import pytest
from hypothesis import given, settings, strategies as st

from controller import model
from controller.compiler import Compiled
from controller.fabric import (MAX_RESYNCS, SAVE, STARTUP_GRACE_SECONDS, SYNC, Fabric, FlowEntry,
                               Outcome, PortDesc, ReadFlows, SendFrame)
from controller.pipeline import ETH_TYPE_PROBE, ETH_TYPE_RARP, KIND_LEARNED, PROBE_MAC, cookie_kind
from controller import tablesim
from controller.tablesim import Frame

NETWORK = """
ovsdb: unix:/var/run/test-fabric-db.sock
segments:
  north: {vlan: 310}
  south: {vlan: 320}
hypervisors:
  hx: {dpid: 0x31, uplink_port: 1, ids_port: 2, firewall_port: 3,
       learning_ports: [{port: 30, segment: north, max_hosts: 2}]}
  hy: {dpid: 0x32, uplink_port: 1}
  hz: {dpid: 0x33, uplink_port: 4, ovsdb: "tcp:127.0.0.1:16640"}
vms:
  anchor: {hypervisor: hx, port: 10, segment: north, mac: "02:31:00:00:00:01", ip: 10.31.0.1}
  roamer: {interface: tap-roamer, segment: north, mac: "02:31:00:00:00:02", ip: 10.31.0.2}
  tenant: {iface_id: 7f3c-tenant, segment: north, mac: "02:31:00:00:00:03", ip: 10.31.0.3}
  other:  {interface: tap-other, segment: south, mac: "02:32:00:00:00:01", ip: 10.32.0.1}
mirror: {vlan: 390}
steering: {fail: closed, probe_interval: 1, probe_misses: 3}
policy:
  default: allow
"""
STEERED = NETWORK.replace("  default: allow",
                          "  default: allow\n  pairs: [{segments: [north, south], mode: steer}]"
                          ).replace("hy: {dpid: 0x32, uplink_port: 1}",
                                    "hy: {dpid: 0x32, uplink_port: 1, firewall_port: 3}"
                          ).replace("uplink_port: 4,", "uplink_port: 4, firewall_port: 5,")
BASE_PORTS = {"hx": {1: "up-hx", 2: "ids-hx", 3: "fw-hx", 10: "anchor", 30: "learn"},
              "hy": {1: "up-hy", 3: "fw-hy"}, "hz": {4: "up-hz", 5: "fw-hz"}}
OVSDB = "tcp:127.0.0.1:16640"             # hz's
OVSDB_DEFAULT = "unix:/var/run/test-fabric-db.sock"   # the others'
HZ_DPID = 0x33


def raw(frame: Frame) -> bytes:
    """Enough of a frame's bytes for the fabric, which reads its source MAC."""
    def mac(m):
        return bytes.fromhex(m.replace(":", ""))
    return (mac(frame.eth_dst) + mac(frame.eth_src) + frame.eth_type.to_bytes(2, "big")
            ).ljust(60, b"\0")


class Lab:
    """Carries out what the fabric returns, as the shim does, on in-memory
    switches (cookie -> Flow) and their OVSDB. A switch in `refuse` refuses
    its bundle: in a change of network (two phases) nothing changes anywhere,
    in a sync (one phase per switch) the others commit theirs. One in `lose`
    fails to commit in phase two (the others have committed)."""

    def __init__(self, text: str = NETWORK, tables: dict | None = None):
        self.net = model.parse(text, "fabric.yaml")
        self.now = 1000.0
        self.fabric = Fabric(self.net, logging.getLogger("test_fabric"), self.now)
        self.tables = {hv.name: dict((tables or {}).get(hv.name, {}))
                       for hv in self.net.hypervisors}
        self.ports = {hv: dict(p) for hv, p in BASE_PORTS.items()}
        self.reads, self.sync_wanted = deque(), False
        self.frames: list[SendFrame] = []
        self.refuse: dict[str, int] = {}   # switch -> how many more bundles it refuses
        self.lose: set[str] = set()         # switches whose commit fails in phase two
        self.commits = self.refused = self.saves = 0
        self.ovsdb = {OVSDB: {HZ_DPID: {}}, OVSDB_DEFAULT: {0x31: {}, 0x32: {}}}

    # -- the shim's part
    def do(self, actions: list) -> None:
        for action in actions:
            if action == SYNC:
                self.sync_wanted = True
            elif action == SAVE:
                self.saves += 1
            elif isinstance(action, ReadFlows):
                self.reads.append(action.hypervisor)
            else:
                self.frames.append(action)

    def tick(self, seconds: float = 0.0) -> None:
        self.now += seconds
        self.do(self.fabric.tick(self.now))

    def step(self) -> float:
        self.now += 0.01
        return self.now

    def settle(self) -> None:
        """Answer every read and run every sync asked for, as the event loop would."""
        while self.reads or self.sync_wanted:
            if self.reads:
                self.answer_read()
            else:
                self.sync_wanted = False
                self.commit()

    def commit(self, network=None, inventory=None) -> dict:
        plan = self.fabric.plan(self.step(), network)
        touched = [n for n, c in plan.changes.items() if not c.empty]
        self.commits += bool(touched)
        failed = {n: "refused" for n in touched if self.refuse.get(n, 0) > 0}
        for n in failed:
            self.refuse[n] -= 1
        self.refused += bool(failed)
        done = []
        # A change of network is two-phase: a refusal stops every switch. A
        # sync commits on each switch alone (as the shim does).
        if not failed or not plan.new_network:
            failed = failed or {n: "lost" for n in touched if n in self.lose}
            done = [n for n in touched if n not in failed]
            for n in done:
                table, change = self.tables[n], plan.changes[n]
                for cookie in change.delete:
                    del table[cookie]
                table.update({f.cookie: f for f in change.add})
        outcome = Outcome(not failed, 0.0, done, failed)
        self.do(self.fabric.applied(plan, outcome, self.step(), inventory))
        return self.fabric.result(plan, outcome)

    # -- the hypervisors' part
    def connect(self, hv: str, ports_first: bool = False) -> None:
        described = [PortDesc(n, name) for n, name in sorted(self.ports[hv].items())]
        if ports_first:      # the port list may answer before the flow read
            self.do(self.fabric.connected(hv, self.step()))
            self.do(self.fabric.ports_described(hv, described, self.step()))
        else:
            self.do(self.fabric.connected(hv, self.step()))
            self.settle_reads_only()
            self.do(self.fabric.ports_described(hv, described, self.step()))

    def settle_reads_only(self) -> None:
        while self.reads:
            self.answer_read()

    def answer_read(self) -> None:
        """The oldest flow read asked for, answered from its switch's table."""
        hv = self.reads.popleft()
        entries = [FlowEntry(c, f.table, dict(f.match)) for c, f in self.tables[hv].items()]
        self.do(self.fabric.flows_read(hv, entries, True, self.step()))

    def learning_cookie(self) -> int:
        """The cookie of hx's learning-port entry, which sends new MACs up."""
        return next(c for c, f in self.tables["hx"].items() if f.reason == "learn")

    def start(self) -> None:
        for hv in ("hx", "hy", "hz"):
            self.connect(hv)
        for address in (OVSDB_DEFAULT, OVSDB):
            self.tell_ovsdb(address)
        self.settle()

    def tell_ovsdb(self, address: str) -> None:
        reported = {dpid: dict(ids) for dpid, ids in self.ovsdb[address].items()}
        self.do(self.fabric.iface_ids_changed(address, reported, self.step()))

    def add_port(self, hv: str, ofport: int, name: str, iface_id: str | None = None) -> None:
        """A tap joins the bridge: OpenFlow reports it, and OVSDB (first)."""
        self.ports[hv][ofport] = name
        address, dpid = self._ovsdb_of(hv)
        self.ovsdb[address][dpid][name] = iface_id
        self.tell_ovsdb(address)
        self.do(self.fabric.port_changed(hv, PortDesc(ofport, name), False, self.step()))
        self.settle()

    def _ovsdb_of(self, hv: str) -> tuple[str, int]:
        h = self.net.hypervisor(hv)
        return h.ovsdb, h.dpid

    def remove_port(self, hv: str, ofport: int) -> None:
        name = self.ports[hv].pop(ofport)
        address, dpid = self._ovsdb_of(hv)
        self.ovsdb[address][dpid].pop(name, None)
        self.do(self.fabric.port_changed(hv, PortDesc(ofport, name), True, self.step()))
        self.tell_ovsdb(address)
        self.settle()

    def packet_in(self, hv: str, in_port: int, frame: Frame) -> None:
        """Send a frame in; hand what reaches the controller to the fabric."""
        trace = self.data_plane().run((hv, in_port), frame)
        for where, pin in trace.packet_ins:
            self.do(self.fabric.packet_in(where, pin.flow.cookie, pin.table, pin.in_port,
                                          raw(pin.frame), self.step()))
        self.settle()

    # -- what the switches do now
    def data_plane(self) -> tablesim.Fabric:
        return tablesim.Fabric(self.fabric.placed_network,
                               {n: list(t.values()) for n, t in self.tables.items()})

    def ping(self, src: str, dst: str) -> set[tuple[str, int]]:
        """Where an IPv4 frame from VM src to VM dst is delivered."""
        net = self.fabric.placed_network
        s, d = net.vm(src), net.vm(dst)
        return {(hv, port) for hv, port, _ in self.data_plane().send(
            src, Frame.ipv4(s.mac, d.mac, s.ip))}

    def assert_in_sync(self) -> None:
        f = self.fabric
        full = Compiled(f.placed_network, f.learned, f.firewalls_down(f.network),
                        f.bindings.candidates()).desired
        for name, switch in f.switches.items():
            if not switch.given_up:
                assert set(self.tables[name]) == set(full[name]), name
                assert switch.synced, name

    def kinds(self) -> list[str]:
        return [e.kind for e in self.fabric.events]


def test_startup_commits_once_every_hypervisor_is_read():
    lab = Lab()
    lab.connect("hx")
    lab.connect("hy")
    lab.settle()
    assert lab.commits == 0 and all(not t for t in lab.tables.values())
    lab.connect("hz", ports_first=True)
    lab.do(lab.fabric.iface_ids_changed(OVSDB_DEFAULT, {}, lab.step()))
    lab.settle()
    assert lab.commits == 0, "hz's OVSDB has not answered yet"
    lab.do(lab.fabric.iface_ids_changed(OVSDB, {}, lab.step()))
    lab.settle()
    assert lab.commits == 1
    lab.assert_in_sync()
    assert lab.fabric.status()["ready"]


def test_before_any_switch_connects_the_trace_gets_the_entries_they_will_get():
    lab = Lab()
    flows, notes = lab.fabric.committed()
    full = Compiled(lab.fabric.placed_network).desired
    assert {n: set(f.cookie for f in fl) for n, fl in flows.items()} == \
        {n: set(d) for n, d in full.items()} and all(full.values())
    assert all("never synced" in note for note in notes.values())
    # The first commits then hold exactly those.
    lab.connect("hx")
    lab.connect("hy")
    lab.connect("hz", ports_first=True)
    lab.do(lab.fabric.iface_ids_changed(OVSDB_DEFAULT, {}, lab.step()))
    lab.do(lab.fabric.iface_ids_changed(OVSDB, {}, lab.step()))
    lab.settle()
    assert lab.commits == 1
    lab.assert_in_sync()


def test_startup_ends_after_the_grace_without_a_missing_hypervisor():
    lab = Lab()
    lab.connect("hx")
    lab.connect("hy")
    lab.tick(STARTUP_GRACE_SECONDS - 1)
    lab.settle()
    assert lab.commits == 0
    lab.tick(1.5)
    lab.settle()
    assert lab.tables["hx"] and lab.tables["hy"] and not lab.tables["hz"]
    lab.assert_in_sync()
    assert not lab.fabric.status()["ready"]


def test_boot_stop_and_ofport_change():
    lab = Lab()
    lab.start()
    assert lab.ping("anchor", "roamer") == set()
    lab.add_port("hy", 7, "tap-roamer")
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    assert lab.kinds()[-1] == "up"
    # The controller announces the VM out its hypervisor's uplink.
    assert any(f.hypervisor == "hy" and f.port == 1 and not f.through_pipeline
               for f in lab.frames)
    lab.assert_in_sync()
    lab.remove_port("hy", 7)
    assert lab.ping("anchor", "roamer") == set()
    assert lab.kinds()[-1] == "down"
    assert not any(("in_port", 7) in f.match for f in lab.tables["hy"].values())
    lab.add_port("hy", 8, "tap-roamer")        # rebooted onto a new ofport
    assert lab.ping("anchor", "roamer") == {("hy", 8)}
    assert lab.ping("roamer", "anchor") == {("hx", 10)}
    lab.assert_in_sync()


def test_migration_without_overlap():
    lab = Lab()
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    lab.remove_port("hy", 7)
    lab.add_port("hz", 12, "tap-roamer")
    assert lab.ping("anchor", "roamer") == {("hz", 12)}
    assert not lab.tables["hy"].keys() - set(Compiled(
        lab.fabric.placed_network).desired["hy"]), "nothing left of it on hy"
    lab.assert_in_sync()


def test_migration_with_overlap_moves_on_the_vms_first_frame_only():
    lab = Lab()
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    lab.add_port("hz", 12, "tap-roamer")        # the destination comes up first
    assert lab.ping("anchor", "roamer") == {("hy", 7)}, "traffic stays at the source"
    lab.assert_in_sync()
    roamer = lab.net.vm("roamer")
    # A frame from another MAC on the destination port moves nothing.
    lab.packet_in("hz", 12, Frame("02:66:00:00:00:01", tablesim.BROADCAST, ETH_TYPE_RARP))
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    lab.frames.clear()
    lab.packet_in("hz", 12, Frame(roamer.mac, tablesim.BROADCAST, ETH_TYPE_RARP))
    assert lab.ping("anchor", "roamer") == {("hz", 12)}
    assert lab.kinds()[-1] == "moved"
    # The announcing frame is delivered once its entries are committed.
    assert SendFrame("hz", 12, raw(Frame(roamer.mac, tablesim.BROADCAST, ETH_TYPE_RARP)),
                     through_pipeline=True) in lab.frames
    lab.assert_in_sync()
    # The source still sending cannot make it flap back.
    lab.packet_in("hy", 7, Frame(roamer.mac, tablesim.BROADCAST, ETH_TYPE_RARP))
    assert lab.ping("anchor", "roamer") == {("hz", 12)}
    lab.remove_port("hy", 7)
    assert lab.ping("anchor", "roamer") == {("hz", 12)}
    lab.assert_in_sync()


def test_a_second_claim_outside_a_migration_is_a_warning_and_changes_nothing():
    lab = Lab()
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    lab.add_port("hx", 40, "tap-roamer")        # an impostor port, same name
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    claimed = [e for e in lab.fabric.events if e.kind == "claimed"]
    assert claimed and claimed[-1].warning
    lab.assert_in_sync()


def test_an_unknown_port_is_told_once_and_dropped():
    lab = Lab()
    lab.start()
    lab.add_port("hy", 9, "tap-nobody")
    lab.remove_port("hy", 9)
    lab.add_port("hy", 9, "tap-nobody")
    assert lab.kinds().count("unknown-port") == 1
    assert lab.data_plane().send(("hy", 9), Frame.ipv4(
        "02:99:00:00:00:01", lab.net.vm("anchor").mac, "10.31.0.99")) == set()


def test_binding_by_iface_id_waits_for_ovsdb():
    lab = Lab()
    lab.start()
    # OpenFlow reports the tap before OVSDB has said whose it is.
    lab.ports["hz"][20] = "tap7f3c"
    lab.do(lab.fabric.port_changed("hz", PortDesc(20, "tap7f3c"), False, lab.step()))
    lab.settle()
    assert lab.ping("anchor", "tenant") == set()
    assert "unknown-port" not in lab.kinds(), "pending, not unknown"
    lab.ovsdb[OVSDB][HZ_DPID]["tap7f3c"] = "7f3c-tenant"
    lab.tell_ovsdb(OVSDB)
    lab.settle()
    assert lab.ping("anchor", "tenant") == {("hz", 20)}
    lab.assert_in_sync()
    # A guest cannot bind itself: the iface-id is the management plane's.
    lab.add_port("hy", 5, "7f3c-tenant")
    assert lab.ping("anchor", "tenant") == {("hz", 20)}


def test_learning_a_host_then_its_expiry():
    lab = Lab()
    lab.start()
    host = "02:77:00:00:00:01"
    lab.frames.clear()
    lab.packet_in("hx", 30, Frame.ipv4(host, lab.net.vm("anchor").mac, "10.31.0.77"))
    assert [h.mac for h in lab.fabric.learned] == [host]
    assert any(f.through_pipeline and f.port == 30 for f in lab.frames), "held frame"
    anchor = lab.net.vm("anchor")
    assert ("hx", 30) in {(hv, p) for hv, p, _ in lab.data_plane().send(
        "anchor", Frame.ipv4(anchor.mac, host, anchor.ip))}
    lab.assert_in_sync()
    # A declared VM's MAC on the learning port is refused and counted.
    lab.packet_in("hx", 30, Frame.ipv4(anchor.mac, host, anchor.ip))
    assert lab.fabric.refused_learns == {"declared-vm-mac": 1}
    learned = next(c for c, f in lab.tables["hx"].items()
                   if cookie_kind(c) == KIND_LEARNED and ("eth_src", host) in f.match)
    del lab.tables["hx"][learned]              # the switch expired it
    lab.do(lab.fabric.flow_removed("hx", learned, {"eth_src": host, "in_port": 30}))
    lab.settle()
    assert not lab.fabric.learned
    lab.assert_in_sync()


def test_restart_adopts_what_the_switches_hold_and_changes_nothing():
    lab = Lab()
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    lab.packet_in("hx", 30, Frame.ipv4("02:77:00:00:00:01", lab.net.vm("anchor").mac,
                                       "10.31.0.77"))
    before = {n: dict(t) for n, t in lab.tables.items()}
    again = Lab(tables=before)
    again.ports["hy"][7] = "tap-roamer"
    again.start()
    assert again.commits == 0, "a restart with the same intent changes nothing"
    assert [h.mac for h in again.fabric.learned] == ["02:77:00:00:00:01"]
    assert again.tables == before
    again.assert_in_sync()


def test_a_refused_sync_is_read_again_and_committed_everywhere():
    lab = Lab()
    lab.start()
    lab.refuse["hx"] = 1
    lab.add_port("hy", 7, "tap-roamer")
    # hy commits its part at once (a sync is one phase per switch); hx is
    # read again and retried.
    assert lab.refused == 1
    assert lab.ping("anchor", "roamer") == {("hy", 7)}
    assert lab.ping("roamer", "anchor") == {("hx", 10)}
    lab.assert_in_sync()


def test_a_switch_that_keeps_refusing_is_given_up_and_holds_back_no_other():
    lab = Lab()
    lab.start()
    lab.refuse["hx"] = 1000
    lab.add_port("hy", 7, "tap-roamer")
    assert lab.fabric.switches["hx"].given_up
    assert lab.refused == MAX_RESYNCS + 1        # the first, then one per re-read
    assert lab.tables["hy"].keys() == set(Compiled(lab.fabric.placed_network).desired["hy"])
    assert not lab.fabric.status()["datapaths"]["hx"]["synced"]
    lab.add_port("hz", 9, "tap-other")             # later changes reach the others
    full = Compiled(lab.fabric.placed_network).desired
    assert all(set(lab.tables[n]) == set(full[n]) for n in ("hy", "hz"))
    assert set(lab.tables["hx"]) != set(full["hx"])
    # Once it reconnects, it is read and committed to again.
    lab.refuse.clear()
    lab.connect("hx")
    lab.settle()
    lab.assert_in_sync()
    assert lab.ping("anchor", "roamer") == {("hy", 7)}


def test_a_change_of_network_refused_by_one_switch_changes_nothing():
    lab = Lab()
    lab.start()
    before = {n: dict(t) for n, t in lab.tables.items()}
    steered = model.parse(STEERED, "fabric.yaml")
    lab.refuse["hy"] = 1
    result = lab.commit(steered)
    lab.settle()
    assert not result["ok"] and result["failed"] == {"hy": "refused"}
    assert lab.fabric.network == lab.net
    assert lab.tables == before
    lab.assert_in_sync()


def test_a_change_of_network_that_fails_half_way_is_put_back():
    lab = Lab()
    lab.start()
    before = {n: dict(t) for n, t in lab.tables.items()}
    lab.lose.add("hy")
    result = lab.commit(model.parse(STEERED, "fabric.yaml"))
    assert not result["ok"]
    assert lab.tables["hx"] != before["hx"], "hx had committed"
    lab.lose.clear()
    lab.settle()               # hy is read again; the others are put back
    assert lab.fabric.network == lab.net
    assert lab.tables == before
    lab.assert_in_sync()


def test_a_change_of_network_with_run_time_inventory():
    lab = Lab()
    lab.start()
    grown = model.parse(NETWORK.replace("mirror:", (
        "  extra: {interface: tap-extra, segment: south, mac: \"02:32:00:00:00:09\", "
        "ip: 10.32.0.9}\nmirror:")), "fabric.yaml")
    result = lab.commit(grown, {"extra": {"interface": "tap-extra"}})
    assert result["ok"] and result["applied_to"] == ["hx", "hy", "hz"]
    assert lab.fabric.inventory == {"extra": {"interface": "tap-extra"}}
    lab.add_port("hz", 15, "tap-extra")
    lab.add_port("hz", 16, "tap-other")
    assert lab.ping("other", "extra") == {("hz", 15)}
    lab.assert_in_sync()


@pytest.mark.parametrize("fail", ["closed", "open"])
def test_an_unmeasured_or_silent_firewall_fails_steered_traffic_as_the_file_says(fail):
    lab = Lab(STEERED.replace("fail: closed", f"fail: {fail}"))
    lab.start()
    lab.add_port("hy", 7, "tap-roamer")
    lab.add_port("hx", 41, "tap-other")
    hx = lab.net.hypervisor("hx")
    failed = {("hx", 10)} if fail == "open" else set()
    # No probe has come back yet: unknown, and steered traffic fails.
    assert lab.fabric.firewall_state(hx) == "unknown" and not lab.fabric.status()["ready"]
    assert lab.ping("other", "anchor") == failed
    lab.tick()
    assert {f.hypervisor for f in lab.frames if f.port == lab.net.hypervisor(
        f.hypervisor).firewall_port} == {"hx", "hy", "hz"}, "a probe out of every firewall"
    probe = Frame(PROBE_MAC, PROBE_MAC, ETH_TYPE_PROBE, vlans=(310,))
    for hv in ("hx", "hy", "hz"):           # each firewall bridges its probe back
        lab.packet_in(hv, lab.net.hypervisor(hv).firewall_port, probe)
    # Up as soon as its probe is back, not at the next tick (nor "down" meanwhile).
    assert lab.fabric.firewall_state(hx) == "up" and lab.fabric.status()["ready"]
    assert lab.ping("other", "anchor") == {("hx", 3)}, "steered through the firewall"
    lab.assert_in_sync()
    for _ in range(4):                      # then no probe comes back
        lab.tick(1.0)
        lab.settle()
    assert lab.fabric.firewall_state(hx) == "down"
    assert lab.ping("other", "anchor") == failed
    lab.assert_in_sync()
    lab.packet_in("hx", 3, probe)           # back: steering resumes at once
    assert lab.fabric.firewall_state(hx) == "up"
    assert lab.ping("other", "anchor") == {("hx", 3)}
    lab.assert_in_sync()


def test_a_policy_that_does_not_steer_is_not_recompiled_by_firewall_health():
    lab = Lab()
    lab.start()
    commits = lab.commits
    for _ in range(5):                      # hx's firewall never answers
        lab.tick(1.0)
        lab.settle()
    assert lab.commits == commits
    assert lab.fabric.firewall_state(lab.net.hypervisor("hx")) == "unused"


# Any sequence of events: the switches always end holding what a full
# compile says (so the incremental diff, touched entries only, never drifts).
EVENTS = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(["hx", "hy", "hz"]), st.integers(40, 42),
              st.sampled_from(["tap-roamer", "tap-other", "tap-nobody"])),
    st.tuples(st.just("remove"), st.sampled_from(["hx", "hy", "hz"]), st.integers(40, 42)),
    st.tuples(st.just("learn"), st.sampled_from(["02:77:00:00:00:01", "02:77:00:00:00:02",
                                                 "02:77:00:00:00:03"])),
    st.tuples(st.just("expire"), st.integers(0, 2)),
    st.tuples(st.just("refuse"), st.sampled_from(["hx", "hy", "hz"])),
    st.tuples(st.just("reconnect"), st.sampled_from(["hx", "hy", "hz"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=12))
def test_any_sequence_of_events_ends_in_sync(events):
    lab = Lab()
    lab.start()
    for event in events:
        kind = event[0]
        if kind == "add" and event[2] not in lab.ports[event[1]]:
            lab.add_port(event[1], event[2], event[3])
        elif kind == "remove" and event[2] in lab.ports[event[1]]:
            lab.remove_port(event[1], event[2])
        elif kind == "learn":
            lab.packet_in("hx", 30, Frame.ipv4(event[1], lab.net.vm("anchor").mac,
                                               "10.31.0.77"))
        elif kind == "expire" and lab.fabric.learned:
            host = sorted(lab.fabric.learned, key=lambda h: h.mac)[
                event[1] % len(lab.fabric.learned)]
            cookie = next(c for c, f in lab.tables["hx"].items()
                          if cookie_kind(c) == KIND_LEARNED and ("eth_src", host.mac) in f.match)
            del lab.tables["hx"][cookie]
            lab.do(lab.fabric.flow_removed("hx", cookie, {"eth_src": host.mac, "in_port": 30}))
            lab.settle()
        elif kind == "refuse":
            lab.refuse[event[1]] = 1
        elif kind == "reconnect":
            lab.do(lab.fabric.disconnected(event[1]))
            lab.connect(event[1])
            lab.settle()
    lab.refuse.clear()
    lab.add_port("hy", 50, "tap-last")          # one more event, all switches willing
    lab.assert_in_sync()


def test_a_second_connection_or_one_from_elsewhere_is_refused_and_counted():
    lab = Lab(NETWORK.replace("hy: {dpid: 0x32, uplink_port: 1}",
                              "hy: {dpid: 0x32, uplink_port: 1, connect_from: [192.0.2.0/24]}"))
    f = lab.fabric
    assert f.connection_refused("hx", "127.0.0.1", already_connected=False) is None
    assert "connected already" in f.connection_refused("hx", "127.0.0.1",
                                                       already_connected=True)
    assert f.connection_refused("hy", "192.0.2.9", already_connected=False) is None
    assert "not from 192.0.2.0/24" in f.connection_refused("hy", "198.51.100.1",
                                                           already_connected=False)
    assert f.status()["refused_connections"] == {"hx": 1, "hy": 1}


def test_a_change_for_an_offline_hypervisor_is_pending_there():
    lab = Lab()
    lab.start()
    lab.do(lab.fabric.disconnected("hy"))
    steered = model.parse(STEERED, "fabric.yaml")
    result = lab.commit(steered)
    assert result["ok"] and result["pending"] == ["hy"] and result["offline"] == ["hy"]
    lab.connect("hy")
    lab.settle()
    lab.assert_in_sync()
    # Back in line: a change of nothing in particular is pending nowhere.
    assert lab.commit(steered.with_policy(steered.policy))["pending"] == []


def flood_frame(i: int) -> bytes:
    return raw(Frame.ipv4(f"02:99:00:00:{i // 256:02x}:{i % 256:02x}",
                          "02:31:00:00:00:01", "10.31.0.99"))


def test_a_mac_flood_is_banned_and_holds_no_slot_of_its_port():
    lab = Lab()
    lab.start()
    learning_cookie = lab.learning_cookie()
    # Packet-ins that reach the controller before the port's full-drop entry
    # is committed: all in the same second.
    for i in range(lab.net.options.learn_ban_rate + 1):
        lab.do(lab.fabric.packet_in("hx", learning_cookie, 0, 30, flood_frame(i), lab.step()))
    lab.settle()
    status = lab.fabric.status()
    assert status["bans"] == 1 and [(b["hypervisor"], b["port"]) for b in
                                    status["learn_bans"]] == [("hx", 30)]
    assert not lab.fabric.learned, "what the flood learned is forgotten"
    lab.assert_in_sync()
    # Banned: nothing more is learned from the port...
    lab.do(lab.fabric.packet_in("hx", learning_cookie, 0, 30, flood_frame(500), lab.step()))
    assert not lab.fabric.learned and lab.fabric.status()["banned_learns"] == 1
    # ...until the ban is over: then a genuine host gets a free slot.
    lab.now += lab.net.options.learn_ban_seconds
    lab.packet_in("hx", 30, Frame.ipv4("02:77:00:00:00:01", lab.net.vm("anchor").mac,
                                       "10.31.0.77"))
    assert [h.mac for h in lab.fabric.learned] == ["02:77:00:00:00:01"]
    lab.assert_in_sync()


def test_a_port_learning_at_a_sane_pace_is_never_banned():
    lab = Lab()
    lab.start()
    learning_cookie = lab.learning_cookie()
    for i in range(3 * lab.net.options.learn_ban_rate):
        lab.now += 0.2                 # five a second: under the ban rate
        lab.do(lab.fabric.packet_in("hx", learning_cookie, 0, 30, flood_frame(i), lab.now))
    assert lab.fabric.status()["bans"] == 0
    assert len(lab.fabric.learned) == 2      # max_hosts: the rest refused, port-full


def test_refusals_are_logged_once_per_port_and_reason_per_interval(caplog):
    lab = Lab()
    lab.start()
    learning_cookie = lab.learning_cookie()
    anchor = raw(Frame.ipv4(lab.net.vm("anchor").mac, "02:31:00:00:00:02", "10.31.0.1"))
    with caplog.at_level(logging.WARNING, logger="test_fabric"):
        for _ in range(5):
            lab.now += 0.5
            lab.do(lab.fabric.packet_in("hx", learning_cookie, 0, 30, anchor, lab.now))
        lines = [r.getMessage() for r in caplog.records if "not learning" in r.getMessage()]
        assert len(lines) == 1 and "declared-vm-mac" in lines[0]
        lab.now += 10
        lab.do(lab.fabric.packet_in("hx", learning_cookie, 0, 30, anchor, lab.now))
        lines = [r.getMessage() for r in caplog.records if "not learning" in r.getMessage()]
        assert len(lines) == 2 and "4 more refused" in lines[1]
    assert lab.fabric.refused_learns == {"declared-vm-mac": 6}


def test_mirror_copies_back_on_an_uplink_are_counted_and_explained_once(caplog):
    lab = Lab()
    lab.start()
    back = next(c for c, f in lab.tables["hy"].items() if f.reason == "mirror-copy-returned")

    def counters(packets):
        entries = [FlowEntry(c, f.table, dict(f.match), packets if c == back else 0)
                   for c, f in lab.tables["hy"].items()]
        lab.do(lab.fabric.flows_read("hy", entries, False, lab.step()))

    caplog.set_level(logging.WARNING, logger="test_fabric")
    counters(0)
    assert lab.fabric.status()["mirror_copies_returned"] == {}
    counters(5)
    counters(12)
    assert lab.fabric.status()["mirror_copies_returned"] == {"hy": 12}
    lines = [r.getMessage() for r in caplog.records if "came back" in r.getMessage()]
    assert len(lines) == 1 and "hy: 5 mirror copies" in lines[0] and "VLAN 390" in lines[0]
    lab.now += 301
    counters(13)
    assert len([r for r in caplog.records if "came back" in r.getMessage()]) == 2


def test_a_missing_mirror_tunnel_port_is_reported_as_losing_copies(caplog):
    text = NETWORK.replace("mirror: {vlan: 390}", "mirror: {erspan: {remote_ip: 198.18.7.10, "
                                                  "port: 90}}")
    lab = Lab(text)
    caplog.set_level(logging.WARNING, logger="test_fabric")
    lab.start()
    assert lab.net.hypervisor("hy").mirror_port == 90
    assert "hy: mirror tunnel port 90 is missing on the bridge: mirrored copies are lost " \
           "until it is back" in caplog.text
    assert not any(f.reason == "mirror-copy-returned" for f in lab.tables["hy"].values())
