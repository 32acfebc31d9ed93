"""Validation corpus for steering, unlike the digital twin: seeded, generated once, cached outside the repo.

Every set is one ``.npz`` in ``$EMEDGE_CORPUS`` (default ``~/.cache/emedge-corpus``) with

- ``survey`` (H, W) float32: the HAADF (or HAADF-like) survey image the steerer sees;
- ``measured`` (H, W) float64: the scalar a single noisy frame gives at each probe position;
- ``truth`` (H, W) float64: the noise-free scalar (ground truth; the top-1 % sites come from it);
- ``expected`` (H, W) float64: the mean of the scalar over 8 independent noisy frames, i.e. what a
  measurement estimates (differs from ``truth`` where the scalarizer is biased under noise, e.g. a
  CoM magnitude near zero);
- ``step_A``: the scan step in angstrom; ``scalar`` and ``unit``: what the scalar is; ``method``.

Sets (``SETS``):

- ``mos2_defects``  abTEM multislice 4D-STEM, 2H-MoS2 monolayer with W substitutions and S
  vacancies, 64 x 64 positions at 0.25 A, 80 kV, 20 mrad; scalar: CoM magnitude (mrad) from a
  31 x 31 px detector with Poisson noise (1e4 e/frame); survey: abTEM's HAADF (60-180 mrad).
- ``hbn_defects``   the same for monolayer hBN with B/N vacancies and C/O substitutions, 64 x 64 at 0.4 A.
- ``graphene_gb``   graphene with a tilt grain boundary (two grains +-11 deg) decorated by Si, 256 x 256
  at 0.5 A; scalar: CoM magnitude of a thin phase object, i.e. the probe intensity convolved with
  the gradient of abTEM's projected potential (lambda / 2 pi * |psi|^2 * grad(sigma V)), plus the
  Poisson CoM noise at 1e4 e/frame; survey: incoherent Z^1.7 image with the same probe.
  (A full multislice of 65,536 positions takes hours on 2 cores; a monolayer is a thin phase object.)
- ``mos2_strain``   MoS2 under a strain bubble (radial displacement, up to ~6 %) with W substitutions,
  128 x 128 at 1.0 A, computed like ``graphene_gb``.
- ``eels_plasmon``  96 x 96 EELS SI of Ag-like nanorods on a thin carbon film: zero-loss tail +
  Drude bulk plasmon inside the rods + localized surface plasmons (dipole mode energy set by each
  rod's aspect ratio) that peak at the rod tips and decay outside; scalar: ``eels_band_integral`` in
  1.5-3.3 eV (the LSPR intensity, counts); Poisson noise.
- ``eels_coreloss`` 64 x 64 EELS SI of Ti-rich precipitates in a matrix of varying thickness: power-law
  background plus a Ti L2,3-like edge (456 eV, white lines) scaled by the Ti areal density; scalar:
  ``eels_edge_intensity`` (counts); Poisson noise.
- ``twin_spectrum`` the project's digital twin (128 x 128, plasmon peak energy).

Held out (``CHECK_SETS``, not in the default list; nothing was chosen on it):
``twin_seed1_peakmax``, the twin at seed 1 reduced by ``eels_peak_max`` (counts).

    python benchmarks/corpus.py [--sets a,b] [--force]     # build what is missing (abTEM in its venv)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import typing

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ABTEM_PY = os.path.join(HERE, ".venv-abtem-scalarize", "bin", "python")
CACHE = os.environ.get("EMEDGE_CORPUS", os.path.join(os.path.expanduser("~"), ".cache", "emedge-corpus"))
ABTEM_SETS = ("mos2_defects", "hbn_defects", "graphene_gb", "mos2_strain")
SETS = ("mos2_defects", "hbn_defects", "graphene_gb", "mos2_strain", "eels_plasmon", "eels_coreloss",
        "twin_spectrum")
# held out from every choice made on the corpus: the twin at another seed with another scalarizer
CHECK_SETS = ("twin_seed1_peakmax",)
ENERGY = 80e3        # eV
SEMIANGLE = 20.0     # mrad
DOSE = 1e4           # electrons per frame


def path(name: str) -> str:
    return os.path.join(CACHE, f"{name}.npz")


def load(name: str) -> dict[str, typing.Any]:
    """The cached set ``name`` (built first if missing)."""
    if not os.path.exists(path(name)):
        build(name)
    with np.load(path(name)) as d:
        out = {k: d[k] for k in d.files}
    for k in ("step_A",):
        out[k] = float(out[k])
    for k in ("scalar", "unit", "method"):
        out[k] = str(out[k])
    return out


def build(name: str) -> None:
    """Generate set ``name`` into the cache (abTEM sets in the abTEM venv, the rest here)."""
    os.makedirs(CACHE, exist_ok=True)
    t0 = time.perf_counter()
    if name in ABTEM_SETS:
        if not os.path.exists(ABTEM_PY):
            raise SystemExit(f"no abTEM venv at {ABTEM_PY}; run bash benchmarks/setup_peers_scalarize.sh")
        proc = subprocess.run([ABTEM_PY, os.path.abspath(__file__), "--abtem-worker", name, path(name)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"abTEM worker for {name} failed:\n{proc.stderr[-3000:]}")
    elif name == "eels_plasmon":
        _save(name, **_eels_plasmon())
    elif name == "eels_coreloss":
        _save(name, **_eels_coreloss())
    elif name == "twin_spectrum":
        _save(name, **_twin())
    elif name == "twin_seed1_peakmax":
        _save(name, **_twin(seed=1, scalar="eels_peak_max"))
    else:
        raise SystemExit(f"unknown set {name!r}; known: {', '.join(SETS + CHECK_SETS)}")
    print(json.dumps({"corpus": name, "seconds": round(time.perf_counter() - t0, 1), "path": path(name)}),
          file=sys.stderr, flush=True)


def _save(name: str, **arrays: typing.Any) -> None:
    tmp = path(name) + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path(name))


# -- EELS and twin sets (main venv; the project's scalarizers turn spectra into scalars) -------------
def _scalar_maps(clean: np.ndarray, energy: np.ndarray, spec: dict[str, typing.Any],
                 rng: np.random.Generator, repeats: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(measured, truth, expected) maps: the scalarizer ``spec`` on Poisson-noisy spectra, on noise-free
    spectra, and its mean over ``repeats`` more noisy draws."""
    sys.path.insert(0, os.path.join(HERE, ".."))
    from emedge_core.instrument import Frames
    from emedge_core.scalarize.reducer import Reducer

    h, w, e = clean.shape
    flat = clean.reshape(-1, e)
    truth = np.asarray(Reducer(spec).frames(Frames(flat, "spectrum", energy_eV=energy)).values, np.float64)
    noisy = rng.poisson(flat).astype(np.float32)
    measured = np.asarray(Reducer(spec).frames(Frames(noisy, "spectrum", energy_eV=energy)).values, np.float64)
    expected = np.mean([np.asarray(Reducer(spec).frames(Frames(rng.poisson(flat).astype(np.float32), "spectrum",
                                                                 energy_eV=energy)).values, np.float64)
                        for _ in range(repeats)], axis=0)
    return measured.reshape(h, w), truth.reshape(h, w), expected.reshape(h, w)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2 * (np.pi * sigma) ** 2 * (ky ** 2 + kx ** 2))))


def _eels_plasmon(size: int = 96, step_nm: float = 1.0, seed: int = 1) -> dict[str, typing.Any]:
    rng = np.random.default_rng(seed)
    energy = np.arange(0.2, 30.0, 0.05)                       # eV, 0.05 eV channels
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * step_nm
    inside = np.zeros((size, size))
    lspr_amp = np.zeros((size, size))
    lspr_e = np.full((size, size), 2.5)
    for _ in range(5):                                       # nanorods: centre, length, width, angle
        cy, cx = rng.uniform(15, size * step_nm - 15, 2)
        length, width = rng.uniform(18, 40), rng.uniform(6, 10)
        ang = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        d = np.hypot(np.maximum(np.abs(u) - (length - width) / 2, 0), v) - width / 2   # distance to the rod (nm)
        inside = np.maximum(inside, (d < 0).astype(float))
        e_dip = 3.6 - 0.33 * (length / width)                # dipole LSPR red-shifts with aspect ratio (eV)
        tip = np.clip(np.abs(u) / (length / 2), 0, 1.3) ** 4  # the dipole mode's field is at the tips
        amp = tip * np.exp(-np.maximum(d, 0) / 6.0) * (d > -2)
        better = amp > lspr_amp
        lspr_amp = np.where(better, amp, lspr_amp)
        lspr_e = np.where(better, e_dip, lspr_e)
    thick = 0.15 + 0.9 * _blur(inside, 0.8)                   # t / lambda
    e = energy[None, None, :]
    zlp_tail = 4e4 * np.exp(-thick[..., None]) * (e / 0.2) ** -3.0
    ep, gam = 3.8, 0.6                                        # Ag-like bulk plasmon (eV)
    drude = e * gam * ep ** 2 / ((e ** 2 - ep ** 2) ** 2 + (e * gam) ** 2)
    carbon = e * 6.0 * 24.0 ** 2 / ((e ** 2 - 24.0 ** 2) ** 2 + (e * 6.0) ** 2)
    lspr = lspr_amp[..., None] * np.exp(-0.5 * ((e - lspr_e[..., None]) / 0.18) ** 2)
    clean = zlp_tail + 2500 * (thick[..., None] * drude * inside[..., None] + 0.15 * carbon) + 900 * lspr + 5.0
    measured, truth, expected = _scalar_maps(clean.astype(np.float32), energy,
                                             {"name": "eels_band_integral", "band_eV": [1.5, 3.3]}, rng)
    survey = rng.poisson(200 * (0.2 + thick + 0.8 * _blur(inside, 1.0))).astype(np.float32)
    return {"survey": survey, "measured": measured, "truth": truth, "expected": expected, "step_A": step_nm * 10,
            "scalar": "eels_band_integral 1.5-3.3 eV (LSPR)", "unit": "counts", "method": "Drude + LSPR model, Poisson"}


def _eels_coreloss(size: int = 64, step_nm: float = 0.5, seed: int = 2) -> dict[str, typing.Any]:
    rng = np.random.default_rng(seed)
    energy = np.arange(380.0, 560.0, 0.5)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    ti = np.zeros((size, size))
    for _ in range(7):                                       # precipitates of random size and Ti content
        cy, cx = rng.uniform(4, size - 4, 2)
        r = rng.uniform(2.0, 6.0)
        ti += rng.uniform(0.3, 1.0) / (1 + np.exp((np.hypot(yy - cy, xx - cx) - r) / 0.7))
    ti = np.clip(ti, 0, 1.2)
    thick = 0.4 + 0.5 * _blur(rng.standard_normal((size, size)), 10) * 8 + 0.2 * yy / size   # t / lambda
    thick = np.clip(thick, 0.15, None)
    e = energy[None, None, :]
    background = 3e3 * thick[..., None] * (e / 380.0) ** -3.2
    onset = 456.0
    above = np.maximum(e - onset, 0.0)
    edge = np.where(e > onset, (above / 10 + 1) ** -1.2, 0.0) * (1 - np.exp(-above / 1.0))
    white = np.exp(-0.5 * ((e - 458.0) / 0.9) ** 2) + 1.3 * np.exp(-0.5 * ((e - 463.5) / 1.1) ** 2)
    clean = background + (ti * thick)[..., None] * 90.0 * (edge + 1.5 * white)
    measured, truth, expected = _scalar_maps(
        clean.astype(np.float32), energy,
        {"name": "eels_edge_intensity", "pre_eV": [420.0, 452.0], "post_eV": [455.0, 480.0]}, rng)
    survey = rng.poisson(300 * (thick + 0.6 * ti)).astype(np.float32)
    return {"survey": survey, "measured": measured, "truth": truth, "expected": expected, "step_A": step_nm * 10,
            "scalar": "eels_edge_intensity Ti L 455-480 eV", "unit": "counts",
            "method": "power-law background + L-edge model, Poisson"}


def _twin(seed: int = 0, scalar: str = "eels_peak_energy") -> dict[str, typing.Any]:
    """The digital twin's spectrum image (seed ``seed``) reduced by ``scalar``."""
    sys.path.insert(0, os.path.join(HERE, ".."))
    from emedge_core.scalarize.reducer import Reducer
    from emedge_core.twin import DigitalTwin

    twin = DigitalTwin(signal="spectrum", seed=seed)
    truth = twin.truth(scalar)
    sc = Reducer(scalar).frames
    h, w = truth.shape
    pos = np.stack(np.mgrid[0:h, 0:w], axis=-1).reshape(-1, 2)
    draws = [np.concatenate([np.asarray(sc(twin.measure(pos[i:i + 2048])).values, np.float64)
                             for i in range(0, len(pos), 2048)]).reshape(h, w) for _ in range(5)]
    return {"survey": twin.survey().image.astype(np.float32), "measured": draws[0], "truth": truth,
            "expected": np.mean(draws[1:], axis=0),
            "step_A": 1.0, "scalar": scalar, "unit": "eV" if scalar == "eels_peak_energy" else "counts",
            "method": f"digital twin, seed {seed}"}


# -- abTEM sets (run in benchmarks/.venv-abtem-scalarize) ------------------------------------------
def _abtem_atoms(name: str, rng: np.random.Generator) -> tuple[typing.Any, float, int]:
    """(ase Atoms, scan step A, scan edge px) of an abTEM set."""
    import abtem
    from ase import Atoms
    from ase.build import graphene, mx2

    if name == "mos2_defects":
        cell = abtem.orthogonalize_cell(mx2(formula="MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=2.0))
        atoms = cell * (5, 3, 1)                             # 15.9 x 16.5 A
        mo = [i for i, a in enumerate(atoms) if a.symbol == "Mo"]
        s = [i for i, a in enumerate(atoms) if a.symbol == "S"]
        for i in rng.choice(mo, 3, replace=False):
            atoms[i].symbol = "W"
        del atoms[sorted(rng.choice(s, 3, replace=False).tolist(), reverse=True)]
        return atoms, 0.25, 64
    if name == "hbn_defects":
        cell = abtem.orthogonalize_cell(graphene(a=2.504, vacuum=2.0))
        cell.set_chemical_symbols(["B", "N"] * (len(cell) // 2))
        atoms = cell * (10, 6, 1)                            # 25.0 x 26.0 A
        n = len(atoms)
        pick = rng.choice(n, 6, replace=False)
        atoms[int(pick[0])].symbol = "C"
        atoms[int(pick[1])].symbol = "O"
        atoms[int(pick[2])].symbol = "C"
        del atoms[sorted(pick[3:].tolist(), reverse=True)]
        return atoms, 0.4, 64
    if name == "graphene_gb":
        side, theta = 128.0, np.deg2rad(11.0)
        pos, sym = [], []
        base = abtem.orthogonalize_cell(graphene(a=2.46, vacuum=2.0))
        big = base * (int(side * 1.6 / base.cell[0, 0]) + 2, int(side * 1.6 / base.cell[1, 1]) + 2, 1)
        p0 = big.positions[:, :2] - big.positions[:, :2].mean(axis=0)
        for sign, keep in ((1, lambda x: x < 0), (-1, lambda x: x >= 0)):
            c, s_ = np.cos(sign * theta / 2), np.sin(sign * theta / 2)
            p = p0 @ np.array([[c, s_], [-s_, c]]) + side / 2
            m = keep(p[:, 0] - side / 2 - 8 * np.sin(2 * np.pi * p[:, 1] / side)) & (p >= 0).all(1) & (p < side).all(1)
            pos.append(p[m])
        p = np.concatenate(pos)
        # drop one of every pair closer than 1.1 A (the boundary's overlaps)
        from scipy.spatial import cKDTree
        pairs = cKDTree(p).query_pairs(1.1, output_type="ndarray")
        p = np.delete(p, np.unique(pairs[:, 1]), axis=0)
        sym = ["C"] * len(p)
        xb = side / 2 + 8 * np.sin(2 * np.pi * p[:, 1] / side)
        near = np.flatnonzero(np.abs(p[:, 0] - xb) < 2.0)
        for i in rng.choice(near, 12, replace=False):      # Si decorates the boundary
            sym[int(i)] = "Si"
        atoms = Atoms(sym, positions=np.c_[p, np.full(len(p), 2.0)], cell=[side, side, 4.0], pbc=True)
        return atoms, 0.5, 256
    if name == "mos2_strain":
        cell = abtem.orthogonalize_cell(mx2(formula="MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=2.0))
        atoms = cell * (41, 24, 1)                          # 130 x 132 A
        side = 128.0
        xy = atoms.positions[:, :2]
        centre = np.array([side * 0.55, side * 0.45])
        d = xy - centre
        r = np.hypot(*d.T)[:, None]
        atoms.positions[:, :2] = xy + d * 0.06 * np.exp(-(r / 30.0) ** 2)     # strain bubble, ~6 % at the centre
        keep = (atoms.positions[:, :2] >= 0).all(1) & (atoms.positions[:, :2] < side).all(1)
        atoms = atoms[keep]
        atoms.set_cell([side, side, atoms.cell[2, 2]])
        mo = [i for i, a in enumerate(atoms) if a.symbol == "Mo"]
        for i in rng.choice(mo, 20, replace=False):
            atoms[int(i)].symbol = "W"
        s = [i for i, a in enumerate(atoms) if a.symbol == "S"]
        del atoms[sorted(rng.choice(s, 30, replace=False).tolist(), reverse=True)]
        return atoms, 1.0, 128
    raise ValueError(name)


def _abtem_worker(name: str, out: str) -> None:
    import abtem
    import dask
    from abtem.core.energy import energy2sigma, energy2wavelength

    rng = np.random.default_rng(sum(map(ord, name)))
    atoms, step, edge = _abtem_atoms(name, rng)
    lam = energy2wavelength(ENERGY)
    t0 = time.perf_counter()
    if name in ("mos2_defects", "hbn_defects"):
        potential = abtem.Potential(atoms, sampling=0.07, slice_thickness=2.0)
        probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=SEMIANGLE)
        probe.grid.match(potential)
        scan = abtem.GridScan(start=(0, 0), end=(edge * step, edge * step), gpts=(edge, edge), endpoint=False)
        pix = abtem.PixelatedDetector(max_angle=40)
        adf = abtem.AnnularDetector(inner=60, outer=180)
        dp, haadf = probe.scan(potential, scan=scan, detectors=[pix, adf])
        data, hd = dask.compute(dp.array, haadf.array)        # one multislice pass for both detectors
        data = np.asarray(data, np.float64)                   # (H, W, ky, kx), fraction of the beam
        ky, kx = (np.asarray(a, np.float64) for a in dp.angular_coordinates)     # mrad
        clean = data / data.sum(axis=(2, 3), keepdims=True)
        noisy = rng.poisson(clean * DOSE).astype(np.float64)

        def com_mag(d: np.ndarray) -> np.ndarray:
            tot = d.sum(axis=(2, 3))
            cy = np.einsum("hwij,i->hw", d, ky) / tot
            cx = np.einsum("hwij,j->hw", d, kx) / tot
            return np.hypot(cy, cx)

        truth, measured = com_mag(clean), com_mag(noisy)
        expected = np.mean([com_mag(rng.poisson(clean * DOSE).astype(np.float64)) for _ in range(8)], axis=0)
        hd = np.asarray(hd, np.float64)
        survey = rng.poisson(hd / hd.mean() * 50.0).astype(np.float32)
        method = f"abTEM {abtem.__version__} multislice, 80 kV, 20 mrad, detector {data.shape[2]}x{data.shape[3]}"
    else:
        potential = abtem.Potential(atoms, sampling=0.1, projection="infinite", slice_thickness=atoms.cell[2, 2])
        v = np.asarray(potential.build().project().compute(progress_bar=False).array, np.float64)   # eV A
        phi = energy2sigma(ENERGY) * v                          # rad
        probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=SEMIANGLE, extent=potential.extent,
                            gpts=potential.gpts)
        psi = np.asarray(probe.build((potential.extent[0] / 2, potential.extent[1] / 2)).compute().array)
        inten = np.abs(psi) ** 2
        inten = np.fft.ifftshift(inten / inten.sum())
        gy, gx = np.gradient(phi, potential.sampling[0], potential.sampling[1])    # rad / A

        def conv(a: np.ndarray) -> np.ndarray:
            return np.real(np.fft.ifft2(np.fft.fft2(a) * np.fft.fft2(inten)))

        fac = lam / (2 * np.pi) * 1e3                              # rad/A -> mrad
        cy, cx = conv(gy) * fac, conv(gx) * fac
        z = np.zeros_like(v)
        ij = np.floor(atoms.positions[:, :2] / np.asarray(potential.sampling)).astype(int) % np.asarray(v.shape)
        np.add.at(z, (ij[:, 0], ij[:, 1]), atoms.numbers.astype(float) ** 1.7)
        haadf = conv(z)
        stride = int(round(step / potential.sampling[0]))
        sl = (slice(0, edge * stride, stride), slice(0, edge * stride, stride))
        cy, cx, hd = cy[sl], cx[sl], haadf[sl]
        truth = np.hypot(cy, cx)
        # CoM of N electrons in a disk of radius a has sd ~ a / 2 / sqrt(N) per axis
        sd = SEMIANGLE / 2 / np.sqrt(DOSE)
        measured = np.hypot(cy + rng.normal(0, sd, cy.shape), cx + rng.normal(0, sd, cx.shape))
        expected = np.mean([np.hypot(cy + rng.normal(0, sd, cy.shape), cx + rng.normal(0, sd, cx.shape))
                            for _ in range(8)], axis=0)
        survey = rng.poisson(hd / hd.mean() * 50.0).astype(np.float32)
        method = f"abTEM {abtem.__version__} projected potential, thin phase object CoM, incoherent Z^1.7 survey"
    np.savez_compressed(out + ".tmp.npz", survey=survey, measured=measured, truth=truth, expected=expected, step_A=step,
                        scalar="com_magnitude", unit="mrad", method=method)
    os.replace(out + ".tmp.npz", out)
    print(json.dumps({"set": name, "shape": list(truth.shape), "atoms": len(atoms),
                      "seconds": round(time.perf_counter() - t0, 1)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--abtem-worker":
        _abtem_worker(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--force", action="store_true", help="rebuild cached sets")
    args = ap.parse_args()
    for name in args.sets.split(","):
        if args.force or not os.path.exists(path(name)):
            build(name)
        d = load(name)
        print(json.dumps({"set": name, "shape": list(d["truth"].shape), "step_A": d["step_A"], "scalar": d["scalar"],
                          "truth_range": [float(np.nanmin(d["truth"])), float(np.nanmax(d["truth"]))],
                          "method": d["method"]}), flush=True)


if __name__ == "__main__":
    main()
