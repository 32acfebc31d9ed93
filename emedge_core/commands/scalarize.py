"""``emedge scalarize``: one scalarizer over a whole 4D-STEM or EELS spectrum-image file.

    emedge scalarize FILE --scalarizer SPEC --out OUT.npy [--dataset NAME|INDEX] [--survey IMAGE]
                     [--backend auto|numpy|torch|cupy] [--energy-eV START:STEP] [--mrad-per-px C]
                     [--chunk-mb M] [--json]

FILE: any file :func:`emedge_core.io.open_data` reads (DM3/DM4, Velox EMD, Merlin .mib, Arina, TopSpin
.app5, MRC, TIA .emi/.ser, blockfile .blo, TVIPS, py4DSTEM EMD, HyperSpy, Swift .ndata/.h5, a replay
.npz/HDF5, any HDF5 with the largest data set taken, a .npy array), presented navigation first, signal
last, with the file's calibrations (energy axis, detector mrad/px, detector bit depth: saturation =
2**bits - 1 counts unless the scalarizer sets ``saturation``). Read chunk by chunk, so files larger
than memory work. The energy windows of EELS scalarizers are checked against the energy axis before
any frame is read.
Writes OUT.npy, the (H, W) map or (H, W, k) for vector results such as ``com`` (row, col), and
OUT.reason.npy, the (H, W) uint8 reason codes (0 ok, 1 NaN/inf, 2 empty, 3 saturated, 4 wrong
shape/dtype, 5 reduction failed); with --survey also OUT.survey.npy, the image binned to the scan.
When no position gives a value (e.g. an all-empty scan) a warning goes to stderr and the exit status is 1.
With --json the last stdout line holds seconds, GB/s and the counts of bad frames.
"""
from __future__ import annotations

import argparse
import os
import sys
import typing

import numpy as np

from emedge_core import EmedgeError


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scalarize", help="reduce a 4D-STEM / EELS file to a map", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="a microscope file (.dm4, .emd, .mib, .app5, .ndata, .h5, ...), replay .npz or .npy")
    p.add_argument("--scalarizer", required=True, help='a name or a JSON object {"name": ..., <params>}')
    p.add_argument("--out", required=True, help="output .npy map (reasons go to OUT.reason.npy)")
    p.add_argument("--dataset", help="the signal to read when the file holds several: its title, HDF5 path or index "
                                     "(default: the only scan signal; HDF5: 'data', else the largest data set)")
    p.add_argument("--survey", default=None, metavar="IMAGE",
                   help="a HAADF/ADF image at the scan's grid or a multiple of it, written binned to OUT.survey.npy")
    p.add_argument("--backend", default="auto", help="auto (default), numpy, torch, torch:cpu, torch:cuda, cupy")
    p.add_argument("--energy-eV", dest="energy", metavar="START:STEP",
                   help="energy axis of the spectra when the file has none (eV)")
    p.add_argument("--mrad-per-px", type=float, default=None, help="detector calibration (for radii in mrad)")
    p.add_argument("--chunk-mb", type=float, default=None, help="MB of float32 per chunk (default 32 CPU, 64 GPU)")
    p.add_argument("--json", action="store_true", help="print a summary as one JSON line last")
    p.set_defaults(func=run)


def _energy_axis(text: str, channels: int) -> np.ndarray:
    try:
        start, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise EmedgeError(f"--energy-eV wants START:STEP (e.g. -10:0.5), not {text!r}") from None
    return start + step * np.arange(channels)


def run(args: argparse.Namespace) -> int:
    from emedge_core.consistency import check_energy_windows
    from emedge_core.io import open_data
    from emedge_core.commands import saturated_hint
    from emedge_core.scalarize import Reason, from_spec, reason_counts, reduce

    scalarizer = from_spec(args.scalarizer)
    with open_data(args.file, dataset=args.dataset, survey=args.survey, kind=scalarizer.signal_kind) as src:
        want = 1 if scalarizer.signal_kind == "spectrum" else 2
        if len(src.sig_shape) != want or len(src.nav_shape) not in (1, 2):
            raise EmedgeError(f"{scalarizer.name!r} needs {scalarizer.signal_kind} frames "
                              f"({'E' if want == 1 else 'ky, kx'}) over a scan; {src.title!r} in {args.file} is "
                              f"{src.kind} {src.shape} (navigation {src.nav_shape}); choose another with --dataset")
        calib: dict[str, typing.Any] = {}
        energy = _energy_axis(args.energy, src.sig_shape[-1]) if args.energy else src.energy_eV
        if scalarizer.signal_kind == "spectrum":
            if energy is None:
                raise EmedgeError(f"{args.file} states no energy axis for its {src.sig_shape[-1]} channels; "
                                  "give one with --energy-eV START:STEP")
            calib["energy_eV"] = energy
            check_energy_windows(scalarizer, energy)
        mrad = args.mrad_per_px if args.mrad_per_px is not None else src.mrad_per_px
        if mrad is not None and scalarizer.signal_kind == "diffraction":
            calib["mrad_per_px"] = mrad
        if scalarizer.saturation is None and src.saturation is not None:
            scalarizer.saturation = src.saturation
        survey = src.survey() if args.survey else None
        chunk = None if args.chunk_mb is None else int(args.chunk_mb * 1e6)
        result = reduce(scalarizer, src.data, backend=args.backend, chunk_bytes=chunk, **calib)
    out = args.out if args.out.endswith(".npy") else args.out + ".npy"
    reasons = out[:-4] + ".reason.npy"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.save(out, result.values)
    np.save(reasons, result.reason)
    bad = reason_counts(result.reason)
    summary = {"scalarizer": scalarizer.params(), "shape": list(result.values.shape), "backend": result.backend,
               "seconds": result.seconds, "gbps": result.gbps, "bytes": result.nbytes, "bad": bad,
               "resolved": result.resolved, "out": out, "reasons": reasons, "dataset": src.title,
               "saturation": scalarizer.saturation}
    if survey is not None:
        summary["survey"] = out[:-4] + ".survey.npy"
        np.save(summary["survey"], survey[0])
    usable = int((result.reason == Reason.OK).sum())
    if args.json:
        from emedge_core.cli import print_json

        print_json(summary)
    else:
        print(f"{scalarizer.name}: {'x'.join(map(str, result.values.shape))} map in {result.seconds:.2f} s "
              f"({result.gbps:.2f} GB/s, {result.backend}); {sum(bad.values())} bad positions; wrote {out}, {reasons}")
    if usable == 0:
        worst = max(bad, key=lambda k: bad[k])
        hint = saturated_hint(scalarizer.saturation, src.data.dtype, src.bits) if worst == "saturated" else ""
        print(f"emedge: warning: no position of {src.title!r} gave a value ({result.reason.size} frames, "
              f"{bad[worst]} {worst}); the map is all NaN{hint}", file=sys.stderr)
        return 1
    return 0
