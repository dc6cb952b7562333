"""Desired flows vs installed flows -> the minimal change, by cookie.

Every flow's cookie is a digest of the flow itself (pipeline.Flow.cookie), so
the set of cookies read back from a switch says exactly which of our entries
it holds. Entries whose cookie is not wanted are deleted; wanted entries
whose cookie is missing are added. Nothing else is touched, so nothing is
flushed and a reconnect with unchanged intent changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .pipeline import Flow


@dataclass(frozen=True)
class Plan:
    delete: tuple[int, ...]     # cookies of entries to remove
    add: tuple[Flow, ...]       # entries to install

    @property
    def empty(self) -> bool:
        return not self.delete and not self.add


def plan(desired: Iterable[Flow] | Mapping[int, Flow], installed: Iterable[int]) -> Plan:
    """desired: the flows, or cookie -> flow (then nothing is rebuilt: the
    differences are set operations, cheap on tables of thousands)."""
    wanted = desired if isinstance(desired, Mapping) else {f.cookie: f for f in desired}
    installed = installed if isinstance(installed, (set, frozenset)) else set(installed)
    return Plan(delete=tuple(sorted(installed - wanted.keys())),
                add=tuple(wanted[c] for c in sorted(wanted.keys() - installed)))
