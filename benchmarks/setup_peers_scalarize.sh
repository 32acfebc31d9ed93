#!/usr/bin/env bash
# Create benchmarks/.venv-peers-scalarize: LiberTEM and py4DSTEM beside NumPy 1.26 (they do not
# install cleanly beside the main venv's NumPy 2.x), and benchmarks/.venv-abtem-scalarize: abTEM
# (which needs NumPy 2). Used by benchmarks/scalarize.py and by the agreement tests in
# tests/test_scalarize_peers.py (which skip, with a reason, without them).
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

# abTEM (multislice 4D-STEM; needs NumPy 2) in its own venv: an independent CoM/iCoM to check against
abtem_venv="$here/.venv-abtem-scalarize"
if [ ! -x "$abtem_venv/bin/python" ]; then
    "$py" -m venv "$abtem_venv"
fi
"$abtem_venv/bin/python" -m pip install -q --upgrade pip
"$abtem_venv/bin/python" -m pip install -q "abtem==1.0.11" "ase>=3.23"
"$abtem_venv/bin/python" -c 'import abtem; print(f"abtem ready: {abtem.__version__}")'
