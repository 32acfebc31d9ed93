"""The science of the HPC jobs: what runs on the node, and the job specs that send it there.

:mod:`hpc_client` carries files and jobs and knows nothing of emedge; this module knows what a
job *does*:

- :func:`retrain` - "retrain the model on all measurements": reads an ``experiment.h5``, builds the
  run's candidates, model and policy with :func:`emedge_core.experiment.make_steerer` (the live
  loop's own constructor, from the run's recorded configuration), hands it every measurement at
  its probe position and writes the prediction and uncertainty maps as an EMD file. The refit is
  the live loop's refit (:meth:`emedge_core.steer.Steerer.posterior`): the patch features, the
  probe coordinates (the spatial kernel term) and every model setting travel the same way.
  ``emedge retrain`` runs it on the node.
- :func:`retrain_job` / :func:`reduce_emd_job` / :func:`follow_job` - :class:`hpc_client.job.JobSpec`
  builders for ``emedge retrain``, ``emedge scalarize`` and ``emedge follow``;
- :func:`open_client` - an :class:`hpc_client.Client` from the facility settings
  (:mod:`emedge_core.settings`, section ``[hpc]``), as ``emedge jobs`` and the Swift panel use it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import typing

import numpy as np

from emedge_core import EmedgeError

if typing.TYPE_CHECKING:
    from hpc_client.client import Client
    from hpc_client.job import JobSpec, Resources

    from emedge_core.experiment import ExperimentConfig
    from emedge_core.settings import Settings


def run_config(recorded: dict[str, typing.Any]) -> "ExperimentConfig":
    """The :class:`~emedge_core.experiment.ExperimentConfig` of a run from its recorded JSON; keys this
    version does not know are left out (a file from a newer version still retrains)."""
    from emedge_core.experiment import ExperimentConfig

    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    cfg = {k: v for k, v in recorded.items() if k in known}
    if cfg.get("stop_predictability") is not None:
        cfg["stop_predictability"] = tuple(cfg["stop_predictability"])
    return ExperimentConfig(**cfg)


def retrain(experiment: str, out: str, window: typing.Optional[int] = None, iters: typing.Optional[int] = None,
            seed: typing.Optional[int] = None) -> dict[str, typing.Any]:
    """Refit the run's model on every measurement of ``experiment`` (an ``experiment.h5``) and write
    the (H, W) prediction and uncertainty (std of the predicted scalar) maps, in scalar units, to the EMD file
    ``out``. window (px), iters (optimizer steps) and seed override the recorded ones. Returns a
    JSON-able summary (out, n_measurements, final_loss, seconds, spatial)."""
    import h5py

    from emedge_core import emd, provenance
    from emedge_core.experiment import make_steerer

    t0 = time.perf_counter()
    try:
        with h5py.File(experiment, "r") as f:
            g = f["experiment"]
            survey = np.asarray(emd.value(g["survey"]))
            positions = np.asarray(emd.value(g["positions"])).reshape(-1, 2)
            values = np.asarray(emd.value(g["values"]), np.float64)
            recorded = json.loads(g.attrs.get("config", "{}"))
            state = json.loads(g.attrs.get("instrument_state", "{}"))
    except (OSError, KeyError) as e:
        raise EmedgeError(f"{experiment} is not an experiment.h5 written by `emedge run`: {e}") from None
    cfg = run_config(recorded)
    model = dict(cfg.model)
    if iters is not None:
        model["iters"] = int(iters)
    cfg = dataclasses.replace(cfg, model=model, window=int(window or cfg.window),
                              seed=int(cfg.seed if seed is None else seed))
    steerer = make_steerer(survey, cfg)     # cfg.seeds: the recorded run's first points were random (calibration)
    on_grid = steerer.patches.lookup(positions) >= 0
    keep = on_grid & np.isfinite(values)
    if keep.sum() < 2:
        raise EmedgeError(f"{experiment} has {int(keep.sum())} usable measurements; retrain needs at least 2")
    steerer.observe(positions[on_grid], values[on_grid])
    post = steerer.posterior()
    assert post is not None                  # two good values or more: the model is fitted
    patches = steerer.patches
    prediction, uncertainty = patches.to_map(post.mean), patches.to_map(post.std)
    info = steerer.model.describe()         # kernel, hyper-parameters, spatial, final_loss (DKL) / LOO (GP)
    spatial = bool(info.get("spatial"))
    params = {"source": experiment, "n_measurements": int(keep.sum()), "window": cfg.window, "seed": cfg.seed,
              "model": cfg.model, "spatial": spatial, "final_loss": info.get("final_loss"),
              "kernel": info.get("kernel"), "command": "emedge retrain"}
    emd.write(out, {"prediction": prediction, "uncertainty": uncertainty}, codec="auto",
              provenance=provenance.collect(params, state), sig_ndim={"prediction": 2, "uncertainty": 2})
    return {"out": out, "n_measurements": int(keep.sum()), "final_loss": info.get("final_loss"),
            "kernel": info.get("kernel"), "spatial": spatial, "seconds": round(time.perf_counter() - t0, 3)}


def reduce_emd_job(emd_path: str, scalarizer: typing.Union[str, dict[str, typing.Any]], out: str = "reduced.npy",
                   python: str = sys.executable, resources: typing.Optional["Resources"] = None,
                   **spec: typing.Any) -> "JobSpec":
    """Scalarize every frame of ``emd_path`` on the node into ``out`` (``emedge scalarize``); the
    per-frame reason codes come back too, as ``<out stem>.reason.npy``. ``python``: the node's
    interpreter with nionswift-emedge installed (default: this one)."""
    from hpc_client.job import JobSpec, Resources

    spec_text = scalarizer if isinstance(scalarizer, str) else json.dumps(scalarizer)
    reasons = os.path.splitext(out)[0] + ".reason.npy"
    return JobSpec(command=[python, "-m", "emedge_core", "scalarize", os.path.basename(emd_path),
                            "--scalarizer", spec_text, "--out", out],
                   name="reduce", resources=resources or Resources(), stage_in=[emd_path],
                   stage_out=[out, reasons], **spec)


def retrain_job(experiment_h5: str, out: str = "maps.emd", window: typing.Optional[int] = None,
                iters: typing.Optional[int] = None, seed: typing.Optional[int] = None, python: str = sys.executable,
                resources: typing.Optional["Resources"] = None, **spec: typing.Any) -> "JobSpec":
    """Refit the model on every measurement of ``experiment_h5`` on the node (``emedge retrain``);
    the maps come back in ``out``."""
    from hpc_client.job import JobSpec, Resources

    resources = resources or Resources()
    cmd = [python, "-m", "emedge_core", "retrain", os.path.basename(experiment_h5), "--out", out, "--json"]
    for flag, value in (("--window", window), ("--iters", iters), ("--seed", seed)):
        if value is not None:
            cmd += [flag, str(value)]
    env = {"OMP_NUM_THREADS": str(resources.cpus), **spec.pop("environment", {})}
    return JobSpec(command=cmd, name="retrain", resources=resources, stage_in=[experiment_h5], stage_out=[out],
                   environment=env, **spec)


def follow_job(stage_dir: str, scalarizer: typing.Union[str, dict[str, typing.Any]], out: str = "follow.h5",
               scheduler: typing.Optional[str] = None, timeout_s: typing.Optional[float] = None,
               python: str = sys.executable, resources: typing.Optional["Resources"] = None,
               **spec: typing.Any) -> "JobSpec":
    """Follow a scan as it lands (``emedge follow --until-complete``): ``stage_dir`` is the stage the
    acquisition publishes to, on storage the node mounts (the facility's NAS; not staged in, its
    absolute path is used as is); the results come back in ``out`` (RESULT.h5). ``scheduler``: a
    Dask address for the reduction; ``timeout_s``: give up waiting for the end of the scan."""
    from hpc_client.job import JobSpec, Resources

    spec_text = scalarizer if isinstance(scalarizer, str) else json.dumps(scalarizer)
    cmd = [python, "-m", "emedge_core", "follow", os.path.abspath(stage_dir), "--scalarizer", spec_text,
           "--out", out, "--until-complete", "--json"]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    if timeout_s is not None:
        cmd += ["--timeout", str(timeout_s)]
    return JobSpec(command=cmd, name="follow", resources=resources or Resources(), stage_out=[out], **spec)


def open_client(backend: typing.Optional[str] = None, url: typing.Optional[str] = None,
                settings: typing.Optional["Settings"] = None) -> "Client":
    """An :class:`hpc_client.Client` the way the facility is set up.

    backend: "local", "slurmrest" or "sfapi" (default: ``[hpc] backend`` of the settings);
    url: the scheduler's URL (default: ``[hpc] url``, else ``hpc_client``'s own configuration,
    e.g. ``SLURM_REST_URL``). The local backend stages in ``hpc_client``'s staging directory when one
    is configured (``EMEDGE_HPC_STAGING``, hpc.toml), else in ``hpc-jobs`` under ``[staging] dir``.
    Credentials always come from ``hpc_client``'s configuration.
    """
    from hpc_client import config
    from hpc_client.client import open_client as hpc_open

    from emedge_core.settings import load_settings

    settings = settings or load_settings()
    backend = backend or settings.hpc_backend
    if backend == "local":
        own = config.settings("local")["staging_dir"]
        staging = own if own != config.default_staging_dir() else os.path.join(settings.staging_dir, "hpc-jobs")
        return hpc_open("local", staging_dir=staging)
    return hpc_open(backend, url=url or settings.hpc_url or None)
