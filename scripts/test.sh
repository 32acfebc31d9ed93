#!/usr/bin/env bash
# Set up and run the whole test suite: the venv, the services the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one-node Slurm + slurmrestd on 127.0.0.1 (needs root); exports SLURM_REST_URL/USER/TOKEN for the slurm tests
if [ "$(id -u)" = 0 ]; then eval "$(bash scripts/start-slurm.sh)"; else echo "[test] not root: no Slurm, slurm tests skip (fail when CI=true)" >&2; fi
exec .venv/bin/python -m pytest -q "$@"
