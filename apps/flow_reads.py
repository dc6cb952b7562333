"""The one reader of flow stats (Ryu glue): asks a switch for our entries
and assembles the reply, for a reconciliation (the fabric asked for it), an
audit (a REST call waits for it) or the counter poll. Every complete reply
also refreshes the counters."""
from __future__ import annotations

import time

from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp13

from controller import openflow
from controller.pipeline import COOKIE_TAG, COOKIE_TAG_MASK


class FlowReads:
    def __init__(self):
        self._parts = {}            # (dpid, xid) -> entries so far, of a read not done
        self._reconciling = {}      # dpid -> xid of the read to reconcile from
        self._audits = {}           # (dpid, xid) -> (event, entries)

    def request(self, dp, reconcile: bool = False) -> int:
        """Ask a switch for our entries; the request's xid."""
        request = openflow.our_flows_request(dp, COOKIE_TAG, COOKIE_TAG_MASK)
        dp.set_xid(request)
        self._parts[(dp.id, request.xid)] = []
        if reconcile:
            self._reconciling[dp.id] = request.xid
        dp.send_msg(request)
        return request.xid

    def busy(self) -> set[int]:
        """The datapaths a read is outstanding from."""
        return {dpid for dpid, _xid in self._parts}

    def forget(self, dpid: int) -> None:
        self._reconciling.pop(dpid, None)
        for key in [k for k in self._parts if k[0] == dpid]:
            del self._parts[key]

    def reply(self, msg) -> tuple[list, bool] | None:
        """A flow-stats reply part: once the read is complete, (its entries,
        whether it is the one to reconcile from); else None."""
        key = (msg.datapath.id, msg.xid)
        if key not in self._parts:
            return None
        self._parts[key].extend(msg.body)
        if msg.flags & ofp13.OFPMPF_REPLY_MORE:
            return None
        entries = self._parts.pop(key)
        audit = self._audits.get(key)
        if audit is not None:
            audit[1].extend(entries)
            audit[0].set()
        reconcile = self._reconciling.get(key[0]) == msg.xid
        if reconcile:
            del self._reconciling[key[0]]
        return entries, reconcile

    def audit(self, datapaths: dict, timeout: float) -> dict:
        """Read every switch now and wait: name -> its entries, or None if
        it did not answer in time. From a greenthread."""
        pending = []
        for name, dp in datapaths.items():
            read = (hub.Event(), [])
            key = (dp.id, self.request(dp))
            self._audits[key] = read
            pending.append((name, key, read))
        deadline = time.monotonic() + timeout
        out = {}
        for name, key, (event, entries) in pending:
            answered = event.wait(max(0.0, deadline - time.monotonic()))
            self._audits.pop(key, None)
            self._parts.pop(key, None)     # or the counter poll waits for it forever
            out[name] = entries if answered else None
        return out
