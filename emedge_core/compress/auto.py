"""``auto``: choose the codec for one data set by compressing a sample with each candidate.

Candidates are lossless and fast (Blosc2 Zstd level 1 with bitshuffle or byte shuffle + byte-delta, the same after
frame-delta prediction, sparse events for integer detector frames of at least ``SPARSE_MIN_PIXELS``,
and no compression at all for arrays too small to gain). The winner is the best ratio on the
sample; ties go to the earlier candidate, so the choice is deterministic (no timing involved).
Lossy codecs are never chosen automatically: they need a stated bound from the user.

Sparse events are only tried when they could win: each event costs at least ~1 byte after
Blosc2 (measured 0.93-1.95 B/event on counting frames of 64-256 px at 0.001-2 e/px, >= 1.3 B/event
wherever sparse came within 2x of dense), so a sample with ``nnz * SPARSE_MIN_EVENT_BYTES`` at or
above the best dense size skips it. With ``threads`` > 1 the dense candidates run side by side on
a thread pool (Blosc2 drops the GIL), each on one thread.

The writer's sample is the first chunk, or, when that chunk holds at least ``4 * TRIAL_FRAMES``
frames along the prediction axis, its first quarter of them (:func:`trial_sample`): the trial is a
fixed cost per array (measured ~2-3 ms of a 17-34 MB write, 3 chunk encodes) and a quarter cuts it
to under 2 encodes; it keeps at least ``TRIAL_FRAMES`` neighbouring frames so that frame-delta
prediction is judged fairly (its first frame is stored unpredicted). On the benchmark sets the
quarter picks what the whole chunk picks. When the whole chunk is the sample, the writer stores the
winner's payload instead of encoding it again.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.compress.codec import parse

CANDIDATES = ("blosc2", "blosc2:shuffle=bytedelta", "delta+blosc2", "sparse", "raw")
SPARSE_MIN_PIXELS = 1024
SPARSE_MIN_EVENT_BYTES = 1.0


TRIAL_FRAMES = 8


def trial_sample(chunk: np.ndarray, axis: int) -> np.ndarray:
    """The part of ``chunk`` auto compresses with every candidate: the first quarter of its frames
    along ``axis`` when that is at least ``TRIAL_FRAMES`` frames, else ``chunk`` itself."""
    k = chunk.shape[axis]
    if k < 4 * TRIAL_FRAMES:
        return chunk
    index = [slice(None)] * chunk.ndim
    index[axis] = slice(0, k // 4)
    return np.ascontiguousarray(chunk[tuple(index)])


class Choice(typing.NamedTuple):
    codec: typing.Any
    ratios: dict[str, float]            # spec -> ratio on the sample, for every candidate tried
    payloads: list[bytes]               # the winner's ``encode_chunk`` bytes per sample chunk (dense winners)


def pick(sample: typing.Sequence[np.ndarray], axis: int = 0, candidates: typing.Sequence[str] = CANDIDATES,
         threads: typing.Optional[int] = None, pool: typing.Any = None) -> Choice:
    """Best codec for ``sample`` (chunks shaped as they will be stored, frames along ``axis``).

    ``threads`` (if given) is set on the chosen codec; ``pool`` (a ``concurrent.futures``
    executor) runs the dense candidates concurrently.
    """
    raw = sum(c.nbytes for c in sample)
    frame_px = int(np.prod(sample[0].shape[axis + 1:], dtype=np.int64))
    codecs = [parse(spec) for spec in candidates]
    codecs = [c for c in codecs if c.kind != "sparse" or (sample[0].dtype.kind in "ui" and frame_px >= SPARSE_MIN_PIXELS)]
    for codec in codecs:
        codec.check(sample[0].dtype)
    dense = [c for c in codecs if c.kind != "sparse"]

    def run(codec: typing.Any) -> list[bytes]:
        one = codec.with_threads(1) if pool is not None else codec
        return [one.encode_chunk(c, axis) for c in sample]

    encoded = dict(zip((c.spec for c in dense), (pool.map(run, dense) if pool is not None else map(run, dense))))
    best_dense = min(sum(len(p) for p in v) for v in encoded.values()) if encoded else float("inf")
    ratios: dict[str, float] = {}
    best: typing.Any = None
    for codec in codecs:
        if codec.kind == "sparse":
            if sum(np.count_nonzero(c) for c in sample) * SPARSE_MIN_EVENT_BYTES >= best_dense:
                continue                 # cannot beat the best dense candidate (see the module note)
            size = sum(len(codec.encode(np.moveaxis(c, axis, 0).reshape(-1, *c.shape[axis + 1:]))) for c in sample)
        else:
            size = sum(len(p) for p in encoded[codec.spec])
        ratios[codec.spec] = raw / max(size, 1)
        if best is None or ratios[codec.spec] > ratios[best.spec]:
            best = codec
    payloads = encoded.get(best.spec, []) if best.kind != "sparse" else []
    if threads is not None and best.kind != "sparse":
        best = best.with_threads(threads)
    return Choice(best, ratios, payloads)


def choose(sample: typing.Sequence[np.ndarray], axis: int = 0,
           candidates: typing.Sequence[str] = CANDIDATES,
           threads: typing.Optional[int] = None) -> tuple[typing.Any, dict[str, float]]:
    """Best codec for ``sample``: (codec, {spec: ratio}) with every candidate's ratio on the sample."""
    choice = pick(sample, axis, candidates, threads)
    return choice.codec, choice.ratios
