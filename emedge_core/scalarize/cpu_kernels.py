"""The shared pass on the CPU as compiled loops (Numba): frames -> projections and maxima, one read.

NumPy cannot fuse the cast, the k projections and the maximum: called per tile it spends a
third of the time in call overhead and reads each tile k + 2 times from cache. The loops here
walk the chunk two frames at a time: the integer maximum in a first sweep (which also brings the
frames into L1/L2), then one vectorised dot product per weight row over both frames, so each
weight is loaded once for two frames, converting the raw pixels in registers. Memory sees each
frame once. They release the GIL, so the executor's threads run chunks side by side on all cores.

Weight rows of an unmasked centre of mass (ones, row coordinate, column coordinate) take a
cheaper loop: per frame, row sums and column sums, then two short dot products with the
coordinates (one add per pixel for each instead of three multiply-adds against weight rows).

Float reductions are reassociated (SIMD partial sums, as a BLAS ``sdot`` does) but NaN and inf
are not assumed away, so a bad pixel still makes its projections non-finite and the frame is
screened. Compiled on first use per dtype and cached on disk by Numba.
"""
from __future__ import annotations

import typing

import numba
import numpy as np

_FAST = {"reassoc", "contract"}     # vectorise the sums; keep NaN/inf semantics for screening


@numba.njit(nogil=True, fastmath=_FAST, cache=True, boundscheck=False, inline="always")
def _dot2(x: np.ndarray, z: np.ndarray, w: np.ndarray) -> tuple[np.float32, np.float32]:  # pragma: no cover - compiled
    a = np.float32(0.0)
    b = np.float32(0.0)
    for j in range(w.shape[0]):
        a += np.float32(x[j]) * w[j]
        b += np.float32(z[j]) * w[j]
    return a, b


@numba.njit(nogil=True, fastmath=_FAST, cache=True, boundscheck=False, inline="always")
def _max(x: np.ndarray) -> np.float32:  # pragma: no cover - compiled
    m = x[0]
    for j in range(x.shape[0]):
        m = max(m, x[j])
    return np.float32(m)


@numba.njit(nogil=True, fastmath=_FAST, cache=True, boundscheck=False)
def _rows(src: np.ndarray, weights: np.ndarray, proj: np.ndarray, maxv: np.ndarray,
          want_max: bool) -> None:  # pragma: no cover - compiled
    """proj[r, i] = src[i] . weights[r]; maxv[i] = max(src[i]) when ``want_max``."""
    n = src.shape[0]
    for i in range(0, n, 2):
        j = min(i + 1, n - 1)               # an odd last frame is paired with itself
        if want_max:
            maxv[i] = _max(src[i])
            maxv[j] = _max(src[j])
        for r in range(weights.shape[0]):
            proj[r, i], proj[r, j] = _dot2(src[i], src[j], weights[r])


@numba.njit(nogil=True, fastmath=_FAST, cache=True, boundscheck=False, inline="always")
def _line_sums(frame: np.ndarray, start: int, col: np.ndarray) -> np.float32:  # pragma: no cover - compiled
    """Sum of frame[start:start + len(col)], added element-wise into ``col`` too."""
    s = np.float32(0.0)
    for x in range(col.shape[0]):
        v = np.float32(frame[start + x])
        s += v
        col[x] += v
    return s


@numba.njit(nogil=True, fastmath=_FAST, cache=True, boundscheck=False, inline="always")
def _line_sums_max(frame: np.ndarray, start: int, col: np.ndarray,
                   m: typing.Any) -> tuple[np.float32, typing.Any]:  # pragma: no cover - compiled
    """:func:`_line_sums` and the running maximum ``m`` in the same sweep (vectorises for integers)."""
    s = np.float32(0.0)
    for x in range(col.shape[0]):
        raw = frame[start + x]
        m = max(m, raw)
        v = np.float32(raw)
        s += v
        col[x] += v
    return s, m


@numba.njit(nogil=True, fastmath=_FAST, cache=True, boundscheck=False)
def _centre_of_mass(src: np.ndarray, ky: int, kx: int, yw: np.ndarray, xw: np.ndarray, proj: np.ndarray,
                    maxv: np.ndarray, want_max: bool) -> None:  # pragma: no cover - compiled
    """proj = (sum, sum * yw[row], sum * xw[col]) of each (ky * kx) frame, from row and column sums."""
    col = np.empty(kx, np.float32)
    for i in range(src.shape[0]):
        frame = src[i]
        col[:] = 0.0
        total = np.float32(0.0)
        sy = np.float32(0.0)
        m = frame[0]
        for y in range(ky):
            if want_max:
                s, m = _line_sums_max(frame, y * kx, col, m)
            else:
                s = _line_sums(frame, y * kx, col)
            total += s
            sy += s * yw[y]
        if want_max:
            maxv[i] = np.float32(m)
        sx = np.float32(0.0)
        for x in range(kx):
            sx += col[x] * xw[x]
        proj[0, i] = total
        proj[1, i] = sy
        proj[2, i] = sx


def coordinate_axes(weights: np.ndarray,
                    frame_shape: tuple[int, ...]) -> typing.Optional[tuple[np.ndarray, np.ndarray]]:
    """(row coordinates (ky,), column coordinates (kx,)) when ``weights`` (3, ky*kx) are exactly
    ones, a function of the row and a function of the column (an unmasked centre of mass), else None."""
    if weights.shape[0] != 3 or len(frame_shape) != 2:
        return None
    ky, kx = frame_shape
    ones, wy, wx = (w.reshape(ky, kx) for w in weights)
    if (ones == 1).all() and (wy == wy[:, :1]).all() and (wx == wx[:1, :]).all():
        return np.ascontiguousarray(wy[:, 0]), np.ascontiguousarray(wx[0, :])
    return None


def project_max(src: np.ndarray, weights: typing.Optional[np.ndarray], want_max: bool,
                axes: typing.Optional[tuple[np.ndarray, np.ndarray]] = None
                ) -> tuple[np.ndarray, typing.Optional[np.ndarray]]:
    """One pass over ``src`` (n, P) frames of any real dtype -> (proj, maxv).

    weights: (k, P) float32 rows, or None for the frame totals (one row of ones); axes: the
    result of :func:`coordinate_axes` for these weights, which takes the centre-of-mass loop.
    proj: (k, n) float32 projections (counts x weight); maxv: (n,) float32 frame maxima
    (counts), or None without ``want_max``.
    """
    if src.dtype == np.float16 or not src.dtype.isnative:      # types the compiled loops do not take
        src = src.astype(np.float32)
    src = np.ascontiguousarray(src)
    n, p = src.shape
    w = np.ones((1, p), np.float32) if weights is None else np.ascontiguousarray(weights, np.float32)
    proj = np.empty((w.shape[0], n), np.float32)
    maxv = np.empty(n if want_max else 0, np.float32)
    if p == 0:                      # frames without pixels: nothing to add up
        proj[:] = 0.0
        maxv[:] = -np.inf
    elif n and axes is not None:
        yw, xw = axes
        _centre_of_mass(src, len(yw), len(xw), yw, xw, proj, maxv, want_max)
    elif n:
        _rows(src, w, proj, maxv, want_max)
    return proj, (maxv if want_max else None)
