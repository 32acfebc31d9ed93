#!/usr/bin/env bash
# Set up and run the whole test suite: the venv, the services the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# LiberTEM + py4DSTEM (NumPy 1.26) and abTEM in their own venvs, for the agreement tests (about 1-2 min once)
bash benchmarks/setup_peers_scalarize.sh >&2
# one-node Slurm + slurmrestd on 127.0.0.1 (needs root); exports SLURM_REST_URL/USER/TOKEN for the slurm tests
if [ "$(id -u)" = 0 ]; then eval "$(bash scripts/start-slurm.sh)"; else echo "[test] not root: no Slurm, slurm tests skip (fail when CI=true)" >&2; fi
# Xvfb, ImageMagick and Qt's X11 libraries for the Swift GUI test (tests/test_gui_swift.py starts its own Xvfb)
if [ "$(id -u)" = 0 ] && ! command -v Xvfb >/dev/null; then (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq xvfb imagemagick libegl1 libgl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1) >&2; fi
exec .venv/bin/python -m pytest -q "$@"
