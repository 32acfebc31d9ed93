"""The executor: run a scalarizer over frames, a whole data set or a live stream, in bounded memory.

:func:`reduce` accepts

- :class:`~emedge_core.instrument.Frames` (the experiment loop's batches);
- an array or an HDF5/EMD dataset (``h5py.Dataset``) shaped (H, W, *sig) or (n, *sig),
  read chunk by chunk (whole scan rows at a time for (H, W, ...));
- an iterator of chunks (n_i, *sig) - arrays or Frames - as from a live acquisition.

Each chunk goes through the backend's shared pass (cast, projections, maxima), is
screened for bad frames and reduced on the device; the values are merged into the map
on the host, in order. On NumPy a few chunks are reduced at once on threads (NumPy and
BLAS release the GIL); on CUDA the next chunk's upload overlaps this one's compute.
A device error (out of memory, driver) moves the rest of the stream to NumPy with one
warning, the failed chunk included.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import os
import time
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames
from emedge_core.scalarize.backends import Backend, get_backend, warn_once
from emedge_core.scalarize.base import Reason, Scalarizer, Signal, from_spec, screen

#: default bytes (as float32) per chunk. CPU: large enough that the per-chunk Python work (screening,
#: merging) is a few % of the compiled pass (8 MiB lost 25-40 %, measured); GPU: the copy pipeline's
CHUNK_BYTES = {"numpy": 32 << 20, "gpu": 64 << 20}
#: chunks looked through for a good frame to resolve "auto" parameters from
SAMPLE_CHUNKS = 64


@dataclasses.dataclass(frozen=True)
class MapResult:
    """values: scan_shape or scan_shape + (k,) float64 (NaN where ``reason != OK``);
    reason: scan_shape uint8 (:class:`~emedge_core.scalarize.Reason`); seconds: wall time;
    nbytes: raw bytes read; backend: where it ran; resolved: parameters found from the data."""

    values: np.ndarray
    reason: np.ndarray
    seconds: float
    nbytes: int
    backend: str
    resolved: dict[str, typing.Any]

    @property
    def gbps(self) -> float:
        """Throughput in GB/s (1e9 raw bytes per second)."""
        return self.nbytes / max(self.seconds, 1e-12) / 1e9


@dataclasses.dataclass
class _Source:
    signal: Signal
    scan_shape: typing.Optional[tuple[int, ...]]
    chunks: typing.Iterator[np.ndarray]


def _sig_ndim(kind: str) -> int:
    return 1 if kind == "spectrum" else 2


def _open(source: typing.Any, kind: str, scan_shape: typing.Optional[tuple[int, ...]],
          energy_eV: typing.Optional[np.ndarray], mrad_per_px: typing.Optional[float],
          chunk_bytes: int) -> _Source:
    """Normalise a source into a signal, a scan shape and an iterator of (m, *sig) host chunks."""
    if isinstance(source, Frames):
        if source.kind != kind:
            raise EmedgeError(f"these are {source.kind} frames; the scalarizer reduces {kind} frames")
        source = source.data
    if hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
        shape = tuple(int(s) for s in source.shape)
        nav = len(shape) - _sig_ndim(kind)
        if nav not in (1, 2):
            raise EmedgeError(f"{kind} data must be (n, *sig) or (H, W, *sig); got shape {shape}")
        sig = shape[nav:]
        frame_bytes = 4 * int(np.prod(sig))
        if nav == 2:
            rows = max(1, chunk_bytes // max(1, frame_bytes * shape[1]))
            chunks = (np.asarray(source[r:r + rows]).reshape((-1,) + sig) for r in range(0, shape[0], rows))
        else:
            step = max(1, chunk_bytes // frame_bytes)
            chunks = (np.asarray(source[i:i + step]) for i in range(0, shape[0], step))
        return _Source(Signal(kind, sig, _energy(energy_eV, sig, kind), mrad_per_px),
                       scan_shape or shape[:nav], chunks)
    it = iter(source)
    try:
        first = next(it)
    except StopIteration:
        raise EmedgeError("the stream holds no chunk") from None
    if isinstance(first, Frames):
        energy_eV = first.energy_eV if energy_eV is None else energy_eV
        mrad_per_px = first.mrad_per_px if mrad_per_px is None else mrad_per_px
    arrays = (c.data if isinstance(c, Frames) else np.asarray(c) for c in itertools.chain([first], it))
    sig = tuple(np.shape(first.data if isinstance(first, Frames) else first)[1:])
    if len(sig) != _sig_ndim(kind):
        raise EmedgeError(f"stream chunks must be (n, *sig) {kind} frames; the first has shape "
                          f"{np.shape(first.data if isinstance(first, Frames) else first)}")
    return _Source(Signal(kind, sig, _energy(energy_eV, sig, kind), mrad_per_px), scan_shape, arrays)


def _energy(energy_eV: typing.Optional[np.ndarray], sig: tuple[int, ...], kind: str) -> typing.Optional[np.ndarray]:
    if kind != "spectrum":
        return None
    if energy_eV is None:
        raise EmedgeError(f"spectra need an energy axis (energy_eV, {sig[0]} values)")
    e = np.asarray(energy_eV, np.float64)
    if e.shape != sig:
        raise EmedgeError(f"energy axis has {e.size} values; the spectra have {sig[0]} channels")
    return e


def _sample(chunk: np.ndarray, signal: Signal, want: int = 64) -> np.ndarray:
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


def _weights(scalarizer: Scalarizer, signal: Signal, sample: np.ndarray) -> typing.Optional[np.ndarray]:
    """The scalarizer's (k, P) float32 weight rows (row 0 >= 0, it screens the frames), or None.
    ``sample``: (m, *sig) good frames that resolve the "auto" parameters."""
    rows = scalarizer.prepare(signal, sample)
    if rows is None:
        return None
    rows = np.asarray(rows, np.float32).reshape(-1, signal.pixels)
    if (rows[0] < 0).any() or not rows[0].any():
        raise ValueError(f"{scalarizer.name}: weight row 0 must be >= 0 and not all zero (it screens the frames)")
    return rows


def _prepare(s: Scalarizer, signal: Signal, chunks: typing.Iterator[np.ndarray]
             ) -> tuple[bool, typing.Optional[np.ndarray], typing.Iterator[np.ndarray]]:
    """Prepare ``s`` on the first good frames (looking through at most :data:`SAMPLE_CHUNKS` chunks).

    Returns (any good frame, weight rows, the chunks again from the start). A stream with no
    good frame at all is not prepared: its positions all keep their reason codes and NaN.
    """
    head: list[np.ndarray] = []
    sample = np.zeros((0,) + signal.shape)
    ended = True
    for chunk in chunks:
        head.append(chunk)
        sample = _sample(chunk, signal)
        if len(sample) or len(head) >= SAMPLE_CHUNKS:
            ended = False
            break
    rest = itertools.chain(head, chunks)
    if ended and not len(sample):
        return False, None, rest
    return True, _weights(s, signal, sample), rest


def _saturation(scalarizer: Scalarizer, dtype: np.dtype) -> typing.Optional[float]:
    if scalarizer.saturation is not None:
        return float(scalarizer.saturation)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else None


def _reduce_chunk(s: Scalarizer, signal: Signal, be: Backend, weights: typing.Any, host: np.ndarray,
                  dev: typing.Any, skip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One chunk -> ((n, k) float64 values, NaN where bad; (n,) uint8 reasons).
    ``skip``: only screen (a stream with no good frame, where ``s`` was never prepared)."""
    n, k = host.shape[0], len(s.frame_components or s.components)
    if tuple(host.shape[1:]) != signal.shape or host.dtype.kind not in "uif":
        return np.full((n, k), np.nan), np.full(n, Reason.SHAPE, np.uint8)
    level = _saturation(s, host.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # bad frames give NaN: flagged below
        chunk = be.load(dev, weights, level is not None, s.needs_frames)
        out = np.full((n, k), np.nan) if skip else \
            be.to_numpy(s.process(chunk, signal, be)).astype(np.float64).reshape(n, k)
    reason = screen(chunk, be, level)
    reason[(reason == Reason.OK) & ~np.isfinite(out).all(axis=1)] = Reason.FAILED
    out[reason != Reason.OK] = np.nan
    return out, reason


def _results(s: Scalarizer, signal: Signal, be: Backend, weights: typing.Any, chunks: typing.Iterator[np.ndarray],
             threads: int, skip: bool) -> typing.Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per-chunk results in order; on NumPy with ``threads`` > 1, that many chunks at a time
    (the compiled pass releases the GIL), at most 2 x threads chunks in memory."""
    if threads <= 1 or be.name != "numpy":
        for host, dev in be.uploads(chunks):
            yield _reduce_chunk(s, signal, be, weights, host, dev, skip)
        return
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="emedge-scalarize") as pool:
        pending: collections.deque[concurrent.futures.Future[tuple[np.ndarray, np.ndarray]]] = collections.deque()
        for host in chunks:
            pending.append(pool.submit(_reduce_chunk, s, signal, be, weights, host, host, skip))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def reduce(scalarizer: typing.Union[str, dict[str, typing.Any], Scalarizer], source: typing.Any, *,
           backend: typing.Union[str, Backend] = "auto", scan_shape: typing.Optional[tuple[int, ...]] = None,
           energy_eV: typing.Optional[np.ndarray] = None, mrad_per_px: typing.Optional[float] = None,
           chunk_bytes: typing.Optional[int] = None, threads: typing.Optional[int] = None) -> MapResult:
    """Run ``scalarizer`` over ``source`` and return the map with its reason codes.

    scan_shape: (H, W) for a stream or an (n, *sig) array (n = H*W); default: the source's
    own navigation shape, or (n,) for a stream. energy_eV / mrad_per_px: calibration when the
    source carries none. chunk_bytes: float32 bytes per chunk (default 32 MiB CPU, 64 MiB GPU).
    threads: CPU chunks reduced at once on NumPy (default: the CPU count, at most 4).
    """
    s = from_spec(scalarizer)
    dtype = getattr(source.data if isinstance(source, Frames) else source, "dtype", None)
    be = backend if isinstance(backend, Backend) else get_backend(backend, dtype)
    nbytes = CHUNK_BYTES["numpy" if be.name == "numpy" else "gpu"] if chunk_bytes is None else int(chunk_bytes)
    threads = min(os.cpu_count() or 1, 4) if threads is None else int(threads)
    if isinstance(source, Frames):
        energy_eV = source.energy_eV if energy_eV is None else energy_eV
        mrad_per_px = source.mrad_per_px if mrad_per_px is None else mrad_per_px
    src = _open(source, s.signal_kind, tuple(scan_shape) if scan_shape else None, energy_eV, mrad_per_px, nbytes)
    t0 = time.perf_counter()
    values: list[np.ndarray] = []
    reasons: list[np.ndarray] = []
    raw_bytes = 0
    good, weights_host, chunks = _prepare(s, src.signal, src.chunks)
    pulled: collections.deque[np.ndarray] = collections.deque()

    def feed() -> typing.Iterator[np.ndarray]:
        for c in chunks:
            pulled.append(c)
            yield c

    while True:
        try:
            weights = None if weights_host is None else be.asarray(weights_host)
            for out, reason in _results(s, src.signal, be, weights, feed(), threads, not good):
                raw_bytes += pulled.popleft().nbytes
                values.append(out)
                reasons.append(reason)
            break
        except Exception as e:
            if not be.is_device_error(e):
                raise
            warn_once(f"{be!r} failed ({type(e).__name__}: {e}); going on with numpy on the CPU")
            be = Backend()
            chunks = itertools.chain(list(pulled), chunks)
            pulled.clear()
    k = len(s.frame_components or s.components)
    flat_values = np.concatenate(values) if values else np.zeros((0, k))
    flat_reason = np.concatenate(reasons) if reasons else np.zeros(0, np.uint8)
    shape = src.scan_shape or (len(flat_reason),)
    if int(np.prod(shape)) != len(flat_reason):
        raise EmedgeError(f"scan shape {shape} does not hold the {len(flat_reason)} frames read")
    reason_map = flat_reason.reshape(shape)
    value_map = flat_values.reshape(shape + ((k,) if k > 1 else ()))
    if s.map_level and len(shape) != 2:
        raise EmedgeError(f"scalarizer {s.name!r} needs an (H, W) scan shape")
    if good:
        value_map = s.finalize(value_map, reason_map)
    else:
        value_map = np.full(shape + ((len(s.components),) if len(s.components) > 1 else ()), np.nan)
    return MapResult(value_map, reason_map, time.perf_counter() - t0, raw_bytes, repr(be), s.resolved())
