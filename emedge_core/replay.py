"""Replay a recorded or simulated data set as an instrument.

Accepted files:

- any scan :func:`emedge_core.io.open_data` reads (DM3/DM4, Velox EMD, Merlin .mib, Arina, TopSpin,
  py4DSTEM EMD, HyperSpy, Swift .ndata/.h5, ...): (H, W, E) spectra with their energy axis or
  (H, W, ky, kx) patterns, navigation first; the survey is ``survey`` (``--survey`` FILE), else an
  image in the same file, else the summed signal;
- emedge's replay layout (``.npz`` or HDF5): ``survey`` (H, W) image, ``data`` (H, W, E) spectra with
  ``energy_eV`` (E,), or ``data`` (H, W, ky, kx) diffraction patterns - one frame per survey pixel;
- an ``experiment.h5`` written by ``emedge run``: its survey and the frames it measured;
  only those positions can be measured again (``available()``).

Missing files or keys and inconsistent shapes raise :class:`~emedge_core.EmedgeError`.
"""
from __future__ import annotations

import os
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames, Survey, check_positions


def _experiment(path: str) -> typing.Optional[dict[str, typing.Any]]:
    """The survey, frames and positions of an ``experiment.h5``; None for any other file."""
    if not path.endswith((".h5", ".hdf5")) or not os.path.isfile(path):
        return None
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EmedgeError(f"cannot read {path} as HDF5: {e}") from None
    with f:
        if "experiment" not in f:       # EMD array groups (checksums verified) or, in older files, plain data sets
            return None
        from emedge_core.emd import value

        g = f["experiment"]
        missing = [k for k in ("survey", "frames", "positions") if k not in g]
        if missing:
            raise EmedgeError(f"experiment file {path} lacks {missing}")
        out: dict[str, typing.Any] = {k: value(g[k]) for k in ("survey", "frames", "positions", "energy_eV") if k in g}
        if "mrad_per_px" in g.attrs:
            out["mrad_per_px"] = float(g.attrs["mrad_per_px"])
        if "survey_pixel_size_nm" in g.attrs:
            out["survey_pixel_size_nm"] = float(g.attrs["survey_pixel_size_nm"])
        return out


class Replay:
    """An :class:`~emedge_core.instrument.Instrument` that reads frames from a file."""

    def __init__(self, path: str, dataset: typing.Union[None, str, int] = None,
                 survey: typing.Optional[str] = None, kind: typing.Optional[str] = None) -> None:
        """``dataset``: the signal of a file holding several (title or index); ``survey``: a file with
        the HAADF/ADF image of the scan (at its grid or a whole multiple, binned); ``kind``: "spectrum"
        or "diffraction", the frames the scalarizer wants (chooses among a file's signals)."""
        self.path = path
        self._mask: typing.Optional[np.ndarray] = None
        self._slot: typing.Optional[np.ndarray] = None
        self._src: typing.Any = None
        self.saturation: typing.Optional[float] = None
        self.survey_from = ""
        raw = _experiment(path)
        if raw is not None:            # an experiment file: frames at measured positions only
            survey_img = np.asarray(raw["survey"])
            if survey_img.ndim != 2:
                raise EmedgeError(f"'survey' in {path} must be 2-D (H, W), got shape {survey_img.shape}")
            h, w = survey_img.shape
            self.energy_eV = np.asarray(raw["energy_eV"], np.float64) if "energy_eV" in raw else None
            self._mrad = raw.get("mrad_per_px")
            frames, pos = np.asarray(raw["frames"]), np.asarray(raw["positions"], np.int64)
            self._mask = np.zeros((h, w), bool)
            self._mask[pos[:, 0], pos[:, 1]] = True
            self._slot = np.full((h, w), -1, np.int64)
            self._slot[pos[:, 0], pos[:, 1]] = np.arange(len(pos))
            self._data: typing.Any = frames
            sig_ndim = frames.ndim - 1
            self.survey_from = f"'survey' in {os.path.basename(path)}"
            pixel_nm = raw.get("survey_pixel_size_nm")
        else:
            from emedge_core.io import open_data

            src = open_data(path, dataset=dataset, survey=survey, kind=kind)
            self._src = src
            try:
                survey_img = self._scan(src)
            except BaseException:
                src.close()
                raise
            self.energy_eV, self._mrad = src.energy_eV, src.mrad_per_px
            self.saturation = src.saturation
            pixel_nm = src.scan_pixel_nm
            self._data = src.data       # h5py data set, memory map or dask array: read per measurement
            sig_ndim = len(src.sig_shape)
        self._survey = Survey(np.asarray(survey_img, np.float32), pixel_size_nm=pixel_nm or 1.0)
        self.signal_kind = "spectrum" if sig_ndim == 1 else "diffraction"
        if self.signal_kind == "spectrum":
            n_e = self._data.shape[-1]
            if self.energy_eV is None:
                self.close()
                raise EmedgeError(f"{path} has spectra but no 'energy_eV' ({n_e},) axis")
            if self.energy_eV.shape != (n_e,):
                self.close()
                raise EmedgeError(f"'energy_eV' in {path} has shape {self.energy_eV.shape}; "
                                  f"the spectra have {n_e} channels")

    def _scan(self, src: typing.Any) -> np.ndarray:
        """Check that ``src`` is an (H, W) scan of spectra or patterns; its survey image."""
        path = self.path
        if "survey" in src.side and np.asarray(src.side["survey"]).ndim != 2:
            shape = np.asarray(src.side["survey"]).shape
            raise EmedgeError(f"'survey' in {path} must be 2-D (H, W), got shape {shape}")
        if len(src.nav_shape) != 2 or len(src.sig_shape) not in (1, 2):
            raise EmedgeError(f"{src.title!r} in {path} has shape {src.shape}; a replay needs (H, W, E) spectra or "
                              "(H, W, ky, kx) patterns" + (" matching the survey" if "survey" in src.side else "")
                              + "; choose another signal with --dataset")
        image, self.survey_from = src.survey()
        if image.shape != src.nav_shape:
            h, w = image.shape
            raise EmedgeError(f"'data' in {path} has shape {src.shape}; expected ({h}, {w}, E) spectra or "
                              f"({h}, {w}, ky, kx) patterns matching the survey")
        return image

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
            return Frames(data, "spectrum", energy_eV=self.energy_eV)
        return Frames(data, "diffraction", mrad_per_px=self._mrad)

    def state(self) -> dict[str, typing.Any]:
        return {"instrument": "replay", "file": os.path.abspath(self.path)}

    def available(self) -> typing.Optional[np.ndarray]:
        return self._mask

    def close(self) -> None:
        """Close the file behind the frames, if any."""
        if self._src is not None:
            self._src.close()
            self._src = None
