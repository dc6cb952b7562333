"""Periodic tasks that an exception cannot silently stop (Ryu glue).

A greenthread that raises just ends: a counter poll, a firewall probe loop
or an OVSDB follower would stop without a word, and fail-closed with it.
"""
from __future__ import annotations

from ryu.lib import hub

RESTART_SECONDS = 1.0


def supervised(name: str, body, logger, restart_after: float = RESTART_SECONDS):
    """Run body() in a greenthread of its own, again and again: when it
    raises, the traceback is logged and it runs again after a pause."""
    def run():
        while True:
            try:
                body()
            except Exception:
                logger.exception("task %s failed; it runs again in %.1f s", name,
                                 restart_after)
            hub.sleep(restart_after)
    return hub.spawn(run)
