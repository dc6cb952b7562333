"""IDS alerts in (Ryu glue): from POST /api/v1/alerts and from a followed
Suricata eve.json (--eve-file). The fabric decides what they do
(controller/autoresponse.py); a quarantine is committed here at once, from
the caller's greenthread, so the answer to the POST says it is in force.
"""
from __future__ import annotations

import os
import time

from ryu.lib import hub

from controller import response
from controller.eve_file import EveFollower
from controller.fabric import SYNC

EVE_POLL_SECONDS = 0.02      # how soon a line written to eve.json is acted on
EVE_BATCH_LINES = 5000       # lines decided per commit at most


class AlertIntake:
    def __init__(self, app):
        self.app = app
        self.received = self.bad = 0      # alerts taken; records ignored (not alerts)
        self.eve: EveFollower | None = None

    def take(self, text: str, source: str) -> dict:
        """Decide the EVE records in `text` and put what they change in force."""
        alerts, bad = response.parse_eve(text)
        return self.decide(alerts, bad, source)

    def decide(self, alerts: list, bad: int, source: str) -> dict:
        app = self.app
        self.received += len(alerts)
        self.bad += bad
        if bad:
            app.logger.info("IDS alerts from %s: %d records were not usable alerts "
                            "(ignored)", source, bad)
        decisions, actions = app.fabric.alerts(alerts, time.time())
        applied = None
        if SYNC in actions:
            applied = app._put_in_force()
        app._do([a for a in actions if a != SYNC])
        result = {"alerts": len(alerts), "ignored_records": bad,
                  "decisions": [d.to_dict() for d in decisions], "applied": applied}
        if applied is None and any(d.kind == "acted" for d in decisions):
            result["warning"] = ("decided, but the controller is still starting: it is "
                                 "committed when every hypervisor has been read")
        return result

    def status(self) -> dict:
        eve = self.eve
        return {"received": self.received, "ignored_records": self.bad,
                "eve_file": None if eve is None else {
                    "path": eve.path, "lines": eve.lines, "rotations": eve.rotations,
                    "truncations": eve.truncations, "overlong": eve.overlong,
                    "error": eve.error}}

    def follow(self, path: str) -> None:
        """Follow eve.json for ever (a supervised greenthread)."""
        self.eve = EveFollower(path)
        self.app.logger.info("following IDS alerts in %s%s", path,
                             "" if os.path.exists(path) else " (not there yet)")
        while True:
            lines = self.eve.read()
            for start in range(0, len(lines), EVE_BATCH_LINES):
                self.take("\n".join(lines[start:start + EVE_BATCH_LINES]), path)
            hub.sleep(EVE_POLL_SECONDS)
