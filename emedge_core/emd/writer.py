"""EMD 1.0 files on HDF5: a streaming writer in bounded memory, a whole-array writer, a reader.

Public API::

    emd.write(path, {"data": array}, codec="auto", provenance=provenance.collect(...))  # -> stats
    with emd.StreamWriter(path, "data", frame_shape=(ky, kx), dtype="uint16", nav_shape=(H, W)) as w:
        w.append(frames)                  # (k, ky, kx) as they arrive; a chunk is flushed when full
    emd.read(path) -> {name: array};  emd.read(path, "data") -> array;  emd.info(path) -> dict
    emd.value(h5_group_or_dataset) -> array      # one array of an open file, EMD group or plain data set

Layout (the root attributes and groups as emdfile/py4DSTEM write them, so emdfile, rosettasciio
and plain h5py + hdf5plugin read the arrays)::

    /                      emd_group_type='file', version_major=1, version_minor=0, UUID, authoring_*
    /<root>                emd_group_type='root', python_class='Root'
    /<root>/metadatabundle/provenance   emd_group_type='metadata': one JSON string per key
    /<root>/<name>         emd_group_type='array', python_class='Array', emedge_* codec attributes
    /<root>/<name>/data    the array (stored dtype), chunks (1, .., 1, r, c, *frame) along the scan,
                           attrs units, frames_written
    /<root>/<name>/dim0..  axis vectors [start, start + step] with name and units
    /<root>/<name>/checksums  CRC-32 per chunk of the original data, in write order (while
                           streaming it is grown in steps; frames_written tells which count)

Frames arrive in C order over the navigation (scan) shape; ``c`` consecutive frames along the last
scan axis form one HDF5 chunk (``r`` whole rows when a row is small, e.g. spectra). Each full
chunk is encoded and written with ``write_direct_chunk``; the file is flushed with its checksums
and ``frames_written`` after the first chunk, then every ``FLUSH_SECONDS`` and at close (or on
``flush()``), so a crash (kill -9) leaves a file that reads back every frame up to the last flush.
With a codec on ``threads`` > 1 (blosc2 and zstd default to 2) the chunks of one ``append`` are
encoded side by side on a shared thread pool (CRC-32, prediction and Blosc2 all drop the GIL) and
still written one by one in scan order. Sparse arrays (codec ``sparse``) store
``events_per_frame``, ``event_index``, ``event_count`` instead of ``data``
(see :mod:`emedge_core.compress.sparse`); their group type is ``emedge_sparse``.
"""
from __future__ import annotations

import collections
import concurrent.futures
import errno
import json
import os
import threading
import time
import typing
import uuid

import h5py
import hdf5plugin  # noqa: F401  (registers the HDF5 filters used by the codecs)
import numpy as np

from emedge_core import EmedgeError, __version__
from emedge_core import compress
from emedge_core.compress.crc import checksum
from emedge_core.provenance import CHECKSUM_ALGORITHM

#: chunks being encoded at once per encoding thread while an append runs: a deeper queue keeps the
#: threads busy while the calling thread writes in order (2 -> 8 measured +10 % on the EELS set, 2 threads)
INFLIGHT = 8
CHUNK_BYTES = 1 << 20          # target raw size of one HDF5 chunk: 1 MiB
FLUSH_SECONDS = 0.25          # the longest a written chunk waits for its flush (kill -9 keeps every flushed chunk)
Dim = tuple[str, str, float, float]     # (name, units, start, step) of one axis


def default_sig_ndim(ndim: int) -> int:
    """Frame dimensions when not given: scalars for 1-D, rows for 2-D, images for 3-D and 4-D."""
    return {0: 0, 1: 0, 2: 1}.get(ndim, 2)


def chunk_grid(nav_shape: typing.Optional[tuple[int, ...]], frame_shape: tuple[int, ...], itemsize: int,
               chunk_frames: typing.Optional[int] = None) -> tuple[int, int]:
    """(rows r, frames c) of one chunk: ``c`` frames along the last scan axis (about ``CHUNK_BYTES``,
    at most one scan row); when a whole row is smaller, ``r`` rows of it (small frames such as spectra).
    ``chunk_frames`` fixes ``c`` (and r = 1)."""
    frame = max(1, int(np.prod(frame_shape, dtype=np.int64)) * itemsize)
    if chunk_frames:
        return 1, int(chunk_frames)
    c = max(1, CHUNK_BYTES // frame)
    if not nav_shape:
        return 1, c
    last = max(1, nav_shape[-1])
    if c < last or len(nav_shape) < 2:
        return 1, min(c, last)
    return max(1, min(nav_shape[-2], CHUNK_BYTES // (frame * last))), last


def chunk_runs(nav_shape: tuple[int, ...], c: int, r: int = 1) -> typing.Iterator[tuple[tuple[slice, ...], int, int]]:
    """Chunks in write order: (nav slices, first flat frame index, frames in the chunk)."""
    if not nav_shape or 0 in nav_shape:
        return
    last = nav_shape[-1]
    if len(nav_shape) == 1:
        for j in range(0, last, c):
            yield (slice(j, j + min(c, last - j)),), j, min(c, last - j)
        return
    rows = nav_shape[-2]
    for n, lead in enumerate(np.ndindex(*nav_shape[:-2])):
        head = tuple(slice(i, i + 1) for i in lead)
        for i in range(0, rows, r):
            ri = min(r, rows - i)
            for j in range(0, last, c):
                k = min(c, last - j)
                yield head + (slice(i, i + ri), slice(j, j + k)), (n * rows + i) * last + j, ri * k


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
    chunk_frames: frames per chunk along the last scan axis (default: about 1 MiB, at most one scan
    row, or several whole rows when a row is smaller - see :func:`chunk_grid`).
    dims: (name, units, start, step) per axis of the whole array; units: of the values.
    """

    def __init__(self, root: h5py.Group, name: str, frame_shape: tuple[int, ...], dtype: typing.Any,
                 nav_shape: typing.Optional[tuple[int, ...]] = None, codec: typing.Any = "auto",
                 chunk_frames: typing.Optional[int] = None, dims: typing.Optional[typing.Sequence[Dim]] = None,
                 units: str = "") -> None:
        self.name, self.frame_shape, self.dtype = name, tuple(int(s) for s in frame_shape), np.dtype(dtype)
        self.nav_shape = None if nav_shape is None else tuple(int(s) for s in nav_shape)
        if self.dtype.kind not in "uif":
            raise EmedgeError(f"{name}: cannot store dtype {self.dtype} (numeric arrays only)")
        if chunk_frames is not None and int(chunk_frames) < 1:
            raise EmedgeError(f"{name}: chunk_frames must be >= 1")
        self.r, self.c = chunk_grid(self.nav_shape, self.frame_shape, self.dtype.itemsize, chunk_frames)
        nav_ndim = len(self.nav_shape) if self.nav_shape else 1
        self._chunk_nav = (1,) * (nav_ndim - 2) + (self.r, self.c) if nav_ndim >= 2 else (self.c,)
        self._auto = codec if compress.is_auto(codec) else None
        if self._auto is not None:
            compress.auto_threads(self._auto)            # a bad auto spec fails now
        self.codec: typing.Any = None if self._auto else (compress.get(codec) if isinstance(codec, str) else codec)
        if self.codec is not None:
            self.codec.check(self.dtype)
        self.group = root.create_group(name)
        self.group.attrs.update({"emd_group_type": "array", "python_class": "Array"})
        self._dims, self._units = dims, units
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

    @property
    def total(self) -> typing.Optional[int]:
        return None if self.nav_shape is None else int(np.prod(self.nav_shape, dtype=np.int64))

    @property
    def threads(self) -> int:
        """Chunks encoded at once: the codec's ``threads`` (blosc2 / zstd), else 1."""
        if self.codec is None:
            n = compress.auto_threads(self._auto)
            return 2 if n is None else n          # the candidates' default (blosc2 threads=2)
        return max(1, int(getattr(self.codec, "threads", 1)))

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
            from emedge_core.compress.auto import pick, trial_sample

            nav_ndim = len(self.nav_shape) if self.nav_shape else 1
            chunk = np.ascontiguousarray(block).reshape(self._chunk_nav + self.frame_shape)
            sample = trial_sample(chunk, nav_ndim - 1)
            big = self.threads > 1 and sample.nbytes >= 1 << 16     # small samples: no threads for the trial
            choice = pick([sample], nav_ndim - 1, threads=compress.auto_threads(self._auto),
                          pool=self._executor() if big else None)
            self.codec = choice.codec
            payload = choice.payloads[0] if choice.payloads and sample is chunk else None
        if not self._ds:
            self._create()
        if self.threads > 1 and self.codec.kind != "sparse":
            if self._one is None:
                self._one = self.codec.with_threads(1)     # chunks in parallel, each on one thread
            inflight.append((block, k, owned, self._executor().submit(self._encode, self._one, block, k, payload)))
        else:
            inflight.append((block, k, owned, payload))

    def _encode(self, codec: typing.Any, block: np.ndarray, k: int,
                payload: typing.Optional[bytes]) -> tuple[int, typing.Optional[bytes], float]:
        """(CRC-32 of the k frames, the chunk's bytes (None for sparse), their max for lossy bounds).
        Runs on the pool's threads: NumPy, zlib and Blosc2 drop the GIL on chunk-sized work."""
        crc = checksum(block[:k])
        vmax = float(block[:k].max()) if k and self._lossy_transform else -np.inf
        if payload is None and codec.kind != "sparse":
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
            crc, payload, vmax = self._encode(self.codec, block, k, pending)
        if self.codec.kind == "sparse":
            self._write_sparse(block[:k], k)
        else:
            self._write_dense(payload, k)
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
            self.group.attrs["emedge_error_bound"] = json.dumps(self.codec.error_bound(np.array([self._vmax])),
                                                                default=float)
        self._frames_attr.write(np.array(self._committed, np.int64))
        self.group.file.flush()
        self.frames_written, self._flushed_at = self._committed, time.monotonic()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return encode_pool(self.threads)

    def _write_dense(self, payload: bytes, k: int) -> None:
        d = self._ds["data"]
        if self.nav_shape is None:
            offset = (self._committed,) + (0,) * len(self.frame_shape)
            d.resize((self._committed + k, *self.frame_shape))
        else:
            nav = np.unravel_index(self._committed, self.nav_shape)
            offset = tuple(int(i) for i in nav) + (0,) * len(self.frame_shape)
        d.id.write_direct_chunk(offset, payload)

    def _write_sparse(self, block: np.ndarray, k: int) -> None:
        per_frame, index, count = self.codec.events(block.reshape(k, *self.frame_shape))
        for key, values in (("events_per_frame", per_frame), ("event_index", index), ("event_count", count)):
            d = self._ds[key]
            n = d.shape[0]
            d.resize((n + len(values),))
            d[n:] = values

    def _create(self) -> None:
        g, codec = self.group, self.codec
        g.attrs.update({"emedge_nav_ndim": len(self.nav_shape) if self.nav_shape else 1, "emedge_chunk_frames": self.c,
                        "emedge_chunk_rows": self.r})
        if codec.kind == "sparse":
            g.attrs.update({"emd_group_type": "emedge_sparse", "python_class": "EmedgeSparse",
                            "emedge_codec": codec.spec, "emedge_lossless": True, "emedge_original_dtype": self.dtype.str,
                            "frame_shape": np.asarray(self.frame_shape, np.int64),
                            "nav_shape": np.asarray(self.nav_shape or (-1,), np.int64)})
        else:
            g.attrs.update(codec.attrs(self.dtype))
        bound = codec.error_bound()
        if bound is not None:
            g.attrs["emedge_error_bound"] = json.dumps(bound, default=float)
        if codec.kind == "sparse":
            for key, dt in (("events_per_frame", np.uint32), ("event_index", np.uint32), ("event_count", self.dtype)):
                self._ds[key] = g.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dt, chunks=(1 << 16,),
                                                 **codec.stage.h5_filter())
            self._ds["events_per_frame"].attrs["frames_written"] = 0
            self._ds["data"] = self._ds["events_per_frame"]
        else:
            nav = self.nav_shape if self.nav_shape is not None else (0,)
            chunks = self._chunk_nav + self.frame_shape
            d = g.create_dataset("data", shape=nav + self.frame_shape, maxshape=(None, *nav[1:], *self.frame_shape),
                                 dtype=codec.stored_dtype(self.dtype), chunks=chunks, **codec.h5_filter())
            d.attrs["units"] = self._units
            d.attrs["frames_written"] = 0
            self._ds["data"] = d
            self._write_dims(nav + self.frame_shape)
        ck = g.create_dataset("checksums", shape=(0,), maxshape=(None,), dtype=np.uint32, chunks=(len(self._crcs),))
        ck.attrs["algorithm"] = CHECKSUM_ALGORITHM
        self._ds["checksums"] = ck
        self._frames_attr = h5py.h5a.open(self._ds["data"].id, b"frames_written")   # rewritten per chunk

    def _write_dims(self, shape: tuple[int, ...]) -> None:
        dims = list(self._dims or [])
        for i in range(len(shape)):
            name, units, start, step = dims[i] if i < len(dims) else (f"dim{i}", "pixels", 0.0, 1.0)
            d = self.group.create_dataset(f"dim{i}", data=np.array([start, start + step], np.float64))
            d.attrs.update({"name": name, "units": units})

    def close(self) -> dict[str, typing.Any]:
        """Flush a partial last chunk (growing series) and return the array's statistics."""
        if self._k:
            t0, inflight = time.perf_counter(), collections.deque()
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
        if self.total is not None and self.frames_written < self.total:
            raise EmedgeError(f"{self.name}: closed after {self.frames_written} of {self.total} frames")
        return self.stats()

    def stats(self) -> dict[str, typing.Any]:
        """frames, raw_bytes, stored_bytes (the data only: checksums and axes excluded), ratio, seconds
        (time in encode + write + flush), codec, lossless."""
        stored = sum(d.id.get_storage_size() for k, d in self.group.items() if _is_payload(k, d))
        return {"frames": self.frames_written, "raw_bytes": self.raw_bytes, "stored_bytes": stored,
                "ratio": self.raw_bytes / stored if stored else float("nan"), "seconds": self.seconds,
                "codec": self.codec.spec if self.codec else None,
                "lossless": bool(self.codec.lossless) if self.codec else True}


def _create_file(path: str, root: str, provenance: typing.Optional[dict[str, typing.Any]]) -> tuple[h5py.File, h5py.Group]:
    try:
        f = h5py.File(path, "w")
    except OSError as e:
        raise EmedgeError(f"cannot create {path}: {_os_error(e)}") from None
    f.attrs.update({"emd_group_type": "file", "version_major": np.int64(1), "version_minor": np.int64(0),
                    "UUID": str(uuid.uuid4()), "authoring_program": f"nionswift-emedge {__version__}",
                    "authoring_user": ""})
    g = f.create_group(root)
    g.attrs.update({"emd_group_type": "root", "python_class": "Root"})
    bundle = g.create_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    md = bundle.create_group("provenance")
    md.attrs.update({"emd_group_type": "metadata", "python_class": "Metadata"})
    for key, value in (provenance or {}).items():
        ds = md.create_dataset(key, data=json.dumps(value, default=jsonable))
        ds.attrs["type"] = np.bytes_(b"string")
    f.flush()
    return f, g


def _os_error(e: OSError) -> str:
    """One line for an I/O error (HDF5's messages span lines and name buffers)."""
    if e.errno == errno.ENOSPC:
        return "disk full: No space left on device"
    text = " ".join(str(e).split())
    return text if len(text) < 200 else text[:200] + "..."


def jsonable(x: typing.Any) -> typing.Any:
    """``json.dumps`` fallback: NumPy values as lists/numbers, anything else as its string."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


class StreamWriter:
    """Stream frames of one array into a new EMD file in bounded memory (one chunk buffered
    between appends; while an append runs, up to ``INFLIGHT * threads`` chunks are being encoded).

    Extra, small arrays (a survey image, an energy axis) go in with :meth:`write_array`. Write
    errors (a full disk) raise :class:`EmedgeError` saying how many frames the file keeps.
    """

    def __init__(self, path: str, name: str = "data", frame_shape: tuple[int, ...] = (), dtype: typing.Any = "float32",
                 nav_shape: typing.Optional[tuple[int, ...]] = None, codec: typing.Any = "auto",
                 chunk_frames: typing.Optional[int] = None, provenance: typing.Optional[dict[str, typing.Any]] = None,
                 root: str = "data", dims: typing.Optional[typing.Sequence[Dim]] = None, units: str = "") -> None:
        self.path = path
        if not compress.is_auto(codec):      # a codec that cannot store dtype fails before any file is touched
            codec = compress.get(codec) if isinstance(codec, str) else codec
            codec.check(np.dtype(dtype))
        self.file, self.root = _create_file(path, root, provenance)
        self._stats: dict[str, dict[str, typing.Any]] = {}
        self._failed = self._closed = False
        try:
            self.sink = ArraySink(self.root, name, frame_shape, dtype, nav_shape, codec, chunk_frames, dims, units)
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

    def write_array(self, name: str, array: np.ndarray, codec: typing.Any = "auto",
                    sig_ndim: typing.Optional[int] = None, dims: typing.Optional[typing.Sequence[Dim]] = None,
                    units: str = "") -> dict[str, typing.Any]:
        """Write a whole array beside the stream (see :func:`write`)."""
        stats = self._guard(_write_one, self.root, name, np.asarray(array), codec, sig_ndim, dims, units)
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
            raise EmedgeError(f"writing {self.path} failed ({_os_error(e)}); it keeps the {self.sink.frames_written} "
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


def _write_one(root: h5py.Group, name: str, a: np.ndarray, codec: typing.Any, sig_ndim: typing.Optional[int],
               dims: typing.Optional[typing.Sequence[Dim]], units: str) -> dict[str, typing.Any]:
    if a.ndim == 0:
        raise EmedgeError(f"{name}: store scalars as attributes, not arrays")
    sig = default_sig_ndim(a.ndim) if sig_ndim is None else int(sig_ndim)
    if not 0 <= sig <= a.ndim:
        raise EmedgeError(f"{name}: sig_ndim {sig} does not fit an array of shape {a.shape}")
    sig = min(sig, a.ndim - 1)          # a single frame is stored as its rows (shape kept)
    nav, frame = a.shape[:a.ndim - sig], a.shape[a.ndim - sig:]
    sink = ArraySink(root, name, frame, a.dtype, nav, codec, None, dims, units)
    sink.append(a.reshape((-1, *frame)))        # whole chunks are encoded from ``a`` itself (no copy)
    return sink.close()


def write(path: str, arrays: typing.Mapping[str, np.ndarray], codec: typing.Union[str, typing.Mapping[str, str]] = "auto",
          provenance: typing.Optional[dict[str, typing.Any]] = None, root: str = "data",
          sig_ndim: typing.Optional[typing.Mapping[str, int]] = None,
          dims: typing.Optional[typing.Mapping[str, typing.Sequence[Dim]]] = None,
          units: typing.Optional[typing.Mapping[str, str]] = None,
          attrs: typing.Optional[typing.Mapping[str, typing.Any]] = None) -> dict[str, dict[str, typing.Any]]:
    """Write whole arrays into a new EMD file; returns statistics per array.

    codec: one spec for all, or {name: spec} (missing names get ``auto``). sig_ndim: frame
    dimensions per array (default: 0 for 1-D, 1 for 2-D, 2 for 3-D/4-D arrays); the other, leading
    axes are the scan, chunked along its last axis. attrs: extra attributes of the root group.
    """
    f, g = _create_file(path, root, provenance)
    g.attrs.update(dict(attrs or {}))
    stats: dict[str, dict[str, typing.Any]] = {}
    try:
        for name, array in arrays.items():
            spec = codec if isinstance(codec, str) else codec.get(name, "auto")
            try:
                stats[name] = _write_one(g, name, np.asarray(array), spec, (sig_ndim or {}).get(name),
                                         (dims or {}).get(name), (units or {}).get(name, ""))
            except OSError as e:
                raise EmedgeError(f"writing {path} failed at array {name!r} ({_os_error(e)}); arrays before it are "
                                  "kept") from None
    finally:
        try:
            f.close()
        except (OSError, RuntimeError):
            pass
    return stats


# ---------------------------------------------------------------- reading


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise EmedgeError(f"file not found: {path}") from None
    except OSError as e:
        raise EmedgeError(f"cannot open {path} as HDF5 (corrupt or truncated?): {_os_error(e)}") from None


def root_group(f: h5py.File, root: typing.Optional[str]) -> h5py.Group:
    """The EMD root group named ``root``, or the first group with ``emd_group_type='root'``."""
    if root is not None:
        if root not in f:
            raise EmedgeError(f"{f.filename} has no group {root!r}")
        return f[root]
    for g in f.values():
        if isinstance(g, h5py.Group) and g.attrs.get("emd_group_type") == "root":
            return g
    raise EmedgeError(f"{f.filename} is not an EMD 1.0 file (no group with emd_group_type='root')")


def is_array(g: typing.Any) -> bool:
    """True for an EMD array group (dense, or emedge's sparse events)."""
    return isinstance(g, h5py.Group) and g.attrs.get("emd_group_type") in ("array", "emedge_sparse")


def read(path: str, name: typing.Optional[str] = None, root: typing.Optional[str] = None,
         verify: bool = True) -> typing.Any:
    """Arrays of an EMD file: ``{name: array}``, or one array when ``name`` is given.

    Undoes prediction / quantisation / sparse storage; with ``verify`` checks each complete chunk
    of a lossless array against its CRC-32. A stream cut short (crash) reads up to its last flushed
    chunk: growing series are cut there, fixed scans hold zeros after it. Corrupt, truncated or
    foreign files raise :class:`EmedgeError`.
    """
    with _open(path) as f:
        g = root_group(f, root)
        if name is not None:
            if name not in g or not is_array(g[name]):
                raise EmedgeError(f"{path} has no array {name!r} under {g.name}")
            return read_array(g[name], verify)
        return {k: read_array(v, verify) for k, v in g.items() if is_array(v)}


def value(item: typing.Union[h5py.Group, h5py.Dataset], verify: bool = True) -> np.ndarray:
    """The values of an EMD array group (decoded, checked) or of a plain data set - e.g. both
    layouts of ``experiment.h5``: ``emd.value(f["experiment/positions"])``."""
    return read_array(item, verify) if isinstance(item, h5py.Group) else item[()]


def read_array(g: h5py.Group, verify: bool = True) -> np.ndarray:
    """One array group (see :func:`read`)."""
    where = f"{g.file.filename}:{g.name}"
    try:
        if "emedge_codec" not in g.attrs:            # a plain EMD array written by someone else
            return g["data"][()]
        codec = compress.get(str(g.attrs["emedge_codec"]))
        dtype = np.dtype(str(g.attrs["emedge_original_dtype"]))
        nav_ndim, c = int(g.attrs["emedge_nav_ndim"]), int(g.attrs["emedge_chunk_frames"])
        r = int(g.attrs.get("emedge_chunk_rows", 1))
        if codec.kind == "sparse":
            out = _read_sparse(g, codec, dtype)
        else:
            out = _read_dense(g, codec, dtype, nav_ndim, c)
        nav_shape = out.shape[:nav_ndim]
        written = int(g["data" if "data" in g else "events_per_frame"].attrs.get("frames_written", 0))
        if verify and codec.lossless:
            _verify(out, nav_shape, c, r, written, g["checksums"][()], where)
        return out
    except OSError as e:
        raise EmedgeError(f"cannot read {where} (corrupt or truncated file): {_os_error(e)}") from None
    except (KeyError, ValueError) as e:
        raise EmedgeError(f"{where} is not a complete emedge array: {e}") from None


def _read_dense(g: h5py.Group, codec: typing.Any, dtype: np.dtype, nav_ndim: int, c: int) -> np.ndarray:
    d = g["data"]
    written = int(d.attrs.get("frames_written", d.shape[0]))
    growing = d.maxshape[0] is None and nav_ndim == 1
    shape = ((min(written, d.shape[0]),) if growing else d.shape[:nav_ndim]) + d.shape[nav_ndim:]
    if codec.transform is None:
        out = d[:shape[0]]
    else:
        out = np.zeros(shape, dtype)
        for nav, _, _ in chunk_runs(shape[:nav_ndim], c):
            out[nav] = codec.inverse(d[nav], nav_ndim - 1, dtype)
    out.reshape((-1, *shape[nav_ndim:]))[written:] = 0    # chunks written after the last flush: not vouched for
    return out


def _read_sparse(g: h5py.Group, codec: typing.Any, dtype: np.dtype) -> np.ndarray:
    frame_shape = tuple(int(s) for s in g.attrs["frame_shape"])
    nav_shape = tuple(int(s) for s in g.attrs["nav_shape"])
    per_frame = g["events_per_frame"]
    written = int(per_frame.attrs.get("frames_written", per_frame.shape[0]))
    pf = per_frame[:written]
    nnz = int(pf.sum())
    frames = codec.frames(pf, g["event_index"][:nnz], g["event_count"][:nnz], frame_shape, dtype)
    if nav_shape == (-1,):
        return frames
    out = np.zeros((int(np.prod(nav_shape)), *frame_shape), dtype)
    out[:written] = frames
    return out.reshape(nav_shape + frame_shape)


def _verify(out: np.ndarray, nav_shape: tuple[int, ...], c: int, r: int, written: int, crcs: np.ndarray,
            where: str) -> None:
    flat = out.reshape((-1, *out.shape[len(nav_shape):]))
    for j, (_, start, k) in enumerate(chunk_runs(nav_shape, c, r)):
        if start + k > written or j >= len(crcs):
            break
        if checksum(flat[start:start + k]) != int(crcs[j]):
            raise EmedgeError(f"{where}: chunk {j} (frames {start}..{start + k - 1}) fails its CRC-32 checksum "
                              "(corrupt data)")


def info(path: str) -> dict[str, typing.Any]:
    """Layout, codecs, ratios and provenance of an EMD file (what ``emedge inspect`` prints)."""
    with _open(path) as f:
        g = root_group(f, None)
        prov: dict[str, typing.Any] = {}
        md = g.get("metadatabundle/provenance")
        for key in (md.keys() if md is not None else ()):
            raw = md[key][()]
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                prov[key] = json.loads(text)
            except ValueError:
                prov[key] = text
        arrays = {}
        for name, a in g.items():
            if not is_array(a):
                continue
            ds = [d for k, d in a.items() if _is_payload(k, d)]
            stored = sum(d.id.get_storage_size() for d in ds)
            dtype = np.dtype(str(a.attrs.get("emedge_original_dtype", ds[0].dtype.str if ds else "u1")))
            main = a["data"] if "data" in a else a.get("events_per_frame")
            if a.attrs.get("emd_group_type") == "emedge_sparse":
                nav = tuple(int(s) for s in a.attrs["nav_shape"])
                written = int(main.attrs.get("frames_written", 0))
                shape = ((written,) if nav == (-1,) else nav) + tuple(int(s) for s in a.attrs["frame_shape"])
            else:
                shape = tuple(main.shape) if main is not None else ()
            raw = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            arrays[name] = {"shape": list(shape), "dtype": dtype.name, "codec": a.attrs.get("emedge_codec", "h5py"),
                            "lossless": bool(a.attrs.get("emedge_lossless", True)),
                            "error_bound": json.loads(a.attrs["emedge_error_bound"]) if "emedge_error_bound" in a.attrs else None,
                            "chunks": list(main.chunks or ()) if main is not None else [],
                            "filters": _filters(main), "frames_written": int(main.attrs.get("frames_written", -1))
                            if main is not None else 0,
                            "raw_bytes": raw, "stored_bytes": stored, "ratio": raw / stored if stored else None}
        root_attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        return {"path": path, "file_attrs": root_attrs, "root": g.name, "arrays": arrays, "provenance": prov}


def _is_payload(key: str, item: typing.Any) -> bool:
    """True for the data sets that hold an array's values (not its checksums or axis vectors)."""
    return isinstance(item, h5py.Dataset) and key != "checksums" and not key.startswith("dim")


def _filters(d: typing.Optional[h5py.Dataset]) -> list[str]:
    if d is None:
        return []
    plist = d.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _, _, fname = plist.get_filter(i)
        out.append(f"{code} {fname.decode(errors='replace').split(';')[0]}")
    return out

