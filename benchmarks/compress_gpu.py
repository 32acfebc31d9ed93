"""nvCOMP on the GPU beside the CPU codecs, same data, same machine, one run: one JSON line per set x method.

    python benchmarks/compress_gpu.py [--quick] [--repeat N]

Data: the sets of ``benchmarks/compress.py`` (electron counting at three doses, integrating,
EELS spectrum image, in-situ series). GPU methods (PyPI ``nvidia-nvcomp-cu13``/``-cu12``, CuPy):
LZ4, Snappy, Zstd, GDeflate, Deflate, Cascaded, Bitcomp and ANS through ``nvidia.nvcomp.Codec``,
typed with the data's dtype where the algorithm takes one, each checked bit-exact on decode.
Per method: ratio, compress and decompress GB/s with the data already on the card ("resident")
and compress GB/s from host memory (upload + encode + compressed bytes back, "from_host").
CPU peers on the same host: Blosc2 zstd5 + bitshuffle and Blosc2 LZ4 + bitshuffle
(``blosc2.compress2``) on 1 thread and on every core. GB = 1e9 raw input bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

ALGORITHMS = ("LZ4", "Snappy", "Zstd", "GDeflate", "Deflate", "Cascaded", "Bitcomp", "ANS")
TYPED = ("LZ4", "Cascaded", "Bitcomp")     # these take a data_type option


def timed(fn: typing.Callable[[], typing.Any], repeat: int) -> tuple[float, typing.Any]:
    """(median wall seconds after one warm-up call, the last result)."""
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def emit(line: dict[str, typing.Any]) -> None:
    print(json.dumps(line), flush=True)


def nbytes_of(encoded: typing.Any) -> int:
    """Compressed size of an nvCOMP array in bytes."""
    size = getattr(encoded, "buffer_size", None)
    if size is None:
        import cupy

        size = cupy.asarray(encoded).nbytes
    return int(size)


def import_nvcomp() -> typing.Any:
    """``nvidia.nvcomp``, also when another ``nvidia`` package (CUDA wheels) shadows the namespace."""
    try:
        from nvidia import nvcomp
    except ImportError:
        import nvidia

        extra = [os.path.join(p, "nvidia") for p in sys.path if os.path.isdir(os.path.join(p, "nvidia", "nvcomp"))]
        nvidia.__path__ = list(nvidia.__path__) + extra
        from nvidia import nvcomp
    return nvcomp


def gpu_lines(name: str, a: np.ndarray, repeat: int) -> None:
    import cupy

    nvcomp = import_nvcomp()

    sync = cupy.cuda.Device().synchronize
    dev = cupy.asarray(a)
    raw = dev.view(cupy.uint8).ravel()
    gb = a.nbytes / 1e9
    for algo in ALGORITHMS:
        line: dict[str, typing.Any] = {"set": name, "method": f"nvcomp_{algo}", "dtype": str(a.dtype),
                                       "GB": round(gb, 4)}
        try:
            kwargs: dict[str, typing.Any] = {"algorithm": algo}
            if algo in TYPED:
                kwargs["data_type"] = a.dtype.str
            codec = nvcomp.Codec(**kwargs)
            src = nvcomp.as_array(dev)

            def encode(codec: typing.Any = codec, src: typing.Any = src) -> typing.Any:
                out = codec.encode(src)
                sync()
                return out

            t_enc, enc = timed(encode, repeat)

            def decode(codec: typing.Any = codec, enc: typing.Any = enc) -> typing.Any:
                out = codec.decode(enc)
                sync()
                return out

            t_dec, dec = timed(decode, repeat)
            back = cupy.asarray(dec).view(cupy.uint8).ravel()
            exact = bool(back.size == raw.size and cupy.array_equal(back, raw))

            def from_host(codec: typing.Any = codec) -> int:
                d = cupy.asarray(a)
                out = codec.encode(nvcomp.as_array(d))
                host = cupy.asnumpy(cupy.asarray(out))
                return host.nbytes

            t_host, _ = timed(from_host, repeat)
            line.update(ratio=round(a.nbytes / nbytes_of(enc), 2), compress_resident_gbps=round(gb / t_enc, 1),
                        decompress_resident_gbps=round(gb / t_dec, 1), compress_from_host_gbps=round(gb / t_host, 2),
                        lossless_exact=exact)
        except Exception as e:  # an algorithm this build or card lacks: say so, go on
            line["skipped"] = f"{type(e).__name__}: {e}"[:300]
        emit(line)


def cpu_lines(name: str, a: np.ndarray, repeat: int) -> None:
    import blosc2

    gb = a.nbytes / 1e9
    cores = os.cpu_count() or 1
    buf = np.ascontiguousarray(a)
    for cname in ("zstd", "lz4"):
        for threads in sorted({1, cores}):
            codec = blosc2.Codec.ZSTD if cname == "zstd" else blosc2.Codec.LZ4
            params = {"codec": codec, "clevel": 5, "typesize": a.itemsize, "nthreads": threads,
                      "filters": [blosc2.Filter.BITSHUFFLE], "filters_meta": [0]}
            t_enc, enc = timed(lambda params=params: blosc2.compress2(buf, **params), repeat)
            t_dec, dec = timed(lambda enc=enc, threads=threads: blosc2.decompress2(enc, nthreads=threads), repeat)
            emit({"set": name, "method": f"blosc2_{cname}5_bitshuffle", "threads": threads, "dtype": str(a.dtype),
                  "GB": round(gb, 4), "ratio": round(a.nbytes / len(enc), 2),
                  "compress_gbps": round(gb / t_enc, 2), "decompress_gbps": round(gb / t_dec, 2),
                  "lossless_exact": bytes(dec) == buf.tobytes()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from compress_data import data_sets   # the same data as benchmarks/compress.py

    try:
        import cupy

        card = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        emit({"nvcomp": getattr(import_nvcomp(), "__version__", "?")})
    except Exception as e:
        card = None
        emit({"skipped": f"no CUDA device for nvCOMP ({type(e).__name__}: {e})"})
    for name, (a, _) in data_sets(args.quick).items():
        if card is not None:
            gpu_lines(name, a, args.repeat)
        cpu_lines(name, a, args.repeat)
    if card is not None:
        emit({"card": card, "cpu_cores": os.cpu_count()})


if __name__ == "__main__":
    main()
