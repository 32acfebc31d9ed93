"""``auto``: choose the codec for one data set by compressing a sample with each candidate.

Candidates are lossless and fast (Blosc2 Zstd level 1 with bitshuffle or byte shuffle + byte-delta, the same after
frame-delta prediction, sparse events for integer detector frames of at least ``SPARSE_MIN_PIXELS``,
and no compression at all for arrays too small to gain). The winner is the best ratio on the
sample; ties go to the earlier candidate, so the choice is deterministic (no timing involved).
Lossy codecs are never chosen automatically: they need a stated bound from the user.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.compress.codec import parse

CANDIDATES = ("blosc2", "blosc2:shuffle=bytedelta", "delta+blosc2", "sparse", "raw")
SPARSE_MIN_PIXELS = 1024


def choose(sample: typing.Sequence[np.ndarray], axis: int = 0,
           candidates: typing.Sequence[str] = CANDIDATES) -> tuple[typing.Any, dict[str, float]]:
    """Best codec for ``sample`` (chunks shaped as they will be stored, frames along ``axis``).

    Returns (codec, {spec: ratio}) with every candidate's ratio on the sample.
    """
    raw = sum(c.nbytes for c in sample)
    ratios: dict[str, float] = {}
    best: typing.Any = None
    for spec in candidates:
        codec = parse(spec)
        frame_px = int(np.prod(sample[0].shape[axis + 1:], dtype=np.int64))
        if spec == "sparse" and (sample[0].dtype.kind not in "ui" or frame_px < SPARSE_MIN_PIXELS):
            continue
        codec.check(sample[0].dtype)
        if codec.kind == "sparse":
            size = sum(len(codec.encode(np.moveaxis(c, axis, 0).reshape(-1, *c.shape[axis + 1:]))) for c in sample)
        else:
            size = sum(len(codec.encode_chunk(c, axis)) for c in sample)
        ratios[codec.spec] = raw / max(size, 1)
        if best is None or ratios[codec.spec] > ratios[best.spec]:
            best = codec
    return best, ratios
