"""EELS reductions: one number per spectrum, energies in eV from the signal's energy axis.

Every reduction reads only its energy windows (channel slices). With ``zlp_eV`` set,
each spectrum is first aligned on its zero-loss peak, found in that window and refined
to a fraction of a channel: windows move by the nearest whole number of channels and
peak energies are given relative to the refined ZLP.
"""
from __future__ import annotations

import typing

import numpy as np
from array_api_compat import device

from emedge_core import EmedgeError
from emedge_core.scalarize.base import Scalarizer, Signal, register

if typing.TYPE_CHECKING:
    from emedge_core.scalarize.backends import Backend, Chunk

Band = tuple[float, float]


def _as_band(value: typing.Optional[typing.Sequence[float]], what: str) -> typing.Optional[Band]:
    if value is None:
        return None
    band = tuple(float(v) for v in value)
    if len(band) != 2 or not band[0] < band[1]:
        raise ValueError(f"{what} must be [low_eV, high_eV] with low < high")
    return band


def channels(energy_eV: np.ndarray, band: Band, what: str) -> slice:
    """Channel slice covering ``band`` = (lo, hi) eV; EmedgeError when it holds no channel."""
    idx = np.flatnonzero((energy_eV >= band[0]) & (energy_eV <= band[1]))
    if idx.size == 0:
        raise EmedgeError(f"{what} window {band[0]}-{band[1]} eV lies outside the spectrum "
                          f"({energy_eV[0]:.1f}-{energy_eV[-1]:.1f} eV)")
    return slice(int(idx[0]), int(idx[-1]) + 1)


def refine_peak(seg: typing.Any, xp: typing.Any) -> tuple[typing.Any, typing.Any]:
    """Arg-max of each row of ``seg`` (n, m) refined to a fraction of a channel, and the max.

    Three-point Gaussian interpolation (a parabola through the logs: exact for a Gaussian
    peak) where the three values are positive, a plain parabola elsewhere; the peak at
    either end of the window is not refined. Returns (position (n,) float64 channels, max (n,)).
    """
    n, m = seg.shape
    i = xp.argmax(seg, axis=1)
    im = xp.reshape(xp.clip(i - 1, 0, m - 1), (n, 1))
    ip = xp.reshape(xp.clip(i + 1, 0, m - 1), (n, 1))
    y0 = xp.astype(xp.take_along_axis(seg, im, axis=1)[:, 0], xp.float64)
    y1 = xp.astype(xp.take_along_axis(seg, xp.reshape(i, (n, 1)), axis=1)[:, 0], xp.float64)
    y2 = xp.astype(xp.take_along_axis(seg, ip, axis=1)[:, 0], xp.float64)
    positive = (y0 > 0) & (y1 > 0) & (y2 > 0)
    tiny = xp.asarray(1e-300, dtype=xp.float64, device=device(seg))
    l0, l1, l2 = (xp.log(xp.where(positive, y, tiny)) for y in (y0, y1, y2))
    a0, a1, a2 = (xp.where(positive, lg, y) for lg, y in ((l0, y0), (l1, y1), (l2, y2)))
    denom = a0 - 2 * a1 + a2
    inside = (denom < 0) & (i > 0) & (i < m - 1)
    shift = xp.where(inside, 0.5 * (a0 - a2) / xp.where(inside, denom, -1.0), 0.0)
    return xp.astype(i, xp.float64) + shift, y1


class _EELS(Scalarizer):
    """Windows in eV -> channel slices once per data set; optional ZLP alignment per spectrum."""

    signal_kind = "spectrum"
    any_dtype = True            # windows are sliced from the raw spectra and converted on their own

    def __init__(self, zlp_eV: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(saturation)
        self.zlp_eV = _as_band(zlp_eV, "zlp_eV")

    def _bands(self) -> dict[str, Band]:
        """The named energy windows of this reduction."""
        return {}

    def prepare(self, signal: Signal, sample: np.ndarray) -> None:
        super().prepare(signal, sample)
        e = typing.cast(np.ndarray, signal.energy_eV)
        self._step = float((e[-1] - e[0]) / max(len(e) - 1, 1))
        if self.zlp_eV is not None and (len(e) < 2 or not np.allclose(np.diff(e), self._step, rtol=1e-3)):
            raise EmedgeError("ZLP alignment needs a uniform energy axis")
        self._slices = {name: channels(e, band, name) for name, band in self._bands().items()}
        if self.zlp_eV is not None:
            self._slices["zlp_eV"] = channels(e, self.zlp_eV, "zlp_eV")

    def resolved(self) -> dict[str, typing.Any]:
        """The energy windows as channel ranges [start, stop) (ZLP window included) and the channel width."""
        slices: dict[str, slice] = getattr(self, "_slices", {})
        if not slices:
            return {}
        return {"channels": {name: [sl.start, sl.stop] for name, sl in slices.items()}, "eV_per_channel": self._step}

    def _zlp(self, data: typing.Any, signal: Signal, xp: typing.Any) -> typing.Any:
        """(n,) float64 refined ZLP energy of each spectrum (eV)."""
        sl = self._slices["zlp_eV"]
        pos, _ = refine_peak(data[:, sl], xp)
        return float(typing.cast(np.ndarray, signal.energy_eV)[sl.start]) + pos * self._step

    def _window(self, data: typing.Any, name: str, shift: typing.Any, xp: typing.Any) -> typing.Any:
        """(n, m) channels of window ``name``, moved by ``shift`` (n,) int channels (None = not moved)."""
        sl = self._slices[name]
        if shift is None:
            return data[:, sl]
        n, e = data.shape
        cols = xp.arange(sl.start, sl.stop, dtype=xp.int64, device=device(data))
        cols = xp.reshape(cols, (1, -1)) + xp.reshape(shift, (n, 1))
        return xp.take_along_axis(data, xp.clip(cols, 0, e - 1), axis=1)

    def _shift(self, data: typing.Any, signal: Signal, xp: typing.Any) -> tuple[typing.Any, typing.Any]:
        """(ZLP energy (n,) eV, window shift (n,) int channels), or (0.0, None) without alignment."""
        if self.zlp_eV is None:
            return 0.0, None
        zlp = self._zlp(data, signal, xp)
        return zlp, xp.astype(xp.round(zlp / self._step), xp.int64)


@register
class EELSPeakEnergy(_EELS):
    """Energy (eV) of the highest point in ``range_eV``, refined to a fraction of a channel.

    The window is smoothed with a box of ``smooth`` (odd) channels, the arg-max found and
    refined by three-point Gaussian interpolation (:func:`refine_peak`). With ``zlp_eV``
    the energy is relative to each spectrum's zero-loss peak.
    """

    name = "eels_peak_energy"
    unit = "eV"

    def __init__(self, range_eV: typing.Sequence[float] = (5.0, 50.0), smooth: int = 3,
                 zlp_eV: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(zlp_eV, saturation)
        self.range_eV = _as_band(range_eV, "range_eV")
        if int(smooth) < 1 or int(smooth) % 2 == 0:
            raise ValueError("smooth must be an odd number of channels >= 1")
        self.smooth = int(smooth)

    def _bands(self) -> dict[str, Band]:
        return {"range_eV": typing.cast(Band, self.range_eV)}

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        xp = be.xp
        zlp, shift = self._shift(chunk.data, signal, xp)
        seg = self._window(chunk.data, "range_eV", shift, xp)
        s = self.smooth
        if s > 1:                                   # box mean; channel j is channel j + s//2 of the window
            seg = xp.astype(seg, xp.float32)        # one strided read (and conversion) of the window
            m = seg.shape[1] - s + 1
            box = seg[:, 0:m]
            for j in range(1, s):
                box = box + seg[:, j:j + m]
            seg = box / s
        pos, _ = refine_peak(seg, xp)
        start = float(typing.cast(np.ndarray, signal.energy_eV)[self._slices["range_eV"].start])
        if shift is not None:
            return start + (pos + s // 2 + xp.astype(shift, xp.float64)) * self._step - zlp
        return start + (pos + s // 2) * self._step


@register
class EELSPeakMax(_EELS):
    """Highest count in ``range_eV`` (counts; no smoothing)."""

    name = "eels_peak_max"
    unit = "counts"

    def __init__(self, range_eV: typing.Sequence[float] = (5.0, 50.0),
                 zlp_eV: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(zlp_eV, saturation)
        self.range_eV = _as_band(range_eV, "range_eV")

    def _bands(self) -> dict[str, Band]:
        return {"range_eV": typing.cast(Band, self.range_eV)}

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        xp = be.xp
        _, shift = self._shift(chunk.data, signal, xp)
        return xp.max(self._window(chunk.data, "range_eV", shift, xp), axis=1)


@register
class EELSBandIntegral(_EELS):
    """Summed counts in ``band_eV``."""

    name = "eels_band_integral"
    unit = "counts"

    def __init__(self, band_eV: typing.Sequence[float] = (5.0, 30.0),
                 zlp_eV: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(zlp_eV, saturation)
        self.band_eV = _as_band(band_eV, "band_eV")

    def _bands(self) -> dict[str, Band]:
        return {"band_eV": typing.cast(Band, self.band_eV)}

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        xp = be.xp
        _, shift = self._shift(chunk.data, signal, xp)
        return xp.sum(xp.astype(self._window(chunk.data, "band_eV", shift, xp), xp.float64), axis=1)


@register
class EELSBandRatio(_EELS):
    """Ratio of the summed counts in ``low_eV`` to those in ``high_eV`` (e.g. low/high plasmon)."""

    name = "eels_band_ratio"

    def __init__(self, low_eV: typing.Sequence[float] = (5.0, 10.0), high_eV: typing.Sequence[float] = (15.0, 20.0),
                 zlp_eV: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(zlp_eV, saturation)
        self.low_eV = _as_band(low_eV, "low_eV")
        self.high_eV = _as_band(high_eV, "high_eV")

    def _bands(self) -> dict[str, Band]:
        return {"low_eV": typing.cast(Band, self.low_eV), "high_eV": typing.cast(Band, self.high_eV)}

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        xp = be.xp
        _, shift = self._shift(chunk.data, signal, xp)
        lo = xp.sum(xp.astype(self._window(chunk.data, "low_eV", shift, xp), xp.float64), axis=1)
        hi = xp.sum(xp.astype(self._window(chunk.data, "high_eV", shift, xp), xp.float64), axis=1)
        return xp.where(hi > 0, lo / xp.where(hi > 0, hi, 1.0), xp.nan)


@register
class EELSEdgeIntensity(_EELS):
    """Edge signal (counts) in ``post_eV`` above a power-law background A E^-r.

    The background comes from Egerton's two-area method on ``pre_eV``: the counts I1, I2 of
    its two halves give r = 2 ln(I1 / I2) / ln(E3 / E1) (E1, E3 the window's outer channel
    edges) and A from their sum; integrating A E^-r over ``post_eV`` gives the background to
    subtract. Sums, not single channels, so a low-count pre-edge still fits; NaN when a half
    has no counts.
    """

    name = "eels_edge_intensity"
    unit = "counts"

    def __init__(self, pre_eV: typing.Sequence[float] = (80.0, 97.0), post_eV: typing.Sequence[float] = (100.0, 130.0),
                 zlp_eV: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(zlp_eV, saturation)
        self.pre_eV = _as_band(pre_eV, "pre_eV")
        self.post_eV = _as_band(post_eV, "post_eV")
        if not (self.pre_eV[0] > 0 and self.pre_eV[1] <= self.post_eV[0]):  # type: ignore[index]
            raise ValueError("pre_eV must lie above 0 eV and below post_eV")

    def _bands(self) -> dict[str, Band]:
        return {"pre_eV": typing.cast(Band, self.pre_eV), "post_eV": typing.cast(Band, self.post_eV)}

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        xp = be.xp
        e = typing.cast(np.ndarray, signal.energy_eV)
        _, shift = self._shift(chunk.data, signal, xp)
        pre = xp.astype(self._window(chunk.data, "pre_eV", shift, xp), xp.float64)
        post = xp.astype(self._window(chunk.data, "post_eV", shift, xp), xp.float64)
        half = pre.shape[1] // 2
        if half < 1:
            raise EmedgeError("pre_eV must span at least two channels")
        i1, i2 = xp.sum(pre[:, :half], axis=1), xp.sum(pre[:, half:2 * half], axis=1)
        pre_e, post_e = e[self._slices["pre_eV"]], e[self._slices["post_eV"]]
        h = self._step / 2
        e1, e3 = pre_e[0] - h, pre_e[2 * half - 1] + h
        ea, eb = post_e[0] - h, post_e[-1] + h
        ok = (i1 > 0) & (i2 > 0)
        r = 2 * xp.log(xp.where(ok, i1, 1.0) / xp.where(ok, i2, 1.0)) / np.log(e3 / e1)
        g = 1 - r                                   # integral of E^-r is E^g / g (g != 0 for r != 1)
        g = xp.where(xp.abs(g) < 1e-9, 1e-9, g)

        def area(lo: float, hi: float) -> typing.Any:
            return (xp.exp(g * np.log(hi)) - xp.exp(g * np.log(lo))) / g

        background = (i1 + i2) * area(ea, eb) / area(e1, e3)
        return xp.where(ok, xp.sum(post, axis=1) - background, xp.nan)
