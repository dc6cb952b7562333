"""An OpenFlow 1.3 load generator and a trivial controller, in pure asyncio
(no Ryu), in the spirit of cbench.

    python -m bench.ofload responder --port 6653
    python -m bench.ofload generate --port 6653 --switches 4 --mode latency --seconds 5

The generator emulates N switches. Each does the handshake a controller
expects (HELLO, FEATURES_REPLY with its own dpid, port-desc with its ports
up, empty stats (flows too, unless report_flows), BARRIER, ECHO, ROLE and
bundle replies), keeps a flow table from the FLOW_MODs it is sent, and then
sends PACKET_INs: an Ethernet/IPv4/UDP frame from a fresh source MAC (never
used before, so every controller has something to learn) on one of its
ports.

A packet-in is answered when the controller sends, on that switch's
connection, a PACKET_OUT whose frame has that source MAC, or a FLOW_MOD
matching that MAC as eth_src or eth_dst (a FLOW_MOD inside an ONF bundle
counts when the bundle is committed, when it would take effect).

Bundles and barriers behave as Open vSwitch's (ofproto/bundles.c): a bundle
control request gets its reply type (flags 0) or, on misuse, the ONF
experimenter error OVS sends (unknown id, already open, closed, other
flags; the bundle is dropped as OVS drops it); an add must carry the outer
xid; the flow-mods take effect in the table at commit. Everything is handled
in arrival order, so a barrier reply follows the work before it. With
report_flows, flow stats requests are answered from the table (split into
64 KiB replies), so a controller that polls pays for parsing its flows as
it would with OVS.

  latency mode:    one packet-in outstanding per switch; the time to its answer.
  throughput mode: up to WINDOW outstanding per switch, refilled as answers
                   come; answers per second. One unanswered after LOST_AFTER
                   seconds is counted lost and frees its slot.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from .common import percentile

VERSION = 4
HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY, EXPERIMENTER = 0, 1, 2, 3, 4
FEATURES_REQUEST, FEATURES_REPLY, GET_CONFIG_REQUEST, GET_CONFIG_REPLY = 5, 6, 7, 8
PACKET_IN, PORT_STATUS, PACKET_OUT, FLOW_MOD = 10, 12, 13, 14
PPR_ADD, PPR_DELETE = 0, 1
MULTIPART_REQUEST, MULTIPART_REPLY, BARRIER_REQUEST, BARRIER_REPLY = 18, 19, 20, 21
ROLE_REQUEST, ROLE_REPLY, GET_ASYNC_REQUEST, GET_ASYNC_REPLY = 24, 25, 26, 27
MP_DESC, MP_AGGREGATE, MP_GROUP_FEATURES, MP_METER_FEATURES, MP_PORT_DESC = 0, 2, 8, 11, 13
MP_FLOW, MPF_REPLY_MORE = 1, 1
ONF, BUNDLE_CONTROL, BUNDLE_ADD = 0x4F4E4600, 2300, 2301
BUNDLE_OPEN, BUNDLE_CLOSE, BUNDLE_COMMIT, BUNDLE_DISCARD = 0, 2, 4, 6
# ONF experimenter error codes (OpenFlow 1.3 bundle extension), as OVS sends them.
OFPET_EXPERIMENTER = 0xFFFF
ONFERR_BAD_ID, ONFERR_BUNDLE_CLOSED, ONFERR_BAD_TYPE, ONFERR_BAD_FLAGS = 2302, 2304, 2306, 2307
ONFERR_MSG_BAD_XID = 2309
FC_ADD, FC_DELETE, FC_DELETE_STRICT = 0, 3, 4
OFPTT_ALL = 0xFF
MAX_MESSAGE = 0xFFFF
OFPR_NO_MATCH, OFPR_ACTION = 0, 1
NO_BUFFER, OFPP_FLOOD, OFPP_ANY = 0xFFFFFFFF, 0xFFFFFFFB, 0xFFFFFFFF
OXM_OF_IN_PORT = 0x80000004
OXM_ETH_FIELDS = (3, 4)            # eth_dst, eth_src in class 0x8000 (OpenFlow basic)

WINDOW = 32           # throughput mode: packet-ins outstanding per switch
LOST_AFTER = 3.0      # seconds without an answer: counted lost
QUIET_SECONDS = 1.0   # warm-up ends when the controller has been this quiet


def message(kind: int, body: bytes = b"", xid: int = 0) -> bytes:
    return struct.pack("!BBHI", VERSION, kind, 8 + len(body), xid) + body


async def read_message(reader) -> tuple[int, int, bytes]:
    _version, kind, length, xid = struct.unpack("!BBHI", await reader.readexactly(8))
    return kind, xid, await reader.readexactly(length - 8)


# ------------------------------------------------------------ frames

def frame(src: bytes, dst: bytes, n: int, vlan: int | None = None) -> bytes:
    """A 64-byte Ethernet/IPv4/UDP frame (802.1Q-tagged if vlan is given)."""
    ip_src, ip_dst = struct.pack("!I", 0x0A000000 | (n & 0xFFFFFF)), bytes((10, 0, 0, 1))
    udp = struct.pack("!HHHH", 40000, 9, 8 + 18, 0) + bytes(18)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                         ip_src, ip_dst)
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF) \
        + header[12:]
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", 0x0800) + header + udp


def in_port_match(port: int) -> bytes:
    return struct.pack("!HHII4x", 1, 12, OXM_OF_IN_PORT, port)     # padded to 16


def match_in_port(body: bytes, offset: int) -> tuple[int | None, int]:
    """(in_port, bytes the match takes) for the ofp_match at offset."""
    _type, length = struct.unpack_from("!HH", body, offset)
    port, pos = None, offset + 4
    while pos + 4 <= offset + length:
        header = struct.unpack_from("!I", body, pos)[0]
        if header == OXM_OF_IN_PORT:
            port = struct.unpack_from("!I", body, pos + 4)[0]
        pos += 4 + (header & 0xFF)
    return port, (length + 7) // 8 * 8


def macs_in_match(body: bytes, offset: int) -> set[bytes]:
    """eth_src / eth_dst values in the ofp_match at offset."""
    _type, length = struct.unpack_from("!HH", body, offset)
    macs, pos = set(), offset + 4
    while pos + 4 <= offset + length:
        header = struct.unpack_from("!I", body, pos)[0]
        if header >> 16 == 0x8000 and (header >> 9) & 0x7F in OXM_ETH_FIELDS:
            macs.add(body[pos + 4:pos + 10])
        pos += 4 + (header & 0xFF)
    return macs


def answered_macs(kind: int, body: bytes) -> set[bytes]:
    """Source MACs a PACKET_OUT or FLOW_MOD answers."""
    if kind == PACKET_OUT:
        actions_len = struct.unpack_from("!H", body, 8)[0]
        data = body[16 + actions_len:]
        return {data[6:12]} if len(data) >= 12 else set()
    if kind == FLOW_MOD and len(body) >= 44:
        return macs_in_match(body, 40)
    return set()


# ------------------------------------------------------------ the emulated switch

@dataclass
class Shape:
    """What a real switch running this controller's pipeline would send:
    the packet-in's cookie and reason, and a VLAN tag by port (Faucet's
    pipeline tags a native-VLAN frame before it reaches the controller)."""
    cookies: dict = field(default_factory=dict)    # port -> cookie (default 0)
    vlans: dict = field(default_factory=dict)      # port -> VID to tag with
    reason: int = OFPR_ACTION
    table_id: int = 0


@dataclass
class Bundle:
    flags: int
    closed: bool = False
    messages: list = field(default_factory=list)      # (message type, body)


class Switch:
    def __init__(self, index: int, dpid: int, ports: list[int], pi_ports: list[int],
                 shape: Shape):
        self.index, self.dpid, self.ports, self.pi_ports = index, dpid, ports, pi_ports
        self.shape = shape
        self.reader = self.writer = None
        self.pending: dict[bytes, float] = {}        # source MAC -> time sent
        self.latencies: list[float] = []
        self.answered = self.sent = self.lost = 0
        self.received = Counter()                    # message kind -> count
        self.last_activity = time.monotonic()
        self.bundles: dict[int, Bundle] = {}
        # (table, priority, match bytes) -> (cookie, flow-mod body: for flow stats)
        self.flows: dict[tuple, tuple[int, bytes]] = {}
        self.by_cookie: dict[int, set] = {}          # cookie -> keys of self.flows
        self.report_flows = False
        self.flow_mods = 0                           # applied, bundled or not
        self.bundled = self.commits = 0              # bundle adds accepted, commits done
        self.last_commit_at = 0.0
        self.names: dict[int, str] = {}              # port -> name (default p<port>)
        self.features_done = asyncio.Event()
        self.answer = asyncio.Event()
        self._n = 0
        self._last_src = b"\x02\xff\xff\xff\xff\xfe"

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(message(HELLO))

    def send(self, kind: int, body: bytes = b"", xid: int = 0) -> None:
        self.writer.write(message(kind, body, xid))

    # -- packet-ins
    def next_mac(self) -> bytes:
        # An odd multiplier is a bijection on 32 bits: unique, random-looking.
        self._n += 1
        return bytes((0x02, 0x40 + (self.index & 0x3F))) + \
            struct.pack("!I", (self._n * 2654435761) & 0xFFFFFFFF)

    def send_packet_in(self) -> bytes:
        src = self.next_mac()
        port = self.pi_ports[self._n % len(self.pi_ports)]
        data = frame(src, self._last_src, self._n, self.shape.vlans.get(port))
        self._last_src = src
        body = struct.pack("!IHBBQ", NO_BUFFER, len(data), self.shape.reason,
                           self.shape.table_id, self.shape.cookies.get(port, 0)) \
            + in_port_match(port) + b"\0\0" + data
        self.pending[src] = time.monotonic()
        self.sent += 1
        self.send(PACKET_IN, body)
        return src

    def _answered(self, macs) -> None:
        now = time.monotonic()
        for mac in macs:
            sent = self.pending.pop(mac, None)
            if sent is not None:
                self.latencies.append(now - sent)
                self.answered += 1
                self.answer.set()

    def expire(self, older_than: float) -> None:
        cutoff = time.monotonic() - older_than
        for mac in [m for m, t in self.pending.items() if t < cutoff]:
            del self.pending[mac]
            self.lost += 1

    # -- what the controller sends
    async def serve(self) -> None:
        try:
            while True:
                kind, xid, body = await read_message(self.reader)
                self.received[kind] += 1
                if kind != ECHO_REQUEST:
                    self.last_activity = time.monotonic()
                self.handle(kind, xid, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def handle(self, kind: int, xid: int, body: bytes) -> None:
        if kind == ECHO_REQUEST:
            self.send(ECHO_REPLY, body, xid)
        elif kind == FEATURES_REQUEST:
            # dpid, n_buffers, n_tables, auxiliary_id, capabilities, reserved
            self.send(FEATURES_REPLY, struct.pack("!QIBB2xII", self.dpid, 0, 254, 0,
                                                  0x4F, 0), xid)
            self.features_done.set()
        elif kind == GET_CONFIG_REQUEST:
            self.send(GET_CONFIG_REPLY, struct.pack("!HH", 0, 0xFFFF), xid)
        elif kind == BARRIER_REQUEST:
            self.send(BARRIER_REPLY, b"", xid)
        elif kind == ROLE_REQUEST:
            self.send(ROLE_REPLY, body, xid)
        elif kind == GET_ASYNC_REQUEST:
            self.send(GET_ASYNC_REPLY, bytes(24), xid)
        elif kind == MULTIPART_REQUEST:
            mp_type = struct.unpack_from("!H", body)[0]
            if mp_type == MP_FLOW and self.report_flows:
                self.flow_stats(xid, body)
                return
            self.send(MULTIPART_REPLY, struct.pack("!HH4x", mp_type, 0)
                      + self.multipart_body(mp_type), xid)
        elif kind == PACKET_OUT:
            self._answered(answered_macs(kind, body))
        elif kind == FLOW_MOD:
            self.apply_flow_mod(body)
        elif kind == EXPERIMENTER and len(body) >= 12:
            self.experimenter(xid, body)

    def _port_desc(self, p: int) -> bytes:
        return struct.pack("!I4x6s2x16sIIIIIIII", p,
                           bytes((2, 0, 0, self.index & 0xFF, 0, p & 0xFF)),
                           self.names.get(p, f"p{p}").encode(), 0, 4, 0x840, 0, 0, 0,
                           10_000_000, 10_000_000)

    def port_status(self, reason: int, port: int, name: str) -> None:
        """A port comes (PPR_ADD) or goes (PPR_DELETE), as a hypervisor's
        bridge reports a VM's tap. Call on the event loop."""
        if reason == PPR_ADD:
            self.names[port] = name
            self.ports = sorted(set(self.ports) | {port})
        desc = self._port_desc(port)
        if reason == PPR_DELETE:
            self.ports = [p for p in self.ports if p != port]
            self.names.pop(port, None)
        self.send(PORT_STATUS, struct.pack("!B7x", reason) + desc)

    def multipart_body(self, mp_type: int) -> bytes:
        if mp_type == MP_PORT_DESC:
            return b"".join(self._port_desc(p) for p in self.ports)
        if mp_type == MP_DESC:
            return struct.pack("!256s256s256s32s256s", b"bench", b"ofload", b"1",
                               b"0", b"emulated switch")
        if mp_type == MP_METER_FEATURES:
            return struct.pack("!IIIBB2x", 64, 1 << 1, 0xF, 1, 0)
        if mp_type == MP_GROUP_FEATURES:
            return bytes(40)
        if mp_type == MP_AGGREGATE:
            return bytes(24)
        return b""             # flows, tables, ports...: none

    # -- the flow table
    def apply_flow_mod(self, body: bytes) -> None:
        """ADD replaces an entry of the same table, priority and match;
        DELETE removes by cookie/mask and table, with an empty match (all)
        or, a simplification, exactly this match. No other command is used
        by the controllers measured here."""
        cookie, mask, table, command, _idle, _hard, priority = \
            struct.unpack_from("!QQBBHHH", body)
        match_len = (struct.unpack_from("!H", body, 42)[0] + 7) // 8 * 8
        match = body[40:40 + match_len]
        self.flow_mods += 1
        self._answered(macs_in_match(body, 40))       # the packet-ins it answers
        if command == FC_ADD:
            key = (table, priority, match)
            if key in self.flows:
                self.by_cookie[self.flows[key][0]].discard(key)
            self.flows[key] = (cookie, body)
            self.by_cookie.setdefault(cookie, set()).add(key)
        elif command in (FC_DELETE, FC_DELETE_STRICT):
            any_match = command == FC_DELETE and match_len == 8     # no OXM fields
            # An exact cookie looks up its entries, as OVS's cookie index does;
            # any other mask scans the table.
            keys = list(self.by_cookie.get(cookie, ())) if mask == 0xFFFFFFFFFFFFFFFF \
                else list(self.flows)
            for key in keys:
                c = self.flows[key][0]
                if (c & mask == cookie & mask and table in (OFPTT_ALL, key[0])
                        and (any_match or key[2] == match)
                        and (command == FC_DELETE or key[1] == priority)):
                    del self.flows[key]
                    self.by_cookie[c].discard(key)

    def flow_stats(self, xid: int, request: bytes) -> None:
        """The table's entries whose cookie matches the request's cookie/mask
        (table, port and match filters: the controllers here ask for all)."""
        cookie, mask = struct.unpack_from("!QQ", request, 32)
        entries = []
        for (table, priority, match), (c, fm) in self.flows.items():
            if c & mask != cookie & mask:
                continue
            _c, _m, _t, _cmd, idle, hard, _p, _b, _op, _og, flags = \
                struct.unpack_from("!QQBBHHHIIIH", fm)
            tail = fm[40 + len(match):]                      # instructions
            entries.append(struct.pack("!HBxIIHHHH4xQQQ", 48 + len(match) + len(tail),
                                       table, 0, 0, priority, idle, hard, flags, c, 0, 0)
                           + match + tail)
        replies, chunk, size = [], [], 16                   # 16: the two headers
        for e in entries:
            if chunk and size + len(e) > MAX_MESSAGE:
                replies.append(chunk)
                chunk, size = [], 16
            chunk.append(e)
            size += len(e)
        replies.append(chunk)
        for i, chunk in enumerate(replies):
            more = MPF_REPLY_MORE if i < len(replies) - 1 else 0
            self.send(MULTIPART_REPLY, struct.pack("!HH4x", MP_FLOW, more) + b"".join(chunk),
                      xid)

    # -- ONF bundles (OpenFlow 1.3 extension), as OVS does them
    def error(self, xid: int, code: int, body: bytes) -> None:
        # ofp_error_experimenter_msg; data: the start of the failed request.
        request = message(EXPERIMENTER, body, xid)[:64]
        self.send(ERROR, struct.pack("!HHI", OFPET_EXPERIMENTER, code, ONF) + request, xid)

    def experimenter(self, xid: int, body: bytes) -> None:
        vendor, exp_type = struct.unpack_from("!II", body)
        if vendor != ONF:
            return
        if exp_type == BUNDLE_CONTROL:
            bundle_id, ctrl, flags = struct.unpack_from("!IHH", body, 8)
            code = self.bundle_control(bundle_id, ctrl, flags)
            if code:
                self.error(xid, code, body)
            else:   # OPEN -> OPEN_REPLY, CLOSE -> CLOSE_REPLY, ... (type + 1), flags 0
                self.send(EXPERIMENTER, struct.pack("!IIIHH", ONF, BUNDLE_CONTROL,
                                                    bundle_id, ctrl + 1, 0), xid)
        elif exp_type == BUNDLE_ADD:
            bundle_id, flags = struct.unpack_from("!I2xH", body, 8)
            inner = body[16:]
            _v, kind, length, inner_xid = struct.unpack_from("!BBHI", inner)
            bundle = self.bundles.get(bundle_id)
            code = (ONFERR_MSG_BAD_XID if inner_xid != xid else
                    None if bundle is None else
                    ONFERR_BUNDLE_CLOSED if bundle.closed else
                    ONFERR_BAD_FLAGS if bundle.flags != flags else None)
            if code:
                if code != ONFERR_MSG_BAD_XID:
                    self.bundles.pop(bundle_id, None)
                self.error(xid, code, body)
                return
            # An add to an unknown id opens it, as in OVS.
            bundle = self.bundles.setdefault(bundle_id, Bundle(flags))
            bundle.messages.append((kind, inner[8:length]))
            self.bundled += 1

    def bundle_control(self, bundle_id: int, ctrl: int, flags: int) -> int | None:
        """Apply one bundle control request; the error code, or None."""
        bundle = self.bundles.get(bundle_id)
        if ctrl not in (BUNDLE_OPEN, BUNDLE_CLOSE, BUNDLE_COMMIT, BUNDLE_DISCARD):
            return ONFERR_BAD_TYPE            # e.g. a reply type sent to the switch
        if ctrl == BUNDLE_OPEN:
            if bundle is not None:
                del self.bundles[bundle_id]
                return ONFERR_BAD_ID
            self.bundles[bundle_id] = Bundle(flags)
            return None
        if bundle is None:
            return ONFERR_BAD_ID
        if ctrl == BUNDLE_CLOSE:
            code = ONFERR_BUNDLE_CLOSED if bundle.closed else \
                ONFERR_BAD_FLAGS if bundle.flags != flags else None
            if code:
                del self.bundles[bundle_id]
            else:
                bundle.closed = True
            return code
        del self.bundles[bundle_id]
        if ctrl == BUNDLE_COMMIT:
            if bundle.flags != flags:
                return ONFERR_BAD_FLAGS
            for kind, inner in bundle.messages:
                if kind == FLOW_MOD:
                    self.apply_flow_mod(inner)
                elif kind == PACKET_OUT:
                    self._answered(answered_macs(kind, inner))
            self.commits += 1
            self.last_commit_at = time.monotonic()
        return None       # DISCARD: dropped


# ------------------------------------------------------------ a run

def _stats(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"n": len(ms), **{f"p{p}": (percentile(ms, p) if ms else None)
                             for p in (50, 95, 99)},
            "max": max(ms) if ms else None}


async def _latency(sw: Switch, deadline: float) -> None:
    while time.monotonic() < deadline:
        sw.answer.clear()
        sw.send_packet_in()
        try:
            await asyncio.wait_for(sw.answer.wait(), LOST_AFTER)
        except asyncio.TimeoutError:
            sw.expire(0)


async def _throughput(sw: Switch, deadline: float) -> None:
    while time.monotonic() < deadline:
        if len(sw.pending) < WINDOW:
            sw.send_packet_in()
            await sw.writer.drain()
            if sw.sent % 16 == 0:
                await asyncio.sleep(0)       # let the readers run
        else:
            sw.expire(LOST_AFTER)
            sw.answer.clear()
            try:
                await asyncio.wait_for(sw.answer.wait(), 0.01)
            except asyncio.TimeoutError:
                pass


async def _quiet(switches, seconds: float, limit: float) -> float:
    """Wait until no switch heard anything but echoes for `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if time.monotonic() - max(s.last_activity for s in switches) >= seconds:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def run(host: str, port: int, dpids: list[int], ports: list[int],
              pi_ports: list[int], shapes: dict | Shape, phases: list[tuple[str, float]],
              ready=None, connect_timeout: float = 30.0, report_flows: bool = False,
              names: dict | None = None) -> dict:
    """Connect the switches, wait for the controller to settle (and for
    `ready()` if given), then run the phases [(mode, seconds), ...] in turn
    (mode latency, throughput, or hold with a function instead of seconds:
    it is called with the switches and the event loop, to act on them with
    loop.call_soon_threadsafe). names: dpid -> {port: name}.
    shapes: a Shape for all, or dpid -> Shape. report_flows: answer flow
    stats requests from the switches' tables (else: no flows)."""
    switches = [Switch(i, dpid, ports, pi_ports,
                       shapes if isinstance(shapes, Shape) else shapes[dpid])
                for i, dpid in enumerate(dpids)]
    for sw in switches:
        sw.report_flows = report_flows
        sw.names = dict((names or {}).get(sw.dpid, {}))
    t0 = time.monotonic()
    for sw in switches:
        await sw.connect(host, port)
    readers = [asyncio.create_task(sw.serve()) for sw in switches]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.features_done.wait() for s in switches)),
                               connect_timeout)
        settle = await _quiet(switches, QUIET_SECONDS, connect_timeout)
        if ready is not None:
            deadline = time.monotonic() + connect_timeout
            while not await asyncio.to_thread(ready):
                if time.monotonic() > deadline:
                    raise TimeoutError("the controller did not report ready")
                await asyncio.sleep(0.2)
        out = {"handshake_and_settle_s": time.monotonic() - t0, "settle_s": settle,
               "phases": []}
        for mode, seconds in phases:
            if mode == "hold":
                # Switches stay connected and answering while `seconds`, a
                # function, runs in a thread (e.g. REST calls to the controller).
                before = [(s.flow_mods, s.bundled, s.commits) for s in switches]
                result = await asyncio.to_thread(seconds, switches, asyncio.get_running_loop())
                out["phases"].append({
                    "mode": mode, "result": result,
                    **{k: sum(getattr(s, k) - b[i] for s, b in zip(switches, before))
                       for i, k in enumerate(("flow_mods", "bundled", "commits"))}})
                continue
            for sw in switches:
                sw.latencies, sw.answered, sw.sent, sw.lost = [], 0, 0, 0
                sw.pending.clear()
            start = time.monotonic()
            loop = _latency if mode == "latency" else _throughput
            await asyncio.gather(*(loop(sw, start + seconds) for sw in switches))
            elapsed = time.monotonic() - start
            answered = sum(s.answered for s in switches)
            sent = sum(s.sent for s in switches)
            lost = sum(s.lost for s in switches)
            in_flight = sum(len(s.pending) for s in switches)
            samples = [x for s in switches for x in s.latencies]
            # Let the controller finish what is queued before the next phase.
            drain = await _quiet(switches, 0.5, 15.0)
            out["phases"].append({"mode": mode, "seconds": elapsed, "sent": sent,
                                  "answered": answered, "lost": lost,
                                  "in_flight_at_end": in_flight,
                                  "answers_per_s": answered / elapsed,
                                  "latency_ms": _stats(samples), "drain_s": drain})
        out["received_by_type"] = dict(sum((s.received for s in switches), Counter()))
        out["flows_by_dpid"] = {s.dpid: len(s.flows) for s in switches}
        return out
    finally:
        for sw in switches:
            sw.writer.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


# ------------------------------------------------------------ the trivial controller

async def _respond(reader, writer) -> None:
    """Handshake, answer echoes, and answer every packet-in with a packet-out
    (flood) of the same frame. Nothing else: the generator's ceiling."""
    writer.write(message(HELLO))
    writer.write(message(FEATURES_REQUEST, xid=1))
    action = struct.pack("!HHIH6x", 0, 16, OFPP_FLOOD, 0)
    try:
        while True:
            kind, xid, body = await read_message(reader)
            if kind == ECHO_REQUEST:
                writer.write(message(ECHO_REPLY, body, xid))
            elif kind == PACKET_IN:
                in_port, match_len = match_in_port(body, 16)
                data = body[16 + match_len + 2:]
                writer.write(message(PACKET_OUT, struct.pack(
                    "!IIH6x", NO_BUFFER, in_port or OFPP_ANY, len(action)) + action + data,
                    xid))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_responder(port: int) -> None:
    server = await asyncio.start_server(_respond, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ofload", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("responder", help="a trivial controller on 127.0.0.1:PORT")
    r.add_argument("--port", type=int, required=True)
    g = sub.add_parser("generate", help="emulate switches against 127.0.0.1:PORT")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--switches", type=int, default=4)
    g.add_argument("--mode", choices=("latency", "throughput"), default="latency")
    g.add_argument("--seconds", type=float, default=5)
    g.add_argument("--dpid-base", type=int, default=0xB1_0000)
    args = ap.parse_args(argv)
    if args.command == "responder":
        asyncio.run(serve_responder(args.port))
        return 0
    result = asyncio.run(run("127.0.0.1", args.port,
                             [args.dpid_base + i + 1 for i in range(args.switches)],
                             [1, 10, 11, 12, 13], [10, 11, 12, 13], Shape(),
                             [(args.mode, args.seconds)]))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
