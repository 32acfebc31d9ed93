"""``emedge compress`` and ``emedge inspect``: open, compressed EMD/HDF5 files with provenance.

    emedge compress IN OUT.h5 [--codec auto|<name>[:params]] [--dataset NAME] [--json]
    emedge inspect FILE [--json]

IN is a replay ``.npz``/HDF5 with ``data`` (plus ``survey``/``energy_eV``, copied along), or an
EMD/HDF5 file (its ``data`` array, else ``frames`` as in ``experiment.h5``, else the largest). OUT is an EMD 1.0 file written by the
streaming writer to ``OUT.partial`` (renamed to OUT once complete), then read back: lossless codecs are checked bit for bit (and per-chunk CRC-32),
lossy ones report their largest absolute error. ``--json`` prints, last, one line
``{"ratio", "compress_MBps", "dataset", "lossless", "max_abs_error"}``.
"""
from __future__ import annotations

import argparse
import os
import time
import typing

import numpy as np

from emedge_core import EmedgeError

READ_BLOCK_BYTES = 64 << 20       # input is read and appended in blocks of about 64 MiB
SIDE_ARRAYS = ("survey", "energy_eV")


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "compress", help="compress a data set into an EMD/HDF5 file", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="replay .npz/HDF5 with 'data', or an EMD/HDF5 file")
    p.add_argument("output", metavar="OUT.h5", help="EMD 1.0 file to write (replaced)")
    p.add_argument("--codec", default="auto",
                   help="auto (default), or e.g. blosc2, blosc2:clevel=5, delta+blosc2, bitshuffle, gzip:level=9, "
                        "zstd:level=3, sparse, sz3:abs=1.0, zfp:accuracy=0.5, sqrt:q=1")
    p.add_argument("--dataset", default=None, help="data set / EMD array in IN (default: 'data', else the largest)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    p.set_defaults(func=run_compress)
    q: argparse.ArgumentParser = sub.add_parser(
        "inspect", help="layout, codecs, ratios and provenance of an EMD/HDF5 file", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("file", metavar="FILE")
    q.add_argument("--json", action="store_true", help="print the description as one JSON line")
    q.set_defaults(func=run_inspect)


class Source(typing.NamedTuple):
    """The data set to compress: ``data`` (array or h5py dataset), its name, side arrays, state."""

    data: typing.Any
    name: str
    sig_ndim: int
    side: dict[str, np.ndarray]
    instrument_state: dict[str, typing.Any]


def open_source(path: str, dataset: typing.Optional[str], stack: typing.Any) -> Source:
    """Find the data set in ``path``; HDF5 files are registered on ``stack`` (an ExitStack)."""
    if not os.path.exists(path):
        raise EmedgeError(f"input not found: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise EmedgeError(f"cannot read {path} as .npz: {e}") from None
        key = dataset or "data"
        if key not in arrays:
            raise EmedgeError(f"{path} has no {key!r} array (has {sorted(arrays)})")
        return _source(arrays[key], key, {k: arrays[k] for k in SIDE_ARRAYS if k in arrays}, {})
    import h5py

    try:
        f = stack.enter_context(h5py.File(path, "r"))
    except OSError as e:
        raise EmedgeError(f"cannot read {path} as HDF5: {e}") from None
    from emedge_core import emd

    if f.attrs.get("emd_group_type") == "file":
        root = emd.root_group(f, None)
        names = [k for k, v in root.items() if emd.is_array(v)]
        preferred = [k for k in ("data", "frames") if k in names]       # 'frames': an experiment.h5
        key = dataset or (preferred[0] if preferred else max(names, key=lambda k: _nbytes(root[k]), default=None))
        if key not in names:
            raise EmedgeError(f"{path} has no EMD array {key!r} (has {names})")
        side = {k: emd.read_array(root[k]) for k in SIDE_ARRAYS if k in names and k != key}
        state = emd.info(path)["provenance"].get("instrument_state", {})
        return _source(emd.read_array(root[key]), key, side, state if isinstance(state, dict) else {})
    key = dataset or "data"
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise EmedgeError(f"{path} has no data set {key!r}")
    side = {k: f[k][()] for k in SIDE_ARRAYS if k in f and isinstance(f[k], h5py.Dataset)}
    return _source(f[key], key, side, {})


def _nbytes(group: typing.Any) -> int:
    d = group.get("data") if "data" in group else group.get("events_per_frame")
    return int(d.size * d.dtype.itemsize) if d is not None else 0


def _source(data: typing.Any, name: str, side: dict[str, np.ndarray], state: dict[str, typing.Any]) -> Source:
    if np.dtype(data.dtype).kind not in "uif" or len(data.shape) == 0:
        raise EmedgeError(f"data set {name!r} has dtype {data.dtype} and shape {data.shape}; "
                          "compress takes numeric arrays of 1 or more dimensions")
    ndim = len(data.shape)
    sig = 1 if ("energy_eV" in side and ndim >= 2) else min(ndim - 1, {1: 0, 2: 1}.get(ndim, 2))
    return Source(data, name, sig, side, state)


def compress_file(src_path: str, out_path: str, codec: str = "auto",
                  dataset: typing.Optional[str] = None) -> dict[str, typing.Any]:
    """Compress one data set of ``src_path`` into ``out_path``; returns the ``--json`` result."""
    import contextlib

    from emedge_core import emd, provenance

    with contextlib.ExitStack() as stack:
        src = open_source(src_path, dataset, stack)
        shape, dtype = tuple(src.data.shape), np.dtype(src.data.dtype)
        nav, frame = shape[:len(shape) - src.sig_ndim], shape[len(shape) - src.sig_ndim:]
        params = {"input": os.path.abspath(src_path), "dataset": src.name, "codec": codec, "shape": list(shape),
                  "dtype": dtype.name, "command": "emedge compress"}
        frame_bytes = max(1, int(np.prod(frame, dtype=np.int64)) * dtype.itemsize)
        step = max(1, READ_BLOCK_BYTES // frame_bytes)
        prov = provenance.collect(params, src.instrument_state)
        partial = out_path + ".partial"       # OUT appears only when complete; an old OUT survives a failure
        t0 = time.perf_counter()
        writer = emd.StreamWriter(partial, "data", frame, dtype, nav, codec, provenance=prov)
        seconds = time.perf_counter() - t0
        with writer:
            flat_n = int(np.prod(nav, dtype=np.int64))
            for i in range(0, flat_n, step):
                block = _frames(src.data, nav, i, min(i + step, flat_n))
                t0 = time.perf_counter()
                writer.append(block)
                seconds += time.perf_counter() - t0
            for k, v in src.side.items():
                writer.write_array(k, np.asarray(v), codec="auto")
            t0 = time.perf_counter()
            stats = writer.close()["data"]
            seconds += time.perf_counter() - t0
        back = emd.read(partial, "data")
        original = np.asarray(src.data[()])
    if back.shape != original.shape:
        raise EmedgeError(f"read-back shape {back.shape} differs from the input {original.shape}")
    if stats["lossless"] and (back.dtype != original.dtype or back.tobytes() != original.tobytes()):
        raise EmedgeError(f"lossless round trip of {src.name!r} is not bit-exact; kept {partial}")
    err = max_abs_error(back, original)
    os.replace(partial, out_path)
    return {"ratio": stats["ratio"], "compress_MBps": stats["raw_bytes"] / 1e6 / max(seconds, 1e-9),
            "dataset": src.name, "lossless": stats["lossless"], "max_abs_error": err,
            "_codec": stats["codec"], "_stored_bytes": stats["stored_bytes"], "_raw_bytes": stats["raw_bytes"]}


def max_abs_error(back: np.ndarray, original: np.ndarray) -> float:
    """Largest |back - original| over the values; NaN and inf must stay where they were."""
    b, o = back.astype(np.float64), original.astype(np.float64)
    same = (b == o) | (np.isnan(b) & np.isnan(o))
    if not np.isfinite(o[~same]).all() or not np.isfinite(b[~same]).all():
        raise EmedgeError("the codec moved NaN or inf values")
    return float(np.abs(b[~same] - o[~same]).max()) if (~same).any() else 0.0


def _frames(data: typing.Any, nav: tuple[int, ...], start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` in flat scan order, read row by row from an array or h5py data set."""
    if len(nav) <= 1:
        return np.asarray(data[start:stop])
    rows = []
    last = nav[-1]
    for r in range(start // last, (stop - 1) // last + 1):
        lo, hi = max(start, r * last) - r * last, min(stop, (r + 1) * last) - r * last
        idx = np.unravel_index(r, nav[:-1])
        rows.append(np.asarray(data[tuple(int(i) for i in idx) + (slice(lo, hi),)]))
    return np.concatenate(rows)


def run_compress(args: argparse.Namespace) -> int:
    result = compress_file(args.input, args.output, args.codec, args.dataset)
    if args.json:
        from emedge_core.cli import print_json

        print_json({k: v for k, v in result.items() if not k.startswith("_")})
    else:
        print(f"{result['dataset']}: {result['_codec']}, ratio {result['ratio']:.2f} "
              f"({result['_raw_bytes'] / 1e6:.1f} MB -> {result['_stored_bytes'] / 1e6:.2f} MB), "
              f"{result['compress_MBps']:.0f} MB/s, {'lossless (verified)' if result['lossless'] else 'lossy'}, "
              f"max abs error {result['max_abs_error']:g}; wrote {args.output}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from emedge_core import emd

    desc = emd.info(args.file)
    if args.json:
        from emedge_core.cli import print_json

        print_json(desc)
        return 0
    print(f"{desc['path']}: EMD {desc['file_attrs'].get('version_major')}.{desc['file_attrs'].get('version_minor')} "
          f"by {desc['file_attrs'].get('authoring_program')}, root {desc['root']}")
    for name, a in desc["arrays"].items():
        ratio = f"{a['ratio']:.2f}" if a["ratio"] else "-"
        bound = f", bound {a['error_bound']}" if a["error_bound"] else ""
        print(f"  {name}: {a['dtype']} {tuple(a['shape'])}, chunks {tuple(a['chunks'])}, codec {a['codec']} "
              f"[{', '.join(a['filters']) or 'no filter'}], {a['raw_bytes'] / 1e6:.2f} MB -> "
              f"{a['stored_bytes'] / 1e6:.2f} MB, ratio {ratio}, {'lossless' if a['lossless'] else 'lossy'}{bound}, "
              f"frames written {a['frames_written']}")
    for key, value in desc["provenance"].items():
        print(f"  provenance.{key}: {value}")
    return 0
