"""Specimen drift: how far the specimen has moved since the first survey, and where to probe now.

During a long autonomous run the specimen drifts under the beam (thermal and stage drift, a few
nm per minute). The model and the candidates live in the coordinates of the first survey, so a
probe sent to a candidate's pixel would land beside it. :class:`DriftTracker` re-measures the
shift of a fresh survey against the first one (cross-correlation refined to 1/100 px by
scikit-image's ``phase_cross_correlation``) and moves every probe position by it.
"""
from __future__ import annotations

import dataclasses
import typing
import warnings

import numpy as np

from emedge_core import EmedgeError


def measure_shift(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """Shift (dy, dx) in px of ``image`` against ``reference`` (both (H, W)): a feature at (r, c)
    in ``reference`` sits at (r + dy, c + dx) in ``image``. Sub-pixel (upsampled cross-correlation;
    without the phase whitening, which weighs the shot noise up: 0.01-0.03 px here against 0.1)."""
    from skimage.registration import phase_cross_correlation

    a = np.asarray(reference, np.float64)
    b = np.asarray(image, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise EmedgeError(f"drift needs two images of the same (H, W) shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EmedgeError("drift: the survey images hold NaN or inf pixels")
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=100, normalization=None)
    dy, dx = (0.0 - float(v) for v in shift)       # skimage: the shift that registers ``image`` onto ``reference``
    return dy, dx                                   # (0.0 - v: no negative zero)


@dataclasses.dataclass(frozen=True)
class DriftSample:
    """One drift measurement: after ``n_measured`` measurements the specimen had moved
    (dy, dx) px from where the first survey saw it; ``seconds`` since the run started."""

    n_measured: int
    dy: float
    dx: float
    seconds: float


class DriftTracker:
    """Follows the specimen against the first survey and corrects probe positions.

    reference: (H, W) the first survey image; max_px: a measured shift longer than this is
    not believed (a periodic lattice can alias) and the previous one is kept, with a warning.
    """

    def __init__(self, reference: np.ndarray, max_px: typing.Optional[float] = None) -> None:
        self.reference = np.asarray(reference, np.float64)
        self.max_px = float(max_px) if max_px is not None else min(self.reference.shape) / 4
        self.shift = (0.0, 0.0)
        self.samples: list[DriftSample] = []

    def update(self, image: np.ndarray, n_measured: int, seconds: float) -> DriftSample:
        """Measure the shift of ``image`` (a new survey, same shape) and make it current."""
        dy, dx = measure_shift(self.reference, image)
        if np.hypot(dy, dx) > self.max_px:
            warnings.warn(f"drift of ({dy:.1f}, {dx:.1f}) px exceeds {self.max_px:.0f} px and is not believed; "
                          f"keeping ({self.shift[0]:.1f}, {self.shift[1]:.1f}) px", RuntimeWarning, stacklevel=2)
            dy, dx = self.shift
        self.shift = (dy, dx)
        sample = DriftSample(int(n_measured), dy, dx, float(seconds))
        self.samples.append(sample)
        return sample

    def correct(self, positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Probe positions (n, 2) int for first-survey ``positions`` (n, 2): moved by the current
        shift, rounded, and kept inside the (H, W) scan ``shape``."""
        moved = np.rint(np.asarray(positions, np.float64) + np.asarray(self.shift)).astype(np.int64)
        return np.clip(moved, 0, np.asarray(shape) - 1)

    def as_array(self) -> np.ndarray:
        """(k, 4) float64 rows (n_measured, dy px, dx px, seconds)."""
        return np.array([[s.n_measured, s.dy, s.dx, s.seconds] for s in self.samples], np.float64).reshape(-1, 4)
