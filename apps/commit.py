"""Confirmed, all-or-nothing changes across several switches (Ryu glue).

(Or, for a sync that only brings switches in line, one phase: each switch
stages and commits its bundle at once, atomic on that switch.)

OpenFlow bundles are atomic on one switch. Across switches this runs two
phases: every switch first receives its whole bundle (open, messages,
close) and confirms it with a barrier, so a message a switch rejects is
found before anything takes effect; only then is every bundle committed,
again confirmed by a barrier. A switch that rejects or does not answer in
phase one makes every bundle be discarded. A commit that fails in phase two
(rare: the switch accepted the messages a moment before) is reported, and
the caller puts the switches that did commit back.

Call commit() from a greenthread of its own, never from an event handler:
it waits for replies that the event handlers deliver.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from ryu.lib import hub

from controller import openflow
from controller.fabric import Outcome

CONFIRM_SECONDS = 5.0


@dataclass
class Change:
    name: str                 # the hypervisor, for messages
    datapath: object
    messages: list            # flow-mods, bundled


class Committer:
    def __init__(self, logger):
        self.logger = logger
        self._bundle_ids = itertools.count(1)
        self._barriers: dict[tuple, hub.Event] = {}
        self._errors: dict[tuple, str] = {}          # (dpid, xid) -> description

    # -- fed by the app's event handlers
    def barrier_replied(self, dpid: int, xid: int) -> bool:
        event = self._barriers.pop((dpid, xid), None)
        if event is not None:
            event.set()
        return event is not None

    def error_received(self, dpid: int, xid: int, description: str) -> None:
        self._errors[(dpid, xid)] = description

    # -- used from greenthreads
    def commit(self, changes: list[Change], two_phase: bool = True) -> Outcome:
        """two_phase False: each switch's bundle is staged and committed at
        once (one round trip), atomic on that switch only: for bringing
        switches in line, where one that fails is read again and retried
        whatever the others did."""
        started = time.monotonic()
        changes = [c for c in changes if c.messages]
        if not changes:
            return Outcome(True, 0.0)
        ids = {c.name: next(self._bundle_ids) for c in changes}
        if not two_phase:
            sent = {c.name: self._send(c, openflow.bundle_staged(c.datapath, ids[c.name],
                                                                 c.messages)
                                       + [openflow.bundle_commit(c.datapath, ids[c.name])])
                    for c in changes}
            failed = self._confirm(changes, sent)
            return Outcome(not failed, time.monotonic() - started,
                           [c.name for c in changes if c.name not in failed], failed)
        staged = {c.name: self._send(c, openflow.bundle_staged(c.datapath, ids[c.name],
                                                                c.messages))
                  for c in changes}
        failed = self._confirm(changes, staged)
        if failed:
            for c in changes:
                c.datapath.send_msg(openflow.bundle_discard(c.datapath, ids[c.name]))
            return Outcome(False, time.monotonic() - started, [], failed)
        committed = {c.name: self._send(c, [openflow.bundle_commit(c.datapath,
                                                                   ids[c.name])])
                     for c in changes}
        failed = self._confirm(changes, committed)
        done = [c.name for c in changes if c.name not in failed]
        return Outcome(not failed, time.monotonic() - started, done, failed)

    def _send(self, change: Change, messages: list) -> tuple[set, hub.Event, int]:
        """Send messages then a barrier; the xids sent, the barrier's event."""
        dp = change.datapath
        xids = set()
        for msg in messages:
            dp.send_msg(msg)
            xids.add(msg.xid)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        event = hub.Event()
        dp.set_xid(barrier)
        self._barriers[(dp.id, barrier.xid)] = event
        dp.send_msg(barrier)
        return xids, event, barrier.xid

    def _confirm(self, changes: list[Change], sent: dict) -> dict:
        """Wait for every barrier; name -> why, for the switches that failed."""
        deadline = time.monotonic() + CONFIRM_SECONDS
        failed = {}
        for c in changes:
            xids, event, barrier_xid = sent[c.name]
            if not event.wait(max(0.0, deadline - time.monotonic())):
                self._barriers.pop((c.datapath.id, barrier_xid), None)
                failed[c.name] = f"no confirmation within {CONFIRM_SECONDS:.0f}s"
                continue
            errors = [self._errors.pop((c.datapath.id, x)) for x in sorted(xids)
                      if (c.datapath.id, x) in self._errors]
            if errors:
                failed[c.name] = "; ".join(errors)
        return failed
