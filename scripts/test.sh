#!/usr/bin/env bash
# The whole test suite: installs what it needs, then unit and integration
# tests on real Open vSwitch + Mininet + the controller. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A lab left behind by a crashed earlier run would collide with the tests.
mn -c >/dev/null 2>&1 || true
exec .venv/bin/python -m pytest "$@"
