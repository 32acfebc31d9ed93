#!/usr/bin/env bash
# The GPU checks in one go, for a lent CUDA machine (one H100/H200, no network):
#   the CUDA tests, the scalarizer GPU cases, the DKL step at ~65k candidates and nvCOMP.
# Usage: bash benchmarks/gpu_session.sh OUTDIR
# Needs: python3 with torch, cupy, gpytorch, h5py, numpy; array-api-compat, blosc2 and
# nvidia-nvcomp-cu13 on PYTHONPATH (wheels installed by the caller when the machine is offline).
set -u
out=${1:?usage: gpu_session.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$out/card.txt"
python3 -c "import torch, cupy, gpytorch, numpy; print('torch', torch.__version__, 'cupy', cupy.__version__, 'gpytorch', gpytorch.__version__, 'numpy', numpy.__version__)" | tee -a "$out/card.txt"
# the CUDA tests: the scalarizer GPU backends, and every DKL test (DKL picks CUDA when present)
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_dkl.py tests/test_scalarize.py::test_gpu_backends_match_numpy_resident_and_streamed \
    -rs 2>&1 | tail -25 | tee "$out/pytest.txt"
timeout 240 python3 benchmarks/scalarize.py --gpu-only --repeat 5 2>&1 | tee "$out/scalarize_gpu.jsonl"
# the steering row at 65,536 candidates: observe -> suggest latency (goal <= 50 ms, p95 <= 3x median)
# with the background refit, 10 and 100 ms dwell, and the earlier DKL default beside it
timeout 300 python3 benchmarks/dkl_step.py --device cuda --survey 271 --peers "" --sizes 50,200,500 \
    --steps 40 --dwells 0.01,0.1 2>&1 | tee "$out/dkl_gpu.jsonl"
timeout 200 python3 benchmarks/compress_gpu.py --repeat 3 2>&1 | tee "$out/nvcomp.jsonl"
