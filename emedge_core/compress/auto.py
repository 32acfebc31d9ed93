"""``auto``: choose the codec for one data set by compressing a sample with each candidate.

Every candidate stores plain values that any Blosc2 HDF5 filter decodes (h5py + hdf5plugin,
rosettasciio / HyperSpy, emdfile / py4DSTEM read the right dtype and values with no step of
ours): Blosc2 Zstd-1 with bitshuffle, with byte shuffle + byte-delta (the prediction runs inside
the Blosc2 chunk), for integer detector frames of at least ``DETECTOR_MIN_PIXELS`` also Blosc2
Blosc2 clevel 4 (Zstd level 7, lazy matching) + bitshuffle (``HEAVY``), and no compression for arrays
too small to gain.
Frame-delta prediction (``delta+blosc2``), sqrt quantisation and sparse events need a reader-side
inverse, so ``auto`` never picks them (they stay available by name; ``emd.info`` warns).

The winner is the best ratio on the sample; ties go to the earlier candidate, so the choice is
deterministic (no timing involved). ``HEAVY`` (about 3x the CPU time of Zstd-1 per byte) wins
only when its ratio beats the best light candidate by ``HEAVY_GAIN``: on counting data at
0.02-0.1 e-/px it gains 4-7 % (sparse bit planes: lazy matching), at 0.5 e-/px nothing. With
2 MiB blocks it reaches Blosc2 clevel 5 + bitshuffle in 4 MiB chunks (the counting peer) at
about twice clevel 5's speed (docs/compress.md).
Lossy codecs are never chosen automatically: they need a stated bound from the user. With
``threads`` > 1 the candidates run side by side on a thread pool (Blosc2 drops the GIL).

The writer's sample is the first chunk, or, when that chunk holds at least ``4 * TRIAL_FRAMES``
frames along the frame axis, its first quarter of them (:func:`trial_sample`): the trial is a
fixed cost per array and a quarter cuts it. When the whole chunk is the sample, the writer
stores the winner's payload instead of encoding it again.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.compress.base import AnyCodec
from emedge_core.compress.codec import parse

CANDIDATES = ("blosc2", "blosc2:shuffle=bytedelta", "raw")
HEAVY = "blosc2:clevel=4"
HEAVY_GAIN = 0.03
DETECTOR_MIN_PIXELS = 1024


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
    codec: AnyCodec
    ratios: dict[str, float]            # spec -> ratio on the sample, for every candidate tried
    payloads: list[bytes]               # the winner's ``encode_chunk`` bytes per sample chunk (dense winners)


def pick(sample: typing.Sequence[np.ndarray], axis: int = 0, candidates: typing.Sequence[str] = CANDIDATES,
         threads: typing.Optional[int] = None, pool: typing.Any = None,
         heavy: typing.Optional[str] = HEAVY) -> Choice:
    """Best codec for ``sample`` (chunks shaped as they will be stored, frames along ``axis``).

    ``threads`` (if given) is set on the chosen codec; ``pool`` (a ``concurrent.futures``
    executor) runs the candidates concurrently. ``heavy`` is tried for integer frames of at least
    ``DETECTOR_MIN_PIXELS`` and kept only with a ratio ``HEAVY_GAIN`` above the best other one.
    Sparse events are tried only when named in ``candidates``.
    """
    raw = sum(c.nbytes for c in sample)
    frame_px = int(np.prod(sample[0].shape[axis + 1:], dtype=np.int64))
    detector = sample[0].dtype.kind in "ui" and frame_px >= DETECTOR_MIN_PIXELS
    codecs = [parse(spec) for spec in candidates]
    codecs = [c for c in codecs if c.kind != "sparse" or detector]
    heavy_codec = parse(heavy) if heavy and detector else None
    extra = [heavy_codec] if heavy_codec is not None else []
    for codec in codecs + extra:
        codec.check(sample[0].dtype)
    dense = [c for c in codecs if c.kind != "sparse"] + extra

    def run(codec: typing.Any) -> list[bytes]:
        one = codec.with_threads(1) if pool is not None else codec
        return [one.encode_chunk(c, axis) for c in sample]

    encoded = dict(zip((c.spec for c in dense), (pool.map(run, dense) if pool is not None else map(run, dense)),
                       strict=True))
    ratios: dict[str, float] = {}
    best: typing.Any = None
    for codec in codecs:
        if codec.kind == "sparse":
            size = sum(len(codec.encode(np.moveaxis(c, axis, 0).reshape(-1, *c.shape[axis + 1:]))) for c in sample)
        else:
            size = sum(len(p) for p in encoded[codec.spec])
        ratios[codec.spec] = raw / max(size, 1)
        if best is None or ratios[codec.spec] > ratios[best.spec]:
            best = codec
    if heavy_codec is not None:
        ratios[heavy_codec.spec] = raw / max(sum(len(p) for p in encoded[heavy_codec.spec]), 1)
        if ratios[heavy_codec.spec] >= ratios[best.spec] * (1 + HEAVY_GAIN):
            best = heavy_codec
    payloads = encoded.get(best.spec, []) if best.kind != "sparse" else []
    if threads is not None:
        best = best.with_threads(threads)
    return Choice(best, ratios, payloads)


def choose(sample: typing.Sequence[np.ndarray], axis: int = 0,
           candidates: typing.Sequence[str] = CANDIDATES,
           threads: typing.Optional[int] = None) -> tuple[AnyCodec, dict[str, float]]:
    """Best codec for ``sample``: (codec, {spec: ratio}) with every candidate's ratio on the sample."""
    choice = pick(sample, axis, candidates, threads)
    return choice.codec, choice.ratios
