"""Array backends: NumPy on the CPU; CuPy or PyTorch on CUDA (PyTorch also on the CPU).

A :class:`Backend` hands the reductions an array-API namespace (``be.xp``, from
``array_api_compat``) so the maths is written once, and does the one heavy step
every reduction shares: :meth:`Backend.load` brings a chunk of frames onto the
device as float32 and, in the same pass over the data, projects it on the
reduction's weight rows (e.g. a virtual-detector mask, or the mask and the masked
CoM coordinates; without rows, the frame totals) and takes the frame maxima when
saturation is checked. Row 0 has weights >= 0: a NaN or inf pixel anywhere makes
its projection non-finite (0 * NaN is NaN) and an all-zero frame makes it zero,
so it screens the frames for bad ones at no extra cost.

On NumPy the pass is tiled so each tile (512 KiB) is cast, maxed and multiplied
while it sits in the core's cache: one read of the data from memory. Tiles stay
small enough that OpenBLAS runs them on one thread, which holds up on a busy machine.
On CUDA the chunk goes through pinned host memory on a copy stream, so the
transfer of chunk i+1 overlaps the compute on chunk i (:meth:`Backend.uploads`).

``get_backend("auto")`` picks CuPy, then PyTorch on CUDA, then NumPy; a name
(``numpy``, ``torch``, ``torch:cpu``, ``torch:cuda:1``, ``cupy``) or the
``EMEDGE_BACKEND`` environment variable overrides it. A GPU backend that cannot
start falls back to NumPy with one warning.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import typing
import warnings

import numpy as np

from emedge_core import EmedgeError

#: bytes of float32 per CPU tile: in a core's L2 cache, and a GEMM OpenBLAS keeps on one thread
TILE_BYTES = 512 << 10
#: host copies into pinned staging memory larger than this are split over threads
PARALLEL_COPY_BYTES = 8 << 20


@functools.lru_cache(maxsize=1)
def _copy_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)),
                                                 thread_name_prefix="emedge-stage")


def stage_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for (n, ...) arrays, split along axis 0 over up to 8 threads when large.

    One core copies host memory at 5-10 GB/s, below a PCIe 4/5 link's pinned host->device rate;
    NumPy drops the GIL while it copies, so threads add up.
    """
    workers = _copy_pool()._max_workers
    if src.nbytes < PARALLEL_COPY_BYTES or workers == 1 or len(src) < 2:
        dst[...] = src
        return
    bounds = np.linspace(0, len(src), min(workers, len(src)) + 1).astype(int)
    jobs = [_copy_pool().submit(np.copyto, dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for job in jobs:
        job.result()


@dataclasses.dataclass
class Chunk:
    """A chunk of frames on the device.

    data: (n, *sig) float32 frames; proj: (k, n) float32 projections on the reduction's
    k weight rows, or (1, n) frame totals (counts) when it has none; maxv: (n,) float32
    frame maxima (counts) or None when saturation is not checked.
    """

    data: typing.Any
    proj: typing.Any
    maxv: typing.Optional[typing.Any]


class Backend:
    """NumPy on the CPU. Subclasses move the arrays to a device."""

    name = "numpy"

    def __init__(self) -> None:
        import array_api_compat.numpy as xp

        self.xp: typing.Any = xp
        self.device = "cpu"

    def __repr__(self) -> str:
        return f"{self.name}:{self.device}" if self.name != "numpy" else "numpy"

    # -- host <-> device ----------------------------------------------------------
    def asarray(self, a: typing.Any, dtype: typing.Any = None) -> typing.Any:
        """Host array -> device array (``dtype`` from ``self.xp``)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, x: typing.Any) -> np.ndarray:
        """Device array -> host NumPy array."""
        return np.asarray(x)

    def uploads(self, chunks: typing.Iterable[np.ndarray]) -> typing.Iterator[tuple[np.ndarray, typing.Any]]:
        """Yield (host, device) pairs; on CUDA the next chunk's copy overlaps this one's compute."""
        for host in chunks:
            yield host, host

    def is_device_error(self, exc: BaseException) -> bool:
        """True for errors of the device itself (out of memory, driver): fall back to the CPU."""
        return False

    # -- the shared pass ----------------------------------------------------------
    def load(self, raw: typing.Any, weights: typing.Any, want_max: bool) -> Chunk:
        """Frames ``raw`` (n, *sig) of any real dtype -> :class:`Chunk`.

        weights: (k, P) float32 device array, row 0 >= 0 (P = pixels per frame), or None
        for the frame totals alone.
        """
        n = raw.shape[0]
        p = int(np.prod(raw.shape[1:]))
        src = np.ascontiguousarray(raw).reshape(n, p)
        data = src if src.dtype == np.float32 else np.empty((n, p), np.float32)
        proj = np.empty((1 if weights is None else weights.shape[0], n), np.float32)
        maxv = np.empty(n, np.float32) if want_max else None
        if weights is None:          # the totals as a GEMM too: faster than np.sum(axis=1) here
            weights = np.ones((1, p), np.float32)
        step = max(1, TILE_BYTES // (4 * p))
        for i in range(0, n, step):
            tile = slice(i, min(i + step, n))
            if data is not src:
                np.copyto(data[tile], src[tile], casting="unsafe")
            if maxv is not None:                  # on the float32 tile: faster than on uint16
                np.max(data[tile], axis=1, out=maxv[tile])
            np.matmul(weights, data[tile].T, out=proj[:, tile])
        return Chunk(data.reshape(raw.shape), proj, maxv)


class TorchBackend(Backend):
    """PyTorch on ``device`` ("cpu" or "cuda[:i]")."""

    name = "torch"

    def __init__(self, device: str) -> None:
        import array_api_compat.torch as xp
        import torch

        self.torch = torch
        self.xp = xp
        self.device = device
        if device.startswith("cuda"):
            torch.zeros(1, device=device)  # fail here, not mid-stream, when the card is unusable

    def asarray(self, a: typing.Any, dtype: typing.Any = None) -> typing.Any:
        return self.torch.as_tensor(a, dtype=dtype, device=self.device)

    def to_numpy(self, x: typing.Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)

    def uploads(self, chunks: typing.Iterable[np.ndarray]) -> typing.Iterator[tuple[np.ndarray, typing.Any]]:
        torch = self.torch
        if not self.device.startswith("cuda"):
            for host in chunks:
                yield host, torch.as_tensor(np.ascontiguousarray(host))
            return
        copy_stream = torch.cuda.Stream(device=self.device)
        ring: list[typing.Any] = [None, None]     # pinned staging buffers, reused in turn
        done: list[typing.Any] = [None, None]     # copy-finished events guarding them
        pending: typing.Optional[tuple[np.ndarray, typing.Any, typing.Any]] = None
        for i, host in enumerate(chunks):
            slot = i % 2
            host = np.ascontiguousarray(host)
            if done[slot] is not None:
                done[slot].synchronize()
            if ring[slot] is None or ring[slot].shape != host.shape or ring[slot].numpy().dtype != host.dtype:
                ring[slot] = torch.empty(host.shape, dtype=torch.from_numpy(host[:0]).dtype, pin_memory=True)
            stage_copy(ring[slot].numpy(), host)
            with torch.cuda.stream(copy_stream):
                dev = ring[slot].to(self.device, non_blocking=True)
                done[slot] = torch.cuda.Event()
                done[slot].record(copy_stream)
            if pending is not None:
                yield self._ready(pending)
            pending = (host, dev, done[slot])
        if pending is not None:
            yield self._ready(pending)

    def _ready(self, pending: tuple[np.ndarray, typing.Any, typing.Any]) -> tuple[np.ndarray, typing.Any]:
        host, dev, event = pending
        current = self.torch.cuda.current_stream(self.device)
        current.wait_event(event)
        dev.record_stream(current)
        return host, dev

    def is_device_error(self, exc: BaseException) -> bool:
        words = ("CUDA", "cuDNN", "cuBLAS", "device-side")
        return self.device.startswith("cuda") and (
            isinstance(exc, self.torch.OutOfMemoryError)
            or (isinstance(exc, RuntimeError) and any(w in str(exc) for w in words)))

    def load(self, raw: typing.Any, weights: typing.Any, want_max: bool) -> Chunk:
        torch = self.torch
        x = torch.as_tensor(raw, device=self.device)
        data = x if x.dtype == torch.float32 else x.to(torch.float32)
        flat = data.reshape(data.shape[0], -1)
        proj = flat.sum(dim=1)[None] if weights is None else weights @ flat.T
        maxv = flat.amax(dim=1) if want_max else None
        return Chunk(data, proj, maxv)


class CupyBackend(Backend):
    """CuPy on the current CUDA device (or ``cuda:i``)."""

    name = "cupy"

    def __init__(self, device: str = "cuda:0") -> None:
        import array_api_compat.cupy as xp
        import cupy

        self.cupy = cupy
        self.xp = xp
        self.device = device
        cupy.cuda.Device(int(device.split(":")[1]) if ":" in device else 0).use()
        cupy.zeros(1)

    def asarray(self, a: typing.Any, dtype: typing.Any = None) -> typing.Any:
        return self.cupy.asarray(a, dtype=dtype)

    def to_numpy(self, x: typing.Any) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def uploads(self, chunks: typing.Iterable[np.ndarray]) -> typing.Iterator[tuple[np.ndarray, typing.Any]]:
        import cupyx

        cupy = self.cupy
        copy_stream = cupy.cuda.Stream(non_blocking=True)
        ring: list[typing.Any] = [None, None]
        done: list[typing.Any] = [None, None]
        pending: typing.Optional[tuple[np.ndarray, typing.Any, typing.Any]] = None
        for i, host in enumerate(chunks):
            slot = i % 2
            host = np.ascontiguousarray(host)
            if done[slot] is not None:
                done[slot].synchronize()
            if ring[slot] is None or ring[slot].shape != host.shape or ring[slot].dtype != host.dtype:
                ring[slot] = cupyx.empty_pinned(host.shape, host.dtype)
            stage_copy(ring[slot], host)
            with copy_stream:
                dev = cupy.empty(host.shape, host.dtype)
                dev.set(ring[slot], stream=copy_stream)
                done[slot] = copy_stream.record()
            if pending is not None:
                yield self._ready(pending)
            pending = (host, dev, done[slot])
        if pending is not None:
            yield self._ready(pending)

    def _ready(self, pending: tuple[np.ndarray, typing.Any, typing.Any]) -> tuple[np.ndarray, typing.Any]:
        host, dev, event = pending
        self.cupy.cuda.get_current_stream().wait_event(event)
        return host, dev

    def is_device_error(self, exc: BaseException) -> bool:
        cuda = self.cupy.cuda
        return isinstance(exc, (cuda.memory.OutOfMemoryError, cuda.runtime.CUDARuntimeError,
                                cuda.driver.CUDADriverError))

    def load(self, raw: typing.Any, weights: typing.Any, want_max: bool) -> Chunk:
        cupy = self.cupy
        x = cupy.asarray(raw)
        data = x if x.dtype == cupy.float32 else x.astype(cupy.float32)
        flat = data.reshape(data.shape[0], -1)
        proj = flat.sum(axis=1)[None] if weights is None else weights @ flat.T
        maxv = flat.max(axis=1) if want_max else None
        return Chunk(data, proj, maxv)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One ``RuntimeWarning`` per distinct message and process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _cuda_devices() -> dict[str, bool]:
    found = {"cupy": False, "torch": False}
    try:
        import cupy

        found["cupy"] = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # not installed, no driver, no device: all mean "not here"
        pass
    try:
        import torch

        found["torch"] = torch.cuda.is_available()
    except ImportError:
        pass
    return found


def get_backend(name: typing.Optional[str] = "auto") -> Backend:
    """A backend by name: ``auto`` (default; ``$EMEDGE_BACKEND`` when set), ``numpy``, ``torch``
    (CUDA when available, else CPU), ``torch:cpu``, ``torch:cuda[:i]``, ``cupy``, ``cupy:cuda:i``.

    A GPU backend that cannot start (not installed, no device, driver error) gives NumPy and
    one warning; an unknown name raises :class:`~emedge_core.EmedgeError`.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = os.environ.get("EMEDGE_BACKEND", "auto").strip().lower() or "auto"
    if name == "auto":
        cuda = _cuda_devices()
        name = "cupy" if cuda["cupy"] else "torch:cuda" if cuda["torch"] else "numpy"
    kind, _, device = name.partition(":")
    if kind == "numpy":
        return Backend()
    if kind not in ("torch", "cupy"):
        raise EmedgeError(f"unknown backend {name!r}; use auto, numpy, torch[:cpu|:cuda[:i]] or cupy[:cuda:i]")
    try:
        if kind == "torch":
            import torch

            return TorchBackend(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return CupyBackend(device or "cuda:0")
    except Exception as e:  # ImportError, no device, driver errors: the CPU still works
        warn_once(f"backend {name!r} unavailable ({type(e).__name__}: {e}); using numpy on the CPU")
        return Backend()
