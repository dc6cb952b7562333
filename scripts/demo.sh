#!/usr/bin/env bash
# The demo: installs what it needs, brings up the bundled lab and prints the
# report. Exits non-zero if any expected property fails. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/python -m topologies.demo "${1:-examples/consolidated.yaml}"
