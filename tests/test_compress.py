"""Codecs: bit-exact lossless round trips on every data kind, lossy within the stated bound,
auto's choice, and clear errors for bad specs, dtypes and payloads."""
from __future__ import annotations

import numpy as np
import pytest

from emedge_core import EmedgeError, compress


def disk(k: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:k, :k]
    return ((yy - k / 2) ** 2 + (xx - k / 2) ** 2) < r ** 2


def kinds(seed: int = 7) -> dict[str, np.ndarray]:
    """counting 4D uint16 (0.05-0.5 e/px + bright disk), integrating 4D float32, EELS SI float32,
    in-situ series uint16 with drift, and a 2-D survey image float64."""
    rng = np.random.default_rng(seed)
    k = 32
    lam = np.where(disk(k, 6), 3.0, rng.uniform(0.05, 0.5))
    counting = rng.poisson(lam, (5, 6, k, k)).astype(np.uint16)
    integrating = (np.where(disk(k, 6), 1000.0, 10.0) + rng.normal(0, 3, (4, 5, k, k))).astype(np.float32)
    e = np.linspace(100, 600, 200)
    eels = (rng.poisson(1e4 * (e / 100) ** -3 + 50 * (e > 284), (4, 6, 200))).astype(np.float32)
    yy, xx = np.mgrid[:48, :48]
    series = np.stack([rng.poisson(20 + 10 * np.sin((xx + 0.3 * t) / 3) * np.sin(yy / 3))
                       for t in range(9)]).astype(np.uint16)
    survey = rng.normal(size=(20, 24))
    return {"counting": counting, "integrating": integrating, "eels": eels, "series": series, "survey": survey}


def frame_axis(a: np.ndarray) -> int:
    """Axis the frames run along when the whole array is one chunk (the last scan axis)."""
    return {4: 1, 3: 0, 2: 0}[a.ndim] if a.ndim != 3 or a.shape[-1] != 200 else 1


DATA = kinds()
LOSSLESS = ["raw", "gzip", "gzip:level=4", "zstd", "zstd:level=9", "blosc2", "blosc2:cname=lz4,shuffle=byte",
            "blosc2:cname=zstd,clevel=5", "blosc2:shuffle=bytedelta", "delta+blosc2", "delta+zstd", "bitshuffle",
            "bitshuffle:cname=zstd"]


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("spec", LOSSLESS)
def test_lossless_round_trip_is_bit_exact(spec: str, kind: str) -> None:
    a = DATA[kind]
    codec = compress.get(spec)
    blob = codec.encode(a, axis=frame_axis(a))
    back = compress.decode(blob)
    assert codec.lossless and back.dtype == a.dtype and back.shape == a.shape
    assert back.tobytes() == a.tobytes()


@pytest.mark.parametrize("kind", ["counting", "series"])
def test_sparse_events_are_exact_for_counts(kind: str) -> None:
    a = DATA[kind]
    frames = a.reshape(-1, *a.shape[-2:])
    codec = compress.get("sparse")
    per_frame, index, count = codec.events(frames)
    assert per_frame.sum() == np.count_nonzero(frames) == len(index) == len(count)
    assert np.array_equal(compress.decode(codec.encode(frames)), frames)


def test_sparse_refuses_float_data() -> None:
    with pytest.raises(EmedgeError, match="integer counts"):
        compress.get("sparse").encode(DATA["integrating"])


@pytest.mark.parametrize("kind", ["integrating", "eels"])
@pytest.mark.parametrize("spec,bound", [("sz3:abs=0.5", 0.5), ("sz3:abs=2", 2.0), ("zfp:accuracy=0.5", 0.5)])
def test_lossy_error_is_within_its_bound(spec: str, bound: float, kind: str) -> None:
    a = DATA[kind]
    codec = compress.get(spec)
    back = compress.decode(codec.encode(a))
    err = np.abs(back.astype(np.float64) - a)
    assert not codec.lossless and codec.error_bound()["value"] == bound
    assert err.max() <= bound * (1 + 1e-6)
    assert err.max() > 0          # it is really lossy: the test could fail


def test_sz3_relative_bound() -> None:
    a = DATA["integrating"]
    back = compress.decode(compress.get("sz3:rel=0.001").encode(a))
    assert np.abs(back - a).max() <= 0.001 * (a.max() - a.min()) * (1 + 1e-6)


@pytest.mark.parametrize("kind", ["counting", "eels", "series"])
@pytest.mark.parametrize("q", [0.5, 1.0, 2.0])
def test_sqrt_quantisation_stays_within_its_poisson_bound(kind: str, q: float) -> None:
    a = DATA[kind]
    codec = compress.get(f"sqrt:q={q}")
    back = compress.decode(codec.encode(a))
    x = a.astype(np.float64)
    per_value = q / 2 * np.sqrt(x + 0.375) + q ** 2 / 16 + (0.5 if a.dtype.kind == "u" else 0.0)
    assert back.dtype == a.dtype
    assert (np.abs(back - x) <= per_value + 1e-6 * x).all()
    assert np.abs(back - x).max() <= codec.error_bound(a)["value"] + 1e-9


def test_sqrt_refuses_negative_data() -> None:
    with pytest.raises(EmedgeError, match="Poisson"):
        compress.get("sqrt").encode(np.array([[-5.0, 1.0]], np.float32))


def test_lossy_float_codecs_refuse_integers() -> None:
    with pytest.raises(EmedgeError, match="float data"):
        compress.get("sz3:abs=1").encode(DATA["counting"])


def test_delta_prediction_is_undone_with_numpy_cumsum() -> None:
    a = DATA["integrating"][0]          # (5, k, k) float32 frames
    codec = compress.get("delta+zstd")
    stored = codec.forward(a, axis=0)
    assert stored.dtype == np.uint32 and stored.tobytes() != a.tobytes()
    assert np.array_equal(np.cumsum(stored, axis=0, dtype=stored.dtype).view(a.dtype), a)


def test_auto_picks_the_best_ratio_deterministically() -> None:
    from emedge_core.compress.auto import TILED, choose

    for a, axis in ((DATA["counting"], 1), (DATA["integrating"], 1), (DATA["eels"], 1)):
        codec, ratios = choose([a], axis=axis)
        again, _ = choose([a], axis=axis)
        assert codec.spec == again.spec and codec.lossless and codec.plain_readable
        assert {"blosc2", "blosc2:shuffle=bytedelta", "raw"} <= set(ratios)
        assert not any(k.startswith(("delta", "sparse", "sqrt")) or "clevel" in k for k in ratios)
        assert ratios[codec.spec] == max(ratios.values())
    assert TILED in choose([DATA["counting"]], axis=1)[1]       # 2-D detector frames: tiles are tried
    assert TILED not in choose([DATA["eels"]], axis=1)[1]       # spectra: not


def test_tiled_blocks_round_trip_through_the_stock_filter_and_win_on_counting_frames() -> None:
    """``blocks=tile``: b2nd blocks of every frame x a 16 x 16 px tile; h5py + hdf5plugin reassemble
    them (no step of ours), and on counting frames with a bright-field disk they beat C-order slabs."""
    import h5py
    import hdf5plugin  # noqa: F401

    from emedge_core.compress.stages import _tiles

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 62, xx - 65)                                   # soft disk (0.3 e-/px) + diffuse halo
    lam = 0.3 / (1 + np.exp((r - 14) / 1.5)) + 0.01 / (1 + (r / 32) ** 2)
    a = rng.poisson(lam, (2, 64, 128, 128)).astype(np.uint16)      # one 4 MiB chunk: 2 rows x 64 frames
    assert _tiles(a.shape, 2) == (2, 64, 16, 16)                     # 64 KiB blocks
    assert _tiles((3, 5, 12, 20), 2) == (3, 5, 12, 20)               # small: the whole chunk is one block
    sizes = {}
    for spec in ("blosc2:blocks=tile,threads=1", "blosc2:blocks=tile", "blosc2:threads=1"):
        codec = compress.get(spec)
        for _ in range(3):                                           # learning the frame, then the fast path
            payload = codec.encode_chunk(a)
            with h5py.File("t.h5", "w", driver="core", backing_store=False) as f:
                d = f.create_dataset("x", shape=a.shape, dtype=a.dtype, chunks=a.shape, **codec.h5_filter())
                d.id.write_direct_chunk((0, 0, 0, 0), payload)
                assert np.array_equal(d[()], a), spec
            assert np.array_equal(codec.decode_chunk(payload, a.shape, a.dtype), a)
        sizes[spec] = len(payload)
    assert sizes["blosc2:blocks=tile,threads=1"] < 0.95 * sizes["blosc2:threads=1"], sizes   # measured 0.93
    with pytest.raises(EmedgeError, match="blocks=slab or blocks=tile"):
        compress.get("blosc2:blocks=cube")


def test_auto_tries_the_whole_first_chunk_and_keeps_its_payload(tmp_path) -> None:
    from emedge_core import emd
    from emedge_core.compress.auto import pick

    rng = np.random.default_rng(7)
    a = rng.poisson(0.2, (2, 64, 32, 32)).astype(np.uint16)     # one chunk of 2 rows x 64 frames
    path = str(tmp_path / "a.h5")
    emd.write(path, {"a": a}, codec="auto")
    assert np.array_equal(emd.read(path, "a"), a)
    chosen = emd.info(path)["arrays"]["a"]["codec"]
    assert chosen == pick([a], 1, threads=None).codec.spec


def test_auto_needs_a_sample() -> None:
    with pytest.raises(EmedgeError, match="sample"):
        compress.get("auto")


@pytest.mark.parametrize("spec,match", [("lzma", "unknown"), ("sz3", "error bound"), ("zfp", "error bound"),
                                        ("blosc2:cname=brotli", "cname"), ("gzip:9", "KEY=VALUE"),
                                        ("blosc2+delta", "misplaced"), ("sqrt:q=0", "q must be")])
def test_bad_specs_raise_clear_errors(spec: str, match: str) -> None:
    with pytest.raises(EmedgeError, match=match):
        compress.get(spec).encode(DATA["integrating"])


def test_garbage_payload_is_a_clear_error() -> None:
    with pytest.raises(EmedgeError, match="magic"):
        compress.decode(b"not a payload at all")


def test_non_numeric_dtype_is_refused() -> None:
    with pytest.raises(EmedgeError, match="numeric"):
        compress.get("blosc2").encode(np.array(["a", "b"]))


def test_h5_filter_names_a_registered_plugin() -> None:
    import h5py

    for spec, fid in [("blosc2", 32026), ("zstd", 32015), ("bitshuffle", 32008), ("sz3:abs=1", 32024),
                      ("zfp:accuracy=1", 32013)]:
        kw = compress.get(spec).h5_filter()
        assert kw["compression"] == fid and h5py.h5z.filter_avail(fid)


@pytest.mark.parametrize("shape,dtype", [((1, 32, 64, 64), np.uint16), ((4, 6, 200), np.float32),
                                         ((1, 3, 300, 300), np.uint16),
                                         ((20, 24), np.float64)])
@pytest.mark.parametrize("spec", ["blosc2", "blosc2:shuffle=bytedelta", "blosc2:cname=lz4,clevel=5",
                                  "blosc2:shuffle=none"])
def test_blosc2_chunks_are_the_frames_blosc2_itself_writes(spec: str, shape, dtype) -> None:
    """The writer wraps compress2's chunk in a frame learnt from blosc2; on one thread the bytes
    must equal blosc2's own update_data + to_cframe, for data, constant and all-zero chunks."""
    import blosc2

    from emedge_core.compress import stages

    stage = compress.get(spec).stage.with_threads(1)
    rng = np.random.default_rng(3)
    stage.encode_chunk(np.ones(shape, dtype))          # the first chunk of a kind takes blosc2's path
    assert stages._frame_kit(stage, shape, np.dtype(dtype)) is not None or np.prod(shape) < 1000
    for a in (rng.poisson(2.0, shape).astype(dtype), np.full(shape, 7, dtype), np.zeros(shape, dtype)):
        ref = stage.make_template(a.shape, a.dtype)
        ref.schunk.update_data(0, a, copy=True)
        assert stage.encode_chunk(a) == ref.schunk.to_cframe()
        back = blosc2.ndarray_from_cframe(stage.with_threads(2).encode_chunk(a))[()]
        assert back.tobytes() == a.tobytes()       # two threads: blocks may sit in another order, same data


def test_auto_takes_a_thread_count_and_nothing_else() -> None:
    a = DATA["counting"]
    assert compress.get("auto:threads=1", sample=[a], axis=1).threads == 1
    assert compress.get("auto:threads=2", sample=[a], axis=1).threads == 2
    assert compress.is_auto("auto:threads=2") and not compress.is_auto("blosc2")
    for bad in ("auto:level=3", "auto:threads=0"):
        with pytest.raises(EmedgeError, match="auto takes only threads"):
            compress.get(bad, sample=[a], axis=1)


@pytest.mark.parametrize("spec", ["blosc2", "delta+blosc2", "blosc2:shuffle=bytedelta", "zstd", "auto"])
def test_chunks_encoded_in_parallel_match_one_thread(tmp_path, spec: str) -> None:
    """Several chunks per append on 2 threads, short edge runs (buffered) between whole ones:
    same data, same CRC per chunk, and plain h5py + hdf5plugin read the same array."""
    import h5py
    import hdf5plugin  # noqa: F401

    from emedge_core import emd

    a = np.random.default_rng(9).poisson(0.4, (5, 7, 16, 16)).astype(np.uint16)
    out = {}
    for t in (1, 2):
        path = str(tmp_path / f"t{t}.h5")
        with emd.StreamWriter(path, "x", (16, 16), np.uint16, nav_shape=(5, 7), chunk_frames=3,
                              codec=spec + ("," if ":" in spec else ":") + f"threads={t}") as w:
            flat, i = a.reshape(-1, 16, 16), 0
            for n in (1, 9, 2, 14, 5, 4):                 # 35 frames in appends of mixed sizes
                w.append(flat[i:i + n])
                i += n
        back = emd.read(path, "x")
        with h5py.File(path, "r") as f:
            out[t] = (f["data/x/checksums"][()], f["data/x/data"][()])
        assert back.tobytes() == a.tobytes()
    assert np.array_equal(out[1][0], out[2][0]) and len(out[1][0]) == 5 * 3
    assert np.array_equal(out[1][1], out[2][1])
