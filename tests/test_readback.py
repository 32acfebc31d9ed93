"""Files emedge writes read back right in other tools (issue 12.2): every codec ``auto`` can pick,
each dtype, and an ``experiment.h5`` from a short twin run, read (1) in a subprocess that imports
only h5py + hdf5plugin, (2) through rosettasciio, (3) through emdfile - identical in dtype and
values with no reader-side step. Opt-in codecs that need emedge's inverse are flagged by ``info``."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from emedge_core import emd
from emedge_core.compress.auto import CANDIDATES, TILED

AUTO_CODECS = [*CANDIDATES, TILED, "auto"]
DTYPES = ["uint16", "float32", "float64", "int32"]

#: runs in a fresh interpreter: h5py + hdf5plugin and nothing of ours; prints {path: {dtype, sha}}
PLAIN_READER = """
import hashlib, json, sys
import h5py, hdf5plugin
out = {}
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        def visit(name, item):
            if isinstance(item, h5py.Dataset) and name.endswith("/data"):
                a = item[()]
                out[path + ":" + item.name] = [a.dtype.str, list(a.shape), hashlib.sha256(a.tobytes()).hexdigest()]
        f.visititems(visit)
print(json.dumps(out))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("emedge"))))
"""


def plain_read(paths: list[str]) -> dict[str, list]:
    """{path:/dataset: [dtype str, shape, sha256 of the bytes]} as read by h5py + hdf5plugin alone."""
    proc = subprocess.run([sys.executable, "-c", PLAIN_READER, *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    values, modules = proc.stdout.strip().splitlines()[-2:]
    assert json.loads(modules) == []
    return json.loads(values)


def digest(a: np.ndarray) -> list:
    import hashlib

    return [a.dtype.str, list(a.shape), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()]


def sample(dtype: str, kind: str) -> np.ndarray:
    """Data that makes each candidate plausible: counting-like 4D frames, EELS-like spectra."""
    rng = np.random.default_rng(11)
    if kind == "frames":                               # (4, 6, 32, 32): 1024-px detector frames
        yy, xx = np.mgrid[:32, :32]
        lam = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < 36, 4.0, 0.1)
        a = rng.poisson(lam, (4, 6, 32, 32)).astype(np.float64)
    else:                                              # (5, 7, 120) spectra
        e = np.linspace(100, 600, 120)
        a = rng.poisson(1e4 * (e / 100) ** -3 + 40 * (e > 284), (5, 7, 120)).astype(np.float64)
    if np.dtype(dtype).kind == "f":
        return (a + rng.normal(0, 0.01, a.shape)).astype(dtype)
    if np.dtype(dtype).kind == "i":
        a -= 3                                          # negative values too
    return a.astype(dtype)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[str, np.ndarray, dict]]:
    """Every auto-pickable codec x dtype x kind, written once: {key: (path, array, stats)}."""
    root = tmp_path_factory.mktemp("readback")
    out = {}
    for spec in AUTO_CODECS:
        for dtype in DTYPES:
            for kind in ("frames", "spectra"):
                a = sample(dtype, kind)
                path = str(root / f"{spec.replace(':', '_').replace('=', '')}_{dtype}_{kind}.emd")
                axes = [("y", "nm", 0.0, 0.5), ("x", "nm", 0.0, 0.5)]
                axes += ([("ky", "mrad", -16.0, 1.0), ("kx", "mrad", -16.0, 1.0)] if kind == "frames"
                         else [emd.Axis("energy", "eV", np.linspace(100, 600, 120))])
                stats = emd.write(path, {"signal": a}, codec=spec, dims={"signal": axes},
                                  metadata={"signal": {"swift_properties": {"dispersion_eV": 4.2}}})
                out[f"{spec}|{dtype}|{kind}"] = (path, a, stats["signal"])
    return out


def test_auto_only_picks_codecs_that_need_no_reader_side_step(written) -> None:
    picked = {v[2]["codec"] for k, v in written.items() if k.startswith("auto|")}
    assert picked <= set(CANDIDATES) | {TILED}, picked
    for path, _, stats in written.values():
        assert emd.info(path)["arrays"]["signal"]["warning"] is None, stats["codec"]


def test_plain_h5py_hdf5plugin_reads_identical_dtype_and_values(written) -> None:
    got = plain_read([p for p, _, _ in written.values()])
    for key, (path, a, stats) in written.items():
        assert got[f"{path}:{stats['dataset']}"] == digest(a), key


def test_stats_dataset_is_the_full_path_of_the_values(written) -> None:
    for path, a, stats in written.values():
        with h5py.File(path, "r") as f:
            assert isinstance(f[stats["dataset"]], h5py.Dataset) and f[stats["dataset"]].shape == a.shape


def test_rosettasciio_reads_values_and_calibrations(written) -> None:
    rsciio_emd = pytest.importorskip("rsciio.emd")
    for key, (path, a, _) in written.items():
        (signal,) = rsciio_emd.file_reader(path, stack_group=False)
        assert signal["data"].dtype == a.dtype and np.array_equal(signal["data"], a), key
        axes = signal["axes"]
        assert [ax["name"] for ax in axes][:2] == ["y", "x"] and axes[0]["units"] == "nm"
        assert axes[0]["scale"] == pytest.approx(0.5)
        if key.endswith("spectra"):
            assert axes[2]["units"] == "eV" and axes[2]["offset"] == pytest.approx(100.0)
            assert axes[2]["scale"] == pytest.approx(500 / 119)
        else:
            assert axes[2]["units"] == "mrad" and axes[2]["offset"] == pytest.approx(-16.0)


def test_emdfile_reads_values_axes_and_metadata(written) -> None:
    emdfile = pytest.importorskip("emdfile")
    for key, (path, a, _) in written.items():
        arr = emdfile.read(path, emdpath="data/signal")
        assert arr.data.dtype == a.dtype and np.array_equal(arr.data, a), key
        assert arr.dim_names[0] == "y" and str(arr.dim_units[-1]) == ("eV" if key.endswith("spectra") else "mrad")
        props = arr.metadata["emedge_metadata"]["swift_properties"]
        assert json.loads(props) == {"dispersion_eV": 4.2}
    assert emd.metadata(path, "signal") == {"swift_properties": {"dispersion_eV": 4.2}}


def test_opt_in_codecs_with_an_inverse_are_flagged_and_still_read_right(tmp_path) -> None:
    a = sample("float32", "spectra")
    for spec in ("delta+blosc2", "sqrt:q=1", "sparse"):
        x = a if spec != "sparse" else sample("uint16", "frames")
        path = str(tmp_path / f"{spec.replace(':', '_').replace('=', '')}.emd")
        emd.write(path, {"signal": x}, codec=spec)
        desc = emd.info(path)
        warning = desc["arrays"]["signal"]["warning"]
        assert warning and "emd.read" in warning and "--codec auto" in warning, spec
        assert desc["warnings"] == [f"signal: {warning}"]
        back = emd.read(path, "signal")
        assert np.abs(back.astype(float) - x).max() <= (0 if spec != "sqrt:q=1" else 60), spec


def test_an_earlier_versions_delta_file_still_reads_right(tmp_path) -> None:
    """Files of earlier versions, whose auto picked delta+blosc2, keep their inverse on read."""
    a = sample("float32", "spectra")
    path = str(tmp_path / "old.emd")
    emd.write(path, {"si": a, "energy_eV": np.linspace(100, 600, 120)}, codec="delta+blosc2", sig_ndim={"si": 1})
    with h5py.File(path, "r") as f:
        assert f["data/si/data"].dtype == np.uint32            # what other readers see: the residuals
    back = emd.read(path)
    assert back["si"].dtype == np.float32 and np.array_equal(back["si"], a)
    assert np.array_equal(back["energy_eV"], np.linspace(100, 600, 120))


def test_experiment_file_from_a_twin_run_reads_right_everywhere(tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "emedge_core", "run", "--instrument", "twin", "--scalarizer",
                           '{"name":"eels_band_ratio","low_eV":[5,10],"high_eV":[15,20]}', "--budget", "8",
                           "--size", "40", "--window", "8", "--seeds", "4", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = str(out / "experiment.h5")
    desc = emd.info(path)
    assert desc["warnings"] == []
    ours = emd.read(path)
    for name in ("frames", "energy_eV", "prediction", "uncertainty", "survey", "values"):
        assert name in ours
    got = plain_read([path])
    for name, a in ours.items():
        assert got[f"{path}:/experiment/{name}/data"] == digest(a), name
    emdfile = pytest.importorskip("emdfile")
    for name in ("frames", "energy_eV", "prediction"):
        assert np.array_equal(emdfile.read(path, emdpath=f"experiment/{name}").data, ours[name], equal_nan=True)
    rsciio_emd = pytest.importorskip("rsciio.emd")
    signals = {s["metadata"]["General"]["title"]: s for s in rsciio_emd.file_reader(path, stack_group=False)}
    for name in ("frames", "energy_eV", "prediction"):
        assert np.array_equal(signals[name]["data"], ours[name], equal_nan=True), name
    assert signals["frames"]["axes"][-1]["units"] == "eV"
