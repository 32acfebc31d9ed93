"""The Swift acquisition adapter on the real nionswift-usim simulator, and ``emedge run --instrument usim``."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import typing

import numpy as np
import pytest

pytest.importorskip("nionswift_plugin.usim")

from emedge_core import EmedgeError  # noqa: E402
from emedge_core.scalarize import reduce  # noqa: E402
from nionswift_plugin.emedge.swift_instrument import SwiftInstrument, UsimSession  # noqa: E402


@pytest.fixture(scope="module")
def usim() -> typing.Iterator[UsimSession]:
    cwd = os.getcwd()
    with UsimSession() as session:
        assert os.getcwd() == cwd and not os.path.exists("test_data")   # usim's rmtree stayed in its temp dir
        yield session


def _smooth(img: np.ndarray) -> np.ndarray:
    k = np.ones(5) / 5
    img = np.apply_along_axis(np.convolve, 0, img, k, mode="same")
    return np.apply_along_axis(np.convolve, 1, img, k, mode="same")


def test_survey_measure_state_spectra(usim: UsimSession) -> None:
    inst = usim.instrument("spectrum", survey_px=32, exposure_ms=10)
    with pytest.raises(EmedgeError, match="before survey"):
        inst.measure(np.array([[1, 1]]))
    survey = inst.survey()
    assert survey.image.shape == (32, 32) and survey.channel == "HAADF"
    assert survey.pixel_size_nm == pytest.approx(100 / 32) and survey.origin_nm == (-50.0, -50.0)
    sm = _smooth(survey.image)[4:-4, 4:-4]
    bright = np.array(np.unravel_index(np.argmax(sm), sm.shape)) + 4
    dark = np.array(np.unravel_index(np.argmin(sm), sm.shape)) + 4
    frames = inst.measure(np.array([bright, dark, bright]))
    assert frames.kind == "spectrum" and frames.data.shape == (3, 512)
    assert frames.energy_eV[0] == pytest.approx(-20.0) and np.diff(frames.energy_eV) == pytest.approx(1.0)
    plasmon = reduce("eels_band_integral", frames).values
    # the probe really moved: the specimen (bright HAADF) gives a plasmon, vacuum almost none
    assert plasmon[0] > 5 * plasmon[1] and plasmon[2] > 5 * plasmon[1]
    state = inst.state()
    assert state["high_tension_V"] == 1e5 and state["defocus_m"] == pytest.approx(5e-7)
    assert state["probe_position"] == pytest.approx([(bright[0] + 0.5) / 32, (bright[1] + 0.5) / 32])
    assert state["camera"]["device"] == "usim_eels_camera" and state["scan"]["pixel_size_nm"] == pytest.approx(100 / 32)
    json.dumps(state)
    with pytest.raises(ValueError, match="outside"):
        inst.measure(np.array([[32, 0]]))


def test_diffraction_frames(usim: UsimSession) -> None:
    inst = usim.instrument("diffraction", survey_px=16, binning=4)
    inst.survey()
    frames = inst.measure(np.array([[8, 8]]))
    sensor = tuple(usim.stem.camera_sensor_dimensions("ronchigram"))
    assert frames.kind == "diffraction" and frames.data.shape == (1, sensor[0] // 4, sensor[1] // 4)
    assert frames.mrad_per_px is not None and frames.mrad_per_px > 0


def test_bad_signal_kind(usim: UsimSession) -> None:
    with pytest.raises(EmedgeError, match="signal must be"):
        SwiftInstrument(usim.stem, "hologram")


def test_emedge_run_instrument_usim(tmp_path: pathlib.Path) -> None:
    """The CLI loads the adapter through the emedge.instruments entry point and exits by itself."""
    proc = subprocess.run(
        [sys.executable, "-m", "emedge_core", "run", "--instrument", "usim", "--scalarizer", "eels_band_integral",
         "--budget", "6", "--seeds", "3", "--size", "32", "--window", "8", "--out", "out", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n_measured"] == 6 and summary["stopped_by"] == "budget"
    assert summary["scalarizer"]["name"] == "eels_band_integral"
    assert (tmp_path / "out" / "experiment.h5").is_file()
    assert not (tmp_path / "test_data").exists()
