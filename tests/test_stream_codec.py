"""The stream's speed-aware ``auto`` codec (issue 15): when the chain falls behind, later chunks take a
lighter Blosc2 setting and, caught up, the first one again; every chunk stays decodable by h5py +
hdf5plugin alone (checked in a subprocess that imports nothing of emedge), the switches are recorded.

Data: the seeded digital twin (4D patterns, 32 x 32 px, Poisson counts stored as uint16)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import blosc2
import h5py
import numpy as np
import pytest

from emedge_core import EmedgeError, compress, emd
from emedge_core.stream import acquire, follow, stream
from emedge_core.stream.stage import read_manifest
from emedge_core.twin import DigitalTwin

PLAIN_READER = """
import sys, h5py, hdf5plugin, numpy as np
path, name, out = sys.argv[1:4]
with h5py.File(path, "r") as f:
    np.save(out, f[name][()])
assert not [m for m in sys.modules if m.startswith("emedge")], "the plain reader imported emedge"
"""


def plain_read(path: str, name: str, tmp: str) -> np.ndarray:
    """``path[name]`` read in a fresh interpreter importing only h5py + hdf5plugin (+ NumPy)."""
    out = os.path.join(tmp, "plain.npy")
    r = subprocess.run([sys.executable, "-c", PLAIN_READER, path, name, out], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    return np.load(out)


def chunk_codecs(ds: h5py.Dataset) -> list[str]:
    """The Blosc2 codec each stored chunk says it was compressed with (from its own header)."""
    names = []
    for i in range(ds.id.get_num_chunks()):
        payload = ds.id.read_direct_chunk(ds.id.get_chunk_info(i).chunk_offset)[1]
        names.append(blosc2.ndarray_from_cframe(payload).schunk.cparams.codec.name)
    return names


def twin_rows(h: int, w: int) -> np.ndarray:
    twin = DigitalTwin(size=max(h, w), signal="diffraction", detector=32)
    return np.stack([twin.measure(np.stack([np.full(w, r), np.arange(w)], axis=1)).data
                     for r in range(h)]).astype(np.uint16)


def test_lighter_codecs_ladder() -> None:
    ladder = [c.spec for c in acquire.lighter_codecs(compress.get("blosc2:blocks=tile,threads=2"))]
    assert ladder == ["blosc2:blocks=tile,threads=2", "blosc2:blocks=tile,clevel=1,cname=lz4,shuffle=bit,threads=2",
                      "blosc2:clevel=1,cname=lz4,shuffle=byte,threads=2"]
    assert [c.spec for c in acquire.lighter_codecs(compress.get("raw"))] == ["raw"]          # nothing lighter
    assert len(acquire.lighter_codecs(compress.get("delta+blosc2"))) == 1     # needs emedge's inverse: kept


def test_switch_down_and_back_every_chunk_plain_readable(tmp_path: os.PathLike[str]) -> None:
    h, w = 24, 16
    frames = twin_rows(h, w)
    out = os.path.join(tmp_path, "mixed.h5")
    with emd.StreamWriter(out, "data", (32, 32), np.uint16, (h, w), "auto", chunk_frames=w) as writer:
        pace = acquire._Pace(writer.sink)
        # the judgements the store makes after each write: the first (auto chose in it) is not judged,
        # then behind (100 rows waiting at 10 MB/s) twice, then caught up (no row waiting) for
        # CAUGHT_UP_WRITES writes, twice over
        backlog = [100, 100, 100] + [0] * (2 * acquire.CAUGHT_UP_WRITES)
        for r in range(h):
            writer.append(frames[r])
            if r < len(backlog):
                pace.after_write(frames[r].nbytes, 0.01, 1.0, backlog[r], frames[r].nbytes, r + 1)
        assert [s["row"] for s in pace.switches] == [2, 3, 3 + acquire.CAUGHT_UP_WRITES,
                                                     3 + 2 * acquire.CAUGHT_UP_WRITES]
        first = writer.sink.chosen.spec
    assert pace.ladder is not None and first == pace.ladder[0].spec and len(pace.ladder) == 3
    with h5py.File(out, "r") as f:
        codecs = chunk_codecs(f["data/data/data"])
    assert len(codecs) == h
    back = 3 + 2 * acquire.CAUGHT_UP_WRITES           # the first chunk in auto's first choice again
    assert codecs[:2] == ["ZSTD"] * 2 and codecs[2:back] == ["LZ4"] * (back - 2)
    assert codecs[back:] == ["ZSTD"] * (h - back)
    np.testing.assert_array_equal(plain_read(out, "data/data/data", str(tmp_path)), frames)
    np.testing.assert_array_equal(emd.read(out, "data"), frames)          # CRC-32 per chunk verified too


def test_switch_refuses_a_codec_the_filter_cannot_read(tmp_path: os.PathLike[str]) -> None:
    with emd.StreamWriter(os.path.join(tmp_path, "x.h5"), "data", (32, 32), np.uint16, (2, 4), "blosc2",
                          chunk_frames=4) as writer:
        writer.append(np.zeros((4, 32, 32), np.uint16))
        with pytest.raises(EmedgeError, match="cannot switch"):
            writer.sink.switch_codec(compress.get("zstd"))
        writer.append(np.zeros((4, 32, 32), np.uint16))


def test_stream_behind_steps_lighter_recorded_and_plain_readable(tmp_path: os.PathLike[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain always 'behind' (target < 0): the writes after auto's choice step down the ladder; the
    file, the stage's blocks and the JSON fields say so, and h5py + hdf5plugin read every chunk.
    ``BATCH_BYTES`` 0: every write takes one row (else it takes all that queued, timing-dependent)."""
    monkeypatch.setattr(acquire, "LATENCY_TARGET_S", -1.0)
    monkeypatch.setattr(acquire, "BATCH_BYTES", 0)
    h, w = 12, 16
    out, stage = os.path.join(tmp_path, "scan.h5"), os.path.join(tmp_path, "stage")
    twin = DigitalTwin(size=16, signal="diffraction", detector=32)
    res = stream(twin, "4d", (h, w), out, stage=stage, dtype="uint16", block_rows=1)
    assert res.complete and res.dropped == 0 and res.frames == h * w
    switches = res.summary()["codec_switches"]
    rows = [s["row"] for s in switches]     # row 0's write chose (not judged); rows 1 and 2 each step down
    assert rows == [2, 3]
    assert all("cname=lz4" in s["codec"] for s in switches)
    assert all({"write_MBps", "chain_MBps", "backlog_rows"} <= set(s) for s in switches)
    with h5py.File(out, "r") as f:
        assert json.loads(f["data/data"].attrs["emedge_codec_switches"]) == switches
        assert chunk_codecs(f["data/data/data"]) == ["ZSTD"] * rows[0] + ["LZ4"] * (h - rows[0])
    meta = emd.info(out)["arrays"]["scalar_map"]["metadata"]["stream"]
    assert meta["codec_switches"] == switches
    frames = emd.read(out, "data")                          # CRC-32 of every chunk against the frames acquired
    np.testing.assert_array_equal(plain_read(out, "data/data/data", str(tmp_path)), frames)
    m = read_manifest(stage)
    assert m is not None and len(m["blocks"]) == h
    for b in m["blocks"]:                                   # each block: FILE.h5's bytes, read by the stock filter
        got = plain_read(os.path.join(stage, b["file"]), "data", str(tmp_path))
        np.testing.assert_array_equal(got, frames[b["row_start"]:b["row_stop"]])
    res_path = os.path.join(tmp_path, "result.h5")            # the consumer reduces the mixed blocks
    follow(stage, "virtual_bf", res_path, until_complete=True)
    np.testing.assert_allclose(emd.read(res_path, "map"), np.load(res.scalar_map), rtol=1e-6)


def test_fixed_or_named_codec_never_switches(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acquire, "LATENCY_TARGET_S", -1.0)
    twin = DigitalTwin(size=16, signal="diffraction", detector=32)
    res = stream(twin, "4d", (4, 16), os.path.join(tmp_path, "a.h5"), adapt_codec=False)
    assert res.codec_switches == []
    res = stream(twin, "4d", (4, 16), os.path.join(tmp_path, "b.h5"), codec="blosc2")
    assert res.codec_switches == []


@pytest.mark.parametrize("fixed", [False, True])
def test_cli_fixed_codec(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str], fixed: bool) -> None:
    """``emedge stream --fixed-codec``: a chain always behind switches nothing; without it, it steps down."""
    from emedge_core.cli import main

    monkeypatch.setattr(acquire, "LATENCY_TARGET_S", -1.0)
    monkeypatch.setattr(acquire, "BATCH_BYTES", 0)
    out = os.path.join(tmp_path, "scan.h5")
    argv = ["stream", "--instrument", "twin", "--kind", "4d", "--scan", "6x16", "--out", out, "--block-rows", "1",
            "--json"] + (["--fixed-codec"] if fixed else [])
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] and summary["frames"] == 96
    assert (summary["codec_switches"] == []) == fixed
    with h5py.File(out, "r") as f:
        assert set(chunk_codecs(f["data/data/data"])) == ({"ZSTD"} if fixed else {"ZSTD", "LZ4"})
