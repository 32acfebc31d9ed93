"""The shared pass as one CUDA kernel: frames of any common dtype -> projections and maxima, one read.

On the GPU the generic path (cast to float32, then a skinny GEMM, then a max) reads an integer
chunk three times and writes a float32 copy of it; for a reduction that only needs the
projections (CoM, DPC, virtual detectors) that is most of the time. :func:`project_max` reads
each frame once, converts in registers, and accumulates up to 8 weight rows and the maximum:
one block per frame, vectorised 4-element loads, warp-shuffle reductions. It is compiled by
CuPy's NVRTC on first use; the PyTorch backend calls it on its own stream through DLPack.
Anything it does not cover (more than 8 rows, a frame size not divisible by 4, an unaligned or
non-contiguous chunk, another dtype) returns None and the caller takes the generic path; a
failure to compile warns once and turns the kernel off for the process.
"""
from __future__ import annotations

import functools
import typing

import numpy as np

from emedge_core.scalarize.notice import warn_once

MAX_ROWS = 8
THREADS = 256

_SOURCE = r"""
template <typename T, typename V>
__global__ void project_max(const T* __restrict__ x, const float* __restrict__ w, const int n, const int P,
                            const int k, float* __restrict__ proj, float* __restrict__ maxv) {
    const int frame = blockIdx.x;
    const V* row = reinterpret_cast<const V*>(x + (size_t)frame * P);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    const int P4 = P >> 2;
    const float neg_inf = __int_as_float(0xff800000);
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    float mx = neg_inf;
    for (int q = threadIdx.x; q < P4; q += blockDim.x) {
        const V v = row[q];
        const float a = (float)v.x, b = (float)v.y, c = (float)v.z, d = (float)v.w;
        mx = fmaxf(mx, fmaxf(fmaxf(a, b), fmaxf(c, d)));
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            if (r < k) {
                const float4 u = w4[(size_t)r * P4 + q];
                acc[r] += u.x * a + u.y * b + u.z * c + u.w * d;
            }
        }
    }
    __shared__ float part[9][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        float s = acc[r];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) part[r][warp] = s;
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_down_sync(0xffffffffu, mx, o));
    if (lane == 0) part[8][warp] = mx;
    __syncthreads();
    if (warp == 0) {
        for (int r = 0; r < 9; ++r) {
            if (r < k || r == 8) {
                float s = lane < warps ? part[r][lane] : (r == 8 ? neg_inf : 0.f);
                for (int o = 16; o > 0; o >>= 1) {
                    const float t = __shfl_down_sync(0xffffffffu, s, o);
                    s = (r == 8) ? fmaxf(s, t) : s + t;
                }
                if (lane == 0) {
                    if (r == 8) maxv[frame] = s; else proj[(size_t)r * n + frame] = s;
                }
            }
        }
    }
}
"""

#: dtype -> the kernel's (element type, 4-vector type)
_TYPES: dict[np.dtype[typing.Any], tuple[str, str]] = {
    np.dtype(np.float32): ("float", "float4"), np.dtype(np.uint16): ("unsigned short", "ushort4"),
    np.dtype(np.int16): ("short", "short4"), np.dtype(np.uint8): ("unsigned char", "uchar4"),
    np.dtype(np.uint32): ("unsigned int", "uint4"), np.dtype(np.int32): ("int", "int4")}

_broken: list[str] = []


def _name(dtype: np.dtype) -> str:
    t, v = _TYPES[dtype]
    return f"project_max<{t}, {v}>"


@functools.lru_cache(maxsize=1)
def _module() -> typing.Any:
    import cupy

    return cupy.RawModule(code=_SOURCE, options=("-std=c++14",), name_expressions=[_name(d) for d in _TYPES])


@functools.lru_cache(maxsize=8)
def _ones(pixels: int, device: int) -> typing.Any:
    import cupy

    with cupy.cuda.Device(device):
        return cupy.ones((1, pixels), cupy.float32)


def project_max(flat: typing.Any, weights: typing.Any) -> typing.Optional[tuple[typing.Any, typing.Any]]:
    """(k, n) float32 projections of CuPy frames ``flat`` (n, P) on ``weights`` (k, P) float32 (None:
    one row of ones, the frame totals) and the (n,) float32 frame maxima; None where the kernel
    does not apply (see the module docstring) or is turned off."""
    import cupy

    dtype = np.dtype(flat.dtype)
    n, pixels = (int(s) for s in flat.shape)
    if _broken or dtype not in _TYPES or pixels % 4 or n == 0 or not flat.flags.c_contiguous \
            or flat.data.ptr % (4 * dtype.itemsize):
        return None
    w = _ones(pixels, flat.device.id) if weights is None else weights
    if w.dtype != cupy.float32 or w.ndim != 2 or w.shape[1] != pixels or w.shape[0] > MAX_ROWS \
            or not w.flags.c_contiguous:
        return None
    try:
        kernel = _module().get_function(_name(dtype))
    except Exception as e:  # no NVRTC, a compiler error: the generic path still works
        _broken.append(str(e))
        warn_once(f"fused CUDA projection kernel unavailable ({type(e).__name__}: {e}); using cast + GEMM")
        return None
    proj = cupy.empty((int(w.shape[0]), n), cupy.float32)
    maxv = cupy.empty(n, cupy.float32)
    kernel((n,), (THREADS,), (flat, w, np.int32(n), np.int32(pixels), np.int32(w.shape[0]), proj, maxv))
    return proj, maxv
