"""Specimen drift (measured and corrected in the loop) and metadata the frames contradict."""
import json
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from scipy import ndimage

from emedge_core import EmedgeError
from emedge_core.consistency import check
from emedge_core.drift import DriftTracker, measure_shift
from emedge_core.experiment import Experiment, ExperimentConfig
from emedge_core.instrument import Frames
from emedge_core.twin import DigitalTwin


@pytest.mark.parametrize("shift", [(2.3, -1.6), (0.0, 5.0), (-7.5, 3.25)])
def test_measure_shift_recovers_a_sub_pixel_shift(shift):
    image = DigitalTwin(seed=0).survey().image
    moved = ndimage.shift(image.astype(np.float64), shift, order=3, mode="nearest")
    dy, dx = measure_shift(image, moved)
    assert abs(dy - shift[0]) < 0.05 and abs(dx - shift[1]) < 0.05


def test_measure_shift_refuses_bad_images():
    image = np.ones((16, 16))
    with pytest.raises(EmedgeError, match="same"):
        measure_shift(image, np.ones((16, 8)))
    bad = image.copy()
    bad[3, 3] = np.nan
    with pytest.raises(EmedgeError, match="NaN"):
        measure_shift(image, bad)


def test_an_unbelievable_shift_keeps_the_last_one_and_warns():
    image = DigitalTwin(seed=0).survey().image
    tracker = DriftTracker(image, max_px=1.0)
    with pytest.warns(RuntimeWarning, match="not believed"):
        tracker.update(ndimage.shift(image, (3.0, 0.0), mode="nearest"), 10, 1.0)
    assert tracker.shift == (0.0, 0.0)
    assert tracker.correct(np.array([[0, 0], [5, 127]]), (128, 128)).tolist() == [[0, 0], [5, 127]]


def _specimen_error(result, rate):
    """Distance (px) between the specimen pixel each frame hit and the one the model asked for,
    from the twin's known drift (batch 1 after the seeds: frame k was measured at drift k * rate)."""
    k = np.arange(len(result.positions))
    hit = result.probe_positions - np.rint(k[:, None] * np.asarray(rate))
    return np.abs(hit - result.positions).max(axis=1)


def test_the_loop_follows_a_drifting_specimen():
    rate = (0.1, -0.06)                                  # px per frame: 6 px down, 3.6 px left after 60
    config = ExperimentConfig(budget=60, seeds=10, drift_every=1)
    twin = DigitalTwin(seed=0, drift_px_per_frame=rate)
    result = Experiment(twin, "eels_peak_energy", config).run()
    n, dy, dx = result.drift[-1, :3]
    assert abs(dy - n * rate[0]) < 0.3 and abs(dx - n * rate[1]) < 0.3
    assert result.summary()["drift_px"] == pytest.approx([dy, dx])
    assert _specimen_error(result, rate)[10:].max() <= 1.0          # every steered frame hit its site
    blind = Experiment(DigitalTwin(seed=0, drift_px_per_frame=rate), "eels_peak_energy",
                       ExperimentConfig(budget=60, seeds=10)).run()
    assert (blind.probe_positions == blind.positions).all() and len(blind.drift) == 0
    assert _specimen_error(blind, rate)[-10:].min() >= 5.0           # without tracking they land 5-7 px off


def test_a_miscalibrated_energy_axis_is_found_and_kept(tmp_path):
    from emedge_core.experiment_file import write_experiment

    twin = DigitalTwin(seed=0, energy_offset_eV=1.5)
    with pytest.warns(RuntimeWarning, match="zero-loss peak at \\+1.50 eV"):
        result = Experiment(twin, "eels_peak_energy", ExperimentConfig(budget=12, seeds=10)).run()
    [finding] = result.findings
    assert finding["key"] == "energy_offset_eV" and finding["measured"] == pytest.approx(1.5, abs=0.1)
    write_experiment(result, str(tmp_path))
    with h5py.File(tmp_path / "experiment.h5", "r") as f:
        assert json.loads(f["experiment"].attrs["findings"]) == result.findings
        assert f["experiment"]["probe_positions"]["data"].shape == (12, 2)


def test_a_wrong_convergence_angle_is_found():
    twin = DigitalTwin(seed=0, signal="diffraction", stated_convergence_mrad=30.0)
    frames = twin.measure(np.array([[20, 20], [30, 40], [50, 60]]))
    [finding] = check(frames, twin.state())
    assert finding.key == "convergence_semiangle_mrad" and finding.stated == 30.0
    assert finding.measured == pytest.approx(25.0, rel=0.05)            # the twin's true semi-angle


def test_consistent_metadata_gives_no_finding():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for signal in ("spectrum", "diffraction"):
            twin = DigitalTwin(seed=0, signal=signal)
            assert check(twin.measure(np.array([[20, 20], [30, 40]])), twin.state()) == []
    core_loss = Frames(np.ones((2, 50)), "spectrum", energy_eV=np.linspace(80, 130, 50))   # no ZLP in view
    assert check(core_loss, {}) == []
    empty = Frames(np.zeros((2, 8, 8)), "diffraction", mrad_per_px=1.0)
    assert check(empty, {"convergence_semiangle_mrad": 25.0}) == []


def test_cli_drift_flags(tmp_path):
    run = [sys.executable, "-m", "emedge_core", "run", "--size", "48", "--window", "8", "--seeds", "4",
           "--budget", "14", "--out", str(tmp_path / "o")]
    p = subprocess.run(run + ["--drift", "0.1,0", "--drift-every", "2", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["drift_px"][0] == pytest.approx(1.2, abs=0.4) and summary["findings"] == []
    for bad, message in ((["--drift", "0.1"], "--drift wants DY,DX"),
                         (["--drift-every", "0"], "--drift-every must be")):
        p = subprocess.run(run + bad, capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and message in p.stderr


def test_no_zlp_finding_without_a_clear_zero_loss_peak():
    """A low-loss window spanning 0 eV that holds no ZLP (a plasmon on a flat background, plus noise)
    gives no finding; the same spectra with a ZLP 2 eV off do."""
    rng = np.random.default_rng(4)
    e = np.linspace(-20, 80, 400)
    plasmon = 300 + 200 * np.exp(-0.5 * ((e - 22) / 6) ** 2)
    spectra = rng.poisson(np.broadcast_to(plasmon, (5, 400))).astype(np.float64)
    assert check(Frames(spectra, "spectrum", energy_eV=e), {}) == []
    with_zlp = spectra + rng.poisson(5e4 * np.exp(-0.5 * ((e - 2.0) / 0.5) ** 2), spectra.shape)
    [finding] = check(Frames(with_zlp, "spectrum", energy_eV=e), {})
    assert finding.measured == pytest.approx(2.0, abs=0.3)
