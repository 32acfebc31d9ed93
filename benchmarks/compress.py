"""Compression benchmark: emedge codecs beside the peers, same data, same run.

    python benchmarks/compress.py [--quick] [--scale K] [--repeat N] [--sets a,b] [--methods lz4,auto]
                                  [--warm] [--fixed] [--table]
    python benchmarks/compress.py --counting [--repeat N] [--table]     # issue 12.5: held-out counting sets

One JSON line per data set x method x threads on stdout: ratio, compress / decompress MB/s
(MB = 1e6 raw bytes; median of --repeat runs), compress_cpu_MBps (MB per second of process CPU
time, all threads: what the compression costs, whatever else the machine runs), lossless, max_abs_error,
error bound, chunk shape
and the 1-minute load average. Every method writes a real HDF5 file on /dev/shm (RAM) with the
same chunk shape (about 1 MiB of consecutive frames along the scan); decompression reads it back whole.

Peers: gzip-9 (h5py), Blosc2 zstd5 + bitshuffle (hdf5plugin filter, and blosc2.compress2 in
memory on 1 and 2 threads), bitshuffle-LZ4 (hdf5plugin; 1 thread, the build has no OpenMP), raw
zstd-3 (zstandard on each chunk, 1 and 2 threads). emedge (``emd.write``: file, CRC-32 per chunk,
provenance, everything): ``auto``, its candidates and the fast ``blosc2:cname=lz4`` on 1 and 2
threads, sparse events, and lossy SZ3 / ZFP / sqrt quantisation with their bounds. Repeats are
interleaved across methods (a load change on a shared machine hits all alike). The first line
describes the machine; the last lines check issue 5's lossless goal per data set (``"goal"``).
``--counting`` runs the held-out electron-counting sets (64 x 64 x 128 x 128 uint16 at 0.02, 0.05,
0.1 and 0.5 e-/px, :func:`compress_data.counting_sets`) with the counting peer: Blosc2 zstd5 +
bitshuffle through hdf5plugin in ~4 MiB whole-frame chunks (128 frames), beside bitshuffle-LZ4
and ``auto``; its goal rows compare ``auto`` with that peer.
``--table`` adds a Markdown summary on stderr; ``--methods lz4,auto`` runs a subset; ``--warm``
times each run right after an untimed run of the same method; ``--fixed`` fits auto's fixed cost.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing

import h5py
import hdf5plugin
import numpy as np
import zlib_ng

from emedge_core import emd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compress_data import counting_sets, data_sets  # noqa: E402  (the data sets, shared with compress_gpu.py)

TMP = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
BSLZ4 = dict(hdf5plugin.Bitshuffle(cname="lz4"))          # the speed bar: bitshuffle-LZ4 through hdf5plugin


# ---------------------------------------------------------------- methods


class Result(typing.NamedTuple):
    stored: int
    seconds: float
    read_seconds: float
    back: np.ndarray
    cpu_seconds: float = float("nan")      # process CPU time of the compression, all threads
    chunks: tuple[int, ...] = ()           # the HDF5 chunk shape written (empty: the default grid)
    codec: str = ""                        # the codec emedge chose (auto) or was given


def _chunks(a: np.ndarray, sig: int) -> tuple[int, ...]:
    nav, frame = a.shape[:a.ndim - sig], a.shape[a.ndim - sig:]
    r, c = emd.chunk_grid(nav, frame, a.itemsize)
    return ((1,) * (len(nav) - 2) + (r, c) if len(nav) >= 2 else (c,)) + frame


def whole_frame_chunks(a: np.ndarray, sig: int, target: int = 4 << 20) -> tuple[int, ...]:
    """About ``target`` bytes of whole frames in scan order (e.g. (2, 64, 128, 128) for 64 x 64 x
    128 x 128 uint16 at 4 MiB): the counting peer's chunks."""
    nav, frame = a.shape[:a.ndim - sig], a.shape[a.ndim - sig:]
    r, c = emd.chunk_grid(nav, frame, a.itemsize, chunk_bytes=target)
    return ((1,) * (len(nav) - 2) + (r, c) if len(nav) >= 2 else (c,)) + frame


def run_h5_filter(a: np.ndarray, sig: int, kwargs: dict[str, typing.Any],
                  chunks: typing.Optional[tuple[int, ...]] = None) -> Result:
    path = os.path.join(TMP, f"bench-{os.getpid()}.h5")
    t0, c0 = time.perf_counter(), time.process_time()
    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", data=a, chunks=chunks or _chunks(a, sig), **kwargs)
        written = tuple(d.chunks)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        d = f["data"]
        back, stored = d[()], d.id.get_storage_size()
    read = time.perf_counter() - t0
    os.remove(path)
    return Result(stored, seconds, read, back, cpu, written)


def run_emedge(a: np.ndarray, sig: int, spec: str) -> Result:
    path = os.path.join(TMP, f"bench-{os.getpid()}.h5")
    t0, c0 = time.perf_counter(), time.process_time()
    stats = emd.write(path, {"data": a}, codec=spec, sig_ndim={"data": sig})
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    back = emd.read(path, "data")
    read = time.perf_counter() - t0
    with h5py.File(path, "r") as f:
        chunks = tuple(f[stats["data"]["dataset"]].chunks or ())
    os.remove(path)
    return Result(stats["data"]["stored_bytes"], seconds, read, back, cpu, chunks, stats["data"]["codec"])


def run_in_memory(a: np.ndarray, sig: int, encode: typing.Callable[[np.ndarray], bytes],
                  decode: typing.Callable[[bytes], np.ndarray]) -> Result:
    """Per-chunk codecs outside HDF5 (the raw-zstd and blosc2.compress2 peers)."""
    shape = _chunks(a, sig)
    flat = a.reshape((-1, *a.shape[a.ndim - sig:]))
    c = int(np.prod(shape[:len(shape) - sig]))       # frames per chunk (runs are contiguous in scan order)
    t0, c0 = time.perf_counter(), time.process_time()
    blobs = [encode(np.ascontiguousarray(flat[i:i + c])) for i in range(0, len(flat), c)]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    back = np.concatenate([decode(b) for b in blobs]).view(a.dtype).reshape(a.shape)
    read = time.perf_counter() - t0
    return Result(sum(len(b) for b in blobs), seconds, read, back, cpu)


def _zstd(threads: int) -> tuple[typing.Callable[[np.ndarray], bytes], typing.Callable[[bytes], np.ndarray]]:
    import zstandard

    comp = zstandard.ZstdCompressor(level=3, threads=threads if threads > 1 else 0)
    dec = zstandard.ZstdDecompressor()
    return (lambda x: comp.compress(x.data)), (lambda b: np.frombuffer(dec.decompress(b), np.uint8))


def _blosc2_peer(threads: int) -> tuple[typing.Callable[[np.ndarray], bytes], typing.Callable[[bytes], np.ndarray]]:
    import blosc2

    def enc(x: np.ndarray) -> bytes:
        return blosc2.compress2(x, cparams=blosc2.CParams(codec=blosc2.Codec.ZSTD, clevel=5, typesize=x.itemsize,
                                                          filters=[blosc2.Filter.BITSHUFFLE], nthreads=threads))

    def dec(b: bytes) -> np.ndarray:
        return np.frombuffer(blosc2.decompress2(b, dparams=blosc2.DParams(nthreads=threads)), np.uint8)

    return enc, dec


def methods(a: np.ndarray) -> list[tuple[str, bool, int, typing.Callable[[np.ndarray, int], Result]]]:
    """(name, is_peer, threads, run(a, sig)) for this array.

    gzip-9 and bitshuffle-LZ4 run inside the HDF5 library, one thread (this hdf5plugin build has
    no OpenMP: ``hdf5plugin.get_config().build_config.openmp``), so they have 1-thread rows only.
    """
    out: list[tuple[str, bool, int, typing.Callable[[np.ndarray, int], Result]]] = [
        ("gzip-9 (h5py)", True, 1, lambda x, s: run_h5_filter(x, s, {"compression": "gzip", "compression_opts": 9})),
        ("blosc2 zstd5+bitshuffle (hdf5plugin)", True, 1,
         lambda x, s: run_h5_filter(x, s, dict(hdf5plugin.Blosc2("zstd", 5, hdf5plugin.Blosc2.BITSHUFFLE)))),
        ("bitshuffle-lz4 (hdf5plugin)", True, 1, lambda x, s: run_h5_filter(x, s, BSLZ4)),
    ]
    for t in (1, 2):
        out.append(("zstd-3 raw (zstandard)", True, t, lambda x, s, t=t: run_in_memory(x, s, *_zstd(t))))
        out.append(("blosc2 zstd5+bitshuffle (compress2)", True, t,
                    lambda x, s, t=t: run_in_memory(x, s, *_blosc2_peer(t))))
    for spec in ("auto", "blosc2", "blosc2:shuffle=bytedelta", "delta+blosc2", "blosc2:cname=lz4"):
        for t in (1, 2):
            out.append((f"emedge {spec}", False, t, lambda x, s, spec=spec, t=t: run_emedge(x, s, _threads(spec, t))))
    if a.dtype.kind == "u":
        out.append(("emedge sparse", False, 1, lambda x, s: run_emedge(x, s, "sparse")))
        out.append(("emedge sqrt:q=1", False, 2, lambda x, s: run_emedge(x, s, "sqrt:q=1")))
    else:
        for spec in ("sz3:abs=1", "sz3:abs=3", "sz3:abs=10", "zfp:accuracy=3"):
            out.append((f"emedge {spec}", False, 1, lambda x, s, spec=spec: run_emedge(x, s, spec)))
        if a.min() >= -0.375:
            out.append(("emedge sqrt:q=1", False, 2, lambda x, s: run_emedge(x, s, "sqrt:q=1")))
    return out


COUNTING_PEER = "blosc2 zstd5+bitshuffle (hdf5plugin, 4 MiB whole frames)"


def counting_methods(a: np.ndarray) -> list[tuple[str, bool, int, typing.Callable[[np.ndarray, int], Result]]]:
    """The counting comparison of issue 12.5: the 4 MiB Blosc2 peer, bitshuffle-LZ4 (hdf5plugin, the
    speed bar), ``auto`` on 1 and 2 threads, Zstd-1 in C-order slabs (the candidate tiles beat), and
    by name the heavier Zstd-7 (clevel 4) in tiles, through the same writer."""
    blosc2_z5 = dict(hdf5plugin.Blosc2("zstd", 5, hdf5plugin.Blosc2.BITSHUFFLE))
    out: list[tuple[str, bool, int, typing.Callable[[np.ndarray, int], Result]]] = [
        (COUNTING_PEER, True, 1, lambda x, s: run_h5_filter(x, s, blosc2_z5, whole_frame_chunks(x, s))),
        ("bitshuffle-lz4 (hdf5plugin)", True, 1, lambda x, s: run_h5_filter(x, s, BSLZ4)),
    ]
    for spec in ("auto", "blosc2", "blosc2:blocks=tile,clevel=4"):
        for t in (1, 2):
            out.append((f"emedge {spec}", False, t, lambda x, s, spec=spec, t=t: run_emedge(x, s, _threads(spec, t))))
    return out


def _threads(spec: str, threads: int) -> str:
    return spec + ("," if ":" in spec else ":") + f"threads={threads}"


Method = tuple[str, bool, int, typing.Callable[[np.ndarray, int], Result]]   # (name, is_peer, threads, run)


def measure(name: str, a: np.ndarray, sig: int, todo: list[Method],
            repeat: int, warm: bool = False) -> list[dict[str, typing.Any]]:
    """One row per method. The repeats are interleaved (method A, B, C, A, B, C, ...) so that a
    change in the load of a shared machine hits every method alike; each row has the median and
    the 1-minute load average at its end. ``warm``: each timed run follows an untimed run of the
    same method (steady state: on this 2-vCPU VM a 2-thread write straight after single-thread work
    measured 8-17 % slower than back to back, also after a plain busy loop instead of a write)."""
    runs: dict[int, list[Result]] = {i: [] for i in range(len(todo))}
    loads: dict[int, list[float]] = {i: [] for i in range(len(todo))}
    for r in range(repeat):
        for i, (method, _, _, run) in enumerate(todo):
            if r and method.startswith("gzip"):
                continue                                  # slow and stable: once is enough
            if warm:
                run(a, sig)
            runs[i].append(run(a, sig))
            loads[i].append(os.getloadavg()[0])
    rows = []
    mb = a.nbytes / 1e6
    for i, (method, peer, threads, _) in enumerate(todo):
        r = runs[i][0]
        err = float(np.max(np.abs(r.back.astype(np.float64) - a))) if r.back.shape == a.shape else float("nan")
        spec = method.split(" ", 1)[1] if method.startswith("emedge ") else ""
        bound = None
        if spec.startswith(("sz3", "zfp")):
            bound = f"|error| <= {spec.split('=')[1]} (absolute)"
        elif spec.startswith("sqrt"):
            bound = "|error| <= q/2*sqrt(x+3/8) + q^2/16 (+0.5 ints), q=1"
        rows.append({"dataset": name, "shape": list(a.shape), "dtype": a.dtype.name, "raw_MB": round(mb, 2),
                     "method": method, "peer": peer, "threads": threads, "ratio": round(a.nbytes / r.stored, 3),
                     "compress_MBps": round(mb / statistics.median(x.seconds for x in runs[i]), 1),
                     "decompress_MBps": round(mb / statistics.median(x.read_seconds for x in runs[i]), 1),
                     "compress_cpu_MBps": round(mb / statistics.median(x.cpu_seconds for x in runs[i]), 1),
                     "lossless": err == 0.0, "max_abs_error": err, "error_bound": bound,
                     "chunks": list(r.chunks or _chunks(a, sig)), "codec": r.codec or None, "runs": len(runs[i]),
                     "warm": warm,
                     "load1": round(max(loads[i]), 2)})
    return rows


def fixed_costs(name: str, a: np.ndarray, sig: int, repeat: int) -> list[dict[str, typing.Any]]:
    """Where ``emd.write`` time goes besides MB: write the first 1/8 of the scan and all of it with
    ``auto`` (1 and 2 threads) and fit time = fixed + MB / marginal. ``fixed_ms`` is the cost per
    array (file, provenance, data set set-up, auto's trial of its candidates); ``marginal_MBps`` the
    rate on every further MB (what a long acquisition sees)."""
    part = a[:max(1, a.shape[0] // 8)]
    rows = []
    for t in (1, 2):
        spec = f"auto:threads={t}"
        secs = [statistics.median(run_emedge(x, sig, spec).seconds for _ in range(repeat)) for x in (part, a)]
        per_mb = (secs[1] - secs[0]) / ((a.nbytes - part.nbytes) / 1e6)
        rows.append({"fixed_cost": "emedge auto", "dataset": name, "threads": t,
                     "fixed_ms": round((secs[1] - per_mb * a.nbytes / 1e6) * 1e3, 2),
                     "marginal_MBps": round(1 / per_mb, 1) if per_mb > 0 else None,
                     "whole_MBps": round(a.nbytes / 1e6 / secs[1], 1), "load1": round(os.getloadavg()[0], 2)})
    return rows


def goals(rows: list[dict[str, typing.Any]]) -> list[dict[str, typing.Any]]:
    """Issue 5's lossless goal per data set: ``emedge auto`` ratio >= Blosc2 zstd+bitshuffle in an
    HDF5 file (the hdf5plugin row: same container, same chunks; the in-memory compress2 ratio, no
    frame or file, is reported beside it) and compress MB/s >= bitshuffle-LZ4 (1 thread, its only
    setting), for auto on 1 and on 2 threads; beside it, bitshuffle + LZ4 (Blosc2) through the same writer
    on the same thread count as auto (``emedge blosc2:cname=lz4``), the like-for-like LZ4 figure."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        cell = {(r["method"], r["threads"]): r for r in rows if r["dataset"] == name}
        lz4 = cell.get(("bitshuffle-lz4 (hdf5plugin)", 1))
        peer = cell.get(("blosc2 zstd5+bitshuffle (hdf5plugin)", 1)) or cell.get((COUNTING_PEER, 1))
        mem = cell.get(("blosc2 zstd5+bitshuffle (compress2)", 1))
        for t in (1, 2):
            ours = cell.get(("emedge auto", t))
            same = cell.get(("emedge blosc2:cname=lz4", t))       # bitshuffle + LZ4 through our writer, t threads
            if ours is None or lz4 is None or peer is None:
                continue
            out.append({"goal": "lossless", "dataset": name, "threads": t, "auto_ratio": ours["ratio"],
                        "auto_codec": ours.get("codec"), "peer": peer["method"],
                        "blosc2_zstd_bitshuffle_ratio": peer["ratio"], "ratio_ok": ours["ratio"] >= peer["ratio"],
                        "blosc2_compress2_in_memory_ratio": mem["ratio"] if mem else None,
                        "auto_MBps": ours["compress_MBps"], "bitshuffle_lz4_MBps_1thread": lz4["compress_MBps"],
                        "speed_ok": ours["compress_MBps"] >= lz4["compress_MBps"],
                        "speed_vs_lz4": round(ours["compress_MBps"] / lz4["compress_MBps"], 2),
                        "cpu_speed_vs_lz4": round(ours["compress_cpu_MBps"] / lz4["compress_cpu_MBps"], 2),
                        "emedge_lz4_bitshuffle_MBps_same_threads": same["compress_MBps"] if same else None,
                        "load1": max(ours["load1"], lz4["load1"])})
    return out


def table(rows: list[dict[str, typing.Any]]) -> str:
    """Markdown: one row per method x threads, one column per data set (ratio, comp/decomp MB/s)."""
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    keys = list(dict.fromkeys((r["method"], r["threads"]) for r in rows))
    cell = {(r["method"], r["threads"], r["dataset"]): r for r in rows}
    lines = ["| method | thr | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for m, t in keys:
        cells = []
        for s in sets:
            r = cell.get((m, t, s))
            cells.append("-" if r is None else
                         f"{r['ratio']:.3g}, {r['compress_MBps']:.0f}/{r['decompress_MBps']:.0f}"
                         + ("" if r["lossless"] else f" (err {r['max_abs_error']:.3g})"))
        lines.append(f"| {m} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data sets (seconds, for CI)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    p.add_argument("--scale", type=int, default=1,
                   help="multiply the scan edges (the in-situ frame count by its square): 2 = 4x the data, "
                        "67-268 MB sets, nearer a real acquisition (default 1: 17-67 MB)")
    p.add_argument("--sets", default=None, help="comma-separated subset of data sets")
    p.add_argument("--methods", default=None,
                   help="comma-separated substrings: only methods whose name contains one (e.g. 'lz4,auto')")
    p.add_argument("--table", action="store_true", help="also print a Markdown table on stderr")
    p.add_argument("--counting", action="store_true",
                   help="the held-out counting sets (64x64x128x128 uint16, 0.02-0.5 e-/px) against Blosc2 zstd5 + "
                        "bitshuffle in 4 MiB whole-frame chunks (issue 12.5)")
    p.add_argument("--warm", action="store_true",
                   help="precede each timed run by an untimed run of the same method (steady state)")
    p.add_argument("--fixed", action="store_true",
                   help="also fit auto's fixed cost per array (ms) and its marginal MB/s "
                        "(1/8 of each set vs all of it)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each data set wait up to S seconds for the 1-minute load to drop below 0.5 "
                        "(a shared machine); the load is reported either way")
    args = p.parse_args(argv)
    import blosc2

    print(json.dumps({"machine": {"cpus": os.cpu_count(), "load1": round(os.getloadavg()[0], 2),
                                  "hdf5plugin": hdf5plugin.version,
                                  "hdf5plugin_openmp": hdf5plugin.get_config().build_config.openmp,
                                  "blosc2": blosc2.__version__, "hdf5": h5py.version.hdf5_version,
                                  "crc32": f"zlib-ng {zlib_ng.__version__}"}}), flush=True)
    rows = []
    sets = counting_sets(16 if args.quick else 64) if args.counting else data_sets(args.quick, args.scale)
    for name, (a, sig) in sets.items():
        if args.sets and name not in args.sets.split(","):
            continue
        every = counting_methods(a) if args.counting else methods(a)
        todo = [m for m in every if not args.methods or any(w in m[0] for w in args.methods.split(","))]
        deadline = time.monotonic() + args.wait_idle
        while os.getloadavg()[0] >= 0.5 and time.monotonic() < deadline:
            time.sleep(5)
        for row in measure(name, a, sig, todo, args.repeat, args.warm):
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.fixed:
            for row in fixed_costs(name, a, sig, args.repeat):
                print(json.dumps(row), flush=True)
    for row in goals(rows):
        print(json.dumps(row), flush=True)
    if args.table:
        print(table(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
