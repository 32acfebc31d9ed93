#!/usr/bin/env bash
# Set up nionswift-emedge in its own virtual environment (default .venv) on Debian, as root or user.
# Installs the pinned CPU build of PyTorch first (so pip never pulls the multi-GB CUDA build),
# then the package with its test extras. Idempotent; progress on stderr.
#   EMEDGE_VENV     venv path                         [.venv]
#   EMEDGE_PYTHON   interpreter that creates the venv [python3]
#   EMEDGE_TORCH    torch requirement installed first [torch==2.13.0]
#   PIP_EXTRA_INDEX_URL  e.g. https://download.pytorch.org/whl/cpu on machines without a local CPU wheel
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EMEDGE_VENV:-.venv}
PY=${EMEDGE_PYTHON:-python3}
TORCH=${EMEDGE_TORCH:-torch==2.13.0}
EXTRAS=${EMEDGE_EXTRAS:-test}
say() { echo "[setup] $*" >&2; }

if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  say "installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq python3-venv python3-pip >&2
fi
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"$VENV/bin/python" -c 'import torch' 2>/dev/null || { say "installing $TORCH (CPU build first)"; "${PIP[@]}" "$TORCH" >&2; }
if [ ! -f "$VENV/.emedge-installed" ] || [ setup.cfg -nt "$VENV/.emedge-installed" ]; then
  say "installing nionswift-emedge[$EXTRAS]"
  "${PIP[@]}" -e ".[$EXTRAS]" >&2
  touch "$VENV/.emedge-installed"
fi
say "ready: $VENV"
