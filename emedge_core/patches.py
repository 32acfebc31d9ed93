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
#: on a small survey the default window shrinks until at least this fraction of the pixels are candidates
MIN_CANDIDATE_FRACTION = 0.5
#: the smallest window the defaults choose (a 3 x 3 neighbourhood)
MIN_WINDOW = 3


def n_candidates(shape: tuple[int, int], window: int, mode: str = "restrict") -> int:
    """How many survey pixels of an (H, W) survey are candidates for a ``window`` in ``mode``."""
    h, w = shape
    if mode == "reflect":
        return h * w
    return max(0, h - window + 1) * max(0, w - window + 1)


@dataclasses.dataclass(frozen=True)
class PatchChoice:
    """Window (px), patch mode and PCA components of a run, and ``note``: what was adapted and why
    (empty when the requested values were kept)."""

    window: int
    mode: str
    components: typing.Optional[int]
    candidates: int
    note: str = ""


def fit_to_survey(shape: tuple[int, int], window: int, components: typing.Optional[int], mode: str = "restrict",
                  fixed: tuple[bool, bool, bool] = (False, False, False)) -> PatchChoice:
    """Adapt the defaults to a small (H, W) survey so that most of the scan is a candidate.

    ``fixed`` says which of (window, components, mode) the user gave; those are kept (and checked).
    Otherwise, in ``restrict`` mode the window shrinks (not below :data:`MIN_WINDOW`) until at least
    :data:`MIN_CANDIDATE_FRACTION` of the pixels are candidates; when even that fails the mode becomes
    ``reflect`` (every pixel a candidate) with the largest window the survey can mirror. Components are
    capped at the window's W*W pixels and at the number of candidates. A 49 x 6 SI gets window 3
    (restrict, 188 of 294 pixels) and 9 components.
    """
    h, w = (int(v) for v in shape)
    if mode not in MODES:
        raise EmedgeError(f"--patch-mode must be one of {', '.join(MODES)}, not {mode!r}")
    win_fixed, comp_fixed, mode_fixed = fixed
    chosen, why = [], []
    if not win_fixed:
        want = MIN_CANDIDATE_FRACTION * h * w
        if mode == "restrict" and n_candidates((h, w), window, mode) < want:
            fits = [k for k in range(min(window, h, w), MIN_WINDOW - 1, -1) if n_candidates((h, w), k, mode) >= want]
            if fits:
                window = fits[0]
                chosen.append(f"--window {window}")
            elif not mode_fixed:
                mode, window = "reflect", max(1, min(window, h, w))
                chosen.append(f"--window {window} --patch-mode reflect")
        elif mode == "reflect" and window > min(h, w):
            window = max(1, min(h, w))
            chosen.append(f"--window {window}")
    if mode == "restrict" and (window > h or window > w):
        raise EmedgeError(f"--window {window} does not fit the {h}x{w} survey; use a window of at most {min(h, w)} "
                          "or --patch-mode reflect")
    if mode == "reflect" and window > min(h, w):
        raise EmedgeError(f"--window {window} is larger than the {h}x{w} survey; reflect mode needs at most "
                          f"{min(h, w)}")
    count = n_candidates((h, w), window, mode)
    if components is not None:
        cap = min(window * window, count)
        if components > cap:
            if comp_fixed:
                raise EmedgeError(f"--components {components} is more than the {cap} a {window}x{window} window on "
                                  f"the {h}x{w} survey gives; use at most {cap} (or a larger --window)")
            components = cap
            chosen.append(f"--components {components}")
    if chosen:
        why.append(f"small {h}x{w} survey: chose {' '.join(chosen)} ({mode}: {count} of {h * w} pixels are candidates)")
    return PatchChoice(window, mode, components, count, "; ".join(why))


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
        raise EmedgeError(f"--components must be between 1 and {features.shape[1]} (the window's pixels), not {k}")
    centred = features - features.mean(axis=0)
    fit = centred[:: max(1, len(centred) // sample)]
    _, sv, vt = np.linalg.svd(fit, full_matrices=False)
    scale = sv[0] / np.sqrt(len(fit)) if sv[0] > 0 else 1.0
    return np.ascontiguousarray(centred @ vt[:k].T / scale, dtype=np.float32)
