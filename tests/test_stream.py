"""emedge stream / emedge follow (issue 15): the CLI contract, the stage and manifest, the consumer
before / during / after a scan, kill -9 of the consumer, Dask, raw spill and faults.

Data: the seeded digital twin (4D patterns and EELS spectra as Poisson counts) and two real files from
rosettasciio's test data (tests/data/dm/EELS_SI.dm4, tests/data/merlin/001_4x2_6bit.mib) replayed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import typing
import time

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from emedge_core import EmedgeError, emd
from emedge_core.instrument import InstrumentOptions, open_instrument
from emedge_core.scalarize import reduce
from emedge_core.stream import follow, stream
from emedge_core.stream.stage import read_block, read_manifest
from emedge_core.twin import DigitalTwin

DATA = os.path.join(os.path.dirname(__file__), "data")
KEYS = {"frames", "dropped", "chunks_published", "seconds", "sustained_MBps", "latency_ms_p50", "latency_ms_p95",
        "scalar_map"}


def emedge(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emedge_core.cli", *args], capture_output=True, text=True,
                          timeout=300, **kw)  # type: ignore[call-overload]


def test_cli_contract_4d_twin_stage_and_follow(tmp_path: os.PathLike[str]) -> None:
    out, stage = os.path.join(tmp_path, "scan.h5"), os.path.join(tmp_path, "stage")
    r = emedge("stream", "--instrument", "twin", "--kind", "4d", "--scan", "12x20", "--out", out, "--stage", stage,
               "--block-rows", "3", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert KEYS <= set(s)
    assert s["frames"] == 240 and s["dropped"] == 0 and s["chunks_published"] == 4 and s["complete"]
    assert s["latency_ms_p95"] >= s["latency_ms_p50"] > 0
    assert isinstance(s["codec_switches"], list)        # auto's steps to a lighter codec (tests/test_stream_codec.py)
    smap = np.load(s["scalar_map"])
    assert smap.shape == (12, 20) and np.isfinite(smap).all()
    with h5py.File(out, "r") as f:                  # plain-readable: h5py + hdf5plugin
        frames = np.asarray(f["data/data/data"])
        assert frames.shape == (12, 20, 32, 32) and frames.dtype == np.uint16
    np.testing.assert_allclose(smap, reduce("virtual_bf", frames).values, rtol=1e-6)
    m = read_manifest(stage)
    assert m is not None and m["ended"] and m["complete"] and m["scan"] == [12, 20]
    assert [(b["row_start"], b["row_stop"]) for b in m["blocks"]] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert not [n for n in os.listdir(stage) if n.endswith(".tmp")]
    with h5py.File(out, "r") as whole:             # a block holds FILE.h5's own chunk bytes, plain-readable
        for b in m["blocks"]:
            with h5py.File(os.path.join(stage, b["file"]), "r") as f:
                np.testing.assert_array_equal(f["data"][()], frames[b["row_start"]:b["row_stop"]])
                assert f["data"].id.read_direct_chunk((0, 0, 0, 0)) == \
                    whole["data/data/data"].id.read_direct_chunk((b["row_start"], 0, 0, 0))
    res = os.path.join(tmp_path, "result.h5")
    r = emedge("follow", stage, "--scalarizer", "virtual_bf", "--out", res, "--until-complete", "--json")
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["blocks_processed"] == 4 and f["complete"] and f["frames"] == 240
    np.testing.assert_allclose(emd.read(res, "map"), smap, rtol=1e-6)
    r = emedge("follow", stage, "--scalarizer", "virtual_bf", "--out", res, "--json")   # again: nothing to do
    assert json.loads(r.stdout.strip().splitlines()[-1])["blocks_processed"] == 0


def test_si_twin_energy_axis_and_vector_map(tmp_path: os.PathLike[str]) -> None:
    out = os.path.join(tmp_path, "si.h5")
    twin = DigitalTwin(size=16, signal="spectrum", channels=256)
    res = stream(twin, "si", (6, 16), out, dtype="uint16")
    assert res.complete and res.frames == 96
    info = emd.info(out)["arrays"]["data"]
    assert info["dims"][2]["name"] == "energy" and info["dims"][2]["units"] == "eV"
    frames = np.asarray(emd.read(out, "data"))
    ref = reduce("eels_peak_energy", frames.reshape(-1, 256), scan_shape=(6, 16), energy_eV=twin.energy_eV).values
    np.testing.assert_allclose(np.load(res.scalar_map), ref, rtol=1e-6)
    res = stream(DigitalTwin(size=16, signal="diffraction"), "4d", (4, 16), os.path.join(tmp_path, "com.h5"),
                 scalarizer="com", dtype="uint16")
    assert np.load(res.scalar_map).shape == (4, 16, 2)


@pytest.mark.parametrize("rel,kind,spec", [("dm/EELS_SI.dm4", "si",
                                            '{"name": "eels_band_integral", "band_eV": [400, 1500]}'),
                                           ("merlin/001_4x2_6bit.mib", "4d",
                                            '{"name": "virtual_bf", "outer": 23, "center": [112, 25.5]}')])
def test_replay_real_files(tmp_path: os.PathLike[str], rel: str, kind: str, spec: str) -> None:
    """Real instrument files (rosettasciio's test data): the streamed map equals the file reduced whole
    (fixed geometry: an "auto" one is resolved on the first row live, on the first chunk by reduce)."""
    path = os.path.join(DATA, rel)
    out, stage = os.path.join(tmp_path, "r.h5"), os.path.join(tmp_path, "st")
    r = emedge("stream", "--instrument", "replay", "--data", path, "--kind", kind, "--out", out, "--stage", stage,
               "--scalarizer", spec, "--block-rows", "1", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    inst = open_instrument("replay", InstrumentOptions(signal_kind="spectrum" if kind == "si" else "diffraction",
                                                       data=path))
    h, w = inst.survey().shape
    pos = np.stack(np.mgrid[0:h, 0:w], axis=-1).reshape(-1, 2)
    whole = inst.measure(pos)
    ref = reduce(spec, whole, scan_shape=(h, w)).values
    np.testing.assert_allclose(np.load(s["scalar_map"]), ref, rtol=1e-6)
    assert s["frames"] == h * w and s["chunks_published"] == h
    np.testing.assert_array_equal(np.asarray(emd.read(out, "data")).reshape((h * w,) + whole.data.shape[1:]),
                                  whole.data)
    res = os.path.join(tmp_path, "f.h5")
    follow(stage, spec, res, until_complete=True)
    np.testing.assert_allclose(emd.read(res, "map"), ref, rtol=1e-6)


def _wait(cond: "typing.Callable[[], bool]", limit: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_follow_before_during_after(tmp_path: os.PathLike[str]) -> None:
    stage, out = os.path.join(tmp_path, "st"), os.path.join(tmp_path, "scan.h5")
    args = ["--scalarizer", "virtual_bf", "--until-complete", "--json", "--timeout", "240"]
    before = subprocess.Popen([sys.executable, "-m", "emedge_core.cli", "follow", stage, "--out",
                               os.path.join(tmp_path, "before.h5"), *args], stdout=subprocess.PIPE, text=True)
    scan = subprocess.Popen([sys.executable, "-m", "emedge_core.cli", "stream", "--instrument", "twin", "--kind", "4d",
                             "--scan", "40x32", "--out", out, "--stage", stage, "--block-rows", "1", "--json"],
                            stdout=subprocess.PIPE, text=True)
    _wait(lambda: (read_manifest(stage) or {"blocks": []})["blocks"] != [])
    during = subprocess.Popen([sys.executable, "-m", "emedge_core.cli", "follow", stage, "--out",
                               os.path.join(tmp_path, "during.h5"), *args], stdout=subprocess.PIPE, text=True)
    s = json.loads(scan.communicate(timeout=300)[0].strip().splitlines()[-1])
    assert scan.returncode == 0 and s["chunks_published"] == 40
    after = emedge("follow", stage, "--out", os.path.join(tmp_path, "after.h5"), *args)
    smap = np.load(s["scalar_map"])
    for name, p in (("before", before), ("during", during)):
        summary = json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1])
        assert p.returncode == 0 and summary["complete"] and summary["blocks_done"] == 40, name
    assert after.returncode == 0, after.stderr
    for name in ("before", "during", "after"):
        np.testing.assert_allclose(emd.read(os.path.join(tmp_path, f"{name}.h5"), "map"), smap, rtol=1e-6)


def test_follow_kill9_and_restart(tmp_path: os.PathLike[str]) -> None:
    stage = os.path.join(tmp_path, "st")
    res = stream(DigitalTwin(size=48, signal="diffraction"), "4d", (48, 48), os.path.join(tmp_path, "s.h5"),
                 stage=stage, dtype="uint16", block_rows=1)
    assert res.chunks_published == 48
    out = os.path.join(tmp_path, "r.h5")
    p = subprocess.Popen([sys.executable, "-m", "emedge_core.cli", "follow", stage, "--scalarizer", "virtual_bf",
                          "--out", out, "--until-complete"], stdout=subprocess.DEVNULL)
    _wait(lambda: os.path.exists(out) or p.poll() is not None)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = emd.metadata(out, "values")["follow"]["blocks_done"]
    assert 1 <= len(done) < 48, "the follower was not killed mid-scan"
    r = emedge("follow", stage, "--scalarizer", "virtual_bf", "--out", out, "--until-complete", "--json")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["blocks_processed"] == 48 - len(done) and summary["complete"]
    state = emd.metadata(out, "values")["follow"]
    assert sorted(state["blocks_done"]) == sorted(b["file"] for b in read_manifest(stage)["blocks"])
    assert len(set(state["blocks_done"])) == 48 and state["frames"] == 48 * 48
    np.testing.assert_allclose(emd.read(out, "map"), np.load(res.scalar_map), rtol=1e-6)


def test_dask_local_cluster_same_numbers(tmp_path: os.PathLike[str]) -> None:
    distributed = pytest.importorskip("distributed")
    stage = os.path.join(tmp_path, "st")
    stream(DigitalTwin(size=24, signal="diffraction"), "4d", (24, 24), os.path.join(tmp_path, "s.h5"), stage=stage,
           dtype="uint16", block_rows=4)
    one = os.path.join(tmp_path, "one.h5")
    follow(stage, "com", one, until_complete=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        r = follow(stage, "com", os.path.join(tmp_path, "dask.h5"), until_complete=True,
                   scheduler=c.scheduler_address)          # an address, as `emedge follow --scheduler` gives it
        assert r.blocks_processed == 6 and r.complete and r.scheduler == c.scheduler_address
        assert client.run(lambda: __import__("sys").modules.get("emedge_core.stream.follow") is not None) \
            == {w: True for w in client.scheduler_info()["workers"]}                  # the workers reduced
        workers = client.run(os.getpid)
    assert len(workers) == 2
    a, b = emd.read(one), emd.read(os.path.join(tmp_path, "dask.h5"))
    for name in ("values", "reason", "map"):
        np.testing.assert_array_equal(a[name], b[name])


def test_on_row_sees_the_map_fill(tmp_path: os.PathLike[str]) -> None:
    seen: list[tuple[int, int, str]] = []
    res = stream(DigitalTwin(size=16, signal="diffraction"), "4d", (5, 16), os.path.join(tmp_path, "s.h5"),
                 dtype="uint16", on_row=lambda r, v: seen.append((r, int(np.isfinite(v[..., 0]).all(axis=1).sum()),
                                                                  threading.current_thread().name)))
    assert [(r, n) for r, n, _ in seen] == [(r, r + 1) for r in range(5)]
    assert {t for _, _, t in seen} == {threading.main_thread().name} and res.complete


class CountingTwin(DigitalTwin):
    """The twin, counting the rows it has been asked for (so a test can wait until rows are queued)."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0
        self.cond = threading.Condition()

    def measure(self, positions: np.ndarray) -> typing.Any:
        with self.cond:
            self.asked += 1
            self.cond.notify_all()
        return super().measure(positions)


def test_raw_spill_keeps_every_frame(tmp_path: os.PathLike[str]) -> None:
    twin = CountingTwin(size=16, signal="diffraction")

    def hold_first_row(row: int, values: np.ndarray) -> None:
        # the chain holds row 0 until the instrument was asked for row 4: rows 1-3 are then queued, and
        # with one byte of queue memory rows 2 and 3 must spill (without the hold the chain may keep up)
        if row == 0:
            with twin.cond:
                assert twin.cond.wait_for(lambda: twin.asked >= 5, timeout=60)

    res = stream(twin, "4d", (16, 16), os.path.join(tmp_path, "s.h5"), dtype="uint16", queue_bytes=1,
                 on_row=hold_first_row)
    assert res.complete and res.dropped == 0 and res.frames == 256
    assert res.spilled_frames > 0
    assert not os.path.exists(os.path.join(tmp_path, "s.h5.spill"))
    ref = stream(DigitalTwin(size=16, signal="diffraction"), "4d", (16, 16), os.path.join(tmp_path, "t.h5"),
                 dtype="uint16")
    np.testing.assert_array_equal(emd.read(os.path.join(tmp_path, "s.h5"), "data"),
                                  emd.read(os.path.join(tmp_path, "t.h5"), "data"))
    np.testing.assert_array_equal(np.load(res.scalar_map), np.load(ref.scalar_map))


class StopsAfter:
    """A twin whose acquisition ends (an instrument error) after ``rows`` measurements."""

    def __init__(self, rows: int) -> None:
        self.twin, self.rows, self.signal_kind = DigitalTwin(size=16, signal="diffraction"), rows, "diffraction"

    def survey(self):  # type: ignore[no-untyped-def]
        return self.twin.survey()

    def state(self) -> dict[str, object]:
        return self.twin.state()

    def measure(self, positions: np.ndarray):  # type: ignore[no-untyped-def]
        if self.rows == 0:
            raise RuntimeError("camera stopped")
        self.rows -= 1
        return self.twin.measure(positions)


def test_instrument_stopped_mid_scan_partial_file(tmp_path: os.PathLike[str]) -> None:
    out, stage = os.path.join(tmp_path, "p.h5"), os.path.join(tmp_path, "st")
    res = stream(StopsAfter(5), "4d", (12, 16), out, stage=stage, dtype="uint16", block_rows=2)   # type: ignore[arg-type]
    assert not res.complete and res.rows == 5 and res.frames == 80 and res.dropped == 0
    assert "instrument stopped after 5 of 12 rows" in (res.stopped or "")
    with h5py.File(out, "r") as f:                     # valid, plain-readable, says how far it got
        ds = f["data/data/data"]
        assert int(ds.attrs["frames_written"]) == 80
        head = np.asarray(ds[:5])
    np.testing.assert_array_equal(head, np.asarray(emd.read(out, "data"))[:5])
    how = emd.metadata(out, "scalar_map")["stream"]
    assert how["rows_acquired"] == 5 and how["complete"] is False and "camera stopped" in how["stopped"]
    m = read_manifest(stage)
    assert m is not None and m["ended"] and not m["complete"] and m["frames"] == 80
    assert [b["row_stop"] for b in m["blocks"]] == [2, 4, 5]


def test_sigint_stops_cleanly(tmp_path: os.PathLike[str]) -> None:
    out, stage = os.path.join(tmp_path, "s.h5"), os.path.join(tmp_path, "st")
    p = subprocess.Popen([sys.executable, "-m", "emedge_core.cli", "stream", "--instrument", "twin", "--kind", "4d",
                          "--scan", "400x64", "--detector", "64", "--out", out, "--stage", stage, "--block-rows", "1",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: len((read_manifest(stage) or {"blocks": []})["blocks"]) >= 2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=300)
    s = json.loads(stdout.strip().splitlines()[-1])
    assert p.returncode == 1 and not s["complete"] and 2 <= s["frames"] // 64 < 400 and s["dropped"] == 0
    assert "stopped after" in stderr
    assert emd.metadata(out, "scalar_map")["stream"]["rows_acquired"] == s["frames"] // 64
    assert read_manifest(stage)["frames"] == s["frames"]


def test_stage_full_tmpfs(tmp_path: os.PathLike[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    stage = os.path.join(tmp_path, "nas")
    os.makedirs(stage)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", stage]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no privilege in this container)")
    try:
        out = os.path.join(tmp_path, "s.h5")
        res = stream(DigitalTwin(size=64, signal="diffraction"), "4d", (64, 64), out, stage=stage, dtype="uint16",
                     block_rows=1)
        assert not res.complete and "No space left" in (res.stopped or "") and res.dropped == 0
        assert 1 <= res.chunks_published < 64
        m = read_manifest(stage)                           # the last good manifest, every block in it readable
        assert m is not None and len(m["blocks"]) >= 1
        for b in m["blocks"]:
            assert read_block(stage, b).shape == (1, 64, 32, 32)
        assert not [n for n in os.listdir(stage) if n.endswith(".tmp")]
        with h5py.File(out, "r") as f:                     # the file on the other disk holds every row received
            assert int(f["data/data/data"].attrs["frames_written"]) == res.frames == res.rows * 64
        r = follow(stage, "virtual_bf", os.path.join(tmp_path, "f.h5"))
        assert r.blocks_done == len(m["blocks"])
    finally:
        subprocess.run(["umount", stage], check=False)


def test_bad_options_one_line(tmp_path: os.PathLike[str]) -> None:
    r = emedge("stream", "--instrument", "twin", "--kind", "si", "--scan", "8x8", "--out",
               os.path.join(tmp_path, "x.h5"), "--scalarizer", "virtual_bf", "--json")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--scalarizer virtual_bf" in r.stderr
    r = emedge("stream", "--instrument", "twin", "--kind", "4d", "--scan", "8by8", "--out",
               os.path.join(tmp_path, "x.h5"))
    assert r.returncode == 2 and "--scan" in r.stderr
    r = emedge("follow", os.path.join(tmp_path, "nothing"), "--scalarizer", "virtual_bf", "--out",
               os.path.join(tmp_path, "r.h5"))
    assert r.returncode == 2 and "no manifest.json" in r.stderr
    with pytest.raises(EmedgeError, match="larger than"):
        stream(DigitalTwin(size=16, signal="diffraction"), "4d", (32, 8), os.path.join(tmp_path, "y.h5"))


def test_rows_that_queue_up_are_written_together_and_blocks_stay_whole(tmp_path: os.PathLike[str]) -> None:
    """The writing thread takes the rows that queued behind the one it waited for in one append (their
    chunks encode side by side); every block is still exactly its rows' chunks, listed in order, and a
    scan whose height is not a multiple of the chunk rows publishes its short last block (it made a data
    set smaller than one chunk: found by helper I on a 24 x 24 SI with the default block rows)."""
    from emedge_core.stream.spill import Row, SpillQueue

    q = SpillQueue(1 << 20, os.path.join(tmp_path, "spill"))
    for i in range(5):
        q.put(Row(i, np.zeros((2, 64), np.float32), 0.0))
    assert [r.index for r in q.get_many(3 * 512)] == [0, 1, 2]           # 512 B a row: three fit
    q.close()
    assert [r.index for r in q.get_many(1 << 20)] == [3, 4] and q.get_many(1 << 20) == []

    hold = threading.Event()

    class Slow(DigitalTwin):                       # the chain waits on row 0 until the detector has sent all
        def measure(self, positions: np.ndarray) -> typing.Any:
            got = super().measure(positions)
            if positions[0, 0] == 23:
                hold.set()
            return got

    out, stage = os.path.join(tmp_path, "si.h5"), os.path.join(tmp_path, "st")
    import emedge_core.stream.acquire as acquire

    appended: list[int] = []
    real = emd.StreamWriter.append

    def append(self: emd.StreamWriter, frames: np.ndarray) -> None:
        hold.wait(30)
        appended.append(len(frames))
        real(self, frames)

    emd.StreamWriter.append = append               # type: ignore[method-assign]
    try:
        res = acquire.stream(Slow(size=24, signal="spectrum", channels=512), "si", (24, 24), out, stage=stage,
                             dtype="float32")
    finally:
        emd.StreamWriter.append = real              # type: ignore[method-assign]
    assert res.complete and res.frames == 24 * 24 and res.dropped == 0
    assert len(appended) < 24 and sum(appended) == 24 * 24                # rows went in together
    m = read_manifest(stage)
    assert m["complete"] and m["frames"] == 24 * 24
    assert [b["row_start"] for b in m["blocks"]] == list(range(0, 24, m["block_rows"]))
    assert 24 % m["block_rows"], m["block_rows"]                           # the short last block is there
    whole = emd.read(out, "data")
    for b in m["blocks"]:
        np.testing.assert_array_equal(read_block(stage, b), whole[b["row_start"]:b["row_stop"]])
