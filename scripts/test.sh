#!/usr/bin/env bash
# Set up and run the whole test suite: the venv, the services the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
