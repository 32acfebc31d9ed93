"""emedge stream on nionswift-usim through nionswift-instrumentation's synchronized scan
(``grab_synchronized``, one scan row per section): 4D and SI scans end to end to the stage and the
follower, and a scan stopped mid-way (the partial file says how far it got)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import typing

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

pytest.importorskip("nionswift_plugin.usim")

from emedge_core import emd  # noqa: E402
from emedge_core.instrument import Frames  # noqa: E402
from emedge_core.stream import follow, stream  # noqa: E402
from emedge_core.stream.stage import read_manifest  # noqa: E402
from nionswift_plugin.emedge.swift_instrument import UsimSession  # noqa: E402


@pytest.mark.parametrize("kind,scan,spec", [("4d", "4x6", "virtual_bf"), ("si", "5x7", "eels_band_integral")])
def test_usim_synchronized_scan_cli(tmp_path: typing.Any, kind: str, scan: str, spec: str) -> None:
    out, stage = str(tmp_path / "scan.h5"), str(tmp_path / "stage")
    r = subprocess.run([sys.executable, "-m", "emedge_core.cli", "stream", "--instrument", "usim", "--kind", kind,
                        "--scan", scan, "--out", out, "--stage", stage, "--scalarizer", spec, "--block-rows", "1",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    h, w = (int(v) for v in scan.split("x"))
    assert s["frames"] == h * w and s["dropped"] == 0 and s["chunks_published"] == h
    smap = np.load(s["scalar_map"])
    assert smap.shape == (h, w) and np.isfinite(smap).all()
    with h5py.File(out, "r") as f:
        data = f["data/data/data"]
        assert data.shape[:2] == (h, w) and data.shape[2:] == ((512,) if kind == "si" else (512, 512))
        assert np.asarray(data).std() > 0                       # the simulator's frames, not zeros
    if kind == "si":
        dims = emd.info(out)["arrays"]["data"]["dims"]
        assert dims[2]["units"] == "eV" and dims[2]["step"] == pytest.approx(1.0)
    res = str(tmp_path / "f.h5")
    f = follow(stage, spec, res, until_complete=True)
    assert f.complete and f.blocks_done == h
    np.testing.assert_allclose(emd.read(res, "map"), smap, rtol=1e-6)


def test_usim_scan_stopped_mid_way(tmp_path: typing.Any) -> None:
    stop = threading.Event()
    out, stage = str(tmp_path / "p.h5"), str(tmp_path / "st")
    with UsimSession() as session:
        inst = session.instrument("spectrum")
        scan_rows = inst.scan_rows

        def stop_after_two(shape: tuple[int, int], on_row: typing.Callable[[int, Frames], None]) -> int:
            def row(r: int, got: Frames) -> None:
                on_row(r, got)
                if r == 1:
                    stop.set()                  # the operator presses Stop after the second row
            return scan_rows(shape, row)

        inst.scan_rows = stop_after_two        # type: ignore[method-assign]
        res = stream(inst, "si", (16, 8), out, stage=stage, scalarizer="eels_band_integral", stop=stop,
                     block_rows=1)
    assert not res.complete and 2 <= res.rows < 16 and res.frames == res.rows * 8 and res.dropped == 0
    how = emd.metadata(out, "scalar_map")["stream"]
    assert how["rows_acquired"] == res.rows and how["complete"] is False
    with h5py.File(out, "r") as f:
        assert int(f["data/data/data"].attrs["frames_written"]) == res.frames
    m = read_manifest(stage)
    assert m is not None and m["ended"] and not m["complete"] and m["frames"] == res.frames
    assert os.path.exists(res.scalar_map)
