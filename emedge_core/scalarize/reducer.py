"""The reducer: runs one passive scalarizer over one data set or experiment.

A :class:`~emedge_core.scalarize.base.Scalarizer` only declares what it needs and computes.
A :class:`Reducer` owns everything that belongs to a run: the signal, the backend, and the
*preparation* - "auto" parameters (bright-field disk centre and radius, energy windows in
channels) resolved **once**, on the first good frames, and then fixed. Every later chunk is
reduced with the same weights, and :attr:`Reducer.resolved` is exactly what every chunk used,
so it can be written beside the results (``experiment.h5``, ``emedge scalarize --json``).

    reducer = Reducer(from_spec("virtual_bf"))       # outer radius "auto"
    for frames in batches:                            # Frames from an instrument
        result = reducer.frames(frames)               # ScalarResult (values, reason)
    reducer.resolved                                  # {"bf_center_px": [...], "bf_radius_px": ...}

:func:`emedge_core.scalarize.stream.reduce` drives a reducer over arrays, HDF5 datasets
and streams; the experiment loop feeds it the frames of every step.
"""
from __future__ import annotations

import copy
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames
from emedge_core.scalarize.backends import Backend, Chunk, get_backend
from emedge_core.scalarize.base import Reason, Scalarizer, ScalarResult, Signal, from_spec
from emedge_core.scalarize.notice import warn_once


def sig_ndim(kind: str) -> int:
    """Frame dimensions of a signal kind: 1 for spectra, 2 for diffraction patterns."""
    return 1 if kind == "spectrum" else 2


def energy_axis(energy_eV: typing.Optional[np.ndarray], sig: tuple[int, ...], kind: str) -> typing.Optional[np.ndarray]:
    """The (E,) float64 energy axis of spectra (checked against the channels), None for patterns."""
    if kind != "spectrum":
        return None
    if energy_eV is None:
        raise EmedgeError(f"spectra need an energy axis (energy_eV, {sig[0]} values)")
    e = np.asarray(energy_eV, np.float64)
    if e.shape != sig:
        raise EmedgeError(f"energy axis has {e.size} values; the spectra have {sig[0]} channels")
    return e


def saturation_level(saturation: typing.Optional[float], dtype: typing.Any) -> typing.Optional[float]:
    """Counts at which a pixel of ``dtype`` frames is saturated: ``saturation`` (a scalarizer's), else
    the integer dtype's maximum; None for float frames with none set (unchecked)."""
    if saturation is not None:
        return float(saturation)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else None


def screen(chunk: Chunk, be: Backend, level: typing.Optional[float]) -> np.ndarray:
    """Reason code (n,) uint8 for the frames of ``chunk``; ``level``: saturation counts or None.

    Uses ``chunk.proj[0]`` (a projection on weights >= 0: the frame totals or the reduction's
    mask) and the maxima from the shared pass; only frames whose projection is non-finite or
    zero are looked at again, pixel by pixel.
    """
    xp = be.xp
    total = chunk.proj[0]
    n = int(total.shape[0])
    flat = xp.reshape(chunk.data, (n, -1))
    reason = np.zeros(n, np.uint8)
    suspect = np.flatnonzero(~be.to_numpy(xp.isfinite(total)))
    if suspect.size:
        rows = xp.take(flat, be.asarray(suspect), axis=0)
        bad = ~be.to_numpy(xp.all(xp.isfinite(rows), axis=1))
        reason[suspect[bad]] = Reason.NONFINITE
    zero = np.flatnonzero(be.to_numpy(total == 0))
    if zero.size:
        rows = xp.take(flat, be.asarray(zero), axis=0)
        empty = ~be.to_numpy(xp.any(rows != 0, axis=1))
        reason[zero[empty]] = Reason.EMPTY
    if level is not None and chunk.maxv is not None:
        sat = be.to_numpy(chunk.maxv >= level) & (reason == Reason.OK)
        reason[sat] = Reason.SATURATED
    return reason


def good_frames(chunk: np.ndarray, signal: Signal, want: int = 64) -> np.ndarray:
    """Up to ``want`` good frames (right shape, finite, not all zero) among the first 256 of
    ``chunk``, as (m, *sig) float64; read ``want`` frames at a time."""
    if tuple(chunk.shape[1:]) != signal.shape or chunk.dtype.kind not in "uif":
        return np.zeros((0,) + signal.shape)
    good: list[np.ndarray] = []
    found = 0
    for start in range(0, min(len(chunk), 256), want):
        flat = np.asarray(chunk[start:start + want], np.float64).reshape(-1, signal.pixels)
        good.append(flat[np.isfinite(flat).all(axis=1) & (flat != 0).any(axis=1)])
        found += len(good[-1])
        if found >= want:
            break
    return np.concatenate(good)[:want].reshape((-1,) + signal.shape) if good else np.zeros((0,) + signal.shape)


def weight_rows(scalarizer: Scalarizer, signal: Signal, sample: np.ndarray) -> typing.Optional[np.ndarray]:
    """The scalarizer's (k, P) float32 weight rows (row 0 >= 0, it screens the frames), or None.
    ``sample``: (m, *sig) good frames that resolve the "auto" parameters."""
    rows = scalarizer.prepare(signal, sample)
    if rows is None:
        return None
    rows = np.asarray(rows, np.float32).reshape(-1, signal.pixels)
    if (rows[0] < 0).any() or not rows[0].any():
        raise ValueError(f"{scalarizer.name}: weight row 0 must be >= 0 and not all zero (it screens the frames)")
    return rows


class Reducer:
    """One scalarizer run over one data set: prepared once, then fed chunks.

    scalarizer: a :class:`Scalarizer` or a spec; signal: what every frame is (None: taken from
    the first :class:`~emedge_core.instrument.Frames` given to :meth:`frames`); backend: a
    :class:`Backend` or its name (None: the scalarizer's :meth:`~Scalarizer.use`, else "auto");
    dtype: the raw frames' dtype when known (helps "auto" pick a backend).
    """

    def __init__(self, scalarizer: typing.Union[str, dict[str, typing.Any], Scalarizer],
                 signal: typing.Optional[Signal] = None, backend: typing.Union[None, str, Backend] = None,
                 dtype: typing.Any = None) -> None:
        # a copy of its own: what prepare() resolves belongs to this run, not to the spec object
        self.scalarizer = copy.deepcopy(from_spec(scalarizer))
        self.signal = signal
        choice = self.scalarizer.backend_choice if backend is None else backend
        self.backend = choice if isinstance(choice, Backend) else get_backend(choice, dtype)
        self._weights_host: typing.Optional[np.ndarray] = None
        self._weights: typing.Any = None
        self._prepared = False
        self._resolved: dict[str, typing.Any] = {}

    # -- preparation: once ------------------------------------------------------------
    @property
    def prepared(self) -> bool:
        """True once the scalarizer has been prepared (its parameters are then fixed)."""
        return self._prepared

    @property
    def resolved(self) -> dict[str, typing.Any]:
        """The parameters found from the data (e.g. ``bf_center_px``, ``bf_radius_px``, ``center_px``,
        ``rotation_deg``, energy windows in channels), fixed at preparation; what every chunk used."""
        return dict(self._resolved)

    def prepare(self, sample: np.ndarray) -> None:
        """Resolve the scalarizer's parameters from ``sample`` (m, *sig) good frames; only once."""
        if self._prepared:
            raise EmedgeError(f"scalarizer {self.scalarizer.name!r} is already prepared for this data set")
        signal = self._signal()
        self._weights_host = weight_rows(self.scalarizer, signal, np.asarray(sample, np.float64))
        self._weights = None if self._weights_host is None else self.backend.asarray(self._weights_host)
        self._prepared = True
        self._resolved = self.scalarizer.resolved()

    def _signal(self) -> Signal:
        if self.signal is None:
            raise EmedgeError("the reducer does not know its signal yet; give it frames first")
        return self.signal

    # -- chunks ---------------------------------------------------------------------------
    @property
    def components(self) -> int:
        """Values per frame that :meth:`feed` gives (before any map-level step)."""
        return len(self.scalarizer.frame_components or self.scalarizer.components)

    def fall_back(self) -> None:
        """Go on with NumPy on the CPU (after a device error), keeping the preparation."""
        self.backend = Backend()
        self._weights = None if self._weights_host is None else self.backend.asarray(self._weights_host)

    def reduce_chunk(self, host: np.ndarray, dev: typing.Any = None) -> tuple[np.ndarray, np.ndarray]:
        """One chunk (n, *sig) -> ((n, k) float64 values, NaN where bad; (n,) uint8 reasons).

        ``dev``: the chunk already on the backend's device (default: ``host``). Before
        preparation the frames are only screened (all NaN)."""
        s, signal, be = self.scalarizer, self._signal(), self.backend
        n, k = host.shape[0], self.components
        if tuple(host.shape[1:]) != signal.shape or host.dtype.kind not in "uif":
            return np.full((n, k), np.nan), np.full(n, Reason.SHAPE, np.uint8)
        if n == 0:                          # e.g. a batch cancelled before its first frame
            return np.zeros((0, k)), np.zeros(0, np.uint8)
        level = self.saturation(host.dtype)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # bad frames give NaN: flagged below
            keep = s.needs_frames and not (s.any_dtype and be.integer_frames)    # else chunk.data: the raw frames
            chunk = be.load(host if dev is None else dev, self._weights, level is not None, keep)
            out = np.full((n, k), np.nan) if not self._prepared else \
                be.to_numpy(s.process(chunk, signal, be)).astype(np.float64).reshape(n, k)
        reason = screen(chunk, be, level)
        reason[(reason == Reason.OK) & ~np.isfinite(out).all(axis=1)] = Reason.FAILED
        out[reason != Reason.OK] = np.nan
        return out, reason

    def feed(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reduce one host chunk (n, *sig); the first chunk with a good frame prepares the reducer.
        A device error moves this and every later chunk to NumPy, with one warning."""
        if not self._prepared:
            sample = good_frames(chunk, self._signal())
            if len(sample):
                self.prepare(sample)
        try:
            return self.reduce_chunk(chunk)
        except Exception as e:
            if not self.backend.is_device_error(e):
                raise
            warn_once(f"{self.backend!r} failed ({type(e).__name__}: {e}); going on with numpy on the CPU")
            self.fall_back()
            return self.reduce_chunk(chunk)

    def frames(self, frames: Frames) -> ScalarResult:
        """Reduce a batch of :class:`Frames` (n, *sig) - the experiment loop's entry."""
        if self.scalarizer.map_level:
            raise EmedgeError(f"scalarizer {self.scalarizer.name!r} needs the whole scan map; use it with "
                              "`emedge scalarize` or emedge_core.scalarize.reduce")
        if frames.kind != self.scalarizer.signal_kind:
            raise EmedgeError(f"these are {frames.kind} frames; the scalarizer reduces "
                              f"{self.scalarizer.signal_kind} frames")
        data = np.asarray(frames.data)
        if self.signal is None:
            sig = tuple(int(v) for v in data.shape[1:])
            if len(sig) != sig_ndim(frames.kind):
                raise EmedgeError(f"{frames.kind} frames must be (n, *sig); got shape {data.shape}")
            self.signal = Signal(frames.kind, sig, energy_axis(frames.energy_eV, sig, frames.kind),
                                 frames.mrad_per_px)
        values, reason = self.feed(data)
        return ScalarResult(values[:, 0] if values.shape[1] == 1 else values, reason)

    def finish(self, values: np.ndarray, reason: np.ndarray) -> np.ndarray:
        """The map-level step on the whole (H, W[, k]) map (DPC rotation, iCoM); its findings
        join :attr:`resolved`. An unprepared reducer (no good frame at all) gives all NaN."""
        s = self.scalarizer
        if not self._prepared:
            k = len(s.components)
            return np.full(reason.shape + ((k,) if k > 1 else ()), np.nan)
        out = s.finalize(values, reason)
        self._resolved = s.resolved()
        return out

    def saturation(self, dtype: np.dtype) -> typing.Optional[float]:
        """Counts at which a pixel is saturated (:func:`saturation_level` of the scalarizer's)."""
        return saturation_level(self.scalarizer.saturation, dtype)
