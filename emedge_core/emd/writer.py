"""The writers: :class:`ArraySink` (one array, chunk by chunk), :class:`StreamWriter` (a stream of
frames into a new file, bounded memory) and :func:`write` (whole arrays).

Frames arrive in C order over the navigation (scan) shape; ``c`` consecutive frames along the last
scan axis form one HDF5 chunk (``r`` whole rows when a row is small, e.g. spectra). Each full
chunk is encoded and written with ``write_direct_chunk``; the file is flushed with its checksums
and ``frames_written`` after the first chunk, then every ``FLUSH_SECONDS`` and at close (or on
``flush()``), so a crash (kill -9) leaves a file that reads back every frame up to the last flush.
With a codec on ``threads`` > 1 (blosc2 and zstd default to 2) the chunks of one ``append`` are
encoded side by side on a shared thread pool (CRC-32, prediction and Blosc2 all drop the GIL) and
still written one by one in scan order.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import threading
import time
import typing

import h5py
import hdf5plugin  # noqa: F401  (registers the HDF5 filters used by the codecs)
import numpy as np

from emedge_core import EmedgeError, compress
from emedge_core.compress import AnyCodec, SparseCodec
from emedge_core.compress.auto import pick
from emedge_core.compress.crc import checksum
from emedge_core.emd import dense, sparse
from emedge_core.emd.layout import (
    AxisSpec,
    check_dims,
    chunk_grid,
    chunk_runs,
    chunk_target,
    create_file,
    default_sig_ndim,
    is_payload,
    os_error,
    write_dims,
    write_metadata,
)
from emedge_core.provenance import CHECKSUM_ALGORITHM

#: chunks being encoded at once per encoding thread while an append runs: a deeper queue keeps the
#: threads busy while the calling thread writes in order (2 -> 8 measured +10 % on the EELS set, 2 threads)
INFLIGHT = 8
FLUSH_SECONDS = 0.25          # the longest a written chunk waits for its flush (kill -9 keeps every flushed chunk)
Metadata = typing.Optional[typing.Mapping[str, typing.Any]]
CodecSpec = typing.Union[str, AnyCodec]       # a spec string ("auto", "blosc2:clevel=5", ...) or a codec


_POOLS: dict[tuple[int, int], concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def encode_pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's chunk-encoding pool of ``threads`` workers, shared by every array and kept:
    starting fresh threads for each array cost ~1.5-2.5 ms per array (measured on 1-chunk writes),
    a fixed cost that is a tenth of writing 30 MB. A forked child gets its own pool."""
    key = (os.getpid(), int(threads))
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = concurrent.futures.ThreadPoolExecutor(key[1], thread_name_prefix="emedge-encode")
        return pool


class ArraySink:
    """Writes one array into an open EMD root group, chunk by chunk (used by the writers below).

    frame_shape: shape of one frame (detector image (ky, kx), spectrum (E,), or () for scalars).
    nav_shape: scan shape (H, W) etc. known up front, or None for a series that grows along axis 0.
    codec: spec string (``auto`` picks on the first chunk) or a codec object.
    chunk_frames: frames per chunk along the last scan axis (default: about 1 MiB, 4 MiB for integer
    detector frames, at most one scan row, or several whole rows when a row is smaller - see
    :func:`~emedge_core.emd.layout.chunk_grid`).
    dims: per axis of the whole array an :class:`~emedge_core.emd.layout.Axis` (name, units, one
    value per index) or a ``Dim`` (name, units, start, step); units: of the values; metadata:
    free-form JSON-able values kept with the array (e.g. Swift ``properties``).
    """

    def __init__(self, root: h5py.Group, name: str, frame_shape: tuple[int, ...], dtype: typing.Any,
                 nav_shape: typing.Optional[tuple[int, ...]] = None, codec: CodecSpec = "auto",
                 chunk_frames: typing.Optional[int] = None, dims: typing.Optional[typing.Sequence[AxisSpec]] = None,
                 units: str = "", metadata: Metadata = None) -> None:
        self.name, self.frame_shape, self.dtype = name, tuple(int(s) for s in frame_shape), np.dtype(dtype)
        self.nav_shape = None if nav_shape is None else tuple(int(s) for s in nav_shape)
        if self.dtype.kind not in "uif":
            raise EmedgeError(f"{name}: cannot store dtype {self.dtype} (numeric arrays only)")
        if chunk_frames is not None and int(chunk_frames) < 1:
            raise EmedgeError(f"{name}: chunk_frames must be >= 1")
        self.r, self.c = chunk_grid(self.nav_shape, self.frame_shape, self.dtype.itemsize, chunk_frames,
                                    chunk_target(self.frame_shape, self.dtype))
        nav_ndim = len(self.nav_shape) if self.nav_shape else 1
        self._chunk_nav = (1,) * (nav_ndim - 2) + (self.r, self.c) if nav_ndim >= 2 else (self.c,)
        self._auto: typing.Optional[str] = codec if isinstance(codec, str) and compress.is_auto(codec) else None
        if self._auto is not None:
            compress.auto_threads(self._auto)            # a bad auto spec fails now
        self.codec: typing.Optional[AnyCodec] = None
        if self._auto is None:
            self.codec = compress.get(codec) if isinstance(codec, str) else codec
        if self.codec is not None:
            self.codec.check(self.dtype)
        check_dims(f"{root.name}/{name}", (self.nav_shape or (None,)) + self.frame_shape, dims)   # fail before any data
        self.group = root.create_group(name)
        self.group.attrs.update({"emd_group_type": "array", "python_class": "Array"})
        self._dims, self._units = dims, units
        write_metadata(self.group, metadata)
        self._buf = np.zeros((self.r * self.c, *self.frame_shape), self.dtype)
        self._spare: list[np.ndarray] = []    # chunk buffers handed back by the encoder
        self._k = 0                       # frames in the buffer
        self._runs = chunk_runs(self.nav_shape, self.c, self.r) if self.nav_shape else None
        self._run_len = self._next_run_len()
        self.frames_written, self.raw_bytes, self.seconds, self._n_chunks = 0, 0, 0.0, 0   # frames_written: flushed
        self._committed = 0               # frames handed to HDF5 (flushed or not)
        self._flushed_at = -np.inf        # time.monotonic() of the last flush
        self._vmax = -np.inf
        self._ds: dict[str, h5py.Dataset] = {}
        self._frames_attr: typing.Any = None
        self._crcs = np.zeros(4096, np.uint32)    # the checksums' current HDF5 chunk
        self._one: typing.Any = None              # the codec on one thread (pool workers)
        self._trial: typing.Optional[dict[str, float]] = None   # auto: {candidate: ratio} on the first chunk
        #: called as ``on_chunk(payload, first_frame, k)`` after each dense chunk is written (its encoded
        #: bytes, the flat index of its first frame, its frame count), e.g. to publish the same bytes elsewhere
        self.on_chunk: typing.Optional[typing.Callable[[bytes, int, int], None]] = None

    @property
    def total(self) -> typing.Optional[int]:
        return None if self.nav_shape is None else int(np.prod(self.nav_shape, dtype=np.int64))

    @property
    def threads(self) -> int:
        """Chunks encoded at once: the codec's ``threads`` (blosc2 / zstd), else 1."""
        if self.codec is None:
            n = compress.auto_threads(self._auto or "auto")
            return 2 if n is None else n          # the candidates' default (blosc2 threads=2)
        return max(1, int(getattr(self.codec, "threads", 1)))

    @property
    def chosen(self) -> AnyCodec:
        """The codec (``auto`` has chosen it on the first chunk)."""
        if self.codec is None:
            raise EmedgeError(f"{self.name}: no codec chosen yet (no chunk written)")
        return self.codec

    def switch_codec(self, codec: AnyCodec) -> None:
        """Encode the chunks of later appends with ``codec`` (e.g. a lighter one when a stream falls
        behind). Both codecs must store plain values under the same HDF5 filter whose decoder reads
        each chunk's settings from the chunk itself (Blosc2); the data set keeps its first filter
        options and ``emedge_codec`` attribute (the caller records the switch)."""
        old = self.chosen
        same = not isinstance(old, SparseCodec) and not isinstance(codec, SparseCodec) and old.transform is None \
            and codec.transform is None and old.stage.name == codec.stage.name == "blosc2"
        if not same:
            raise EmedgeError(f"{self.name}: cannot switch from codec {old.spec} to {codec.spec} inside one data set "
                              "(only between plain Blosc2 settings)")
        codec.check(self.dtype)
        self.codec, self._one = codec, None

    def _next_run_len(self) -> int:
        if self._runs is None:
            return self.c
        run = next(self._runs, None)
        return 0 if run is None else run[2]

    def append(self, frames: np.ndarray) -> None:
        """Add frames (k, *frame_shape), or one frame (*frame_shape), in scan order.

        Every chunk these frames complete is encoded (up to ``INFLIGHT * threads`` at once on ``threads``
        threads), written and flushed in order before this returns; the frames of an incomplete
        chunk wait in a buffer."""
        a = np.asarray(frames)
        if a.shape == self.frame_shape:         # one frame
            a = a[None]
        if a.shape[1:] != self.frame_shape:
            raise EmedgeError(f"{self.name}: frames of shape {a.shape[1:]} do not match frame shape {self.frame_shape}")
        if a.dtype != self.dtype:
            raise EmedgeError(f"{self.name}: frames have dtype {a.dtype}, the array was opened for {self.dtype}")
        if self.total is not None and self._committed + self._k + len(a) > self.total:
            raise EmedgeError(f"{self.name}: more frames than the scan shape {self.nav_shape} holds")
        t0 = time.perf_counter()
        inflight: collections.deque[tuple[np.ndarray, int, bool, typing.Any]] = collections.deque()
        try:
            i = 0
            while i < len(a):
                n = self._run_len
                if self._k == 0 and n == len(self._buf) and len(a) - i >= n:
                    job = (a[i:i + n], n, False)        # a whole chunk: encoded straight from the input
                    i += n
                else:
                    take = min(n - self._k, len(a) - i)
                    self._buf[self._k:self._k + take] = a[i:i + take]
                    self._k += take
                    i += take
                    if self._k < n:
                        continue
                    job = (self._buf, self._k, True)
                    self._buf = self._spare.pop() if self._spare else np.empty_like(self._buf)
                    self._k = 0
                self._run_len = self._next_run_len()
                self._submit(job, inflight)
                while len(inflight) > INFLIGHT * self.threads:   # bounded memory: the oldest chunk goes to disk
                    self._commit(*inflight.popleft())
            while inflight:
                self._commit(*inflight.popleft())
        finally:
            self.seconds += time.perf_counter() - t0

    def _submit(self, job: tuple[np.ndarray, int, bool], inflight: typing.Any) -> None:
        """Queue one chunk: encoded now on the pool (threads > 1), or when committed (threads = 1)."""
        block, k, owned = job
        if k < len(block):
            block[k:] = 0                   # a short run (edge of the scan, end of a series) is zero-padded
        payload: typing.Optional[bytes] = None
        if self.codec is None:              # auto: choose on the first chunk, keep the winner's bytes for it
            nav_ndim = len(self.nav_shape) if self.nav_shape else 1
            chunk = np.ascontiguousarray(block).reshape(self._chunk_nav + self.frame_shape)
            big = self.threads > 1 and chunk.nbytes >= 1 << 16     # small chunks: no threads for the trial
            choice = pick([chunk], nav_ndim - 1, threads=compress.auto_threads(self._auto or "auto"),
                          pool=self._executor() if big else None)
            self.codec, self._trial = choice.codec, choice.ratios
            payload = choice.payloads[0] if choice.payloads else None
        codec = self.chosen
        if not self._ds:
            self._create()
        if self.threads > 1 and not isinstance(codec, SparseCodec):
            if self._one is None:
                self._one = codec.with_threads(1)     # chunks in parallel, each on one thread
            inflight.append((block, k, owned, self._executor().submit(self._encode, self._one, block, k, payload)))
        else:
            inflight.append((block, k, owned, payload))

    def _encode(self, codec: AnyCodec, block: np.ndarray, k: int,
                payload: typing.Optional[bytes]) -> tuple[int, typing.Optional[bytes], float]:
        """(CRC-32 of the k frames, the chunk's bytes (None for sparse), their max for lossy bounds).
        Runs on the pool's threads: NumPy, zlib and Blosc2 drop the GIL on chunk-sized work."""
        crc = checksum(block[:k])
        vmax = float(block[:k].max()) if k and self._lossy_transform else -np.inf
        if payload is None and not isinstance(codec, SparseCodec):
            chunk = np.ascontiguousarray(block).reshape(self._chunk_nav + self.frame_shape)
            payload = codec.encode_chunk(chunk, axis=(len(self.nav_shape) if self.nav_shape else 1) - 1)
        return crc, payload, vmax

    @property
    def _lossy_transform(self) -> bool:
        transform = getattr(self.codec, "transform", None)
        return transform is not None and not transform.lossless

    def _commit(self, block: np.ndarray, k: int, owned: bool, pending: typing.Any) -> None:
        """Write one chunk (``pending``: its encoding future, or its bytes / None to encode now) and
        record its checksum; flush when the last flush is ``FLUSH_SECONDS`` old (the first chunk at once)."""
        if hasattr(pending, "result"):
            crc, payload, vmax = pending.result()
        else:
            crc, payload, vmax = self._encode(self.chosen, block, k, pending)
        if payload is None:                                   # sparse events: no chunk bytes
            self._write_sparse(block[:k], k)
        else:
            self._write_dense(payload, k)
            if self.on_chunk is not None:
                self.on_chunk(payload, self._committed, k)
        n, step = self._n_chunks, len(self._crcs)
        if n and n % step == 0:                    # a full HDF5 chunk of CRCs: on to the file before reuse
            self._write_crcs(n - step)
            self._crcs[:] = 0
        self._crcs[n % step] = crc
        self._n_chunks += 1
        if self._lossy_transform and k:
            self._vmax = max(self._vmax, vmax)       # the stated bound grows with the largest value
        self._committed += k
        self.raw_bytes += k * self._buf[0].nbytes
        if owned and len(self._spare) < 2:
            self._spare.append(block)
        if time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def _write_crcs(self, start: int) -> None:
        """The HDF5 chunk of checksums from entry ``start`` (whole and uncompressed, as HDF5 stores it)."""
        ck = self._ds["checksums"]
        if ck.shape[0] < start + len(self._crcs):      # grown in steps; frames_written says which entries count
            ck.resize((start + len(self._crcs),))
        ck.id.write_direct_chunk((start,), self._crcs)

    def flush(self) -> None:
        """Make every written chunk durable: checksums, error bound and ``frames_written``, then the
        HDF5 flush. A crash (kill -9) keeps every frame up to the last flush."""
        if self._committed == self.frames_written or not self._ds:
            return
        step = len(self._crcs)
        self._write_crcs((self._n_chunks - 1) // step * step)
        if self._lossy_transform:
            self.group.attrs["emedge_error_bound"] = json.dumps(self.chosen.error_bound(np.array([self._vmax])),
                                                                default=float)
        self._frames_attr.write(np.array(self._committed, np.int64))
        self.group.file.flush()
        self.frames_written, self._flushed_at = self._committed, time.monotonic()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return encode_pool(self.threads)

    def _write_dense(self, payload: bytes, k: int) -> None:
        dense.write_chunk(self._ds["data"], payload, self._committed, k, self.nav_shape, self.frame_shape)

    def _write_sparse(self, block: np.ndarray, k: int) -> None:
        codec = self.chosen
        assert isinstance(codec, SparseCodec)
        sparse.write_frames(self._ds, codec, block.reshape(k, *self.frame_shape))

    def _create(self) -> None:
        g, codec = self.group, self.chosen
        g.attrs.update({"emedge_nav_ndim": len(self.nav_shape) if self.nav_shape else 1, "emedge_chunk_frames": self.c,
                        "emedge_chunk_rows": self.r})
        if isinstance(codec, SparseCodec):
            self._ds.update(sparse.create(g, codec, self.dtype, self.nav_shape, self.frame_shape))
            self._ds["data"] = self._ds["events_per_frame"]
        else:
            g.attrs.update(codec.attrs(self.dtype))
            self._ds["data"] = dense.create(g, codec, self.dtype, self.nav_shape, self.frame_shape, self._chunk_nav,
                                            self._units)
            write_dims(g, self._ds["data"].shape, self._dims, growing=self.nav_shape is None)
        if self._trial is not None:          # why auto chose: every candidate's ratio on the first chunk
            g.attrs["emedge_auto_trial"] = json.dumps({k: round(v, 4) for k, v in self._trial.items()})
        bound = codec.error_bound()
        if bound is not None:
            g.attrs["emedge_error_bound"] = json.dumps(bound, default=float)
        ck = g.create_dataset("checksums", shape=(0,), maxshape=(None,), dtype=np.uint32, chunks=(len(self._crcs),))
        ck.attrs["algorithm"] = CHECKSUM_ALGORITHM
        self._ds["checksums"] = ck
        self._frames_attr = h5py.h5a.open(self._ds["data"].id, b"frames_written")   # rewritten per chunk

    def close(self) -> dict[str, typing.Any]:
        """Flush a partial last chunk (growing series) and return the array's statistics."""
        if self._k:
            t0 = time.perf_counter()
            inflight: collections.deque[tuple[np.ndarray, int, bool, typing.Any]] = collections.deque()
            self._submit((self._buf, self._k, True), inflight)
            self._commit(*inflight.popleft())
            self._k = 0
            self.seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.flush()
        self.seconds += time.perf_counter() - t0
        if self.codec is None:           # nothing was ever written
            self.codec = compress.get("blosc2")
        if not self._ds:
            self._create()
        self._ds["checksums"].resize((self._n_chunks,))
        if self.nav_shape is None and not isinstance(self.codec, SparseCodec):  # a series: axis 0 has its length now
            write_dims(self.group, self._ds["data"].shape, self._dims)
        if self.total is not None and self.frames_written < self.total:
            raise EmedgeError(f"{self.name}: closed after {self.frames_written} of {self.total} frames")
        return self.stats()

    def stats(self) -> dict[str, typing.Any]:
        """frames, raw_bytes, stored_bytes (the data only: checksums and axes excluded), ratio, seconds
        (time in encode + write + flush), codec, lossless, dataset (the full HDF5 path of the data set
        holding the values: ``h5py.File(path)[dataset]`` is an ``h5py.Dataset``; for opt-in sparse
        events, ``events_per_frame``)."""
        stored = sum(d.id.get_storage_size() for k, d in self.group.items() if is_payload(k, d))
        return {"frames": self.frames_written, "raw_bytes": self.raw_bytes, "stored_bytes": stored,
                "ratio": self.raw_bytes / stored if stored else float("nan"), "seconds": self.seconds,
                "codec": self.codec.spec if self.codec else None,
                "lossless": bool(self.codec.lossless) if self.codec else True,
                "dataset": self._ds["data"].name if self._ds else f"{self.group.name}/data"}


class StreamWriter:
    """Stream frames of one array into a new EMD file in bounded memory (one chunk buffered
    between appends; while an append runs, up to ``INFLIGHT * threads`` chunks are being encoded).

    Extra, small arrays (a survey image, an energy axis) go in with :meth:`write_array`. Write
    errors (a full disk) raise :class:`EmedgeError` saying how many frames the file keeps.
    """

    def __init__(self, path: str, name: str = "data", frame_shape: tuple[int, ...] = (), dtype: typing.Any = "float32",
                 nav_shape: typing.Optional[tuple[int, ...]] = None, codec: CodecSpec = "auto",
                 chunk_frames: typing.Optional[int] = None, provenance: typing.Optional[dict[str, typing.Any]] = None,
                 root: str = "data", dims: typing.Optional[typing.Sequence[AxisSpec]] = None, units: str = "",
                 metadata: Metadata = None) -> None:
        self.path = path
        if not compress.is_auto(codec):      # a codec that cannot store dtype fails before any file is touched
            codec = compress.get(codec) if isinstance(codec, str) else codec
            codec.check(np.dtype(dtype))
        self.file, self.root = create_file(path, root, provenance)
        self._stats: dict[str, dict[str, typing.Any]] = {}
        self._failed = self._closed = False
        try:
            self.sink = ArraySink(self.root, name, frame_shape, dtype, nav_shape, codec, chunk_frames, dims, units,
                                  metadata)
        except EmedgeError:
            self.file.close()
            raise

    def append(self, frames: np.ndarray) -> None:
        """Add frames (k, *frame_shape) or one frame in scan order; full chunks go to disk."""
        self._guard(self.sink.append, frames)

    def flush(self) -> None:
        """Make every chunk written so far durable now (``append`` flushes every ``FLUSH_SECONDS``
        while it writes, and ``close`` at the end; call this when a stream pauses)."""
        self._guard(self.sink.flush)

    def write_array(self, name: str, array: np.ndarray, codec: CodecSpec = "auto",
                    sig_ndim: typing.Optional[int] = None, dims: typing.Optional[typing.Sequence[AxisSpec]] = None,
                    units: str = "", metadata: Metadata = None) -> dict[str, typing.Any]:
        """Write a whole array beside the stream (see :func:`write`)."""
        stats = self._guard(_write_one, self.root, name, np.asarray(array), codec, sig_ndim, dims, units, metadata)
        self._stats[name] = stats
        return stats

    def _guard(self, fn: typing.Callable[..., typing.Any], *args: typing.Any) -> typing.Any:
        if self._failed:
            raise EmedgeError(f"{self.path}: an earlier write failed; the file holds "
                              f"{self.sink.frames_written} frames")
        try:
            return fn(*args)
        except OSError as e:
            self._failed = True
            raise EmedgeError(f"writing {self.path} failed ({os_error(e)}); it keeps the {self.sink.frames_written} "
                              f"frames flushed before") from None

    def close(self) -> dict[str, dict[str, typing.Any]]:
        """Finish the stream; returns statistics per array ({name: {ratio, raw_bytes, ...}}).
        Closing again returns the same statistics."""
        if self._closed:
            return self._stats
        self._closed = True
        try:
            if not self._failed:
                self._stats[self.sink.name] = self._guard(self.sink.close)
        finally:
            try:
                self.file.close()
            except (OSError, RuntimeError):
                if not self._failed:
                    raise
        return self._stats

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, kind: typing.Any, *rest: typing.Any) -> None:
        if kind is None:
            self.close()
        elif not self._closed:    # keep what was flushed; do not mask the original error
            self._failed = self._closed = True
            try:
                self.file.close()
            except (OSError, RuntimeError):
                pass


def _write_one(root: h5py.Group, name: str, a: np.ndarray, codec: CodecSpec, sig_ndim: typing.Optional[int],
               dims: typing.Optional[typing.Sequence[AxisSpec]], units: str, metadata: Metadata = None
               ) -> dict[str, typing.Any]:
    if a.ndim == 0:
        raise EmedgeError(f"{name}: store scalars as attributes, not arrays")
    sig = default_sig_ndim(a.ndim) if sig_ndim is None else int(sig_ndim)
    if not 0 <= sig <= a.ndim:
        raise EmedgeError(f"{name}: sig_ndim {sig} does not fit an array of shape {a.shape}")
    sig = min(sig, a.ndim - 1)          # a single frame is stored as its rows (shape kept)
    nav, frame = a.shape[:a.ndim - sig], a.shape[a.ndim - sig:]
    sink = ArraySink(root, name, frame, a.dtype, nav, codec, None, dims, units, metadata)
    sink.append(a.reshape((-1, *frame)))        # whole chunks are encoded from ``a`` itself (no copy)
    return sink.close()


def write(path: str, arrays: typing.Mapping[str, np.ndarray],
          codec: typing.Union[str, typing.Mapping[str, str]] = "auto",
          provenance: typing.Optional[dict[str, typing.Any]] = None, root: str = "data",
          sig_ndim: typing.Optional[typing.Mapping[str, int]] = None,
          dims: typing.Optional[typing.Mapping[str, typing.Sequence[AxisSpec]]] = None,
          units: typing.Optional[typing.Mapping[str, str]] = None,
          attrs: typing.Optional[typing.Mapping[str, typing.Any]] = None,
          metadata: typing.Optional[typing.Mapping[str, typing.Mapping[str, typing.Any]]] = None
          ) -> dict[str, dict[str, typing.Any]]:
    """Write whole arrays into a new EMD file; returns statistics per array.

    codec: one spec for all, or {name: spec} (missing names get ``auto``). sig_ndim: frame
    dimensions per array (default: 0 for 1-D, 1 for 2-D, 2 for 3-D/4-D arrays); the other, leading
    axes are the scan, chunked along its last axis. dims: {name: per-axis Axis or Dim} (see
    :class:`ArraySink`); units: {name: units of the values}; attrs: extra attributes of the root
    group; metadata: {name: {key: JSON-able value}} kept per array (``emd.metadata`` reads it).
    """
    f, g = create_file(path, root, provenance)
    g.attrs.update(dict(attrs or {}))
    stats: dict[str, dict[str, typing.Any]] = {}
    try:
        for name, array in arrays.items():
            spec = codec if isinstance(codec, str) else codec.get(name, "auto")
            try:
                stats[name] = _write_one(g, name, np.asarray(array), spec, (sig_ndim or {}).get(name),
                                         (dims or {}).get(name), (units or {}).get(name, ""),
                                         (metadata or {}).get(name))
            except OSError as e:
                raise EmedgeError(f"writing {path} failed at array {name!r} ({os_error(e)}); arrays before it are "
                                  "kept") from None
    finally:
        try:
            f.close()
        except (OSError, RuntimeError):
            pass
    return stats
