"""Codecs for outgoing data: lossless, frame-delta prediction, sparse events, error-bounded lossy.

    from emedge_core import compress
    codec = compress.get("blosc2")               # or "delta+blosc2", "sz3:abs=1", "sqrt:q=1", "sparse", ...
    blob = codec.encode(frames); frames == codec.decode(blob)
    codec.h5_filter()                            # kwargs for h5py create_dataset (hdf5plugin filter)

``get("auto", sample=...)`` picks per data set (:mod:`.auto`); ``auto:threads=N`` sets the
thread count of the chosen codec. Files: :mod:`emedge_core.emd`.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.compress.base import AnyCodec, CodecLike, DenseCodec, SparseCodec
from emedge_core.compress.codec import Codec, parse
from emedge_core.compress.header import parse_params, split_header
from emedge_core.compress.sparse import SparseEvents

__all__ = ["AnyCodec", "Codec", "CodecLike", "DenseCodec", "SparseCodec", "SparseEvents", "get", "decode", "is_auto",
           "auto_threads"]


def is_auto(spec: typing.Any) -> bool:
    """True for ``"auto"`` and ``"auto:threads=N"``."""
    return isinstance(spec, str) and spec.partition(":")[0] == "auto"


def auto_threads(spec: str) -> typing.Optional[int]:
    """The ``threads`` of an ``auto[:threads=N]`` spec (None when not given); other keys are errors."""
    params = parse_params(spec.partition(":")[2])
    if set(params) - {"threads"} or int(params.get("threads", 1)) < 1:
        raise EmedgeError(f"codec {spec!r}: auto takes only threads=N (N >= 1)")
    return int(params["threads"]) if "threads" in params else None


def get(spec: str, sample: typing.Optional[typing.Sequence[np.ndarray]] = None, axis: int = 0) -> AnyCodec:
    """The codec named by ``spec``; ``"auto"`` needs ``sample`` (chunks as they will be stored)."""
    if is_auto(spec):
        threads = auto_threads(spec)
        if not sample:
            raise EmedgeError("codec 'auto' needs a sample of the data")
        from emedge_core.compress.auto import choose

        return choose(sample, axis, threads=threads)[0]
    return parse(spec)


def decode(payload: bytes) -> np.ndarray:
    """Decode bytes from any codec's ``encode`` (the codec is named in the header)."""
    return parse(split_header(payload)[0]["codec"]).decode(payload)
