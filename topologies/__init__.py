"""Mininet labs built from network files (see topologies.lab).

Nothing is re-exported here on purpose: `from .lab import lab` would shadow
the `topologies.lab` submodule with the function of the same name.
"""
