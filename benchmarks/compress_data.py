"""The data sets of the compression benchmarks (``compress.py`` on the CPU, ``compress_gpu.py`` with nvCOMP).

Seeded, synthetic, and shaped like what a session writes: electron-counting and integrating
4D-STEM, an EELS spectrum image and a drifting in-situ series. NumPy only.
"""
from __future__ import annotations

import numpy as np


def _disk(k: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:k, :k]
    return ((yy - k / 2) ** 2 + (xx - k / 2) ** 2) < r ** 2


def counting(scan: int, k: int, bg: float, bright: float, seed: int = 0) -> np.ndarray:
    """Electron-counting 4D-STEM (scan, scan, k, k) uint16: Poisson background ``bg`` e/px, BF disk ``bright``."""
    lam = np.where(_disk(k, k / 8), bright, bg).astype(np.float32)
    return np.random.default_rng(seed).poisson(lam, (scan, scan, k, k)).astype(np.uint16)


def integrating(scan: int, k: int, seed: int = 1) -> np.ndarray:
    """Integrating-detector 4D-STEM (scan, scan, k, k) float32: disk 1000, background 10, N(0, 3) noise."""
    base = np.where(_disk(k, k / 8), 1000.0, 10.0).astype(np.float32)
    return (base + np.random.default_rng(seed).normal(0, 3, (scan, scan, k, k))).astype(np.float32)


def eels_si(scan: int, channels: int, seed: int = 2) -> np.ndarray:
    """EELS spectrum image (scan, scan, E) float32: power-law background + C/N/O edges + Poisson."""
    rng = np.random.default_rng(seed)
    e = np.linspace(100, 900, channels)
    thick = 1 + 0.3 * np.sin(np.arange(scan) / 5)[:, None] * np.cos(np.arange(scan) / 7)[None, :]
    edges = sum(w * (e > e0) * (e / e0) ** -2 for e0, w in ((284, 300), (401, 150), (532, 200)))
    lam = thick[..., None] * (2e5 * (e / 100) ** -3 + edges)
    return rng.poisson(lam).astype(np.float32)


def insitu(frames: int, size: int, seed: int = 3) -> np.ndarray:
    """In-situ image series (frames, size, size) uint16: a lattice drifting 0.3 px/frame + Poisson."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    out = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        x, y = xx + 0.3 * t, yy + 0.1 * t
        out[t] = rng.poisson(40 + 30 * np.cos(2 * np.pi * x / 7) * np.cos(2 * np.pi * y / 7))
    return out


def data_sets(quick: bool, scale: int = 1) -> dict[str, tuple[np.ndarray, int]]:
    """{name: (array, frame dimensions)}; --quick makes each a few MB; ``scale`` multiplies the scan
    edges (4D, EELS) and the frame count (in-situ): scale 2 gives 4x the 4D and EELS data (67-268 MB)."""
    s, k = (8, 64) if quick else (32, 128)
    s *= scale
    return {
        "counting_0.05": (counting(s, k, 0.05, 0.5), 2),
        "counting_0.1": (counting(s, k, 0.1, 2.0), 2),
        "counting_0.5": (counting(s, k, 0.5, 5.0), 2),
        "integrating": (integrating(s, k), 2),
        "eels_si": (eels_si((16 if quick else 64) * scale, 256 if quick else 1024), 1),
        "insitu": (insitu((8 if quick else 64) * scale ** 2, 128 if quick else 512), 2),
    }


def counting_dose(scan: int, k: int, dose: float, seed: int) -> np.ndarray:
    """Held-out electron-counting 4D-STEM (scan, scan, k, k) uint16 at a mean ``dose`` e-/px.

    Made differently from :func:`counting` (issue 12.5): a bright-field disk of radius k/9 with a
    soft (1.5 px) edge that carries 70 % of the electrons, its centre moving by up to 2.5 px over
    the scan (descan), and a diffuse halo 1/(1 + (r/(k/4))^2) with the other 30 %; Poisson counts.
    ``seed`` >= 100 keeps these apart from the sets the codecs were tuned on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:k, :k].astype(np.float32)
    out = np.empty((scan, scan, k, k), np.uint16)
    total = dose * k * k
    for i in range(scan):
        for j in range(scan):
            cy = k / 2 + 2.5 * (i / max(scan - 1, 1) - 0.5)
            cx = k / 2 + 2.5 * (j / max(scan - 1, 1) - 0.5)
            r = np.hypot(yy - cy, xx - cx)
            disk = 1.0 / (1.0 + np.exp((r - k / 9) / 1.5))
            halo = 1.0 / (1.0 + (r / (k / 4)) ** 2)
            lam = 0.7 * total * disk / disk.sum() + 0.3 * total * halo / halo.sum()
            out[i, j] = rng.poisson(lam)
    return out


def counting_sets(scan: int = 64, k: int = 128) -> dict[str, tuple[np.ndarray, int]]:
    """The held-out counting sets of issue 12.5: 0.02, 0.05, 0.1 and 0.5 e-/px, seeds 101-104."""
    return {f"counting_dose_{d}": (counting_dose(scan, k, d, 101 + n), 2) for n, d in enumerate((0.02, 0.05, 0.1, 0.5))}
