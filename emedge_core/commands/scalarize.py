"""``emedge scalarize``: one scalarizer over a whole 4D-STEM or EELS spectrum-image file.

    emedge scalarize FILE --scalarizer SPEC --out OUT.npy [--dataset PATH] [--backend auto|numpy|torch|cupy]
                     [--energy-eV START:STEP] [--mrad-per-px C] [--chunk-mb M] [--json]

FILE: a replay file (.npz or HDF5 with ``data`` (H, W, E) + ``energy_eV`` or ``data`` (H, W, ky, kx)),
any HDF5/EMD file (the largest 3-D dataset for spectra, 4-D for patterns, unless --dataset; the energy
axis from an EMD dimension vector in eV), or a .npy array. Read chunk by chunk, so files larger than
memory work. Writes OUT.npy, the (H, W) map or (H, W, k) for vector results such as ``com`` (row, col),
and OUT.reason.npy, the (H, W) uint8 reason codes (0 ok, 1 NaN/inf, 2 empty, 3 saturated, 4 wrong
shape/dtype, 5 reduction failed).
With --json the last stdout line holds seconds, GB/s and the counts of bad frames.
"""
from __future__ import annotations

import argparse
import os
import typing

import numpy as np

from emedge_core import EmedgeError


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scalarize", help="reduce a 4D-STEM / EELS file to a map", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="replay .npz / HDF5 / EMD / .npy file")
    p.add_argument("--scalarizer", required=True, help='a name or a JSON object {"name": ..., <params>}')
    p.add_argument("--out", required=True, help="output .npy map (reasons go to OUT.reason.npy)")
    p.add_argument("--dataset", help="HDF5 path of the data (default: 'data', else the largest fitting dataset)")
    p.add_argument("--backend", default="auto", help="auto (default), numpy, torch, torch:cpu, torch:cuda, cupy")
    p.add_argument("--energy-eV", dest="energy", metavar="START:STEP",
                   help="energy axis of the spectra when the file has none (eV)")
    p.add_argument("--mrad-per-px", type=float, default=None, help="detector calibration (for radii in mrad)")
    p.add_argument("--chunk-mb", type=float, default=None, help="MB of float32 per chunk (default 8 CPU, 256 GPU)")
    p.add_argument("--json", action="store_true", help="print a summary as one JSON line last")
    p.set_defaults(func=run)


def _largest(h5: typing.Any, ndim: int) -> typing.Optional[str]:
    """Path of the largest dataset with ``ndim`` dimensions in an open HDF5 file."""
    import h5py

    found: list[tuple[int, str]] = []

    def visit(name: str, obj: typing.Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim == ndim and np.issubdtype(obj.dtype, np.number):
            found.append((int(obj.size), name))

    h5.visititems(visit)
    return max(found)[1] if found else None


def _emd_energy(ds: typing.Any) -> typing.Optional[np.ndarray]:
    """The energy axis (E,) eV of an (H, W, E) dataset from its EMD dimension vector, when present:
    ``dim3`` (EMD 1.0, 1-based) or ``dim2`` (emdfile/py4DSTEM, 0-based; just the first two values
    when linear), with units "eV"."""
    n_e = ds.shape[-1]
    for name in (f"dim{ds.ndim}", f"dim{ds.ndim - 1}"):
        dim = ds.parent.get(name)
        units = dim.attrs.get("units", "") if dim is not None else ""
        if dim is None or (units.decode() if isinstance(units, bytes) else str(units)) != "eV":
            continue
        v = np.asarray(dim[()], np.float64).ravel()
        if v.shape == (n_e,):
            return v
        if v.shape == (2,):                 # a linear axis stored as its first two values
            return v[0] + (v[1] - v[0]) * np.arange(n_e)
    return None


def _open(path: str, kind: str, dataset: typing.Optional[str]) -> tuple[typing.Any, dict[str, typing.Any], typing.Any]:
    """(data array or h5py dataset, calibration, file to close or None)."""
    if not os.path.exists(path):
        raise EmedgeError(f"file not found: {path}")
    want = 3 if kind == "spectrum" else 4
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r"), {}, None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if "data" not in z.files:
                raise EmedgeError(f"{path} has no 'data' array")
            return z["data"], ({"energy_eV": z["energy_eV"]} if "energy_eV" in z.files else {}), None
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc2/Bitshuffle/zstd filters of compressed files)

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EmedgeError(f"cannot read {path} as HDF5: {e}") from None
    name = dataset or ("data" if isinstance(f.get("data"), h5py.Dataset) else _largest(f, want))
    if name is None or not isinstance(f.get(name), h5py.Dataset):
        f.close()
        raise EmedgeError(f"{path} holds no {want}-D dataset" + (f" at {dataset!r}" if dataset else "")
                          + "; name one with --dataset")
    ds = f[name]
    calib: dict[str, typing.Any] = {}
    if kind == "spectrum":
        energy = f["energy_eV"][()] if "energy_eV" in f else _emd_energy(ds)
        if energy is not None:
            calib["energy_eV"] = np.asarray(energy, np.float64)
    elif "mrad_per_px" in ds.attrs:
        calib["mrad_per_px"] = float(ds.attrs["mrad_per_px"])
    return ds, calib, f


def _energy_axis(text: str, channels: int) -> np.ndarray:
    try:
        start, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise EmedgeError(f"--energy-eV wants START:STEP (e.g. -10:0.5), not {text!r}") from None
    return start + step * np.arange(channels)


def run(args: argparse.Namespace) -> int:
    from emedge_core.scalarize import Reason, from_spec, reduce

    scalarizer = from_spec(args.scalarizer)
    data, calib, handle = _open(args.file, scalarizer.signal_kind, args.dataset)
    try:
        want = 3 if scalarizer.signal_kind == "spectrum" else 4
        if data.ndim != want:
            raise EmedgeError(f"{scalarizer.name!r} needs a {want}-D (H, W, {'E' if want == 3 else 'ky, kx'}) "
                              f"dataset; {args.file} holds shape {tuple(data.shape)}")
        if args.energy:
            calib["energy_eV"] = _energy_axis(args.energy, int(data.shape[-1]))
        if args.mrad_per_px is not None:
            calib["mrad_per_px"] = args.mrad_per_px
        chunk = None if args.chunk_mb is None else int(args.chunk_mb * 1e6)
        result = reduce(scalarizer, data, backend=args.backend, chunk_bytes=chunk, **calib)
    finally:
        if handle is not None:
            handle.close()
    out = args.out if args.out.endswith(".npy") else args.out + ".npy"
    reasons = out[:-4] + ".reason.npy"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.save(out, result.values)
    np.save(reasons, result.reason)
    bad = {r.name.lower(): int((result.reason == r).sum()) for r in Reason if r != Reason.OK}
    summary = {"scalarizer": scalarizer.params(), "shape": list(result.values.shape), "backend": result.backend,
               "seconds": result.seconds, "gbps": result.gbps, "bytes": result.nbytes, "bad": bad,
               "resolved": result.resolved, "out": out, "reasons": reasons}
    if args.json:
        from emedge_core.cli import print_json

        print_json(summary)
    else:
        print(f"{scalarizer.name}: {'x'.join(map(str, result.values.shape))} map in {result.seconds:.2f} s "
              f"({result.gbps:.2f} GB/s, {result.backend}); {sum(bad.values())} bad positions; wrote {out}, {reasons}")
    return 0
