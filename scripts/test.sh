#!/usr/bin/env bash
# The whole test suite: installs what it needs, then unit and integration
# tests on real Open vSwitch + Mininet + the controller. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# No `mn -c`: it would wreck every other lab on this machine. Each lab
# removes what a crashed run of its own names left behind (topologies/lab.py).
exec .venv/bin/python -m pytest "$@"
