"""EMD files: round trips through the writers and readers, third-party readers, provenance,
the streaming writer under kill -9, a full disk, and corrupt / truncated / wrong input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import pytest
from test_compress import DATA, LOSSLESS

from emedge_core import EmedgeError, emd, provenance

SIG = {"counting": 2, "integrating": 2, "eels": 1, "series": 2, "survey": 1}


@pytest.mark.parametrize("spec", LOSSLESS + ["auto", "sparse"])
def test_file_round_trip_is_bit_exact(tmp_path, spec: str) -> None:
    arrays = {k: v for k, v in DATA.items() if spec != "sparse" or v.dtype.kind == "u"}
    path = str(tmp_path / "f.h5")
    stats = emd.write(path, arrays, codec=spec, sig_ndim=SIG)
    back = emd.read(path)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].tobytes() == a.tobytes(), name
        assert stats[name]["lossless"] and stats[name]["raw_bytes"] == a.nbytes


@pytest.mark.parametrize("spec", ["blosc2", "blosc2:shuffle=bytedelta", "bitshuffle", "gzip", "zstd", "sz3:abs=0.5"])
def test_plain_h5py_with_hdf5plugin_reads_filtered_arrays(tmp_path, spec: str) -> None:
    a = DATA["integrating"]
    path = str(tmp_path / "f.h5")
    emd.write(path, {"cube": a}, codec=spec)
    code = ("import sys, h5py, numpy as np; f = h5py.File(sys.argv[1], 'r'); "
            "np.save(sys.argv[2], f['data/cube/data'][()]); print('emedge_core' in sys.modules)")
    env = dict(os.environ, HDF5_PLUGIN_PATH=_plugin_path())       # no hdf5plugin import, no emedge code
    out = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "x.npy")], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"
    back = np.load(tmp_path / "x.npy")
    assert (np.abs(back - a) <= 0.5).all() if spec.startswith("sz3") else back.tobytes() == a.tobytes()


def _plugin_path() -> str:
    import hdf5plugin

    return hdf5plugin.PLUGIN_PATH


def test_a_reader_undoes_delta_prediction_as_documented(tmp_path) -> None:
    a = DATA["series"]
    path = str(tmp_path / "f.h5")
    emd.write(path, {"s": a}, codec="delta+blosc2")
    import hdf5plugin  # noqa: F401

    with h5py.File(path, "r") as f:
        g = f["data/s"]
        stored = g["data"][()]
        c = int(g.attrs["emedge_chunk_frames"])
        dtype = np.dtype(g.attrs["emedge_original_dtype"])
        assert g.attrs["emedge_prediction"] == "delta" and stored.dtype == np.uint16
    undone = np.concatenate([np.cumsum(stored[s:s + c], axis=0, dtype=stored.dtype).view(dtype)
                             for s in range(0, len(stored), c)])
    assert np.array_equal(undone, a) and not np.array_equal(stored, a)


def test_emdfile_and_rosettasciio_read_the_files(tmp_path) -> None:
    emdfile = pytest.importorskip("emdfile")
    rsciio_emd = pytest.importorskip("rsciio.emd")
    path = str(tmp_path / "f.emd")
    emd.write(path, {"datacube": DATA["counting"], "eels": DATA["eels"]}, codec="blosc2",
              sig_ndim=SIG | {"datacube": 2}, provenance=provenance.collect({"p": 1}, {"high_tension_V": 2e5}))
    cube = emdfile.read(path, emdpath="data/datacube")
    assert np.array_equal(cube.data, DATA["counting"])
    root = emdfile.read(path)
    assert json.loads(root.metadata["provenance"]["instrument_state"]) == {"high_tension_V": 2e5}
    signals = {s["metadata"]["General"]["title"]: s["data"] for s in rsciio_emd.file_reader(path, stack_group=False)}
    assert np.array_equal(signals["datacube"], DATA["counting"]) and np.array_equal(signals["eels"], DATA["eels"])


def test_root_attributes_are_those_emdfile_writes(tmp_path) -> None:
    emdfile = pytest.importorskip("emdfile")
    theirs, ours = str(tmp_path / "theirs.h5"), str(tmp_path / "ours.h5")
    r = emdfile.Root(name="data")
    r.tree(emdfile.Array(name="a", data=np.zeros((2, 3))))
    emdfile.save(theirs, r, mode="o")
    emd.write(ours, {"a": np.zeros((2, 3))})
    with h5py.File(theirs, "r") as t, h5py.File(ours, "r") as o:
        assert set(t.attrs) == set(o.attrs)
        for key in t.attrs:
            assert type(t.attrs[key]) is type(o.attrs[key]), key
        assert dict(t["data"].attrs) == dict(o["data"].attrs)
        assert dict(t["data/a"].attrs) == {k: v for k, v in o["data/a"].attrs.items() if not k.startswith("emedge_")}


def test_provenance_and_chunk_checksums_are_recorded(tmp_path) -> None:
    a = DATA["counting"]
    path = str(tmp_path / "f.h5")
    prov = provenance.collect({"dose": 3}, {"instrument": "twin", "high_tension_V": 2e5})
    with emd.StreamWriter(path, "cube", (32, 32), np.uint16, nav_shape=(5, 6), codec="blosc2", chunk_frames=4,
                          provenance=prov) as w:
        w.append(a.reshape(-1, 32, 32))
    desc = emd.info(path)
    assert desc["provenance"]["instrument_state"]["high_tension_V"] == 2e5
    assert desc["provenance"]["parameters"] == {"dose": 3}
    assert desc["provenance"]["software"]["h5py"] == h5py.__version__
    assert desc["arrays"]["cube"]["codec"] == "blosc2" and desc["arrays"]["cube"]["ratio"] > 1
    with h5py.File(path, "r") as f:
        crcs = f["data/cube/checksums"][()]
        assert list(f["data/cube/data"].chunks) == [1, 4, 32, 32]
    expected = [zlib.crc32(np.ascontiguousarray(a[r, s:s + 4]).data) for r in range(5) for s in (0, 4)]
    assert crcs.tolist() == expected        # rows of 6 frames: chunks of 4 + 2


def test_stream_writer_holds_one_chunk_in_memory_and_checks_frames(tmp_path) -> None:
    path = str(tmp_path / "s.h5")
    w = emd.StreamWriter(path, "series", (48, 48), np.uint16, codec="blosc2", chunk_frames=2)
    for frame in DATA["series"]:
        w.append(frame)
        assert w.sink._buf.nbytes == 2 * 48 * 48 * 2
    with pytest.raises(EmedgeError, match="dtype"):
        w.append(DATA["series"][0].astype(np.float32))
    with pytest.raises(EmedgeError, match="shape"):
        w.append(np.zeros((3, 40, 40), np.uint16))
    w.close()
    assert np.array_equal(emd.read(path, "series"), DATA["series"])


def test_chunk_checksum_is_zlib_crc32() -> None:
    from emedge_core.compress import crc

    rng = np.random.default_rng(5)
    for a in (DATA["counting"], DATA["integrating"][:, ::2], np.zeros(0, np.uint8), rng.random(1001)):
        assert crc.checksum(a) == zlib.crc32(np.ascontiguousarray(a).data)


def test_stream_writer_flushes_the_first_chunk_then_on_its_interval_and_on_demand(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(emd.writer, "FLUSH_SECONDS", 1e9)            # no interval flush within this test
    path = str(tmp_path / "f.h5")
    frames = DATA["series"]
    w = emd.StreamWriter(path, "series", frames.shape[1:], frames.dtype, codec="blosc2:threads=1", chunk_frames=2)
    w.append(frames[:2])
    assert w.sink.frames_written == 2                         # the first chunk is flushed at once
    w.append(frames[2:6])
    assert w.sink.frames_written == 2                         # written, not yet flushed
    w.flush()
    assert w.sink.frames_written == 6
    w.append(frames[6:])
    w.close()
    assert w.sink.frames_written == len(frames)
    assert np.array_equal(emd.read(path, "series"), frames)


def test_fixed_scan_refuses_extra_frames_and_reports_missing_ones(tmp_path) -> None:
    w = emd.StreamWriter(str(tmp_path / "s.h5"), "cube", (32, 32), np.uint16, nav_shape=(2, 2), codec="raw")
    with pytest.raises(EmedgeError, match="more frames"):
        w.append(np.zeros((5, 32, 32), np.uint16))
    w.append(np.zeros((3, 32, 32), np.uint16))
    with pytest.raises(EmedgeError, match="3 of 4 frames"):
        w.close()


_WRITER = r"""
import sys, numpy as np
from emedge_core import emd
path, nav = sys.argv[1], (None if sys.argv[2] == "series" else (400, 8))
w = emd.StreamWriter(path, "frames", (64, 64), np.uint16, nav_shape=nav, codec="blosc2", chunk_frames=4)
i = 0
while True:
    w.append(np.random.default_rng(i).poisson(0.3, (4, 64, 64)).astype(np.uint16))
    i += 4
    if i == 40:                 # chunks are flushed every emd.FLUSH_SECONDS; make these 40 frames durable now
        w.flush()
        print("ready", flush=True)
"""


@pytest.mark.parametrize("layout", ["series", "scan"])
def test_kill_9_mid_write_leaves_a_readable_file(tmp_path, layout: str) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    for attempt, delay in enumerate((0.05, 0.3)):
        path = str(tmp_path / f"k{attempt}.h5")
        p = subprocess.Popen([sys.executable, str(script), path, layout], stdout=subprocess.PIPE,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        back = emd.read(path, "frames")           # verifies the CRC of every flushed chunk
        n = emd.info(path)["arrays"]["frames"]["frames_written"]
        assert n >= 40 and n % 4 == 0
        flat = back.reshape(-1, 64, 64)
        expected = np.concatenate([np.random.default_rng(i).poisson(0.3, (4, 64, 64)).astype(np.uint16)
                                   for i in range(0, n, 4)])
        assert np.array_equal(flat[:n], expected)
        if layout == "scan":
            assert back.shape == (400, 8, 64, 64) and not flat[n:].any()
        else:
            assert back.shape == (n, 64, 64)


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (root only); elsewhere an injected ENOSPC stands in and the test says so."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]
    ok = subprocess.run(mount, capture_output=True).returncode == 0
    yield str(mnt), ok
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_is_a_clear_error_and_keeps_what_was_written(small_fs, monkeypatch) -> None:
    mnt, real = small_fs
    earlier = os.path.join(mnt, "earlier.h5")
    emd.write(earlier, {"a": DATA["counting"]}, codec="blosc2")
    if not real:
        print("NOTE: could not mount a size-limited tmpfs (not root?): injecting ENOSPC after 200 KiB instead")
        _inject_enospc(monkeypatch, 200 << 10)
    rng = np.random.default_rng(0)
    path = os.path.join(mnt, "full.h5")
    w = emd.StreamWriter(path, "noise", (64, 64), np.float32, codec="raw", chunk_frames=2)
    with pytest.raises(EmedgeError, match=r"failed \(disk full.*\); it keeps the \d+ frames"):
        for _ in range(1000):        # 32 MiB of incompressible frames into 1 MiB
            w.append(rng.random((2, 64, 64), dtype=np.float32))
    with pytest.raises(EmedgeError, match="earlier write failed"):
        w.append(rng.random((2, 64, 64), dtype=np.float32))
    kept = w.sink.frames_written
    w.close()
    assert kept > 0
    back = emd.read(path, "noise")
    rng = np.random.default_rng(0)
    assert np.array_equal(back, np.concatenate([rng.random((2, 64, 64), dtype=np.float32) for _ in range(kept // 2)]))
    assert np.array_equal(emd.read(earlier, "a"), DATA["counting"])


def _inject_enospc(monkeypatch, limit: int) -> None:
    written = {"n": 0}
    real = emd.ArraySink._write_dense

    def limited(self, chunk, *args):
        written["n"] += chunk.nbytes
        if written["n"] > limit:
            raise OSError(28, "No space left on device (injected)")
        return real(self, chunk, *args)

    monkeypatch.setattr(emd.ArraySink, "_write_dense", limited)


def test_corrupt_chunk_is_caught(tmp_path) -> None:
    a = DATA["integrating"]
    path = str(tmp_path / "c.h5")
    with emd.StreamWriter(path, "cube", (32, 32), np.float32, nav_shape=(4, 5), codec="raw", chunk_frames=3) as w:
        w.append(a.reshape(-1, 32, 32))
    with h5py.File(path, "r") as f:
        offset = f["data/cube/data"].id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as fp:            # flip bytes inside an unfiltered chunk: only the CRC can tell
        fp.seek(offset + 100)
        fp.write(b"\xff\x00\xff\x00")
    with pytest.raises(EmedgeError, match="chunk 1 .*CRC-32"):
        emd.read(path)
    assert emd.read(path, verify=False)["cube"].shape == a.shape


def test_corrupt_compressed_chunk_is_a_clear_error(tmp_path) -> None:
    path = str(tmp_path / "c.h5")
    emd.write(path, {"cube": DATA["counting"]}, codec="blosc2")
    with h5py.File(path, "r") as f:
        info = f["data/cube/data"].id.get_chunk_info(0)
    with open(path, "r+b") as fp:
        fp.seek(info.byte_offset)
        fp.write(b"\x00" * min(64, info.size))
    with pytest.raises(EmedgeError, match="corrupt"):
        emd.read(path)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path) -> None:
    path = str(tmp_path / "t.h5")
    emd.write(path, {"cube": DATA["counting"]}, codec="blosc2")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(EmedgeError, match="corrupt or truncated"):
        emd.read(path)
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(EmedgeError, match="cannot open"):
        emd.read(str(tmp_path / "x.h5"))
    with pytest.raises(EmedgeError, match="not found"):
        emd.info(str(tmp_path / "missing.h5"))
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(EmedgeError, match="not an EMD 1.0 file"):
        emd.read(str(tmp_path / "plain.h5"))


def test_write_refuses_bad_arrays(tmp_path) -> None:
    with pytest.raises(EmedgeError, match="numeric"):
        emd.write(str(tmp_path / "b.h5"), {"s": np.array(["a", "b"])})
    with pytest.raises(EmedgeError, match="sig_ndim"):
        emd.write(str(tmp_path / "b.h5"), {"a": np.zeros((2, 3))}, sig_ndim={"a": 5})
    with pytest.raises(EmedgeError, match="float data"):
        emd.StreamWriter(str(tmp_path / "c.h5"), "a", (4,), np.uint16, codec="sz3:abs=1")
    assert not os.path.exists(tmp_path / "c.h5")


def test_lossy_bound_and_sqrt_formula_are_recorded(tmp_path) -> None:
    path = str(tmp_path / "l.h5")
    emd.write(path, {"eels": DATA["eels"], "cube": DATA["counting"]}, codec={"eels": "sz3:abs=1", "cube": "sqrt:q=1"},
              sig_ndim=SIG)
    arrays = emd.info(path)["arrays"]
    assert arrays["eels"]["error_bound"] == {"mode": "absolute", "value": 1.0} and not arrays["eels"]["lossless"]
    bound = arrays["cube"]["error_bound"]
    assert bound["mode"] == "poisson_sqrt" and "sqrt(x + 3/8)" in bound["formula"]
    back = emd.read(path)
    assert np.abs(back["eels"] - DATA["eels"]).max() <= 1.0
    assert np.abs(back["cube"].astype(float) - DATA["counting"]).max() <= bound["value"]


@pytest.mark.parametrize("nav", [None, (5, 6)])
def test_any_append_sizes_give_the_same_file_content(tmp_path, nav) -> None:
    a = DATA["counting"].reshape(-1, 32, 32)
    sizes = np.random.default_rng(5).integers(1, 9, 40)
    path = str(tmp_path / "s.h5")
    with emd.StreamWriter(path, "x", (32, 32), np.uint16, nav_shape=nav, codec="delta+blosc2", chunk_frames=4) as w:
        i = 0
        for n in sizes:
            w.append(a[i:i + n])
            i += int(n)
            if i >= len(a):
                break
    assert np.array_equal(emd.read(path, "x").reshape(-1, 32, 32), a)
    with h5py.File(path, "r") as f:
        assert len(f["data/x/checksums"]) == (8 if nav is None else 10)


def test_small_frames_are_chunked_by_whole_scan_rows(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(emd.layout, "CHUNK_BYTES", 3 * 6 * 200 * 4)          # three rows of 6 spectra per chunk
    a = np.random.default_rng(2).random((8, 6, 200), dtype=np.float32)
    path = str(tmp_path / "e.h5")
    emd.write(path, {"eels": a}, codec="delta+blosc2", sig_ndim={"eels": 1})
    with h5py.File(path, "r") as f:
        assert f["data/eels/data"].chunks == (3, 6, 200) and len(f["data/eels/checksums"]) == 3
    assert np.array_equal(emd.read(path, "eels"), a)
    assert list(emd.chunk_runs((8, 6), 6, 3))[-1] == ((slice(6, 8), slice(0, 6)), 36, 12)


def test_value_reads_emd_groups_and_plain_data_sets(tmp_path) -> None:
    path = str(tmp_path / "v.h5")
    emd.write(path, {"a": DATA["survey"]}, codec="delta+blosc2")
    with h5py.File(path, "a") as f:
        f["plain"] = np.arange(3)
        assert np.array_equal(emd.value(f["data/a"]), DATA["survey"])
        assert np.array_equal(emd.value(f["plain"]), np.arange(3))


def test_stream_writer_keeps_axes_and_metadata_and_a_series_axis_gets_its_length(tmp_path) -> None:
    path = str(tmp_path / "s.emd")
    frames = DATA["series"]
    with emd.StreamWriter(path, "series", frames.shape[1:], frames.dtype, codec="blosc2", chunk_frames=2,
                          dims=[("time", "s", 0.0, 0.5), ("y", "nm", 0.0, 0.1), ("x", "nm", 0.0, 0.1)],
                          metadata={"swift_properties": {"exposure_s": 0.5}}) as w:
        w.append(frames)
        w.write_array("energy_eV", np.linspace(0, 10, 11), dims=[emd.Axis("energy", "eV", np.linspace(0, 10, 11))])
    stats = w.close()
    with h5py.File(path, "r") as f:
        assert np.allclose(f["data/series/dim0"][()], 0.5 * np.arange(len(frames)))
        assert f["data/series/dim0"].attrs["units"] == "s" and len(f["data/series/dim2"]) == frames.shape[2]
        assert f[stats["series"]["dataset"]].shape == frames.shape
        assert stats["energy_eV"]["dataset"] == "/data/energy_eV/data"
    desc = emd.info(path)["arrays"]["series"]
    assert desc["metadata"] == {"swift_properties": {"exposure_s": 0.5}} and desc["warning"] is None
    assert [d["name"] for d in desc["dims"]] == ["time", "y", "x"] and desc["dims"][0]["step"] == 0.5
    assert emd.metadata(path, "series") == desc["metadata"]


def test_an_axis_of_the_wrong_length_names_the_option(tmp_path) -> None:
    with pytest.raises(EmedgeError, match=r"dims axis 2 \('energy'\) has 3 values for an axis of length 200"):
        emd.write(str(tmp_path / "e.h5"), {"eels": DATA["eels"]}, sig_ndim={"eels": 1},
                  dims={"eels": [("y", "nm", 0, 1), ("x", "nm", 0, 1), emd.Axis("energy", "eV", [1.0, 2.0, 3.0])]})


def test_auto_records_why_it_chose_and_inspect_prints_it(tmp_path, capsys) -> None:
    """``auto`` keeps every candidate's ratio on the first chunk (``emd.info``'s ``auto_trial``,
    printed by ``emedge inspect``); a codec given by name records none."""
    from emedge_core.cli import main

    rng = np.random.default_rng(3)
    a = rng.poisson(0.05, (2, 16, 32, 32)).astype(np.uint16)
    emd.write(str(tmp_path / "auto.h5"), {"a": a})
    emd.write(str(tmp_path / "named.h5"), {"a": a}, codec="blosc2")
    got = emd.info(str(tmp_path / "auto.h5"))["arrays"]["a"]
    assert got["auto_trial"][got["codec"]] == max(got["auto_trial"].values())
    assert {"blosc2", "blosc2:blocks=tile", "raw"} <= set(got["auto_trial"])
    assert emd.info(str(tmp_path / "named.h5"))["arrays"]["a"]["auto_trial"] is None
    assert main(["inspect", str(tmp_path / "auto.h5")]) == 0
    assert f"auto: best ratio on the first chunk among light, plain-readable codecs: {got['codec']}" in \
        capsys.readouterr().out
