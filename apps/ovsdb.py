"""Follow hypervisors' OVSDB for the iface-ids of their interfaces (glue).

libvirt and OpenStack write `external_ids:iface-id` on the OVS Interface of
a VM's tap; OpenFlow does not carry it. The `ovs` library's IDL keeps a
replica of the columns it registers, kept current by the server (a monitor:
changes are pushed, never polled), and reconnects by itself with backoff
when the server goes away; the replica, and so every binding, stays as it
was meanwhile.
"""
from __future__ import annotations

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from ryu.lib import hub

COLUMNS = {"Bridge": ["name", "datapath_id", "ports"],
           "Port": ["name", "interfaces"],
           "Interface": ["name", "external_ids"]}
RETRY_SECONDS = 2.0


def iface_ids(tables) -> dict[int, dict[str, str | None]]:
    """datapath id -> {interface name: iface-id, None if it has none} for
    every bridge in an IDL replica (`idl.tables`). Bridges without a
    datapath id yet are left out."""
    out = {}
    for bridge in tables["Bridge"].rows.values():
        if not bridge.datapath_id:
            continue
        names = {}
        for port in bridge.ports:
            for iface in port.interfaces:
                names[iface.name] = iface.external_ids.get("iface-id") or None
        out[int(bridge.datapath_id[0], 16)] = names
    return out


def _schema(remote: str) -> dict:
    """The server's Open_vSwitch schema (the IDL needs it to monitor)."""
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote))
    if error:
        raise OSError(error, f"cannot connect to {remote}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(
            ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
        if error or reply.error:
            raise OSError(error or 0, f"{remote}: get_schema failed: {reply and reply.error}")
        return reply.result
    finally:
        rpc.close()


class Follower:
    """One OVSDB server: calls on_change(address, {dpid: {name: iface-id}})
    whenever its replica changes, from a greenthread of its own."""

    def __init__(self, remote: str, on_change, logger):
        self.remote, self.on_change, self.logger = remote, on_change, logger
        self.connected = False
        self.synced = False          # the first full replica has arrived
        self._warned = False         # one warning per outage

    def run(self) -> None:
        while True:
            try:
                schema = _schema(self.remote)
            except OSError as e:
                self._lost(f"{e}")
                hub.sleep(RETRY_SECONDS)
                continue
            self._follow(schema)

    def _follow(self, schema: dict) -> None:
        helper = ovs.db.idl.SchemaHelper(schema_json=schema)
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovs.db.idl.Idl(self.remote, helper)
        seen = None
        try:
            while True:
                idl.run()
                # The IDL has no public connection state; ovsdbapp reads the same.
                up = idl._session.is_connected()
                if up != self.connected:
                    if up:
                        self.connected, self._warned = True, False
                        self.logger.info("OVSDB %s: connected", self.remote)
                    else:
                        self._lost("connection lost; bindings stay as they were")
                if idl.has_ever_connected() and idl.change_seqno != seen:
                    seen = idl.change_seqno
                    self.synced = True
                    self.on_change(self.remote, iface_ids(idl.tables))
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.block()
        finally:
            idl.close()

    def _lost(self, why: str) -> None:
        if not self._warned:
            self.logger.warning("OVSDB %s: %s; retrying", self.remote, why)
            self._warned = True
        self.connected = False
