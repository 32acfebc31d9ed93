"""The two job kinds nionswift-emedge ships, as :class:`~hpc_client.job.JobSpec` builders.

- :func:`reduce_emd_job`: "reduce a whole EMD file" - runs ``emedge scalarize`` on the node;
- :func:`retrain_job`: "retrain the DKL model on all measurements" - runs
  :mod:`hpc_client.retrain` on an ``experiment.h5`` and brings back prediction and
  uncertainty maps as an EMD file.

Both stage their input file in and the result out. ``python`` is the interpreter on the
node with nionswift-emedge installed (default: this one, right for the local backend and
for a cluster sharing this installation).
"""
from __future__ import annotations

import json
import os
import sys
import typing

from hpc_client.job import JobSpec, Resources


def reduce_emd_job(emd_path: str, scalarizer: typing.Union[str, dict[str, typing.Any]], out: str = "reduced.npy",
                   python: str = sys.executable, resources: Resources = Resources(), **spec: typing.Any) -> JobSpec:
    """Scalarize every frame of ``emd_path`` on the node into ``out`` (``emedge scalarize``); the
    per-frame reason codes come back too, as ``<out stem>.reason.npy``."""
    spec_text = scalarizer if isinstance(scalarizer, str) else json.dumps(scalarizer)
    reasons = os.path.splitext(out)[0] + ".reason.npy"
    return JobSpec(command=[python, "-m", "emedge_core", "scalarize", os.path.basename(emd_path),
                            "--scalarizer", spec_text, "--out", out],
                   name="reduce", resources=resources, stage_in=[emd_path], stage_out=[out, reasons], **spec)


def retrain_job(experiment_h5: str, out: str = "maps.emd", window: typing.Optional[int] = None,
                iters: typing.Optional[int] = None, seed: typing.Optional[int] = None, python: str = sys.executable,
                resources: Resources = Resources(), **spec: typing.Any) -> JobSpec:
    """Refit the DKL model on every measurement of ``experiment_h5``; maps come back in ``out``."""
    cmd = [python, "-m", "hpc_client.retrain", os.path.basename(experiment_h5), "--out", out]
    for flag, value in (("--window", window), ("--iters", iters), ("--seed", seed)):
        if value is not None:
            cmd += [flag, str(value)]
    env = {"OMP_NUM_THREADS": str(resources.cpus), **spec.pop("environment", {})}
    return JobSpec(command=cmd, name="retrain", resources=resources, stage_in=[experiment_h5], stage_out=[out],
                   environment=env, **spec)
