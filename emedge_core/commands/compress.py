"""``emedge compress`` and ``emedge inspect``: open, compressed EMD/HDF5 files with provenance.

    emedge compress IN OUT.h5 [--codec auto|<name>[:params]] [--dataset NAME|INDEX] [--json]
    emedge inspect FILE [--dataset NAME|INDEX] [--json]

IN is any file :func:`emedge_core.io.open_data` reads (DM3/DM4, Velox EMD, Merlin .mib, Arina, TopSpin
.app5, MRC, py4DSTEM EMD, HyperSpy, Swift .ndata/.h5 or library folder, a replay ``.npz``/HDF5 with
``data`` (``survey``/``energy_eV`` copied along), an EMD file emedge wrote (its ``data``, else ``frames``
as in ``experiment.h5``, else the largest array), .npy). The array is written navigation first, signal
last, in the dtype and values rosettasciio reads, with its calibrations as the EMD 1.0 dim vectors
(name, units, values) and the file's own metadata (Swift ``properties``, rosettasciio ``metadata``) kept
with it. OUT is an EMD 1.0 file written by the streaming writer to ``OUT.partial`` (renamed to OUT once
complete), then read back: lossless codecs are checked bit for bit (and per-chunk CRC-32), lossy ones
report their largest absolute error. ``--json`` prints, last, one line
``{"ratio", "compress_MBps", "dataset", "lossless", "max_abs_error"}``; ``dataset`` is the full HDF5
path of the written array. ``inspect`` describes an EMD file emedge wrote (codecs, ratios, axes, loud
``WARNING:`` lines for arrays only emedge reads right), or any other input (signals, shapes, axes,
calibrations).
"""
from __future__ import annotations

import argparse
import os
import time
import typing

import numpy as np

from emedge_core import EmedgeError

READ_BLOCK_BYTES = 64 << 20       # input is read and appended in blocks of about 64 MiB
ERROR_BLOCK_FRAMES = 64           # frames per float64 comparison of a lossy read-back


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "compress", help="compress a data set into an EMD/HDF5 file", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="a microscope file (.dm4, .emd, .mib, .ndata, ...), replay .npz/HDF5, "
                                               "EMD/HDF5 or .npy")
    p.add_argument("output", metavar="OUT.h5", help="EMD 1.0 file to write (replaced)")
    p.add_argument("--codec", default="auto",
                   help="auto (default), or e.g. blosc2, blosc2:clevel=5, delta+blosc2, bitshuffle, gzip:level=9, "
                        "zstd:level=3, sparse, sz3:abs=1.0, zfp:accuracy=0.5, sqrt:q=1")
    p.add_argument("--dataset", default=None, help="the signal in IN when it holds several: title, array name or "
                                                   "index (default: 'data', the only scan signal, else the largest)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    p.set_defaults(func=run_compress)
    q: argparse.ArgumentParser = sub.add_parser(
        "inspect", help="signals, axes and calibrations of any input; layout, codecs and provenance of an EMD file",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("file", metavar="FILE")
    q.add_argument("--dataset", default=None, help="the signal to describe when the file holds several")
    q.add_argument("--json", action="store_true", help="print the description as one JSON line")
    q.set_defaults(func=run_inspect)


def _dims(src: typing.Any) -> list[typing.Any]:
    """EMD dim vectors of the presented axes (uncalibrated axes in pixels)."""
    from emedge_core import emd

    return [emd.Axis(a.name, a.units or "pixels", a.values()) for a in src.axes]


def compress_file(src_path: str, out_path: str, codec: str = "auto",
                  dataset: typing.Optional[str] = None) -> dict[str, typing.Any]:
    """Compress one data set of ``src_path`` into ``out_path``; returns the ``--json`` result."""
    from emedge_core import emd, provenance
    from emedge_core.io import open_data

    with open_data(src_path, dataset=dataset) as src:
        if src.dtype.kind not in "uif" or len(src.shape) == 0:
            raise EmedgeError(f"data set {src.title!r} has dtype {src.dtype} and shape {src.shape}; "
                              "compress takes numeric arrays of 1 or more dimensions")
        shape, dtype = src.shape, src.dtype
        nav, frame = (src.nav_shape, src.sig_shape) if src.nav_shape else (shape[:1], shape[1:])
        params = {"input": os.path.abspath(src_path), "dataset": src.title, "codec": codec, "shape": list(shape),
                  "dtype": dtype.name, "command": "emedge compress"}
        frame_bytes = max(1, int(np.prod(frame, dtype=np.int64)) * dtype.itemsize)
        step = max(1, READ_BLOCK_BYTES // frame_bytes)
        prov = provenance.collect(params, src.instrument_state)
        partial = out_path + ".partial"       # OUT appears only when complete; an old OUT survives a failure
        t0 = time.perf_counter()
        writer = emd.StreamWriter(partial, "data", frame, dtype, nav, codec, provenance=prov, dims=_dims(src),
                                  metadata=src.properties or None)
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
        err = _verify(partial, stats, src.data, nav, step, src.title)
    os.replace(partial, out_path)
    return {"ratio": stats["ratio"], "compress_MBps": stats["raw_bytes"] / 1e6 / max(seconds, 1e-9),
            "dataset": stats["dataset"], "lossless": stats["lossless"], "max_abs_error": err,
            "_codec": stats["codec"], "_stored_bytes": stats["stored_bytes"], "_raw_bytes": stats["raw_bytes"],
            "_source": src.title}


def _verify(partial: str, stats: dict[str, typing.Any], data: typing.Any, nav: tuple[int, ...], step: int,
            title: str) -> float:
    """Read ``partial`` back and compare it with the input ``data``: bit for bit when lossless, else the
    largest absolute error. Arrays any HDF5 reader decodes are compared block by block through plain
    h5py (bounded memory, and the check other readers pass); opt-in codecs that need emedge's inverse
    are read whole through :func:`emedge_core.emd.read` (which also checks every chunk's CRC-32)."""
    import h5py

    from emedge_core import emd

    shape = tuple(int(v) for v in data.shape)
    plain = emd.info(partial)["arrays"]["data"]["warning"] is None
    with h5py.File(partial, "r") as f:
        back_all = f[stats["dataset"]] if plain else emd.read(partial, "data")
        if tuple(back_all.shape) != shape:
            raise EmedgeError(f"read-back shape {tuple(back_all.shape)} differs from the input {shape}")
        err = 0.0
        flat_n = int(np.prod(nav, dtype=np.int64))
        for i in range(0, flat_n, step):
            stop = min(i + step, flat_n)
            back, original = _frames(back_all, nav, i, stop), _frames(data, nav, i, stop)
            if stats["lossless"]:
                if back.dtype != original.dtype or back.tobytes() != original.tobytes():
                    raise EmedgeError(f"lossless round trip of {title!r} is not bit-exact; kept {partial}")
                continue
            for j in range(0, len(back), ERROR_BLOCK_FRAMES):     # float64 copies stay small
                err = max(err, max_abs_error(back[j:j + ERROR_BLOCK_FRAMES], original[j:j + ERROR_BLOCK_FRAMES]))
    return err


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
        print(f"{result['_source']} -> {result['dataset']}: {result['_codec']}, ratio {result['ratio']:.2f} "
              f"({result['_raw_bytes'] / 1e6:.1f} MB -> {result['_stored_bytes'] / 1e6:.2f} MB), "
              f"{result['compress_MBps']:.0f} MB/s, {'lossless (verified)' if result['lossless'] else 'lossy'}, "
              f"max abs error {result['max_abs_error']:g}; wrote {args.output}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from emedge_core import emd
    from emedge_core.io import open_data

    if not os.path.exists(args.file):
        raise EmedgeError(f"cannot open {args.file}: not found")
    if _is_emedge_emd(args.file) and args.dataset is None:
        desc = emd.info(args.file)
        if args.json:
            from emedge_core.cli import print_json

            print_json(desc)
            return 0
        _print_emd(desc)
        return 0
    with open_data(args.file, dataset=args.dataset) if args.dataset is not None else _open_any(args.file) as src:
        d = src.describe()
    if args.json:
        from emedge_core.cli import print_json

        print_json(d)
        return 0
    print(f"{d['path']}: {len(d['signals'])} signal(s)")
    for i, s in enumerate(d["signals"]):
        print(f"  [{i}] {s['title'] or '(untitled)'}: {'x'.join(map(str, s['shape']))} {s['kind']}"
              + ("   <- opened" if s["title"] == d["opened"] else ""))
    print(f"opened {d['opened']!r}: {d['kind']} {tuple(d['shape'])} {d['dtype']}, navigation first, signal last")
    for a in d["axes"]:
        print(f"  {'nav' if a['navigate'] else 'sig'} {a['name']}: {a['size']} x {a['step']:g} {a['units'] or 'px'}"
              f" from {a['start']:g}")
    e = d["energy_eV"]
    print(f"  energy axis: {f'{e[0]:g} .. {e[1]:g} eV, {e[2]} channels' if e else '-'}; detector: "
          f"{d['mrad_per_px'] if d['mrad_per_px'] is not None else '-'} mrad/px, "
          f"{d['bits'] if d['bits'] else '?'} bit (saturation {d['saturation'] if d['saturation'] else 'dtype max'})")
    return 0


def _open_any(path: str) -> typing.Any:
    """The file's only (or only scan) signal, else its first one (inspect lists them all anyway)."""
    from emedge_core.io import open_data

    try:
        return open_data(path)
    except EmedgeError as e:
        if "--dataset" not in str(e):
            raise
        return open_data(path, dataset=0)


def _is_emedge_emd(path: str) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("authoring_program", "")).startswith("nionswift-emedge") and \
                f.attrs.get("emd_group_type") in ("file", b"file")
    except OSError:
        return False


def _print_emd(desc: dict[str, typing.Any]) -> None:
    print(f"{desc['path']}: EMD {desc['file_attrs'].get('version_major')}.{desc['file_attrs'].get('version_minor')} "
          f"by {desc['file_attrs'].get('authoring_program')}, root {desc['root']}")
    for name, a in desc["arrays"].items():
        ratio = f"{a['ratio']:.2f}" if a["ratio"] else "-"
        bound = f", bound {a['error_bound']}" if a["error_bound"] else ""
        print(f"  {name}: {a['dtype']} {tuple(a['shape'])} at {a['dataset']}, chunks {tuple(a['chunks'])}, "
              f"codec {a['codec']} [{', '.join(a['filters']) or 'no filter'}], {a['raw_bytes'] / 1e6:.2f} MB -> "
              f"{a['stored_bytes'] / 1e6:.2f} MB, ratio {ratio}, {'lossless' if a['lossless'] else 'lossy'}{bound}, "
              f"frames written {a['frames_written']}")
        dims = ", ".join(f"{d['name']} {d['size']}" + (f" x {d['step']:g} {d['units']}" if d["step"] else "")
                         for d in a.get("dims", []))
        if dims:
            print(f"    axes: {dims}")
        if a.get("auto_trial"):
            print("    auto: best ratio on the first chunk among light, plain-readable codecs: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in sorted(a["auto_trial"].items(), key=lambda kv: -kv[1])))
        if a.get("warning"):
            print(f"WARNING: {name}: {a['warning']}")
    for key, value in desc["provenance"].items():
        print(f"  provenance.{key}: {value}")
    from emedge_core.timeline import describe

    for line in describe(desc["path"]):      # experiment.h5: the instrument's state over the run
        print(line)
