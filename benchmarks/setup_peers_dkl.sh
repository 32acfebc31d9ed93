#!/usr/bin/env bash
# Separate venvs for the DKL peers (they pin JAX/numpyro and torchvision versions that must not
# touch the project's venv):
#   benchmarks/.venv-gpax    gpax 0.1.9 with jax/jaxlib 0.6.2, numpyro 0.18.0, dm-haiku 0.0.17
#                            (gpax 0.1.9 fails to import with numpyro >= 0.19)
#   benchmarks/.venv-atomai  atomai 0.8.1 with torch 2.14.1 / torchvision 0.29.1 (its own pins)
set -euo pipefail
cd "$(dirname "$0")"
PY=${EMEDGE_PYTHON:-python3}
if [ ! -x .venv-gpax/bin/python ] || ! .venv-gpax/bin/python -c 'import gpax' 2>/dev/null; then
  "$PY" -m venv .venv-gpax
  .venv-gpax/bin/pip install -q --disable-pip-version-check gpax==0.1.9 jax==0.6.2 jaxlib==0.6.2 numpyro==0.18.0 dm-haiku==0.0.17 >&2
fi
if [ ! -x .venv-atomai/bin/python ] || ! .venv-atomai/bin/python -c 'import atomai' 2>/dev/null; then
  # atomai 0.8.1 pulls torchvision 0.29.1, which needs the torch 2.14.1 it was built with (the CPU
  # torch 2.13.0 wheel fails with "operator torchvision::nms does not exist"); mendeleev, an atomai
  # dependency, imports six without declaring it
  "$PY" -m venv .venv-atomai
  .venv-atomai/bin/pip install -q --disable-pip-version-check atomai==0.8.1 torch==2.14.1 torchvision==0.29.1 six >&2
fi
echo "peer venvs ready: benchmarks/.venv-gpax benchmarks/.venv-atomai" >&2
