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

On the CPU the pass is one compiled loop (Numba, :mod:`.cpu_kernels`) that reads each
frame from memory once and releases the GIL; the executor runs chunks on threads, one
per core.
On CUDA the chunk goes through pinned host memory on a copy stream, so the
transfer of chunk i+1 overlaps the compute on chunk i (:meth:`Backend.uploads`), and the
shared pass is one fused kernel that reads each frame once (:mod:`.cuda_kernels`).

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

import numpy as np

from emedge_core import EmedgeError
from emedge_core.scalarize.notice import warn_once

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
    jobs = [_copy_pool().submit(np.copyto, dst[a:b], src[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
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
    #: the array library computes on integer frames as it does on float32 ones (CUDA backends: no)
    integer_frames = True

    def __init__(self) -> None:
        import array_api_compat.numpy as xp

        self.xp: typing.Any = xp
        self.device = "cpu"
        self._axes: typing.Optional[tuple[typing.Any, typing.Any]] = None   # (weights, their coordinate axes)

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

    def host_buffer(self, shape: tuple[int, ...], dtype: typing.Any) -> np.ndarray:
        """A host array for an acquisition to write frames into; on CUDA it is page-locked, and
        chunks in it go to the card without the staging copy."""
        return np.empty(shape, dtype)

    # -- the shared pass ----------------------------------------------------------
    def load(self, raw: typing.Any, weights: typing.Any, want_max: bool, keep_frames: bool = True) -> Chunk:
        """Frames ``raw`` (n, *sig) of any real dtype -> :class:`Chunk`.

        weights: (k, P) float32 device array, row 0 >= 0 (P = pixels per frame), or None
        for the frame totals alone. keep_frames: False when the reduction reads only the
        projections; ``Chunk.data`` is then the raw frames (any dtype), not a float32 copy.
        """
        from emedge_core.scalarize import cpu_kernels

        raw = np.asarray(raw)
        src = raw.reshape(raw.shape[0], -1)
        axes = None
        if weights is not None:             # looked at once per weights array (per data set)
            if self._axes is None or self._axes[0] is not weights:
                self._axes = (weights, cpu_kernels.coordinate_axes(weights, raw.shape[1:]))
            axes = self._axes[1]
        # the pass reads the raw frames (integers convert exactly in its registers): half the bytes
        # of a float32 copy of uint16 frames, made afterwards only when the reduction reads frames
        proj, maxv = cpu_kernels.project_max(src, weights, want_max, axes)
        if keep_frames and src.dtype != np.float32:
            src = src.astype(np.float32)
        data = src if keep_frames else raw
        return Chunk(data.reshape(raw.shape), proj, maxv)


class _CudaBackend(Backend):
    """What CuPy and PyTorch on CUDA share: the overlapped upload pipeline.

    Host chunks are copied into page-locked staging buffers (kept for the backend's life, two
    in turn; the copy split over threads by :func:`stage_copy`) and sent on a copy stream, so
    chunk i+1 travels while chunk i is reduced. A chunk already in page-locked memory (e.g. a
    :meth:`host_buffer`) is sent as it is.
    """

    integer_frames = False

    def __init__(self) -> None:
        self._staging: list[typing.Any] = [None, None]   # (owner, uint8 numpy view) per slot
        self._copy_stream: typing.Any = None

    def host_buffer(self, shape: tuple[int, ...], dtype: typing.Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        _, view = self._pinned(max(nbytes, 1))     # the view's base keeps the pinned memory alive
        return view[:nbytes].view(dtype).reshape(shape)

    # backend-specific steps
    def _pinned(self, nbytes: int) -> tuple[typing.Any, np.ndarray]:
        """(owner object, uint8 NumPy view) of ``nbytes`` of page-locked host memory."""
        raise NotImplementedError

    def _is_pinned(self, host: np.ndarray) -> bool:
        raise NotImplementedError

    def _new_copy_stream(self) -> typing.Any:
        raise NotImplementedError

    def _send(self, staged: np.ndarray, stream: typing.Any) -> tuple[typing.Any, typing.Any]:
        """Start the copy of ``staged`` on ``stream``: (device array, event recorded after it)."""
        raise NotImplementedError

    def _ready(self, dev: typing.Any, event: typing.Any) -> typing.Any:
        """Make the compute stream wait for ``event``; the device array, safe to use there."""
        raise NotImplementedError

    def uploads(self, chunks: typing.Iterable[np.ndarray]) -> typing.Iterator[tuple[np.ndarray, typing.Any]]:
        if self._copy_stream is None:
            self._copy_stream = self._new_copy_stream()
        self._copy_stream.synchronize()          # a buffer from an earlier, interrupted stream may be in flight
        done: list[typing.Any] = [None, None]
        pending: typing.Optional[tuple[np.ndarray, typing.Any, typing.Any]] = None
        for i, host in enumerate(chunks):
            slot = i % 2
            host = np.ascontiguousarray(host)
            if done[slot] is not None:
                done[slot].synchronize()
            if self._is_pinned(host):
                staged = host
            else:
                if self._staging[slot] is None or self._staging[slot][1].nbytes < host.nbytes:
                    self._staging[slot] = None
                    self._staging[slot] = self._pinned(host.nbytes)
                staged = self._staging[slot][1][:host.nbytes].view(host.dtype).reshape(host.shape)
                stage_copy(staged, host)
            dev, done[slot] = self._send(staged, self._copy_stream)
            if pending is not None:
                yield pending[0], self._ready(pending[1], pending[2])
            pending = (host, dev, done[slot])
        if pending is not None:
            yield pending[0], self._ready(pending[1], pending[2])


class TorchBackend(_CudaBackend):
    """PyTorch on ``device`` ("cpu" or "cuda[:i]")."""

    name = "torch"

    def __init__(self, device: str) -> None:
        import array_api_compat.torch as xp
        import torch

        super().__init__()
        self.torch = torch
        self.xp = xp
        self.device = device
        if device.startswith("cuda"):
            torch.zeros(1, device=device)  # fail here, not mid-stream, when the card is unusable

    def asarray(self, a: typing.Any, dtype: typing.Any = None) -> typing.Any:
        return self.torch.as_tensor(a, dtype=dtype, device=self.device)

    def to_numpy(self, x: typing.Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)

    def host_buffer(self, shape: tuple[int, ...], dtype: typing.Any) -> np.ndarray:
        return super().host_buffer(shape, dtype) if self.device.startswith("cuda") else np.empty(shape, dtype)

    def uploads(self, chunks: typing.Iterable[np.ndarray]) -> typing.Iterator[tuple[np.ndarray, typing.Any]]:
        if not self.device.startswith("cuda"):
            for host in chunks:
                yield host, self.torch.as_tensor(np.ascontiguousarray(host))
            return
        yield from super().uploads(chunks)

    def _pinned(self, nbytes: int) -> tuple[typing.Any, np.ndarray]:
        t = self.torch.empty(nbytes, dtype=self.torch.uint8, pin_memory=True)
        return t, t.numpy()

    def _is_pinned(self, host: np.ndarray) -> bool:
        try:
            return bool(self.torch.from_numpy(host).is_pinned())
        except (TypeError, ValueError, RuntimeError):     # read-only or odd arrays: stage them
            return False

    def _new_copy_stream(self) -> typing.Any:
        return self.torch.cuda.Stream(device=self.device)

    def _send(self, staged: np.ndarray, stream: typing.Any) -> tuple[typing.Any, typing.Any]:
        torch = self.torch
        with torch.cuda.stream(stream):
            dev = torch.from_numpy(staged).to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        return dev, event

    def _ready(self, dev: typing.Any, event: typing.Any) -> typing.Any:
        current = self.torch.cuda.current_stream(self.device)
        current.wait_event(event)
        dev.record_stream(current)
        return dev

    def is_device_error(self, exc: BaseException) -> bool:
        words = ("CUDA", "cuDNN", "cuBLAS", "device-side")
        return self.device.startswith("cuda") and (
            isinstance(exc, self.torch.OutOfMemoryError)
            or (isinstance(exc, RuntimeError) and any(w in str(exc) for w in words)))

    def _fused(self, flat: typing.Any, weights: typing.Any) -> typing.Optional[tuple[typing.Any, typing.Any]]:
        """The one-read CUDA kernel through CuPy (zero-copy DLPack, on PyTorch's current stream)."""
        if not self.device.startswith("cuda") or not _cuda_devices()["cupy"]:
            return None
        import cupy

        from emedge_core.scalarize import cuda_kernels

        torch = self.torch
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(self.device).cuda_stream):
            try:
                frames = cupy.from_dlpack(flat.contiguous())
                rows = None if weights is None else cupy.from_dlpack(weights.contiguous())
            except (BufferError, TypeError, RuntimeError, ValueError):   # a dtype DLPack cannot carry
                return None
            out = cuda_kernels.project_max(frames, rows)
        return None if out is None else (torch.from_dlpack(out[0]), torch.from_dlpack(out[1]))

    def load(self, raw: typing.Any, weights: typing.Any, want_max: bool, keep_frames: bool = True) -> Chunk:
        torch = self.torch
        x = torch.as_tensor(raw, device=self.device)
        flat = x.reshape(x.shape[0], -1)
        fused = self._fused(flat, weights)
        if fused is not None:
            data = x.to(torch.float32) if keep_frames and x.dtype != torch.float32 else x
            return Chunk(data, fused[0], fused[1] if want_max else None)
        data = x if x.dtype == torch.float32 else x.to(torch.float32)
        flat = data.reshape(data.shape[0], -1)
        proj = flat.sum(dim=1)[None] if weights is None else weights @ flat.T
        maxv = flat.amax(dim=1) if want_max else None
        return Chunk(data, proj, maxv)


class CupyBackend(_CudaBackend):
    """CuPy on the current CUDA device (or ``cuda:i``)."""

    name = "cupy"

    def __init__(self, device: str = "cuda:0") -> None:
        import array_api_compat.cupy as xp
        import cupy

        super().__init__()
        self.cupy = cupy
        self.xp = xp
        self.device = device
        cupy.cuda.Device(int(device.split(":")[1]) if ":" in device else 0).use()
        cupy.zeros(1)

    def asarray(self, a: typing.Any, dtype: typing.Any = None) -> typing.Any:
        return self.cupy.asarray(a, dtype=dtype)

    def to_numpy(self, x: typing.Any) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def _pinned(self, nbytes: int) -> tuple[typing.Any, np.ndarray]:
        import cupyx

        view = cupyx.empty_pinned((nbytes,), np.uint8)
        return view, view

    def _is_pinned(self, host: np.ndarray) -> bool:
        try:
            attrs = self.cupy.cuda.runtime.pointerGetAttributes(host.ctypes.data)
        except Exception:  # unregistered memory raises on some CUDA versions
            return False
        return int(getattr(attrs, "type", 0)) == 1       # cudaMemoryTypeHost

    def _new_copy_stream(self) -> typing.Any:
        return self.cupy.cuda.Stream(non_blocking=True)

    def _send(self, staged: np.ndarray, stream: typing.Any) -> tuple[typing.Any, typing.Any]:
        with stream:
            dev = self.cupy.empty(staged.shape, staged.dtype)
            dev.set(staged, stream=stream)
            event = stream.record()
        return dev, event

    def _ready(self, dev: typing.Any, event: typing.Any) -> typing.Any:
        self.cupy.cuda.get_current_stream().wait_event(event)
        return dev

    def is_device_error(self, exc: BaseException) -> bool:
        cuda = self.cupy.cuda
        return isinstance(exc, (cuda.memory.OutOfMemoryError, cuda.runtime.CUDARuntimeError,
                                cuda.driver.CUDADriverError))

    def load(self, raw: typing.Any, weights: typing.Any, want_max: bool, keep_frames: bool = True) -> Chunk:
        from emedge_core.scalarize import cuda_kernels

        cupy = self.cupy
        x = cupy.asarray(raw)
        fused = cuda_kernels.project_max(x.reshape(x.shape[0], -1), weights)
        if fused is not None:
            data = x.astype(cupy.float32) if keep_frames and x.dtype != cupy.float32 else x
            return Chunk(data, fused[0], fused[1] if want_max else None)
        data = x if x.dtype == cupy.float32 else x.astype(cupy.float32)
        flat = data.reshape(data.shape[0], -1)
        proj = flat.sum(axis=1)[None] if weights is None else weights @ flat.T
        maxv = flat.max(axis=1) if want_max else None
        return Chunk(data, proj, maxv)


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


def get_backend(name: typing.Optional[str] = "auto", dtype: typing.Any = None) -> Backend:
    """A backend by name: ``auto`` (default; ``$EMEDGE_BACKEND`` when set), ``numpy``, ``torch``
    (CUDA when available, else CPU), ``torch:cpu``, ``torch:cuda[:i]``, ``cupy``, ``cupy:cuda:i``.

    Without a GPU, ``auto`` takes NumPy for every ``dtype`` (accepted for callers that know it):
    PyTorch on the CPU measured faster for float32 on an idle 2-core box but several times slower
    when other work shares the cores, as it does in Swift.

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
