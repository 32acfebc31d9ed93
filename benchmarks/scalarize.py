"""Scalarizer throughput against a NumPy memory pass, LiberTEM and py4DSTEM: one JSON line per case.

    python benchmarks/scalarize.py [--quick] [--repeat N] [--no-peers] [--no-gpu | --gpu-only] [--only 4d|eels]

Cases (the issue's sizes; --quick quarters the scan): 4D-STEM 128x128 scan x 128x128 detector,
float32 (1.07 GB) and uint16, for ``com``, ``virtual_bf`` and ``virtual_adf``; EELS 256x256x2048
float32 for the peak energy, band ratio, band integral and edge intensity. Each line holds our
GB/s (NumPy, and PyTorch on the CPU), the memory pass ``data.sum()``, the machine's read limit
(a compiled sum on every core: no reduction can beat it) and, for 4D, LiberTEM
(``CoMUDF`` / ``ApplyMasksUDF``, inline executor, MemoryDataSet) and py4DSTEM (``DPC.preprocess``
CoM with the rotation forced, ``DataCube.get_virtual_image``) measured in the same run on the same
data, with the ratios (also normalised by each process's own memory pass, which cancels load that
drifts between our run and the peers'). GB/s = raw input bytes (uint16 bytes for uint16) / median
wall seconds.
On a CUDA machine, CuPy and PyTorch lines follow: data resident on the card and streamed from
host memory, against the card's measured device-memory and host->device rates.

The peers live in ``benchmarks/.venv-peers-scalarize`` (``bash benchmarks/setup_peers_scalarize.sh``;
they need NumPy 1.26): this file runs there too, as ``--peer-worker``, and reads the same data
from a temporary .npy. Only NumPy and the standard library are imported at module level for that.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_PY = os.path.join(HERE, ".venv-peers-scalarize", "bin", "python")
ABTEM_PY = os.path.join(HERE, ".venv-abtem-scalarize", "bin", "python")
DISK = {"lam": 20.0, "bg": 0.5}      # bright-field disk and background counts per px (as in the peer notes)


def timed(fn: typing.Callable[[], typing.Any], repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_4d(scan: int, det: int, seed: int = 0) -> np.ndarray:
    """(scan, scan, det, det) uint16 Poisson patterns: a BF disk (radius det/8) shifted by up to 2 px."""
    rng = np.random.default_rng(seed)
    pool = 512
    rows, cols = np.indices((det, det))
    out = np.empty((pool, det, det), np.uint16)
    for k in range(pool):
        cy, cx = det / 2 + rng.uniform(-2, 2, 2)
        lam = np.where(np.hypot(rows - cy, cols - cx) < det / 8, DISK["lam"], DISK["bg"])
        out[k] = rng.poisson(lam)
    return out[rng.integers(0, pool, scan * scan)].reshape(scan, scan, det, det)


def make_eels(scan: int, channels: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(scan, scan, channels) float32 Poisson spectra (ZLP, plasmon near 16-21 eV, power law, edge at 99 eV)
    and the (channels,) energy axis from -10 eV at 0.25 eV per channel."""
    rng = np.random.default_rng(seed)
    e = -10.0 + 0.25 * np.arange(channels)
    pool = 2048
    plasmon = rng.uniform(16, 21, pool)
    pos = np.clip(e, 1.0, None)
    lam = (5e3 * np.exp(-0.5 * (e / 0.6) ** 2)[None] + 400 * np.exp(-0.5 * ((e[None] - plasmon[:, None]) / 2.5) ** 2)
           + (e > 3) * 2e5 * pos ** -2.5 + (e >= 99) * 20 * np.exp(-(e - 99) / 50))
    spectra = rng.poisson(lam).astype(np.float32)
    return spectra[rng.integers(0, pool, scan * scan)].reshape(scan, scan, channels), e


# -- the peers (run with the peer venv's python) ------------------------------------------------
def peer_worker(spec: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """Time (or, with spec["agree"], compute) the peers' CoM and virtual images on spec["files"]."""
    import warnings

    warnings.filterwarnings("ignore")
    import libertem
    import py4DSTEM
    from libertem.api import Context
    from libertem.executor.inline import InlineJobExecutor

    ctx = Context(executor=InlineJobExecutor())
    out: dict[str, typing.Any] = {"versions": {"numpy": np.__version__, "libertem": libertem.__version__,
                                               "py4DSTEM": py4DSTEM.__version__}}
    for label, path in spec["files"].items():
        out[label] = peer_file(ctx, np.load(path), spec)
    return out


def peer_file(ctx: typing.Any, data: np.ndarray, spec: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """The peers on one (H, W, ky, kx) cube: seconds per case, or their results with spec["agree"]."""
    import py4DSTEM
    from libertem.udf.com import CoMUDF
    from libertem.udf.masks import ApplyMasksUDF

    cy, cx, r_bf, r_adf = spec["cy"], spec["cx"], spec["r_bf"], spec["r_adf"]
    rows, cols = np.indices(data.shape[2:])
    d = np.hypot(rows - cy, cols - cx)
    bf_mask, adf_mask = (d < r_bf).astype(np.float32), (d >= r_adf).astype(np.float32)
    ds = ctx.load("memory", data=data, sig_dims=2)
    com_udf = CoMUDF.with_params(cy=cy, cx=cx)
    mask_udf = ApplyMasksUDF(mask_factories=[lambda: bf_mask, lambda: adf_mask])
    cube = py4DSTEM.DataCube(data)

    def p4_com() -> tuple[np.ndarray, np.ndarray]:
        dpc = py4DSTEM.process.phase.DPC(datacube=cube, energy=300e3, verbose=False)
        dpc.preprocess(force_com_rotation=0.0, force_com_transpose=False, plot_center_of_mass=False,
                       plot_rotation=False, fit_function="constant")
        return dpc._com_measured_x - cy, dpc._com_measured_y - cx

    def p4_virtual(geometry: typing.Any, mode: str) -> np.ndarray:
        return cube.get_virtual_image(mode=mode, geometry=geometry, name="v", returncalc=True, verbose=False).data

    if spec.get("agree"):
        lt = ctx.run_udf(ds, com_udf)["raw_shifts"].data
        lt_masks = ctx.run_udf(ds, mask_udf)["intensity"].data
        dpc = py4DSTEM.process.phase.DPC(datacube=cube, energy=300e3, verbose=False)
        dpc.preprocess(plot_center_of_mass=False, plot_rotation=False, fit_function="constant")
        return {"libertem_com": lt.tolist(), "libertem_bf": lt_masks[..., 0].tolist(),
                "libertem_adf": lt_masks[..., 1].tolist(), "py4dstem_com": np.stack(p4_com(), axis=-1).tolist(),
                "py4dstem_bf": p4_virtual(((cy, cx), r_bf), "circle").tolist(),
                "py4dstem_rotation_deg": float(np.degrees(dpc._rotation_best_rad)),
                "py4dstem_transpose": bool(dpc._rotation_best_transpose)}
    rep = spec["repeat"]
    return {
        "sum": timed(data.sum, rep),
        "libertem_com": timed(lambda: ctx.run_udf(ds, com_udf), rep),
        "libertem_masks": timed(lambda: ctx.run_udf(ds, mask_udf), rep),
        "py4dstem_com": timed(p4_com, rep),
        "py4dstem_bf": timed(lambda: p4_virtual(((cy, cx), r_bf), "circle"), rep),
        "py4dstem_adf": timed(lambda: p4_virtual(((cy, cx), (r_adf, 2 * max(data.shape[2:]))), "annular"), rep),
    }


def abtem_worker(spec: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """A multislice 4D-STEM scan of MoS2 with one W substitution (abTEM, 80 kV, 20 mrad probe) saved to
    spec["out"] (.npz: data (H, W, ky, kx) float32, abTEM's CoM (H, W, 2) in 1/A and iCoM (H, W),
    mrad_per_px (2,), wavelength_A, scan_sampling_A (2,)); returns the shape and seconds."""
    import abtem
    from abtem.core.energy import energy2wavelength
    from ase.build import mx2

    t0 = time.perf_counter()
    atoms = abtem.orthogonalize_cell(mx2(formula="MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=2.0))
    atoms = atoms * (3, 2, 1)
    atoms[[i for i, a in enumerate(atoms) if a.symbol == "Mo"][2]].symbol = "W"
    potential = abtem.Potential(atoms, sampling=0.06, slice_thickness=1.0)
    probe = abtem.Probe(energy=80e3, semiangle_cutoff=20)
    probe.grid.match(potential)
    scan = abtem.GridScan(start=(0, 0), end=potential.extent, gpts=tuple(spec["scan"]))
    m = probe.scan(potential, scan=scan, detectors=abtem.PixelatedDetector(max_angle=40)).compute(progress_bar=False)
    com = np.asarray(m.center_of_mass().compute().array)
    np.savez(spec["out"], data=np.asarray(m.array, np.float32), com=np.stack([com.real, com.imag], axis=-1),
             icom=np.asarray(m.integrated_center_of_mass().compute().array), mrad_per_px=np.asarray(m.angular_sampling),
             wavelength_A=energy2wavelength(80e3), scan_sampling_A=np.asarray(scan.sampling))
    return {"shape": list(m.array.shape), "seconds": time.perf_counter() - t0, "abtem": abtem.__version__}


def run_in(python: str, mode: str, spec: dict[str, typing.Any], timeout: float) -> dict[str, typing.Any]:
    """Run this file's ``--{mode}`` worker with ``python`` (another venv) and return its JSON answer."""
    proc = subprocess.run([python, os.path.abspath(__file__), f"--{mode}", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return typing.cast(dict[str, typing.Any], json.loads(proc.stdout.strip().splitlines()[-1]))


def run_peers(spec: dict[str, typing.Any], timeout: float = 1800) -> typing.Optional[dict[str, typing.Any]]:
    """``peer_worker(spec)`` in the peer venv; None (and a note on stderr) when that venv is missing."""
    if not os.path.exists(PEER_PY):
        print(f"peers skipped: {PEER_PY} missing (bash benchmarks/setup_peers_scalarize.sh)", file=sys.stderr)
        return None
    return run_in(PEER_PY, "peer-worker", spec, timeout)


# -- our side -----------------------------------------------------------------------------------
def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def emit(line: dict[str, typing.Any]) -> None:
    print(json.dumps(line), flush=True)


def read_limit_seconds(data: np.ndarray, repeat: int) -> float:
    """Median seconds of the fastest read of ``data`` this machine does: a compiled (Numba) sum of
    32 MiB pieces on one thread per core, as our executor runs - the physical limit of any reduction."""
    import concurrent.futures

    import numba

    @numba.njit(nogil=True, fastmath={"reassoc"})
    def float_sum(x: np.ndarray) -> float:
        a = np.float32(0.0)
        for j in range(x.shape[0]):
            a += x[j]
        return a

    @numba.njit(nogil=True)
    def int_sum(x: np.ndarray) -> int:
        a = 0
        for j in range(x.shape[0]):
            a += x[j]
        return a

    piece_sum = float_sum if data.dtype.kind == "f" else int_sum

    flat = data.reshape(-1)
    step = max(1, (32 << 20) // flat.itemsize)
    pieces = [flat[i:i + step] for i in range(0, flat.size, step)]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return timed(lambda: list(pool.map(piece_sum, pieces)), repeat)


def bench_4d(args: argparse.Namespace, tmp: str) -> None:
    from emedge_core.scalarize import reduce

    scan, det = (64, 128) if args.quick else (128, 128)
    cube16 = make_4d(scan, det)
    cubes = {"float32": cube16.astype(np.float32), "uint16": cube16}
    cy = cx = det / 2
    r_bf, r_adf = det / 8 + 2, det / 8 + 4
    files = {}
    for label, cube in cubes.items():
        files[label] = os.path.join(tmp, f"cube_{label}.npy")
        np.save(files[label], cube)
    peers = None if args.no_peers or args.gpu_only else run_peers(
        {"files": files, "cy": cy, "cx": cx, "r_bf": r_bf, "r_adf": r_adf, "repeat": args.repeat})
    specs = {"com": {"name": "com", "center": [cy, cx]},
             "virtual_bf": {"name": "virtual_bf", "outer": r_bf, "center": [cy, cx]},
             "virtual_adf": {"name": "virtual_adf", "inner": r_adf, "center": [cy, cx]}}
    peer_keys = {"com": ("libertem_com", "py4dstem_com"), "virtual_bf": ("libertem_masks", "py4dstem_bf"),
                 "virtual_adf": ("libertem_masks", "py4dstem_adf")}
    for label, cube in cubes.items():
        gb = cube.nbytes / 1e9
        t_sum = timed(cube.sum, args.repeat)
        t_read = read_limit_seconds(cube, args.repeat)
        for case, spec in ({} if args.gpu_only else specs).items():
            line: dict[str, typing.Any] = {"case": f"4d_{case}", "dtype": label, "shape": list(cube.shape),
                                           "GB": round(gb, 3)}
            for be in ("numpy", "torch:cpu"):
                t = timed(functools.partial(reduce, spec, cube, backend=be), args.repeat)
                line[f"ours_{be.replace(':', '_')}_gbps"] = round(gb / t, 2)
            line["sum_gbps"] = round(gb / t_sum, 2)
            line["read_limit_gbps"] = round(gb / t_read, 2)
            if peers is not None:
                lt, p4 = peer_keys[case]
                line["libertem_gbps"] = round(gb / peers[label][lt], 2)
                line["py4dstem_gbps"] = round(gb / peers[label][p4], 2)
                line["peer_sum_gbps"] = round(gb / peers[label]["sum"], 2)
            ours = line["ours_numpy_gbps"]
            line["x_sum"] = round(ours / line["sum_gbps"], 2)
            line["x_read_limit"] = round(ours / line["read_limit_gbps"], 2)
            if peers is not None:
                line["x_libertem"] = round(ours / line["libertem_gbps"], 2)
                line["x_py4dstem"] = round(ours / line["py4dstem_gbps"], 2)
                line["libertem_x_read_limit"] = round(line["libertem_gbps"] / line["read_limit_gbps"], 2)
                # each side against its own process's memory pass: cancels load that drifts between the two
                drift = line["peer_sum_gbps"] / line["sum_gbps"]
                line["x_libertem_sum_normalised"] = round(ours * drift / line["libertem_gbps"], 2)
                line["x_py4dstem_sum_normalised"] = round(ours * drift / line["py4dstem_gbps"], 2)
                line["peer_versions"] = peers["versions"]
            line["load1"] = load_average()
            emit(line)
        if args.gpu:
            bench_gpu(f"4d_com_{label}", {"name": "com", "center": [cy, cx]}, cube, args.repeat)


def bench_eels(args: argparse.Namespace) -> None:
    from emedge_core.scalarize import reduce

    scan = 128 if args.quick else 256
    si, e = make_eels(scan, 2048)
    gb = si.nbytes / 1e9
    t_sum = timed(si.sum, args.repeat)
    t_read = read_limit_seconds(si, args.repeat)
    names = () if args.gpu_only else ("eels_peak_energy", "eels_band_ratio", "eels_band_integral",
                                      "eels_edge_intensity")
    for name in names:
        line: dict[str, typing.Any] = {"case": name, "dtype": "float32", "shape": list(si.shape), "GB": round(gb, 3)}
        for be in ("numpy", "torch:cpu"):
            t = timed(functools.partial(reduce, name, si, backend=be, energy_eV=e), args.repeat)
            line[f"ours_{be.replace(':', '_')}_gbps"] = round(gb / t, 2)
        line["sum_gbps"] = round(gb / t_sum, 2)
        line["read_limit_gbps"] = round(gb / t_read, 2)
        line["x_sum"] = round(line["ours_numpy_gbps"] / line["sum_gbps"], 2)
        line["x_read_limit"] = round(line["ours_numpy_gbps"] / line["read_limit_gbps"], 2)
        line["load1"] = load_average()
        emit(line)
    if args.gpu:
        bench_gpu("eels_peak_energy", {"name": "eels_peak_energy"}, si, args.repeat, e)
        bench_gpu("eels_band_ratio", {"name": "eels_band_ratio"}, si, args.repeat, e)


def card_rates(nbytes: int, repeat: int) -> dict[str, float]:
    """The card's and the host's copy rates for ``nbytes``, GB/s: device-memory copy (read + write
    counted), pinned host->device, pageable host->device, and host memory into pinned staging memory
    on one thread and through :func:`~emedge_core.scalarize.backends.stage_copy` (the streamed path's copy)."""
    import torch

    from emedge_core.scalarize.backends import stage_copy

    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    pageable = np.ones(nbytes, np.uint8)
    staging = pinned.numpy()

    def clone() -> None:
        dev.clone()
        torch.cuda.synchronize()

    def upload(src: typing.Any) -> None:
        dev.copy_(src, non_blocking=True)
        torch.cuda.synchronize()

    gb = nbytes / 1e9
    return {"hbm_copy_gbps": 2 * gb / timed(clone, repeat),
            "h2d_pinned_gbps": gb / timed(functools.partial(upload, pinned), repeat),
            "h2d_pageable_gbps": gb / timed(functools.partial(upload, torch.from_numpy(pageable)), repeat),
            "stage_copy_1thread_gbps": gb / timed(functools.partial(np.copyto, staging, pageable), repeat),
            "stage_copy_gbps": gb / timed(functools.partial(stage_copy, staging.reshape(-1, 4096),
                                                             pageable.reshape(-1, 4096)), repeat)}


def resident_seconds(be: typing.Any, spec: dict[str, typing.Any], flat: np.ndarray, repeat: int,
                     energy_eV: typing.Optional[np.ndarray]) -> float:
    """Median seconds of the shared pass + ``process`` over ``flat`` (n, *sig) already on the card."""
    import torch

    from emedge_core.scalarize import from_spec
    from emedge_core.scalarize.base import Signal
    from emedge_core.scalarize.reducer import weight_rows

    s = from_spec(spec)
    signal = Signal(s.signal_kind, flat.shape[1:], energy_eV, None)
    rows = weight_rows(s, signal, flat[:64])
    weights = None if rows is None else be.asarray(rows)
    resident = be.asarray(flat)
    step = max(1, (256 << 20) // (4 * signal.pixels))

    def on_card() -> None:
        for i in range(0, len(flat), step):
            s.process(be.load(resident[i:i + step], weights, flat.dtype != np.float32, s.needs_frames), signal, be)
        torch.cuda.synchronize()

    return timed(on_card, repeat)


def bench_gpu(case: str, spec: dict[str, typing.Any], data: np.ndarray, repeat: int,
              energy_eV: typing.Optional[np.ndarray] = None) -> None:
    """Resident (chunks already on the card) and streamed (from host) GB/s on CuPy and PyTorch CUDA,
    against the card's device-memory copy rate and its pinned host->device rate."""
    import torch

    from emedge_core.scalarize import get_backend, reduce

    if not torch.cuda.is_available():
        emit({"case": f"gpu_{case}", "skipped": "no CUDA device on this machine"})
        return
    gb = data.nbytes / 1e9
    rates = card_rates(data.nbytes, repeat)
    hbm, h2d = rates["hbm_copy_gbps"], rates["h2d_pinned_gbps"]
    flat = data.reshape((-1,) + data.shape[2:])
    for name in ("torch:cuda", "cupy"):
        be = get_backend(name)
        if be.name == "numpy":
            emit({"case": f"gpu_{case}", "backend": name, "skipped": "not available"})
            continue
        t_res = resident_seconds(be, spec, flat, repeat, energy_eV)
        t_str = timed(functools.partial(reduce, spec, data, backend=be, energy_eV=energy_eV), repeat)
        pinned = be.host_buffer(data.shape, data.dtype)      # as a live acquisition's ring buffer would be
        pinned[...] = data
        t_pin = timed(functools.partial(reduce, spec, pinned, backend=be, energy_eV=energy_eV), repeat)
        del pinned
        emit({"case": f"gpu_{case}", "backend": repr(be), "card": torch.cuda.get_device_name(),
              "dtype": str(data.dtype), "resident_gbps": round(gb / t_res, 1), "streamed_gbps": round(gb / t_str, 1),
              "streamed_from_pinned_gbps": round(gb / t_pin, 1),
              **{k: round(v, 1) for k, v in rates.items()},
              "x_hbm": round(gb / t_res / hbm, 2), "x_h2d": round(gb / t_str / h2d, 2),
              "x_h2d_from_pinned": round(gb / t_pin / h2d, 2)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the scan positions")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (median; default 3)")
    parser.add_argument("--no-peers", action="store_true", help="skip LiberTEM and py4DSTEM")
    parser.add_argument("--no-gpu", dest="gpu", action="store_false", help="skip the CUDA cases")
    parser.add_argument("--gpu-only", action="store_true", help="only the CUDA cases (no CPU lines, no peers)")
    parser.add_argument("--only", choices=("4d", "eels"), help="one family of cases")
    parser.add_argument("--peer-worker", help=argparse.SUPPRESS)
    parser.add_argument("--abtem-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker:
        print(json.dumps(peer_worker(json.loads(args.peer_worker))))
        return
    if args.abtem_worker:
        print(json.dumps(abtem_worker(json.loads(args.abtem_worker))))
        return
    with tempfile.TemporaryDirectory(prefix="emedge-bench-") as tmp:
        if args.only in (None, "4d"):
            bench_4d(args, tmp)
    if args.only in (None, "eels"):
        bench_eels(args)


if __name__ == "__main__":
    main()
