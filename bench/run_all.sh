#!/usr/bin/env bash
# Every benchmark, after installing what they need (Debian packages, .venv,
# Faucet in .venv-faucet). Extra arguments: benchmark names to run only those.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh bench
exec .venv/bin/python -m bench.run_all "$@"
