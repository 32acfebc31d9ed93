#!/usr/bin/env bash
# Set up and run the main job: a closed-loop steered experiment (GP on patch features + position) on the digital twin.
# Writes demo-out/experiment.h5, summary.json and maps.png. Extra arguments go to `emedge run`.
set -euo pipefail
cd "$(dirname "$0")/.."
EMEDGE_EXTRAS=${EMEDGE_EXTRAS:-test} bash scripts/setup.sh
.venv/bin/emedge run --instrument twin --scalarizer eels_peak_energy --budget 100 --out demo-out "$@"
