"""Virtual experiments (``emedge replay``) on an experiment recorded here on the digital twin."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from emedge_core.commands.virtual import best_so_far, policy_table, read_recorded, reproduce, virtual_runs
from emedge_core.experiment import Experiment, ExperimentConfig
from emedge_core.experiment_file import write_experiment
from emedge_core.twin import DigitalTwin


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("rec")
    result = Experiment(DigitalTwin(size=40, seed=5), "eels_peak_energy",
                        ExperimentConfig(budget=12, seeds=4, seed=7, acquisition="ei")).run()
    return pathlib.Path(write_experiment(result, str(out))["h5"])


def test_same_seed_reproduces_the_recorded_positions(recorded: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rec = read_recorded(str(recorded))
    assert rec.config.acquisition == "ei" and rec.config.seed == 7 and len(rec.positions) == 12
    check = reproduce(rec)
    assert check["reproduced"] and check["first_difference"] is None, check["message"]
    # another seed is another run: the check notices
    other = tmp_path / "other.h5"
    other.write_bytes(recorded.read_bytes())
    with h5py.File(other, "r+") as f:
        cfg = json.loads(f["experiment"].attrs["config"])
        f["experiment"].attrs["config"] = json.dumps(cfg | {"seed": 8})
    assert not reproduce(read_recorded(str(other)))["reproduced"]


def test_policies_run_on_the_recorded_pool(recorded: pathlib.Path) -> None:
    rec = read_recorded(str(recorded))
    runs = virtual_runs(rec, ["ucb", "random"], seeds=3, seed=0, repeats=2, budget=8)
    recorded_at = {tuple(p): v for p, v in zip(rec.positions.tolist(), rec.values.tolist(), strict=True)}
    for vals in runs.values():
        assert len(vals) == 2 and all(len(v) == 8 for v in vals)
        for v in vals:       # every virtual value is a recorded one (the same frames, scalarized again)
            assert all(any(np.isclose(x, r) for r in recorded_at.values()) for x in v)
    table = policy_table(rec, runs)
    assert [r["policy"] for r in table] == ["recorded ei", "ucb", "random"]
    assert table[0]["best_50"] == pytest.approx(np.nanmax(rec.values[:6]))


def test_best_so_far() -> None:
    np.testing.assert_array_equal(best_so_far(np.array([np.nan, 1.0, 0.5, np.nan, 3.0])),
                                  [np.nan, 1.0, 1.0, 1.0, 3.0])


def test_emedge_replay_command(recorded: pathlib.Path, tmp_path: pathlib.Path) -> None:
    r = subprocess.run([sys.executable, "-m", "emedge_core", "replay", str(recorded), "--acquisition", "maxvar,random",
                        "--budget", "6", "--seeds", "3", "--out", str(tmp_path / "v"), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["reproduction"]["reproduced"] and set(out["curves"]) == {"recorded", "maxvar", "random"}
    assert len(out["curves"]["maxvar"]) == 6 and pathlib.Path(out["files"]["png"]).is_file()
    bad = subprocess.run([sys.executable, "-m", "emedge_core", "replay", str(recorded), "--acquisition", "greedy"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--acquisition" in bad.stderr and bad.stderr.count("\n") == 1
