"""4D-STEM centre-of-mass reductions and the detector geometry they share.

Every reduction here is a projection: the shared pass multiplies each pattern
(ky, kx) by a few weight rows (the mask and the masked row and column coordinates),
so the CoM costs one read of the data. Coordinates are detector pixels (row, col)
relative to ``center``: None = the geometric centre ((ky-1)/2, (kx-1)/2), "auto" =
the bright-field disk found in the first chunk (:func:`bf_disk`), or (row, col).
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.scalarize.base import Scalarizer, Signal, register

if typing.TYPE_CHECKING:
    from emedge_core.scalarize.backends import Backend, Chunk

Center = typing.Union[None, str, typing.Sequence[float]]


#: a plateau of at least this many pixels at the top of the mean pattern is a saturated (clipped) disk
PLATEAU_PIXELS = 12


def bf_disk(pattern: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """Bright-field disk of a mean pattern (ky, kx): (row, col) centre and radius, all in px.

    Made for what real detectors show. Hot pixels go first (a 3 x 3 median: a lone bright pixel is
    not a disk). A saturated disk is flat at the top: when at least :data:`PLATEAU_PIXELS` pixels share
    the maximum, the disk is that plateau (the diffuse wings around a clipped disk reach
    far above half of it, and a half-maximum threshold would take them). Otherwise the disk is the
    pixels above ``background + threshold * (max - background)`` (background = the median). Only the
    largest connected region of them counts (other spots and wing blobs do not); the
    centre is its intensity-weighted mean, the radius sqrt(area / pi).
    """
    from scipy import ndimage

    p = np.asarray(pattern, np.float64)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise EmedgeError("the bright-field disk needs a finite (ky, kx) mean pattern")
    if min(p.shape) >= 3:
        p = ndimage.median_filter(p, size=3, mode="nearest")
    bg = float(np.median(p))
    top = float(p.max())
    if not top > bg:
        raise EmedgeError("no bright-field disk: the mean pattern is flat")
    plateau = p >= top
    disk = plateau if plateau.sum() >= PLATEAU_PIXELS else p > bg + threshold * (top - bg)
    labels, n = ndimage.label(disk)
    if n > 1:                                   # the largest region wins
        sizes = np.bincount(labels.ravel())[1:]
        disk = labels == 1 + int(np.argmax(sizes))
    w = np.where(disk, p - bg, 0.0)
    rows, cols = np.indices(p.shape)
    cy, cx = float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())
    return cy, cx, float(np.sqrt(disk.sum() / np.pi))


def _as_center(center: Center) -> typing.Union[None, str, tuple[float, float]]:
    if center is None or center == "auto":
        return center
    if isinstance(center, str):
        raise ValueError('center must be null, "auto" or [row, col] px')
    c = tuple(float(v) for v in center)
    if len(c) != 2:
        raise ValueError("center must be [row, col] px")
    return c


class Geometry:
    """Centre and radii on the detector, given in px or mrad, resolved per data set.

    Mixed into the diffraction scalarizers: ``self.center``, ``self.units`` ("px" or "mrad")
    are set by the subclass; :meth:`_geometry` turns them into px for a :class:`Signal`.
    """

    center: typing.Union[None, str, tuple[float, float]]
    units: str
    _found: dict[str, typing.Any]

    def _px(self, value: typing.Optional[float], signal: Signal) -> typing.Optional[float]:
        """A radius in the scalarizer's units -> px."""
        if value is None or self.units == "px":
            return value
        if not signal.mrad_per_px:
            raise EmedgeError("radii in mrad need the detector calibration (mrad_per_px)")
        return float(value) / float(signal.mrad_per_px)

    def _geometry(self, signal: Signal, sample: np.ndarray,
                  need_disk: bool = False) -> tuple[float, float, float]:
        """(row, col) centre and bright-field radius (px; NaN unless ``need_disk`` or an "auto" centre)."""
        ky, kx = signal.shape
        self._found = {}
        if self.center == "auto" or need_disk:
            if len(sample) == 0:
                raise EmedgeError("cannot find the bright-field disk: the first chunk has no good frame")
            cy, cx, r = bf_disk(sample.mean(axis=0))
            self._found = {"bf_center_px": [cy, cx], "bf_radius_px": r}
            if self.center is None:
                cy, cx = (ky - 1) / 2, (kx - 1) / 2
            elif self.center != "auto":
                cy, cx = typing.cast(tuple[float, float], self.center)
            return cy, cx, r
        cy, cx = ((ky - 1) / 2, (kx - 1) / 2) if self.center is None else typing.cast(tuple[float, float], self.center)
        return cy, cx, float("nan")

    def resolved(self) -> dict[str, typing.Any]:
        return dict(getattr(self, "_found", {}))


def annulus(shape: tuple[int, ...], cy: float, cx: float, inner: float, outer: float) -> np.ndarray:
    """(ky, kx) float32 mask: 1 where inner <= distance from (cy, cx) < outer (px)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    d = np.hypot(rows - cy, cols - cx)
    return ((d >= inner) & (d < outer)).astype(np.float32)


class _CoMBase(Geometry, Scalarizer):
    """Centre of mass inside an optional disk of ``radius`` around ``center``."""

    signal_kind = "diffraction"
    unit = "px"
    needs_frames = False

    def __init__(self, center: Center = None, radius: typing.Optional[float] = None, units: str = "px",
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(saturation)
        if units not in ("px", "mrad"):
            raise ValueError('units must be "px" or "mrad"')
        if radius is not None and not float(radius) > 0:
            raise ValueError("radius must be > 0")
        self.center = _as_center(center)
        self.radius = None if radius is None else float(radius)
        self.units = units

    def prepare(self, signal: Signal, sample: np.ndarray) -> np.ndarray:
        """Rows: mask, mask * (row - cy), mask * (col - cx); (3, ky*kx)."""
        super().prepare(signal, sample)
        cy, cx, _ = self._geometry(signal, sample)
        self._found["center_px"] = [cy, cx]
        radius = self._px(self.radius, signal)
        mask = np.ones(signal.shape, np.float32) if radius is None else annulus(signal.shape, cy, cx, 0.0, radius)
        rows, cols = np.indices(signal.shape, dtype=np.float64)
        return np.stack([mask.ravel(), (mask * (rows - cy)).ravel(), (mask * (cols - cx)).ravel()])

    def _com(self, chunk: "Chunk", be: "Backend") -> typing.Any:
        """(n, 2) float64 CoM (row, col) in px from the projections."""
        xp = be.xp
        p = xp.astype(chunk.proj, xp.float64)
        return xp.stack([p[1] / p[0], p[2] / p[0]], axis=1)


@register
class CoM(_CoMBase):
    """Centre of mass (row, col) of each pattern in detector px, relative to ``center``.

    >>> import numpy as np; from emedge_core.scalarize import reduce
    >>> p = np.zeros((1, 5, 5), np.float32); p[0, 3, 1] = 1
    >>> reduce(CoM(), p).values.tolist()
    [[1.0, -1.0]]
    """

    name = "com"
    components = ("row", "col")

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        return self._com(chunk, be)


@register
class CoMMagnitude(_CoMBase):
    """Length (px) of the centre-of-mass shift of each pattern from ``center``."""

    name = "com_magnitude"

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        com = self._com(chunk, be)
        return be.xp.sqrt(com[:, 0] ** 2 + com[:, 1] ** 2)


@register
class CoMAngle(_CoMBase):
    """Direction (rad, in (-pi, pi]) of the centre-of-mass shift: atan2(row, col) on the detector."""

    name = "com_angle"
    unit = "rad"

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        com = self._com(chunk, be)
        return be.xp.atan2(com[:, 0], com[:, 1])
