"""Is each hypervisor's firewall returning steered traffic? Pure logic.

The controller sends a probe out of every firewall port each interval; a
firewall that works bridges it back. A firewall counts as down when its
port goes down or no probe has come back for `misses` intervals, and as up
again as soon as a probe returns on an up port. `now` is always passed in.
"""
from __future__ import annotations


class FirewallHealth:
    def __init__(self, interval: float, misses: int):
        self.patience = interval * misses
        self.last_return: dict[str, float] = {}
        self.port_down: set[str] = set()
        self.down: set[str] = set()

    def watch(self, hv: str, now: float) -> None:
        """Start watching (a switch connected): it gets a full grace period."""
        self.last_return.setdefault(hv, now)

    def restart(self, now: float) -> None:
        """Probing starts (the policy began to steer): a fresh grace period
        for every firewall, so silence from before counts for nothing."""
        for hv in self.last_return:
            self.last_return[hv] = now

    def forget(self, hv: str) -> None:
        self.last_return.pop(hv, None)
        self.port_down.discard(hv)

    def probe_returned(self, hv: str, now: float) -> None:
        self.last_return[hv] = now

    def port_changed(self, hv: str, up: bool) -> None:
        (self.port_down.discard if up else self.port_down.add)(hv)

    def evaluate(self, now: float) -> tuple[set, set]:
        """Update `down`; returns (went down, came back) since the last call."""
        now_down = {hv for hv, seen in self.last_return.items()
                    if hv in self.port_down or now - seen > self.patience}
        went, back = now_down - self.down, self.down - now_down
        self.down = now_down
        return went, back
