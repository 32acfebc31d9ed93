"""``emedge compress`` / ``emedge inspect`` and ``experiment.h5`` written through the EMD writer."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from emedge_core import emd
from emedge_core.cli import main
from test_compress import DATA

KEYS = {"ratio", "compress_MBps", "dataset", "lossless", "max_abs_error"}


def _json_tail(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_compress_npz_lossless(tmp_path, capsys) -> None:
    src, out = tmp_path / "in.npz", tmp_path / "out.h5"
    np.savez(src, data=DATA["counting"], survey=DATA["survey"])
    assert main(["compress", str(src), str(out), "--json"]) == 0
    res = _json_tail(capsys)
    assert set(res) == KEYS and res["lossless"] is True and res["max_abs_error"] == 0.0
    with h5py.File(out, "r") as f:                         # the full HDF5 path of the written array
        assert isinstance(f[res["dataset"]], h5py.Dataset) and f[res["dataset"]].shape == DATA["counting"].shape
    assert res["ratio"] > 2 and res["compress_MBps"] > 0
    back = emd.read(str(out))
    assert np.array_equal(back["data"], DATA["counting"]) and np.array_equal(back["survey"], DATA["survey"])
    assert not os.path.exists(str(out) + ".partial")


def test_compress_hdf5_spectra_lossy_reports_its_error(tmp_path, capsys) -> None:
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f["data"], f["energy_eV"] = DATA["eels"], np.linspace(100, 600, 200)
    assert main(["compress", str(src), str(out), "--codec", "sz3:abs=2", "--json"]) == 0
    res = _json_tail(capsys)
    assert res["lossless"] is False and 0 < res["max_abs_error"] <= 2.0
    with h5py.File(out, "r") as f:          # spectra: whole scan rows of spectra per chunk, not per image
        assert f["data/data/data"].chunks == (4, 6, 200)


def test_compress_an_emd_file_and_inspect(tmp_path, capsys) -> None:
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    emd.write(str(first), {"cube": DATA["integrating"]}, codec="raw")
    assert main(["compress", str(first), str(second), "--codec", "delta+blosc2", "--json"]) == 0
    assert _json_tail(capsys)["dataset"] == "/data/data/data"
    assert emd.info(str(second))["provenance"]["parameters"]["dataset"] == "cube"
    assert main(["inspect", str(second)]) == 0
    text = capsys.readouterr().out
    assert "codec delta+blosc2" in text and "provenance.software" in text and "32026 blosc2" in text
    assert main(["inspect", str(second), "--json"]) == 0
    desc = _json_tail(capsys)
    assert desc["arrays"]["data"]["codec"] == "delta+blosc2"
    assert desc["provenance"]["parameters"]["input"] == str(first)


@pytest.mark.parametrize("argv,match", [
    (["compress", "{tmp}/missing.npz", "{tmp}/o.h5"], "not found"),
    (["compress", "{tmp}/in.npz", "{tmp}/o.h5", "--codec", "zz"], "unknown"),
    (["compress", "{tmp}/in.npz", "{tmp}/o.h5", "--codec", "sz3:abs=1"], "float data"),
    (["compress", "{tmp}/in.npz", "{tmp}/o.h5", "--dataset", "nope"], "no 'nope'"),
    (["inspect", "{tmp}/missing.h5"], "cannot open"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, match) -> None:
    np.savez(tmp_path / "in.npz", data=DATA["counting"])
    (tmp_path / "o.h5").write_bytes(b"keep me")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emedge: error:") and match in err[0]
    assert (tmp_path / "o.h5").read_bytes() == b"keep me"          # an old OUT survives a failed run


def _result(kind: str):
    from emedge_core.experiment import ExperimentConfig, ExperimentResult
    from emedge_core.instrument import Survey

    rng = np.random.default_rng(3)
    n = 6
    frames = DATA["eels"].reshape(-1, 200)[:n] if kind == "spectrum" else DATA["integrating"].reshape(-1, 32, 32)[:n]
    axis = {"energy_eV": np.linspace(100, 600, 200)} if kind == "spectrum" else {"mrad_per_px": 0.5}
    pred = rng.normal(size=(20, 24))
    return ExperimentResult(
        survey=Survey(DATA["survey"].astype(np.float32), pixel_size_nm=0.05),
        config=ExperimentConfig(budget=n, seeds=2),
        scalarizer={"name": "x"}, signal_kind=kind, positions=rng.integers(0, 20, (n, 2)),
        values=rng.normal(size=n), reasons=np.zeros(n, np.uint8), frames=frames, frame_axis=axis,
        prediction=pred, uncertainty=np.abs(pred), step_seconds=[0.1] * 3, max_std=[np.nan, 1.0, 0.5],
        stopped_by="budget", instrument_state={"instrument": "twin", "high_tension_V": 2e5}, n_candidates=400)


@pytest.mark.parametrize("kind", ["spectrum", "diffraction"])
def test_experiment_file_is_compressed_emd_and_replays(tmp_path, kind: str) -> None:
    from emedge_core.experiment_file import write_experiment
    from emedge_core.replay import Replay

    result = _result(kind)
    paths = write_experiment(result, str(tmp_path))
    desc = emd.info(paths["h5"])
    assert desc["file_attrs"]["version_major"] == 1 and desc["root"] == "/experiment"
    assert desc["provenance"]["instrument_state"]["high_tension_V"] == 2e5
    assert all(a["lossless"] for a in desc["arrays"].values())
    assert desc["arrays"]["frames"]["filters"]                    # frames are compressed
    back = emd.read(paths["h5"])
    assert np.array_equal(back["frames"], result.frames) and np.array_equal(back["positions"], result.positions)
    assert np.array_equal(back["max_std"], np.asarray(result.max_std), equal_nan=True)
    with h5py.File(paths["h5"], "r") as f:
        assert json.loads(f["experiment"].attrs["instrument_state"])["instrument"] == "twin"
    replay = Replay(paths["h5"])
    assert replay.signal_kind == kind and replay.available().sum() == len(np.unique(result.positions, axis=0))
    i = len(result.positions) - 1
    assert np.array_equal(replay.measure(result.positions[i:i + 1]).data[0], result.frames[i])


def test_compress_keeps_nan_and_takes_frames_of_an_experiment_file(tmp_path, capsys) -> None:
    from emedge_core.experiment_file import write_experiment

    paths = write_experiment(_result("diffraction"), str(tmp_path))
    out = tmp_path / "frames.h5"
    assert main(["compress", paths["h5"], str(out), "--json"]) == 0
    assert _json_tail(capsys)["dataset"] == "/data/data/data"
    assert emd.info(str(out))["provenance"]["parameters"]["dataset"] == "frames"
    assert main(["compress", paths["h5"], str(out), "--dataset", "max_std", "--json"]) == 0   # holds a NaN
    res = _json_tail(capsys)
    assert res["lossless"] and res["max_abs_error"] == 0.0
    assert np.isnan(emd.read(str(out), "data")[0])


def test_max_abs_error_refuses_moved_nans() -> None:
    from emedge_core import EmedgeError
    from emedge_core.commands.compress import max_abs_error

    assert max_abs_error(np.array([1.0, np.nan, 3.5]), np.array([1.0, np.nan, 3.0])) == 0.5
    with pytest.raises(EmedgeError, match="NaN"):
        max_abs_error(np.array([np.nan, 2.0]), np.array([1.0, 2.0]))
