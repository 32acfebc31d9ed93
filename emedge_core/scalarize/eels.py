"""EELS reductions: one number per spectrum (energies in eV from the frame's energy axis)."""
from __future__ import annotations

import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames
from emedge_core.scalarize.base import Scalarizer, register


def _window(energy_eV: np.ndarray, band: typing.Sequence[float], what: str) -> slice:
    """Channel slice covering ``band`` = (lo, hi) eV; EmedgeError when it holds no channel."""
    lo, hi = float(band[0]), float(band[1])
    if not lo < hi:
        raise EmedgeError(f"{what} window {band} must have low < high (eV)")
    idx = np.flatnonzero((energy_eV >= lo) & (energy_eV <= hi))
    if idx.size == 0:
        raise EmedgeError(
            f"{what} window {lo}-{hi} eV lies outside the spectrum ({energy_eV[0]:.1f}-{energy_eV[-1]:.1f} eV)")
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _as_band(value: typing.Sequence[float], what: str) -> tuple[float, float]:
    band = tuple(float(v) for v in value)
    if len(band) != 2:
        raise ValueError(f"{what} must be [low_eV, high_eV]")
    return typing.cast(tuple[float, float], band)


@register
class EELSPeakEnergy(Scalarizer):
    """Energy (eV) of the highest point in ``range_eV``, refined to a fraction of a channel.

    The spectrum is smoothed with a box of ``smooth`` channels, the arg-max found and
    refined with a parabola through it and its two neighbours.
    """

    name = "eels_peak_energy"
    signal_kind = "spectrum"
    unit = "eV"

    def __init__(self, range_eV: typing.Sequence[float] = (5.0, 50.0), smooth: int = 3,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(saturation)
        self.range_eV = _as_band(range_eV, "range_eV")
        if int(smooth) < 1:
            raise ValueError("smooth must be >= 1 channel")
        self.smooth = int(smooth)

    def process(self, data: typing.Any, frames: Frames, xp: typing.Any) -> typing.Any:
        assert frames.energy_eV is not None
        sl = _window(frames.energy_eV, self.range_eV, "range_eV")
        seg = data[:, sl]
        if self.smooth > 1:
            kernel = xp.ones(self.smooth, dtype=seg.dtype) / self.smooth
            c = xp.cumsum(xp.pad(seg, ((0, 0), (self.smooth // 2, (self.smooth - 1) // 2)), mode="edge"), axis=1)
            c = xp.concatenate([xp.zeros((seg.shape[0], 1), dtype=c.dtype), c], axis=1)
            seg = (c[:, self.smooth:] - c[:, :-self.smooth]) * kernel[0]
        m = seg.shape[1]
        i = xp.argmax(seg, axis=1)
        rows = xp.arange(seg.shape[0])
        im = xp.clip(i - 1, 0, m - 1)
        ip = xp.clip(i + 1, 0, m - 1)
        y0, y1, y2 = seg[rows, im], seg[rows, i], seg[rows, ip]
        denom = y0 - 2 * y1 + y2
        safe = (denom < 0) & (i > 0) & (i < m - 1)
        shift = xp.where(safe, 0.5 * (y0 - y2) / xp.where(safe, denom, -1), 0.0)
        e = xp.asarray(frames.energy_eV[sl], dtype=xp.float64)
        step = (e[-1] - e[0]) / max(m - 1, 1)
        return e[0] + (i + shift) * step


@register
class EELSBandRatio(Scalarizer):
    """Ratio of the summed counts in ``low_eV`` to those in ``high_eV`` (e.g. low/high plasmon)."""

    name = "eels_band_ratio"
    signal_kind = "spectrum"

    def __init__(self, low_eV: typing.Sequence[float] = (5.0, 10.0), high_eV: typing.Sequence[float] = (15.0, 20.0),
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(saturation)
        self.low_eV = _as_band(low_eV, "low_eV")
        self.high_eV = _as_band(high_eV, "high_eV")

    def process(self, data: typing.Any, frames: Frames, xp: typing.Any) -> typing.Any:
        assert frames.energy_eV is not None
        lo = data[:, _window(frames.energy_eV, self.low_eV, "low_eV")].sum(axis=1)
        hi = data[:, _window(frames.energy_eV, self.high_eV, "high_eV")].sum(axis=1)
        return xp.where(hi > 0, lo / xp.where(hi > 0, hi, 1), xp.nan)
