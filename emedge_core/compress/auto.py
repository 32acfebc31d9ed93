"""``auto``: choose the codec for one data set by compressing a sample with each candidate.

Every candidate stores plain values that any Blosc2 HDF5 filter decodes (h5py + hdf5plugin,
rosettasciio / HyperSpy, emdfile / py4DSTEM read the right dtype and values with no step of
ours), and every one is light - Blosc2 Zstd-1 or no compression, at bitshuffle-LZ4's speed or
above: Zstd-1 with bitshuffle in C-order slabs, with byte shuffle + byte-delta (the prediction
runs inside the Blosc2 chunk), for chunks of 2-D frames of at least ``FRAME_MIN_PIXELS`` also
with bitshuffle in tiled blocks (``TILED``: every frame of the chunk x a detector tile,
:func:`~emedge_core.compress.stages._tiles`), and no compression for arrays too small to gain.
Frame-delta prediction (``delta+blosc2``), sqrt quantisation and sparse events need a reader-side
inverse, so ``auto`` never picks them (they stay available by name; ``emd.info`` warns). Heavier
Zstd levels (``blosc2:clevel=4`` = Zstd 7, 2-3x the CPU time) are by name only: on the
counting sets of issue 12.5 the tiles gave Zstd-1 the ratio the heavy level had been tried for
(docs/compress.md).

The winner is the best ratio on the sample; ties go to the earlier candidate, so the choice is
deterministic (no timing involved). Lossy codecs are never chosen automatically: they need a
stated bound from the user. With ``threads`` > 1 the candidates run side by side on a thread
pool (Blosc2 drops the GIL).

The writer's sample is the array's first chunk, and it stores the winner's payload for that
chunk instead of encoding it again: the trial costs the other candidates' encoding of one chunk
per array (~5-8 ms for a 4 MiB chunk on one thread). A quarter of the chunk's frames cut that,
but it put the tiles at another geometry (32 x 32 px for 32 frames, not 16 x 16 for 128) and
misjudged them: slabs were picked at 0.02 and 0.05 e-/px, 5 % below the tiles.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.compress.base import AnyCodec
from emedge_core.compress.codec import parse

CANDIDATES = ("blosc2", "blosc2:shuffle=bytedelta", "raw")
TILED = "blosc2:blocks=tile"
FRAME_MIN_PIXELS = 1024



class Choice(typing.NamedTuple):
    codec: AnyCodec
    ratios: dict[str, float]            # spec -> ratio on the sample, for every candidate tried
    payloads: list[bytes]               # the winner's ``encode_chunk`` bytes per sample chunk (dense winners)


def pick(sample: typing.Sequence[np.ndarray], axis: int = 0, candidates: typing.Sequence[str] = CANDIDATES,
         threads: typing.Optional[int] = None, pool: typing.Any = None,
         tiled: typing.Optional[str] = TILED) -> Choice:
    """Best codec for ``sample`` (chunks shaped as they will be stored, frames along ``axis``).

    ``threads`` (if given) is set on the chosen codec; ``pool`` (a ``concurrent.futures``
    executor) runs the candidates concurrently. ``tiled`` is tried as one more candidate when the
    chunks hold 2-D frames of at least ``FRAME_MIN_PIXELS``. Sparse events are tried only when
    named in ``candidates`` (and only for integer frames of at least ``FRAME_MIN_PIXELS``).
    """
    raw = sum(c.nbytes for c in sample)
    frame = sample[0].shape[axis + 1:]
    big_frames = int(np.prod(frame, dtype=np.int64)) >= FRAME_MIN_PIXELS
    specs = list(candidates) + ([tiled] if tiled and big_frames and len(frame) == 2 else [])
    codecs = [parse(spec) for spec in specs]
    codecs = [c for c in codecs if c.kind != "sparse" or (big_frames and sample[0].dtype.kind in "ui")]
    for codec in codecs:
        codec.check(sample[0].dtype)
    dense = [c for c in codecs if c.kind != "sparse"]

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
