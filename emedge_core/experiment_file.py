"""Write an experiment's results: ``experiment.h5``, ``summary.json`` and ``maps.png``.

``experiment.h5`` keeps everything under the group ``/experiment``: survey (H, W), positions
(n, 2) int, values (n,), reasons (n,) uint8, frames (n, *sig), energy_eV (E,) for spectra,
prediction and uncertainty (H, W), step_seconds and max_std per step; attributes hold the
configuration, scalarizer, instrument state (JSON), package version and the rule that stopped it.
:class:`emedge_core.replay.Replay` reads it back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing

import h5py
import numpy as np

from emedge_core.experiment import ExperimentResult


def write_experiment(result: ExperimentResult, out_dir: str) -> dict[str, str]:
    """Write the three files into ``out_dir`` (created); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"h5": os.path.join(out_dir, "experiment.h5"), "summary": os.path.join(out_dir, "summary.json"),
             "maps": os.path.join(out_dir, "maps.png")}
    with h5py.File(paths["h5"], "w") as f:
        g = f.create_group("experiment")
        g.create_dataset("survey", data=result.survey.image)
        g.create_dataset("positions", data=result.positions.astype(np.int64))
        g.create_dataset("values", data=result.values)
        g.create_dataset("reasons", data=result.reasons.astype(np.uint8))
        g.create_dataset("frames", data=result.frames, chunks=True if result.frames.size else None,
                         compression="gzip" if result.frames.size else None)
        g.create_dataset("prediction", data=result.prediction)
        g.create_dataset("uncertainty", data=result.uncertainty)
        g.create_dataset("step_seconds", data=np.asarray(result.step_seconds, np.float64))
        g.create_dataset("max_std", data=np.asarray(result.max_std, np.float64))
        if "energy_eV" in result.frame_axis:
            g.create_dataset("energy_eV", data=np.asarray(result.frame_axis["energy_eV"]))
        elif result.frame_axis.get("mrad_per_px") is not None:
            g.attrs["mrad_per_px"] = float(result.frame_axis["mrad_per_px"])
        g.attrs["signal_kind"] = result.signal_kind
        g.attrs["stopped_by"] = result.stopped_by
        g.attrs["version"] = result.version
        g.attrs["survey_pixel_size_nm"] = result.survey.pixel_size_nm
        g.attrs["config"] = json.dumps(dataclasses.asdict(result.config))
        g.attrs["scalarizer"] = json.dumps(result.scalarizer)
        g.attrs["instrument_state"] = json.dumps(result.instrument_state, default=_jsonable)
    with open(paths["summary"], "w") as fp:
        json.dump(result.summary(), fp, indent=1)
    from emedge_core.report import plot_maps

    plot_maps(result, paths["maps"])
    return paths


def _jsonable(x: typing.Any) -> typing.Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
