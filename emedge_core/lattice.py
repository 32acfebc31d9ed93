"""The survey's own length unit: the lattice period from its FFT, else the size of its features.

Steering length scales are given in this unit, so the same defaults mean the same physical thing at a
0.2 A and at a 1 A scan step, on a crystal lattice or on nanoparticles.
"""
from __future__ import annotations

import typing

import numpy as np


def period_px(image: np.ndarray, min_prominence: float = 30.0) -> typing.Optional[float]:
    """Lattice period in survey px: 1 / the spatial frequency of the strongest Bragg-like peak of the
    Hann-windowed power spectrum (excluding the lowest 3 frequency px), or None when that peak is
    weaker than ``min_prominence`` times the median power at its radius (no lattice)."""
    img = np.asarray(image, np.float64)
    h, w = img.shape
    win = np.hanning(h)[:, None] * np.hanning(w)[None, :]
    p = np.abs(np.fft.fft2((img - img.mean()) * win)) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.hypot(fy, fx)                                  # cycles / px
    lo = 3.0 / min(h, w)
    p = np.where((f > lo) & (f <= 0.5), p, 0.0)
    k = int(np.argmax(p))
    fk = float(f.flat[k])
    if fk <= 0:
        return None
    ring = (np.abs(f - fk) < 1.0 / min(h, w)) & (p > 0)
    if float(p.flat[k]) < min_prominence * float(np.median(p[ring])):
        return None
    return 1.0 / fk


def correlation_length_px(image: np.ndarray) -> float:
    """Radius (px) where the survey's autocorrelation falls to one half: the size of its features."""
    img = np.asarray(image, np.float64)
    h, w = img.shape
    a = np.real(np.fft.ifft2(np.abs(np.fft.fft2(img - img.mean(), s=(2 * h, 2 * w))) ** 2))
    if a[0, 0] <= 0:
        return float(max(1.0, min(h, w) / 8))
    a /= a[0, 0]
    yy = np.minimum(np.arange(2 * h), 2 * h - np.arange(2 * h))[:, None]
    xx = np.minimum(np.arange(2 * w), 2 * w - np.arange(2 * w))[None, :]
    r = np.hypot(yy, xx).astype(int)
    prof = np.bincount(r.ravel(), a.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    below = np.flatnonzero(prof < 0.5)
    return float(max(1.0, below[0] if len(below) else min(h, w) / 8))


def length_unit_px(image: np.ndarray) -> tuple[float, str]:
    """(length in px, "lattice period" or "correlation length"): the unit of the spatial length scales."""
    per = period_px(image)
    if per is not None:
        return per, "lattice period"
    return correlation_length_px(image), "correlation length"
