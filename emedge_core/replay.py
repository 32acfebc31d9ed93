"""Replay a recorded or simulated data set as an instrument.

Accepted files (``.npz`` or HDF5):

- ``survey`` (H, W) image, ``data`` (H, W, E) spectra with ``energy_eV`` (E,), or
  ``data`` (H, W, ky, kx) diffraction patterns - one frame per survey pixel;
- an ``experiment.h5`` written by ``emedge run``: its survey and the frames it measured;
  only those positions can be measured again (``available()``).

Missing files or keys and inconsistent shapes raise :class:`~emedge_core.EmedgeError`.
"""
from __future__ import annotations

import os
import typing
import zipfile

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames, Survey, check_positions


def _load(path: str) -> dict[str, typing.Any]:
    if not os.path.exists(path):
        raise EmedgeError(f"replay file not found: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise EmedgeError(f"cannot read {path} as .npz: {e}") from None
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EmedgeError(f"cannot read {path} as HDF5: {e}") from None
    if "experiment" in f:            # EMD array groups (checksums verified) or, in older files, plain data sets
        from emedge_core.emd import value

        with f:
            g = f["experiment"]
            missing = [k for k in ("survey", "frames", "positions") if k not in g]
            if missing:
                raise EmedgeError(f"experiment file {path} lacks {missing}")
            out = {k: value(g[k]) for k in ("survey", "frames", "positions", "energy_eV") if k in g}
            if "mrad_per_px" in g.attrs:
                out["mrad_per_px"] = float(g.attrs["mrad_per_px"])
            return out
    # frames stay in the file and are read per measurement; the file closes with the Replay
    return {k: f[k] for k in ("survey", "data", "energy_eV") if k in f} | {"_h5": f}


class Replay:
    """An :class:`~emedge_core.instrument.Instrument` that reads frames from a file."""

    def __init__(self, path: str) -> None:
        raw = _load(path)
        self.path = path
        if "survey" not in raw:
            raise EmedgeError(f"{path} has no 'survey' (H, W) image")
        survey = np.asarray(raw["survey"][()])
        if survey.ndim != 2:
            raise EmedgeError(f"'survey' in {path} must be 2-D (H, W), got shape {survey.shape}")
        self._survey = Survey(survey.astype(np.float32))
        h, w = survey.shape
        self._energy = np.asarray(raw["energy_eV"][()], np.float64) if "energy_eV" in raw else None
        self._mrad = raw.get("mrad_per_px")
        self._h5 = raw.get("_h5")
        self._mask: typing.Optional[np.ndarray] = None
        if "frames" in raw:        # an experiment file: frames at measured positions only
            frames, pos = np.asarray(raw["frames"]), np.asarray(raw["positions"], np.int64)
            self._mask = np.zeros((h, w), bool)
            self._mask[pos[:, 0], pos[:, 1]] = True
            self._slot = np.full((h, w), -1, np.int64)
            self._slot[pos[:, 0], pos[:, 1]] = np.arange(len(pos))
            self._data = frames
            sig_ndim = frames.ndim - 1
        else:
            if "data" not in raw:
                raise EmedgeError(f"{path} has no 'data' (H, W, E) or (H, W, ky, kx) dataset")
            self._data = raw["data"]      # h5py dataset or array: read lazily per measurement
            shape = tuple(self._data.shape)
            if shape[:2] != (h, w) or len(shape) not in (3, 4):
                raise EmedgeError(f"'data' in {path} has shape {shape}; expected ({h}, {w}, E) spectra or "
                                  f"({h}, {w}, ky, kx) patterns matching the survey")
            self._slot = None
            sig_ndim = len(shape) - 2
        self.signal_kind = "spectrum" if sig_ndim == 1 else "diffraction"
        if self.signal_kind == "spectrum":
            n_e = self._data.shape[-1]
            if self._energy is None:
                raise EmedgeError(f"{path} has spectra but no 'energy_eV' ({n_e},) axis")
            if self._energy.shape != (n_e,):
                raise EmedgeError(f"'energy_eV' in {path} has shape {self._energy.shape}; the spectra have {n_e} channels")

    def survey(self) -> Survey:
        return self._survey

    def measure(self, positions: np.ndarray) -> Frames:
        pos = check_positions(positions, self._survey.shape)
        if self._slot is not None:
            slots = self._slot[pos[:, 0], pos[:, 1]]
            if (slots < 0).any():
                raise EmedgeError(f"{self.path} holds no frame at {pos[slots < 0].tolist()}")
            data = np.asarray(self._data[slots])
        else:
            data = np.stack([np.asarray(self._data[r, c]) for r, c in pos]) if len(pos) else \
                np.zeros((0,) + tuple(self._data.shape[2:]), np.float32)
        if self.signal_kind == "spectrum":
            return Frames(data, "spectrum", energy_eV=self._energy)
        return Frames(data, "diffraction", mrad_per_px=self._mrad)

    def state(self) -> dict[str, typing.Any]:
        return {"instrument": "replay", "file": os.path.abspath(self.path)}

    def available(self) -> typing.Optional[np.ndarray]:
        return self._mask

    def close(self) -> None:
        """Close the HDF5 file behind the frames, if any."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
