"""Write an experiment's results: ``experiment.h5``, ``summary.json`` and ``maps.png``.

``experiment.h5`` is an EMD 1.0 file written by :func:`emedge_core.emd.write` (root group
``/experiment``, every array compressed losslessly with the codec ``auto`` picks, provenance and
per-chunk CRC-32; ``auto`` stores plain values that h5py + hdf5plugin, rosettasciio and emdfile read
as they are, with the axes as EMD 1.0 dim vectors):
survey (H, W), positions (n, 2) int, values (n,), reasons (n,) uint8, frames (n, *sig), energy_eV
(E,) for spectra, prediction and uncertainty (H, W), with a model the 95 % intervals (H, W):
interval_lower / interval_upper of the scalar itself and predictive_lower / predictive_upper of one
new measurement (latent + noise), step_seconds and max_std per step, probe_positions (n, 2) where
the probe went (positions moved by the drift) and, when drift was tracked, drift (k, 4):
measurements so far, dy px, dx px, seconds; each is the EMD array group ``/experiment/<name>`` with
its values in ``data``. Root attributes hold the configuration,
scalarizer, instrument state (JSON), package version, the rule that stopped it, ``findings``
(JSON: metadata the frames contradict, :mod:`emedge_core.consistency`) and ``resolved`` (JSON: the
scalarizer geometry found on the first good frames and used by every step, e.g. the bright-field disk).
The instrument's state over time: ``measured_s`` (n,) seconds from ``started_utc`` (root attribute,
ISO UTC) to each measurement, and ``state_timeline`` (JSON list of {"n": measurements so far, "s":
seconds, "changed": {dotted state key: new value}}): only what changed after ``instrument_state``.
:class:`emedge_core.replay.Replay` and :func:`emedge_core.emd.read` read it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing

import numpy as np

from emedge_core import emd, provenance
from emedge_core.experiment import ExperimentResult


def write_experiment(result: ExperimentResult, out_dir: str,
                     extra_provenance: typing.Optional[dict[str, typing.Any]] = None) -> dict[str, str]:
    """Write the three files into ``out_dir`` (created); returns their paths. ``extra_provenance``: more
    parameters for the provenance record (e.g. the remote caller and actions), added to its own."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"h5": os.path.join(out_dir, "experiment.h5"), "summary": os.path.join(out_dir, "summary.json"),
             "maps": os.path.join(out_dir, "maps.png")}
    arrays, sig, dims = _arrays(result)
    attrs: dict[str, typing.Any] = {
        "signal_kind": result.signal_kind, "stopped_by": result.stopped_by, "version": result.version,
        "survey_pixel_size_nm": result.survey.pixel_size_nm, "config": json.dumps(dataclasses.asdict(result.config)),
        "scalarizer": json.dumps(result.scalarizer),
        "instrument_state": json.dumps(result.instrument_state, default=emd.jsonable),
        "findings": json.dumps(result.findings), "resolved": json.dumps(result.resolved, default=emd.jsonable),
        "started_utc": result.started_utc, "state_timeline": json.dumps(result.timeline, default=emd.jsonable)}
    if "energy_eV" not in result.frame_axis and result.frame_axis.get("mrad_per_px") is not None:
        attrs["mrad_per_px"] = float(result.frame_axis["mrad_per_px"])
    prov = provenance.collect({"config": dataclasses.asdict(result.config), "scalarizer": result.scalarizer,
                               "command": "emedge run", "findings": result.findings} | (extra_provenance or {}),
                              result.instrument_state)
    emd.write(paths["h5"], arrays, codec="auto", provenance=prov, root="experiment", sig_ndim=sig, dims=dims,
              attrs=attrs)
    with open(paths["summary"], "w") as fp:
        json.dump(result.summary(), fp, indent=1)
    from emedge_core.report import plot_maps

    plot_maps(result, paths["maps"])
    return paths


def _arrays(result: ExperimentResult) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, list[emd.AxisSpec]]]:
    """The arrays of ``experiment.h5`` with their frame dimensions and axes (EMD 1.0 dim vectors:
    scan in nm, energy in eV, detector in mrad from the centre pixel)."""
    px = float(result.survey.pixel_size_nm)
    arrays = {"survey": result.survey.image, "positions": result.positions.astype(np.int64), "values": result.values,
              "reasons": result.reasons.astype(np.uint8), "frames": result.frames,
              "prediction": result.prediction, "uncertainty": result.uncertainty,
              "step_seconds": np.asarray(result.step_seconds, np.float64),
              "max_std": np.asarray(result.max_std, np.float64)}
    if result.probe_positions is not None:
        arrays["probe_positions"] = result.probe_positions.astype(np.int64)
    if len(result.drift):
        arrays["drift"] = np.asarray(result.drift, np.float64)
    if len(result.measured_s):
        arrays["measured_s"] = np.asarray(result.measured_s, np.float64)
    maps = ["survey", "prediction", "uncertainty"]
    for k, v in result.intervals.items():        # lower/upper -> interval_lower/upper, predictive_* as they are
        name = f"interval_{k}" if k in ("lower", "upper") else k
        arrays[name] = np.asarray(v, np.float64)
        maps.append(name)
    sig = {"positions": 1, "probe_positions": 1, "drift": 1, "frames": result.frames.ndim - 1} | dict.fromkeys(maps, 1)
    scan: list[emd.AxisSpec] = [("y", "nm", 0.0, px), ("x", "nm", 0.0, px)]
    dims: dict[str, list[emd.AxisSpec]] = dict.fromkeys(maps, scan)
    step: list[emd.AxisSpec] = [("measurement", "", 0.0, 1.0)]
    if "energy_eV" in result.frame_axis:
        energy = np.asarray(result.frame_axis["energy_eV"], np.float64)
        arrays["energy_eV"] = energy
        dims["energy_eV"] = [emd.Axis("energy", "eV", energy)]
        if result.frames.ndim == 2 and len(energy) == result.frames.shape[1]:
            dims["frames"] = step + [emd.Axis("energy", "eV", energy)]      # any (also non-uniform) axis
    elif result.frame_axis.get("mrad_per_px") is not None and result.frames.ndim == 3:
        m = float(result.frame_axis["mrad_per_px"])
        ky, kx = result.frames.shape[1:]
        dims["frames"] = step + [("ky", "mrad", -m * (ky // 2), m), ("kx", "mrad", -m * (kx // 2), m)]
    return arrays, sig, dims
