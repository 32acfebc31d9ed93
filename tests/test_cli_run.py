"""``emedge run`` end to end, as other tools call it: a subprocess, JSON on the last line."""
import json
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401  (the filters the compressed maps need)
import numpy as np
import pytest

from emedge_core.twin import DigitalTwin

SMALL = ["--size", "48", "--window", "8", "--seeds", "4"]


def emedge(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "emedge_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_run_twin_json_and_files(tmp_path):
    out = tmp_path / "out"
    spec = '{"name":"eels_band_ratio","low_eV":[5,10],"high_eV":[15,20]}'
    p = emedge("run", "--instrument", "twin", "--scalarizer", spec, "--budget", "12", *SMALL, "--acquisition", "ei",
               "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(summary["positions"]) == len(summary["scalars"]) == 12
    assert summary["stopped_by"] == "budget" and summary["n_candidates"] == 41 * 41
    assert summary["seconds_per_step_median"] > 0
    # NaN (a vacuum pixel: no counts in either band) is a failed measurement, written as null
    assert all(v is None or isinstance(v, float) for v in summary["scalars"])
    assert sum(v is None for v in summary["scalars"]) == summary["n_failed"] < 12
    assert "emedge run" in p.stderr                      # the progress bar
    for name in ("experiment.h5", "summary.json", "maps.png"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "experiment.h5", "r") as f:
        g = f["experiment"]
        np.testing.assert_array_equal(g["positions"]["data"][()], summary["positions"])
        assert json.loads(g.attrs["config"])["acquisition"] == "ei"
        assert json.loads(g.attrs["instrument_state"])["instrument"] == "digital twin"
        # the final 95 % intervals: the scalar's inside a new measurement's, the prediction inside both
        pred = g["prediction"]["data"][()]
        lo, hi = g["interval_lower"]["data"][()], g["interval_upper"]["data"][()]
        plo, phi = g["predictive_lower"]["data"][()], g["predictive_upper"]["data"][()]
        ok = np.isfinite(pred)
        assert ok.sum() == 41 * 41 and g["interval_lower"]["dim1"].attrs["units"] == "nm"
        assert (plo[ok] <= lo[ok]).all() and (lo[ok] <= pred[ok]).all() and (pred[ok] <= hi[ok]).all()
        assert (hi[ok] <= phi[ok]).all() and (phi[ok] - plo[ok] > hi[ok] - lo[ok]).mean() > 0.5


def test_run_replay_and_rerun_of_an_experiment_file(tmp_path):
    twin = DigitalTwin(size=40, seed=4, signal="diffraction", detector=16)
    rr, cc = np.mgrid[0:40, 0:40]
    data = twin.measure(np.stack([rr.ravel(), cc.ravel()], 1)).data.reshape(40, 40, 16, 16)
    np.savez(tmp_path / "scan.npz", survey=twin.survey().image, data=data)
    p = emedge("run", "--instrument", "replay", "--data", str(tmp_path / "scan.npz"), "--scalarizer", "com_magnitude",
               "--budget", "10", "--window", "8", "--seeds", "4", "--out", str(tmp_path / "o"), "--json")
    assert p.returncode == 0, p.stderr
    first = json.loads(p.stdout.splitlines()[-1])
    pos = np.array(first["positions"])
    assert len(pos) == 10
    # the values are the scalarizer applied to the file's frames at those positions
    from emedge_core.scalarize import reduce
    from emedge_core.instrument import Frames
    ref = reduce("com_magnitude", Frames(data[pos[:, 0], pos[:, 1]], "diffraction")).values
    np.testing.assert_allclose(first["scalars"], ref, rtol=1e-6)
    # the experiment file replays: only its measured positions are candidates
    p = emedge("run", "--instrument", "replay", "--data", str(tmp_path / "o" / "experiment.h5"), "--scalarizer",
               "com_magnitude", "--budget", "10", "--window", "8", "--seeds", "4", "--out", str(tmp_path / "o2"),
               "--json")
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout.splitlines()[-1])
    assert sorted(map(tuple, again["positions"])) == sorted(map(tuple, first["positions"]))


@pytest.mark.parametrize("args,msg", [
    (["--instrument", "replay", "--data", "/nonexistent.h5"], "not found"),
    (["--instrument", "replay"], "needs --data"),
    (["--scalarizer", "eels_magic"], "unknown scalarizer"),
    (["--scalarizer", "{not json"], "not valid JSON"),
    (["--scalarizer", '{"name":"eels_band_ratio","low_eV":[5]}'], "bad parameters"),
    (["--budget", "99999", *SMALL], "larger than the"),
    (["--budget", "0"], "must be >= 1"),
    (["--scalarizer", "com_magnitude", "--signal", "spectrum"], "diffraction frames"),
])
def test_bad_input_is_one_line(tmp_path, args, msg):
    p = emedge("run", "--out", str(tmp_path / "x"), *args)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "emedge run:" not in ln]
    assert len(lines) == 1 and lines[0].startswith("emedge: error:") and msg in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_replay_with_missing_key_and_wrong_shape(tmp_path):
    np.savez(tmp_path / "a.npz", survey=np.zeros((8, 8)))
    np.savez(tmp_path / "b.npz", survey=np.zeros((8, 8)), data=np.zeros((8, 9, 4, 4)))
    for name, msg in (("a.npz", "no 'data'"), ("b.npz", "expected")):
        p = emedge("run", "--instrument", "replay", "--data", str(tmp_path / name), "--scalarizer", "com_magnitude",
                   "--out", str(tmp_path / "o"))
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr


def test_run_with_the_cnn_extractor(tmp_path):
    p = emedge("run", "--extractor", "cnn", "--budget", "8", *SMALL, "--out", str(tmp_path / "c"), "--json")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout.splitlines()[-1])["positions"]) == 8
    with h5py.File(tmp_path / "c" / "experiment.h5", "r") as f:
        assert json.loads(f["experiment"].attrs["config"])["model"]["extractor"] == "cnn"


def test_help_lists_the_spatial_switch_and_it_reaches_the_model(tmp_path):
    p = emedge("run", "--help")
    assert p.returncode == 0 and "--no-spatial" in p.stdout and "--spatial-lengthscale" in p.stdout
    out = tmp_path / "o"
    p = emedge("run", "--budget", "8", *SMALL, "--no-spatial", "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    with h5py.File(out / "experiment.h5", "r") as f:
        assert json.loads(f["experiment"].attrs["config"])["model"]["spatial"] is False
    p = emedge("run", "--budget", "8", *SMALL, "--spatial-lengthscale", "0", "--out", str(out))
    assert p.returncode != 0 and "spatial-lengthscale" in p.stderr and "Traceback" not in p.stderr


def test_a_replay_whose_frames_all_saturate_warns_names_the_option_and_exits_1(tmp_path):
    # an 8-bit detector of unknown depth whose direct beam sits at 255 everywhere (as PED blockfiles do)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 20, (6, 6, 12, 12)).astype(np.uint8)
    data[..., 5:7, 5:7] = 255
    survey = rng.random((6, 6)).astype(np.float32)
    np.savez(tmp_path / "scan.npz", survey=survey, data=data)
    args = ["run", "--instrument", "replay", "--data", str(tmp_path / "scan.npz"), "--budget", "6", "--seeds", "3",
            "--window", "2", "--components", "3", "--json"]
    p = emedge(*args, "--scalarizer", "com_magnitude", "--out", str(tmp_path / "a"))
    assert p.returncode == 1, p.stderr
    assert "6 of 6 measurements gave no value (6 saturated)" in p.stderr and '"saturation"' in p.stderr
    assert "255 counts (the uint8 maximum)" in p.stderr            # the level the reduction used
    assert (tmp_path / "a" / "experiment.h5").exists()          # nothing is lost
    p = emedge(*args, "--scalarizer", '{"name": "com_magnitude", "saturation": 256}', "--out", str(tmp_path / "b"))
    assert p.returncode == 0, p.stderr
    assert "gave no value" not in p.stderr
    assert all(v is not None for v in json.loads(p.stdout.splitlines()[-1])["scalars"])
