"""Counting data this project did not model: abTEM multislice patterns, Poisson-counted at 0.02-0.5 e-/px.

    benchmarks/.venv-abtem-scalarize/bin/python benchmarks/counting_abtem.py --simulate /tmp/abtem_4d.npy
    python benchmarks/counting_abtem.py /tmp/abtem_4d.npy          # ratios: auto vs the counting peers

``--simulate`` (needs abTEM 1.0, e.g. the venv ``setup_peers_scalarize.sh`` makes): MoS2 (2H, a =
3.18 A) in a 6 x 3 orthogonal cell, 200 kV, 15 mrad probe, a 16 x 16 scan over the cell, pixelated
detector to 80 mrad -> (16, 16, 124, 107) float32 (~65 s on 2 cores). The comparison takes the central
96 x 96 px, scales each pattern to a mean of ``dose`` e-/px and draws Poisson counts (the 16 x 16 scan
4 x 4 times with fresh counts: 64 x 64 x 96 x 96 uint16, seed 301), and writes every method on the
same ~4 MiB chunks of whole frames: Blosc2 zstd5 + bitshuffle and bitshuffle-LZ4 through hdf5plugin,
emedge ``auto`` and ``blosc2`` (C-order slabs). One JSON line per dose: ratios (exact) and the codec
``auto`` chose.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def simulate(out: str) -> None:
    import abtem
    from ase.build import mx2

    atoms = abtem.orthogonalize_cell(mx2(formula="MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=2.0)) * (6, 3, 1)
    potential = abtem.Potential(atoms, sampling=0.05, slice_thickness=1.0)
    probe = abtem.Probe(energy=200e3, semiangle_cutoff=15)
    probe.grid.match(potential)
    scan = abtem.GridScan(start=(0, 0), end=potential.extent, gpts=(16, 16))
    m = probe.scan(potential, scan=scan, detectors=abtem.PixelatedDetector(max_angle=80)).compute(progress_bar=False)
    np.save(out, np.asarray(m.array, np.float32))


def compare(path: str) -> None:
    import h5py
    import hdf5plugin

    from emedge_core import emd
    from emedge_core.emd.layout import chunk_grid

    p = np.load(path)
    cy, cx = p.shape[2] // 2, p.shape[3] // 2
    p = p[:, :, cy - 48:cy + 48, cx - 48:cx + 48]
    p = p / p.mean(axis=(2, 3), keepdims=True)
    rng = np.random.default_rng(301)
    tmp = tempfile.mkdtemp(prefix="counting-abtem-")
    for dose in (0.02, 0.05, 0.1, 0.5):
        a = rng.poisson(np.tile(p, (4, 4, 1, 1)) * dose).astype(np.uint16)
        r, c = chunk_grid(a.shape[:2], a.shape[2:], a.itemsize, chunk_bytes=4 << 20)
        row: dict[str, object] = {"dose": dose, "shape": list(a.shape), "chunks": [r, c, *a.shape[2:]]}
        for name, kw in (("blosc2 zstd5+bitshuffle (hdf5plugin)", hdf5plugin.Blosc2("zstd", 5, 2)),
                         ("bitshuffle-lz4 (hdf5plugin)", hdf5plugin.Bitshuffle(cname="lz4"))):
            with h5py.File(os.path.join(tmp, "peer.h5"), "w") as f:
                d = f.create_dataset("d", data=a, chunks=(r, c, *a.shape[2:]), **kw)
                row[name] = round(a.nbytes / d.id.get_storage_size(), 2)
        for spec in ("auto", "blosc2"):
            st = emd.write(os.path.join(tmp, "ours.h5"), {"data": a}, codec=spec)["data"]
            row[f"emedge {spec}"] = round(st["ratio"], 2)
            if spec == "auto":
                row["auto_codec"] = st["codec"]
        print(json.dumps(row), flush=True)
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="the patterns (.npy): written by --simulate, read otherwise")
    ap.add_argument("--simulate", action="store_true", help="run abTEM and save the patterns to PATH")
    args = ap.parse_args()
    if args.simulate:
        simulate(args.path)
    else:
        compare(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
