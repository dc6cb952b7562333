"""Is each hypervisor's firewall returning steered traffic? Pure logic.

The controller sends a probe out of every firewall port each interval; a
firewall that works bridges it back. A firewall is unknown until its first
probe returns (since its switch connected): nobody has measured it, so
steered traffic fails closed or open meanwhile. It counts as down when its
port goes down or no probe has come back for `misses` intervals, and as up
as soon as a probe returns on an up port. `now` is always passed in.
"""
from __future__ import annotations


class FirewallHealth:
    def __init__(self, interval: float, misses: int):
        self.patience = interval * misses
        self.watched: set[str] = set()
        self.last_return: dict[str, float] = {}
        self.port_down: set[str] = set()
        self.down: set[str] = set()      # as of the last evaluate(): unknown ones too

    def watch(self, hv: str) -> None:
        """Start watching (its switch connected): unknown, so down, until a
        probe returns."""
        self.watched.add(hv)
        if hv not in self.last_return:
            self.down.add(hv)

    def forget(self, hv: str) -> None:
        self.watched.discard(hv)
        self.last_return.pop(hv, None)
        self.port_down.discard(hv)

    def probe_returned(self, hv: str, now: float) -> None:
        if hv in self.watched:
            self.last_return[hv] = now

    def port_changed(self, hv: str, up: bool) -> None:
        (self.port_down.discard if up else self.port_down.add)(hv)

    def unknown(self, hv: str) -> bool:
        return hv in self.watched and hv not in self.last_return

    def evaluate(self, now: float) -> tuple[set, set]:
        """Update `down`; returns (went down, came back) since the last call."""
        now_down = {hv for hv in self.watched
                    if hv in self.port_down or hv not in self.last_return
                    or now - self.last_return[hv] > self.patience}
        went, back = now_down - self.down, self.down - now_down
        self.down = now_down
        return went, back
