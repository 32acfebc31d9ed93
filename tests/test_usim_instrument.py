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


def _probe(inst: SwiftInstrument) -> typing.Any:
    p = inst.stem.probe_position
    return None if p is None else (round(p.y, 6), round(p.x, 6))


def test_batches_restore_the_camera_and_a_run_restores_the_probe(usim: UsimSession,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera settings come back after every batch (ended or failed), the probe position on restore()."""
    from nion.utils import Geometry

    inst = usim.instrument("spectrum", survey_px=16, exposure_ms=3, binning=2)
    usim.stem.probe_position = Geometry.FloatPoint(y=0.25, x=0.75)
    before_probe, before_camera = _probe(inst), inst.camera.get_current_frame_parameters().as_dict()
    inst.survey()
    inst.measure(np.array([[2, 3], [9, 9]]))
    assert inst.camera.get_current_frame_parameters().as_dict() == before_camera and not inst.camera.is_playing
    assert _probe(inst) == (round(9.5 / 16, 6), round(9.5 / 16, 6))          # parked where it measured last
    inst.measure(np.array([[4, 4]]))
    inst.restore()
    assert _probe(inst) == before_probe                                       # where it was before the run
    calls = {"n": 0}
    take = inst.camera.get_next_xdatas_to_start

    def flaky(*a: typing.Any, **k: typing.Any) -> typing.Any:
        calls["n"] += 1
        return [None] if calls["n"] == 2 else take(*a, **k)

    monkeypatch.setattr(inst.camera, "get_next_xdatas_to_start", flaky)
    with pytest.raises(EmedgeError, match="no frame"):
        inst.measure(np.array([[1, 1], [2, 2], [3, 3]]))
    assert inst.camera.get_current_frame_parameters().as_dict() == before_camera and not inst.camera.is_playing
    inst.close()                                                              # restores; owns no session here
    assert _probe(inst) == before_probe


def test_a_batch_is_cancelled_between_frames(usim: UsimSession, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = usim.instrument("spectrum", survey_px=16, exposure_ms=3)
    inst.survey()
    take = inst.camera.get_next_xdatas_to_start
    seen = {"n": 0}

    def cancel_after_two(*a: typing.Any, **k: typing.Any) -> typing.Any:
        seen["n"] += 1
        if seen["n"] == 2:
            inst.cancel()                    # as Experiment.stop() does from the UI thread
        return take(*a, **k)

    monkeypatch.setattr(inst.camera, "get_next_xdatas_to_start", cancel_after_two)
    frames = inst.measure(np.array([[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]))
    assert len(frames) == 2 and seen["n"] == 2 and not inst.camera.is_playing
    assert len(inst.measure(np.array([[6, 6]]))) == 0       # still cancelled: an empty batch of the same kind
    inst.survey()                                            # a new run clears it
    assert len(inst.measure(np.array([[6, 6], [7, 7]]))) == 2
    inst.restore()


def test_stopping_a_run_cancels_its_batch_between_frames(usim: UsimSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiment.stop() during a batch: the batch ends after the frame in progress, the step keeps
    its frames, and restore() puts the probe back."""
    from emedge_core.experiment import Experiment, ExperimentConfig

    inst = usim.instrument("spectrum", survey_px=16, exposure_ms=3)
    before = _probe(inst)
    run = Experiment(inst, "eels_band_integral",
                     ExperimentConfig(budget=12, seeds=4, batch=4, window=8, acquisition="random"))
    take = inst.camera.get_next_xdatas_to_start
    seen = {"n": 0}

    def stop_in_the_second_batch(*a: typing.Any, **k: typing.Any) -> typing.Any:
        seen["n"] += 1
        if seen["n"] == 6:
            run.stop()
        return take(*a, **k)

    monkeypatch.setattr(inst.camera, "get_next_xdatas_to_start", stop_in_the_second_batch)
    result = run.run()
    assert result.stopped_by == "stopped" and len(result.values) == 6 == len(result.frames) == seen["n"]
    inst.restore()
    assert _probe(inst) == before


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
