"""Read throughput per format: emedge's ``open_data`` (navigation first, chunk by chunk) against
rosettasciio alone (its reader, whole array), one JSON line per file.

    python benchmarks/read.py [FILE[::DATASET] ...] [--repeat N]

Without files: the real instrument files in tests/data (rosettasciio's own test data; see
tests/data/README.md). Each figure is the median of ``--repeat`` runs (default 5) of: open the file,
read every value into memory, close. ``emedge`` reads frame rows through :meth:`DataSource.frames`
(what scalarize, compress and replay do); ``rsciio`` calls the format's ``file_reader`` (lazy where
it can) and materialises the array. Both include opening and parsing the metadata, which dominates
for the small test files: the figures compare the overhead, not disk bandwidth. The machine line says
how many CPUs the process saw and the 1-minute load (the box may be shared).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import pathlib
import statistics
import sys
import time
import typing
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from emedge_core.io import RSCIIO_READERS, open_data  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
DEFAULT = ["dm/EELS_SI.dm4", "merlin/001_4x2_6bit.mib", "merlin/Single_1_Frame_CounterDepth_12_Rows_256.mib",
           "arina/test_00_master.h5", "topspin/topspin_test_A.app5::1", "mrc/20241021_00405_movie.mrc",
           "emd/py4DSTEM_size2x3x4x5.h5", "hspy/example2_v3.1.hspy"]
READER_BY_NAME = {"_master.h5": "arina", "py4DSTEM": "emd", ".hdf5": "hspy"}


def _reader(path: str) -> str:
    for key, reader in READER_BY_NAME.items():
        if key in os.path.basename(path):
            return reader
    return RSCIIO_READERS[os.path.splitext(path)[1].lower()]


def read_emedge(path: str, dataset: typing.Optional[str]) -> int:
    """Bytes read through open_data, frames in blocks of about 16 MiB."""
    with open_data(path, dataset=dataset) as src:
        n = int(np.prod(src.nav_shape, dtype=np.int64)) if src.nav_shape else 1
        if not src.nav_shape:
            return int(np.asarray(src.data[()]).nbytes)
        frame = max(1, int(np.prod(src.sig_shape, dtype=np.int64)) * src.dtype.itemsize)
        last = src.nav_shape[-1]
        step = max(1, (16 << 20) // (frame * last)) * last          # whole scan rows per read
        return sum(src.frames(i, min(i + step, n)).nbytes for i in range(0, n, step))


def read_rsciio(path: str, dataset: typing.Optional[str]) -> int:
    """Bytes of the same signal read by rosettasciio's file_reader alone."""
    reader = _reader(path)
    module = importlib.import_module(f"rsciio.{reader}")
    lazy = reader not in ("arina", "topspin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = module.file_reader(path, lazy=lazy)
    s = signals[int(dataset) if dataset is not None else -1]
    return int(np.asarray(s["data"]).nbytes)


def timed(fn: typing.Callable[[], int], repeat: int) -> tuple[float, int]:
    times, nbytes = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        nbytes = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), nbytes


def main(argv: typing.Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="FILE or FILE::DATASET (default: tests/data)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    files = args.files or [str(DATA / f) for f in DEFAULT]
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0],
                                  "note": "shared box; small files: overhead, not bandwidth"}}))
    for spec in files:
        path, _, dataset = spec.partition("::")
        ds = dataset or None
        read_emedge(path, ds), read_rsciio(path, ds)          # warm the caches and imports
        t_e, n_e = timed(functools.partial(read_emedge, path, ds), args.repeat)
        t_r, n_r = timed(functools.partial(read_rsciio, path, ds), args.repeat)
        print(json.dumps({"file": os.path.relpath(path), "dataset": ds, "reader": _reader(path), "bytes": n_e,
                          "same_bytes": n_e == n_r, "emedge_s": round(t_e, 5), "rsciio_s": round(t_r, 5),
                          "emedge_MBps": round(n_e / 1e6 / t_e, 2), "rsciio_MBps": round(n_r / 1e6 / t_r, 2),
                          "emedge_over_rsciio": round(t_e / t_r, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
