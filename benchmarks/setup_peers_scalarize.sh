#!/usr/bin/env bash
# Create benchmarks/.venv-peers-scalarize: LiberTEM and py4DSTEM beside NumPy 1.26 (they do not
# install cleanly beside the main venv's NumPy 2.x). Used by benchmarks/scalarize.py and by the
# agreement tests in tests/test_scalarize_peers.py (which skip, with a reason, without it).
#   bash benchmarks/setup_peers_scalarize.sh            # idempotent
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-peers-scalarize"
py="${PYTHON:-python3.11}"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "numpy==1.26.4" "libertem==0.16.0" "py4DSTEM==0.14.18"
"$venv/bin/python" - <<'PY'
import numpy, libertem, py4DSTEM
print(f"peers ready: numpy {numpy.__version__}, libertem {libertem.__version__}, py4DSTEM {py4DSTEM.__version__}")
PY
