"""Cut a survey into W x W patches, one per candidate probe position.

Two modes:

- ``"restrict"`` (default): only pixels whose whole window fits inside the survey are
  candidates, so no patch holds invented pixels. A 128 x 128 survey with W = 16 gives
  113 x 113 = 12,769 candidates.
- ``"reflect"``: every pixel is a candidate; the survey is reflect-padded by W/2.

The window of candidate (r, c) spans rows r - W//2 ... r - W//2 + W - 1 (same for
columns). Patches are normalised with the survey's global mean and standard
deviation (not per patch, so brightness - a heavy column - stays a feature),
flattened to W*W float32 features, and computed once per survey. With ``components=k``
the features are the first k principal components of the patches instead (PCA fitted
on up to 4096 patches, scores divided by the first singular value's scale), which makes
the DKL network smaller and less prone to over-fitting a few dozen measurements.
"""
from __future__ import annotations

import dataclasses
import typing

import numpy as np

from emedge_core import EmedgeError

MODES = ("restrict", "reflect")


@dataclasses.dataclass(frozen=True)
class Patches:
    """features: (N, W*W) float32; coords: (N, 2) int (row, col) of each window's centre pixel;
    index: (H, W) int, candidate number of each survey pixel or -1."""

    features: np.ndarray
    coords: np.ndarray
    index: np.ndarray
    window: int
    mode: str

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def lookup(self, positions: np.ndarray) -> np.ndarray:
        """Candidate numbers of survey pixels ``positions`` (n, 2); -1 where none."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
        return self.index[pos[:, 0], pos[:, 1]]

    def to_map(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter per-candidate ``values`` (N,) onto an (H, W) map."""
        out = np.full(self.index.shape, fill, dtype=np.float64)
        out[self.coords[:, 0], self.coords[:, 1]] = values
        return out


def make_patches(image: np.ndarray, window: int, mode: str = "restrict",
                 available: typing.Optional[np.ndarray] = None, components: typing.Optional[int] = None) -> Patches:
    """Patches of ``image`` (H, W); ``available`` (H, W) bool limits the candidates further;
    ``components`` reduces each patch to that many principal-component scores."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise EmedgeError(f"survey must be a 2-D image, got shape {img.shape}")
    if mode not in MODES:
        raise EmedgeError(f"patch mode must be one of {MODES}, not {mode!r}")
    h, w = img.shape
    if window < 1 or (mode == "restrict" and (window > h or window > w)):
        raise EmedgeError(f"window {window} does not fit the {h}x{w} survey")
    if not np.isfinite(img).all():
        raise EmedgeError("survey image contains NaN or inf pixels")
    std = float(img.std())
    norm = (img - float(img.mean())) / (std if std > 0 else 1.0)
    half = window // 2
    if mode == "reflect":
        norm = np.pad(norm, ((half, window - 1 - half), (half, window - 1 - half)), mode="reflect")
    views = np.lib.stride_tricks.sliding_window_view(norm, (window, window))
    rows = np.arange(views.shape[0]) + (0 if mode == "reflect" else half)
    cols = np.arange(views.shape[1]) + (0 if mode == "reflect" else half)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    keep = np.ones(rr.shape, bool)
    if available is not None:
        avail = np.asarray(available, bool)
        if avail.shape != (h, w):
            raise EmedgeError(f"available mask shape {avail.shape} differs from the survey {(h, w)}")
        keep = avail[rr, cc]
    coords = np.stack([rr[keep], cc[keep]], axis=1)
    if len(coords) == 0:
        raise EmedgeError("no candidate positions: the window leaves no pixel to measure")
    features = np.ascontiguousarray(views[keep].reshape(len(coords), window * window), dtype=np.float32)
    if components is not None:
        features = _pca(features, components)
    index = np.full((h, w), -1, dtype=np.int64)
    index[coords[:, 0], coords[:, 1]] = np.arange(len(coords))
    return Patches(features, coords, index, window, mode)


def _pca(features: np.ndarray, k: int, sample: int = 4096) -> np.ndarray:
    """(N, k) principal-component scores of ``features`` (N, F), fitted on an even subsample."""
    if not 1 <= k <= features.shape[1]:
        raise EmedgeError(f"components must be between 1 and {features.shape[1]}, not {k}")
    centred = features - features.mean(axis=0)
    fit = centred[:: max(1, len(centred) // sample)]
    _, sv, vt = np.linalg.svd(fit, full_matrices=False)
    scale = sv[0] / np.sqrt(len(fit)) if sv[0] > 0 else 1.0
    return np.ascontiguousarray(centred @ vt[:k].T / scale, dtype=np.float32)
