"""Node-side entry point of the "retrain the DKL model on all measurements" job kind.

    python -m hpc_client.retrain experiment.h5 --out maps.emd [--window W] [--iters N] [--seed S]

Reads ``/experiment`` of an ``experiment.h5`` (survey, positions, values, and the run's
configuration for the window and model settings), fits :class:`emedge_core.dkl.DKLRegressor`
from scratch on every finite measurement, predicts every candidate position and writes the
prediction and uncertainty (predictive std) maps as an EMD file (:mod:`emedge_core.emd`) with
provenance. The last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import typing

import h5py
import numpy as np


def retrain(experiment: str, out: str, window: typing.Optional[int] = None, iters: typing.Optional[int] = None,
            seed: typing.Optional[int] = None) -> dict[str, typing.Any]:
    """Fit on all measurements in ``experiment`` and write the maps to ``out``; returns a summary."""
    from emedge_core import emd, provenance
    from emedge_core.dkl import DKLRegressor
    from emedge_core.patches import make_patches

    t0 = time.perf_counter()
    with h5py.File(experiment, "r") as f:
        g = f["experiment"]
        survey = emd.value(g["survey"])
        positions = emd.value(g["positions"]).reshape(-1, 2)
        values = emd.value(g["values"]).astype(np.float64)
        cfg = json.loads(g.attrs.get("config", "{}"))
        state = json.loads(g.attrs.get("instrument_state", "{}"))
    window = int(window or cfg.get("window", 16))
    model_kw = dict(cfg.get("model") or {})
    model_kw.pop("retrain", None)
    if iters is not None:
        model_kw["iters"] = int(iters)
    seed = int(cfg.get("seed", 0) if seed is None else seed)
    components = cfg.get("components") if model_kw.get("extractor", "mlp") == "mlp" else None
    patches = make_patches(survey, window, cfg.get("patch_mode", "restrict"), components=components)
    idx = patches.lookup(positions)
    keep = (idx >= 0) & np.isfinite(values)
    if keep.sum() < 2:
        raise SystemExit(f"retrain: {experiment} has {int(keep.sum())} usable measurements; need at least 2")
    model = DKLRegressor(patches.features.shape[1], window=window, seed=seed, retrain=True, **model_kw)
    model.fit(patches.features[idx[keep]], values[keep])
    post = model.posterior(patches.features)
    prediction, uncertainty = patches.to_map(post.mean), patches.to_map(post.std)
    params = {"source": experiment, "n_measurements": int(keep.sum()), "window": window, "seed": seed,
              "model": model_kw, "final_loss": model.losses[-1]}
    emd.write(out, {"prediction": prediction, "uncertainty": uncertainty}, codec="auto",
              provenance=provenance.collect(params, state), sig_ndim={"prediction": 2, "uncertainty": 2})
    return {"out": out, "n_measurements": int(keep.sum()), "final_loss": model.losses[-1],
            "seconds": round(time.perf_counter() - t0, 3)}


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpc_client.retrain", description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="experiment.h5 written by `emedge run`")
    p.add_argument("--out", default="maps.emd", help="output EMD file (default maps.emd)")
    p.add_argument("--window", type=int, help="patch edge in px (default: the run's)")
    p.add_argument("--iters", type=int, help="Adam steps (default: the model's)")
    p.add_argument("--seed", type=int, help="random seed (default: the run's)")
    args = p.parse_args(argv)
    summary = retrain(args.experiment, args.out, args.window, args.iters, args.seed)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
