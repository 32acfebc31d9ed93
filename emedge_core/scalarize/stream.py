"""The executor: run a scalarizer over frames, a whole data set or a live stream, in bounded memory.

:func:`reduce` accepts

- :class:`~emedge_core.instrument.Frames` (the experiment loop's batches);
- an array or an HDF5/EMD dataset (``h5py.Dataset``) shaped (H, W, *sig) or (n, *sig),
  read chunk by chunk (whole scan rows at a time for (H, W, ...));
- an iterator of chunks (n_i, *sig) - arrays or Frames - as from a live acquisition.

A :class:`~emedge_core.scalarize.reducer.Reducer` is prepared once, on the first good
frames (the "auto" geometry is then fixed for the whole data set); each chunk goes through
the backend's shared pass (cast, projections, maxima), is screened for bad frames and
reduced on the device; the values are merged into the map on the host, in order. On NumPy
a few chunks are reduced at once on threads (NumPy and BLAS release the GIL); on CUDA the next
chunk's upload overlaps this one's compute.
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
from emedge_core.scalarize.backends import Backend
from emedge_core.scalarize.base import Scalarizer, Signal, from_spec
from emedge_core.scalarize.notice import warn_once
from emedge_core.scalarize.reducer import Reducer, energy_axis, good_frames, sig_ndim

#: default bytes (as float32) per chunk. CPU: large enough that the per-chunk Python work (screening,
#: merging) is a few % of the compiled pass (8 MiB lost 25-40 %, measured); GPU: twice that, so each
#: chunk's host->device copy is long enough to hide behind the previous chunk's compute
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
        nav = len(shape) - sig_ndim(kind)
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
        return _Source(Signal(kind, sig, energy_axis(energy_eV, sig, kind), mrad_per_px),
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
    if len(sig) != sig_ndim(kind):
        raise EmedgeError(f"stream chunks must be (n, *sig) {kind} frames; the first has shape "
                          f"{np.shape(first.data if isinstance(first, Frames) else first)}")
    return _Source(Signal(kind, sig, energy_axis(energy_eV, sig, kind), mrad_per_px), scan_shape, arrays)


def _prepare(reducer: Reducer, chunks: typing.Iterator[np.ndarray]) -> typing.Iterator[np.ndarray]:
    """Prepare ``reducer`` on the first good frames, looking through at most :data:`SAMPLE_CHUNKS`
    chunks; returns the chunks again from the start. A stream with no good frame there is not
    prepared: its positions all keep their reason codes and NaN."""
    head: list[np.ndarray] = []
    assert reducer.signal is not None
    for chunk in chunks:
        head.append(chunk)
        sample = good_frames(chunk, reducer.signal)
        if len(sample):
            reducer.prepare(sample)
            break
        if len(head) >= SAMPLE_CHUNKS:
            break
    return itertools.chain(head, chunks)


def _results(reducer: Reducer, chunks: typing.Iterator[np.ndarray],
             threads: int) -> typing.Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per-chunk results in order; on NumPy with ``threads`` > 1, that many chunks at a time
    (the compiled pass releases the GIL), at most 2 x threads chunks in memory."""
    be = reducer.backend
    if threads <= 1 or be.name != "numpy":
        for host, dev in be.uploads(chunks):
            yield reducer.reduce_chunk(host, dev)
        return
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="emedge-scalarize") as pool:
        pending: collections.deque[concurrent.futures.Future[tuple[np.ndarray, np.ndarray]]] = collections.deque()
        for host in chunks:
            pending.append(pool.submit(reducer.reduce_chunk, host))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def reduce(scalarizer: typing.Union[str, dict[str, typing.Any], Scalarizer], source: typing.Any, *,
           backend: typing.Union[None, str, Backend] = None, scan_shape: typing.Optional[tuple[int, ...]] = None,
           energy_eV: typing.Optional[np.ndarray] = None, mrad_per_px: typing.Optional[float] = None,
           chunk_bytes: typing.Optional[int] = None, threads: typing.Optional[int] = None) -> MapResult:
    """Run ``scalarizer`` over ``source`` and return the map with its reason codes.

    backend: a :class:`Backend` or its name (default: the scalarizer's :meth:`~Scalarizer.use`,
    else "auto"). scan_shape: (H, W) for a stream or an (n, *sig) array (n = H*W); default: the
    source's own navigation shape, or (n,) for a stream. energy_eV / mrad_per_px: calibration
    when the source carries none. chunk_bytes: float32 bytes per chunk (default 32 MiB CPU,
    64 MiB GPU). threads: CPU chunks reduced at once on NumPy (default: the CPU count, at most 4).
    The scalarizer is prepared once, on the first good frames; ``MapResult.resolved`` is what
    every chunk used.
    """
    s = from_spec(scalarizer)
    dtype = getattr(source.data if isinstance(source, Frames) else source, "dtype", None)
    reducer = Reducer(s, backend=backend, dtype=dtype)
    nbytes = CHUNK_BYTES["numpy" if reducer.backend.name == "numpy" else "gpu"] if chunk_bytes is None \
        else int(chunk_bytes)
    threads = min(os.cpu_count() or 1, 4) if threads is None else int(threads)
    if isinstance(source, Frames):
        energy_eV = source.energy_eV if energy_eV is None else energy_eV
        mrad_per_px = source.mrad_per_px if mrad_per_px is None else mrad_per_px
    src = _open(source, s.signal_kind, tuple(scan_shape) if scan_shape else None, energy_eV, mrad_per_px, nbytes)
    reducer.signal = src.signal
    t0 = time.perf_counter()
    values: list[np.ndarray] = []
    reasons: list[np.ndarray] = []
    raw_bytes = 0
    chunks = _prepare(reducer, src.chunks)
    pulled: collections.deque[np.ndarray] = collections.deque()

    def feed() -> typing.Iterator[np.ndarray]:
        for c in chunks:
            pulled.append(c)
            yield c

    while True:
        try:
            for out, reason in _results(reducer, feed(), threads):
                raw_bytes += pulled.popleft().nbytes
                values.append(out)
                reasons.append(reason)
            break
        except Exception as e:
            if not reducer.backend.is_device_error(e):
                raise
            warn_once(f"{reducer.backend!r} failed ({type(e).__name__}: {e}); going on with numpy on the CPU")
            reducer.fall_back()
            chunks = itertools.chain(list(pulled), chunks)
            pulled.clear()
    k = reducer.components
    flat_values = np.concatenate(values) if values else np.zeros((0, k))
    flat_reason = np.concatenate(reasons) if reasons else np.zeros(0, np.uint8)
    shape = src.scan_shape or (len(flat_reason),)
    if int(np.prod(shape)) != len(flat_reason):
        raise EmedgeError(f"scan shape {shape} does not hold the {len(flat_reason)} frames read")
    reason_map = flat_reason.reshape(shape)
    value_map = flat_values.reshape(shape + ((k,) if k > 1 else ()))
    if s.map_level and len(shape) != 2:
        raise EmedgeError(f"scalarizer {s.name!r} needs an (H, W) scan shape")
    value_map = reducer.finish(value_map, reason_map)
    return MapResult(value_map, reason_map, time.perf_counter() - t0, raw_bytes, repr(reducer.backend),
                     reducer.resolved)
