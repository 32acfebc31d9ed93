"""The closed loop on the twin: bad frames, callbacks, stopping rules, stop from another thread."""
import threading

import numpy as np
import pytest

from emedge_core import EmedgeError
from emedge_core.experiment import Experiment, ExperimentConfig
from emedge_core.instrument import Frames
from emedge_core.scalarize import Reason
from emedge_core.twin import DigitalTwin

FAST = {"iters": 60, "warm_iters": 10}


class FlakyTwin(DigitalTwin):
    """A twin whose every third frame comes back NaN (a detector glitch)."""

    def measure(self, positions):
        f = super().measure(positions)
        data = f.data.copy()
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 3 == 0:
            data[:, 5] = np.nan
        return Frames(data, f.kind, f.energy_eV, f.mrad_per_px)


def test_nan_frames_are_failed_and_the_loop_goes_on():
    twin = FlakyTwin(size=48, seed=0)
    cfg = ExperimentConfig(budget=24, seeds=4, window=8, components=8, model=FAST)
    res = Experiment(twin, "eels_peak_energy", cfg).run()
    assert len(res.values) == 24 and res.stopped_by == "budget"
    failed = ~np.isfinite(res.values)
    assert failed.sum() >= 5
    assert (res.reasons[failed] == Reason.NONFINITE).all()
    assert len({tuple(p) for p in res.positions.tolist()}) == 24        # never twice
    assert np.isfinite(res.prediction[res.positions[~failed][:, 0], res.positions[~failed][:, 1]]).all()


def test_callback_batches_and_stop_from_another_thread():
    twin = DigitalTwin(size=48, seed=1)
    exp = Experiment(twin, "eels_peak_energy",
                     ExperimentConfig(budget=40, seeds=4, batch=3, window=8, components=8, model=FAST))
    steps = []

    def cb(step):
        steps.append(step)
        if len(steps) == 4:
            threading.Thread(target=exp.stop).start()
            threading.Event().wait(0.2)

    res = exp.run(callback=cb)
    assert res.stopped_by == "stopped"
    assert [len(s.positions) for s in steps[:3]] == [4, 3, 3]
    assert steps[1].posterior is not None and steps[1].posterior.mean.shape == (41 * 41,)
    assert len(res.values) == sum(len(s.positions) for s in steps)


def test_uncertainty_rule_fires_and_is_named():
    twin = DigitalTwin(size=40, seed=2)
    cfg = ExperimentConfig(budget=30, seeds=4, window=8, components=8, stop_uncertainty=1e9, model=FAST)
    res = Experiment(twin, "eels_peak_energy", cfg).run()
    assert res.stopped_by == "uncertainty" and len(res.values) == 4


def test_predictability_rule_fires_and_is_named():
    twin = DigitalTwin(size=40, seed=2)
    cfg = ExperimentConfig(budget=30, seeds=4, window=8, components=8, stop_predictability=(2, 1e9), model=FAST)
    res = Experiment(twin, "eels_peak_energy", cfg).run()
    assert res.stopped_by == "predictability" and len(res.values) == 6


def test_mismatches_are_clear_errors():
    twin = DigitalTwin(size=40)
    with pytest.raises(EmedgeError, match="diffraction frames"):
        Experiment(twin, "com_magnitude")
    with pytest.raises(EmedgeError, match="whole scan map"):
        Experiment(DigitalTwin(size=40, signal="diffraction"), "icom")
    with pytest.raises(EmedgeError, match="larger than the"):
        Experiment(twin, "eels_peak_energy", ExperimentConfig(budget=10_000, window=8)).run()
