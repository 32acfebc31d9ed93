"""Agreement with LiberTEM and py4DSTEM on the same data (relative difference <= 1e-5).

The peers need NumPy 1.26 and live in their own venv (``bash benchmarks/setup_peers_scalarize.sh``);
they run there through ``benchmarks/scalarize.py --peer-worker``. Without that venv these tests skip
and say so.
"""
from __future__ import annotations

import importlib.util
import os
import typing

import numpy as np
import pytest
from test_scalarize import DISK_AT, detector_field, patterns_for, phase

from emedge_core.scalarize import reduce

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "benchmarks", "scalarize.py")
spec = importlib.util.spec_from_file_location("bench_scalarize", BENCH)
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

pytestmark = pytest.mark.skipif(
    not os.path.exists(bench.PEER_PY),
    reason=f"peer venv missing ({bench.PEER_PY}); run bash benchmarks/setup_peers_scalarize.sh")
R_BF, R_ADF = 6.2, 8.2        # radii whose circles pass between pixel centres, so "<" and "<=" masks agree
ROTATION = 40.0


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, typing.Any]:
    tmp = tmp_path_factory.mktemp("peers")
    _, grad = phase()
    files = {"poisson": bench.make_4d(10, 32).astype(np.float32),
             "rotated": patterns_for(detector_field(2.0 * grad, ROTATION))}
    paths = {}
    for label, cube in files.items():
        paths[label] = str(tmp / f"{label}.npy")
        np.save(paths[label], cube)
    out = bench.run_peers({"files": paths, "cy": DISK_AT, "cx": DISK_AT, "r_bf": R_BF, "r_adf": R_ADF, "agree": True},
                          timeout=600)
    assert out is not None
    return {"data": files, "out": out}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("label", ["poisson", "rotated"])
def test_com_agrees_with_libertem_and_py4dstem(peers: dict[str, typing.Any], label: str) -> None:
    ours = reduce({"name": "com", "center": [DISK_AT, DISK_AT]}, peers["data"][label], backend="numpy").values
    theirs = peers["out"][label]
    assert rel(ours, np.array(theirs["libertem_com"])) <= 1e-5
    assert rel(ours, np.array(theirs["py4dstem_com"])) <= 1e-5


def test_virtual_detectors_agree(peers: dict[str, typing.Any]) -> None:
    cube, theirs = peers["data"]["poisson"], peers["out"]["poisson"]
    c = [DISK_AT, DISK_AT]
    bf = reduce({"name": "virtual_bf", "outer": R_BF, "center": c}, cube, backend="numpy").values
    adf = reduce({"name": "virtual_adf", "inner": R_ADF, "center": c}, cube, backend="numpy").values
    assert rel(bf, np.array(theirs["libertem_bf"])) <= 1e-5
    assert rel(bf, np.array(theirs["py4dstem_bf"])) <= 1e-5
    assert rel(adf, np.array(theirs["libertem_adf"])) <= 1e-5


def test_dpc_rotation_agrees_with_py4dstem(peers: dict[str, typing.Any]) -> None:
    out = reduce({"name": "dpc", "center": [DISK_AT, DISK_AT]}, peers["data"]["rotated"], backend="numpy")
    theirs = peers["out"]["rotated"]
    assert theirs["py4dstem_transpose"] is out.resolved["transpose"] is False
    # py4DSTEM searches a 1 deg grid; both find the rotation modulo 180 deg
    assert abs((out.resolved["rotation_deg"] - theirs["py4dstem_rotation_deg"] + 90) % 180 - 90) <= 1.0
    assert abs((out.resolved["rotation_deg"] - ROTATION + 90) % 180 - 90) <= 1.0
