"""The instrument's state over a run in experiment.h5, and the metadata checks that follow it."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import typing

import numpy as np
import pytest

from emedge_core.experiment import Experiment, ExperimentConfig
from emedge_core.experiment_file import write_experiment
from emedge_core.timeline import read_timeline
from emedge_core.twin import DigitalTwin


def test_timeline_on_the_twin_with_known_drift(tmp_path: pathlib.Path) -> None:
    drift = (0.05, -0.02)          # px per measured frame
    result = Experiment(DigitalTwin(size=40, seed=2, drift_px_per_frame=drift), "eels_peak_energy",
                        ExperimentConfig(budget=9, seeds=4, batch=1)).run()
    h5 = write_experiment(result, str(tmp_path))["h5"]
    t = read_timeline(h5)
    assert t is not None and t["started_utc"].startswith("20")
    s = t["measured_s"]
    assert len(s) == 9 and (np.diff(s) >= 0).all() and s[0] > 0
    # the seeds come in one step, then one measurement per step: a change after 4, 5, ..., 9
    assert [c["n"] for c in t["changes"]] == [4, 5, 6, 7, 8, 9]
    for c in t["changes"]:
        assert set(c["changed"]) == {"specimen_drift_px"}                   # nothing else changed
        np.testing.assert_allclose(c["changed"]["specimen_drift_px"], np.multiply(drift, c["n"]), atol=1e-12)
    out = subprocess.run([sys.executable, "-m", "emedge_core", "inspect", h5], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "timeline: 9 measurements" in out.stdout and "after 9 at +" in out.stdout
    assert "specimen_drift_px=[0.45, -0.18]" in out.stdout


class _Miscalibrated:
    """The twin, except that after ``after`` frames its state starts claiming a wrong convergence angle."""

    def __init__(self, twin: DigitalTwin, after: int) -> None:
        self.twin, self.after, self.n = twin, after, 0
        self.signal_kind = twin.signal_kind

    def survey(self) -> typing.Any:
        return self.twin.survey()

    def measure(self, positions: np.ndarray) -> typing.Any:
        self.n += len(positions)
        return self.twin.measure(positions)

    def state(self) -> dict[str, typing.Any]:
        return self.twin.state() | ({"convergence_semiangle_mrad": 40.0} if self.n >= self.after else {})

    def available(self) -> typing.Optional[np.ndarray]:
        return None


def test_metadata_checks_follow_the_state_over_the_run() -> None:
    inst = _Miscalibrated(DigitalTwin(size=40, seed=1, signal="diffraction"), after=6)
    with pytest.warns(RuntimeWarning, match="metadata disagrees"):
        result = Experiment(inst, "com_magnitude", ExperimentConfig(budget=8, seeds=4)).run()
    assert [(c["n"], c["changed"]) for c in result.timeline] == [(6, {"convergence_semiangle_mrad": 40.0})]
    assert len(result.findings) == 1 and result.findings[0]["n"] == 6     # found when the state changed, not at start
    assert result.findings[0]["key"] == "convergence_semiangle_mrad"
