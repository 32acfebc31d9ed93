"""A codec = an optional pre-transform (:mod:`.transforms`) + an entropy stage (:mod:`.stages`).

Spec strings (CLI ``--codec`` and every API): ``[transform[:k=v,...]+]stage[:k=v,...]``, e.g.
``blosc2``, ``blosc2:cname=zstd,clevel=5``, ``delta+blosc2``, ``bitshuffle:cname=lz4``, ``gzip:level=9``,
``zstd:level=3``, ``sz3:abs=1.0``, ``zfp:accuracy=0.5``, ``sqrt:q=1`` (Blosc2 after it), ``sparse``, ``raw``.
"""
from __future__ import annotations

import dataclasses
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.compress.header import MAGIC, pack, parse_params, split_header
from emedge_core.compress.sparse import SparseEvents
from emedge_core.compress.stages import STAGES, Blosc2, Stage
from emedge_core.compress.transforms import TRANSFORMS

__all__ = ["Codec", "MAGIC", "parse", "parse_params", "split_header"]


@dataclasses.dataclass(frozen=True)
class Codec:
    """One way to store an array: ``transform`` (None, Delta or SqrtQuant) then ``stage``.

    ``encode``/``decode`` give self-describing bytes (an 8-byte magic, a JSON header with spec,
    dtype and shape, then the stage's payload) for transport; files use ``encode_chunk`` per HDF5
    chunk with the filter from :meth:`h5_filter`.
    """

    stage: Stage
    transform: typing.Any = None
    kind: typing.ClassVar[str] = "dense"

    @property
    def spec(self) -> str:
        parts = [t for t in (self.transform, self.stage) if t is not None]
        return "+".join(p.name + (":" + ",".join(f"{k}={v}" for k, v in sorted(p.params.items())) if p.params else "")
                        for p in parts)

    @property
    def lossless(self) -> bool:
        return self.stage.lossless and (self.transform is None or self.transform.lossless)

    @property
    def plain_readable(self) -> bool:
        """True when the HDF5 filter alone gives the original dtype and values (no transform)."""
        return self.transform is None

    def stored_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype of the HDF5 data set (what a reader without our code sees)."""
        return np.dtype(dtype) if self.transform is None else self.transform.stored_dtype(np.dtype(dtype))

    def check(self, dtype: np.dtype) -> None:
        """Raise :class:`EmedgeError` if this codec cannot store ``dtype``."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "uif":
            raise EmedgeError(f"codec {self.spec} stores numeric arrays, not dtype {dtype}")
        self.stage.check_dtype(self.stored_dtype(dtype))

    def h5_filter(self) -> dict[str, typing.Any]:
        return self.stage.h5_filter()

    @property
    def threads(self) -> int:
        """Threads the entropy stage may use (the ``threads`` parameter of blosc2 / zstd; else 1)."""
        return self.stage.threads

    def with_threads(self, n: int) -> "Codec":
        """This codec with its stage on ``n`` threads; the bytes it writes do not change."""
        return dataclasses.replace(self, stage=self.stage.with_threads(n))

    def forward(self, chunk: np.ndarray, axis: int) -> np.ndarray:
        """The values HDF5 stores for ``chunk`` (after prediction / quantisation)."""
        return chunk if self.transform is None else self.transform.forward(chunk, axis)

    def inverse(self, stored: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
        return stored if self.transform is None else self.transform.inverse(stored, axis, np.dtype(dtype))

    def encode_chunk(self, chunk: np.ndarray, axis: int = 0) -> bytes:
        """Bytes of one HDF5 chunk; ``axis`` is the frame axis the prediction runs along."""
        return self.stage.encode_chunk(np.ascontiguousarray(self.forward(chunk, axis)))

    def decode_chunk(self, payload: bytes, shape: tuple[int, ...], dtype: np.dtype, axis: int = 0) -> np.ndarray:
        stored = self.stage.decode_chunk(payload, shape, self.stored_dtype(dtype))
        return self.inverse(stored, axis, dtype)

    def error_bound(self, data: typing.Optional[np.ndarray] = None) -> typing.Optional[dict[str, typing.Any]]:
        """The stated bound (None if lossless); sqrt quantisation needs ``data`` for its value."""
        if self.transform is not None and not self.transform.lossless:
            return self.transform.bound(data if data is not None else np.zeros(0))
        return self.stage.error_bound()

    def attrs(self, dtype: np.dtype) -> dict[str, typing.Any]:
        """HDF5 attributes that tell a reader how to undo this codec."""
        out: dict[str, typing.Any] = {"emedge_codec": self.spec, "emedge_lossless": self.lossless,
                                      "emedge_original_dtype": np.dtype(dtype).str}
        if self.transform is not None:
            out |= self.transform.attrs()
        return out

    def encode(self, array: np.ndarray, axis: int = 0) -> bytes:
        """Self-describing bytes for ``array`` (any shape)."""
        a = np.asarray(array)
        self.check(a.dtype)
        body = self.encode_chunk(a, axis) if a.ndim else self.encode_chunk(a.reshape(1), 0)
        return pack({"codec": self.spec, "dtype": a.dtype.str, "shape": list(a.shape), "axis": axis}, body)

    def decode(self, payload: bytes) -> np.ndarray:
        head, body = split_header(payload)
        shape = tuple(head["shape"]) or (1,)
        out = self.decode_chunk(body, shape, np.dtype(head["dtype"]), head["axis"])
        return out.reshape(head["shape"])


def parse(spec: str) -> typing.Union[Codec, SparseEvents]:
    """A :class:`Codec` (or :class:`~.sparse.SparseEvents`) from a spec string ('auto' excluded)."""
    transform, stage = None, None
    for part in spec.split("+"):
        name, _, params = part.partition(":")
        kw = parse_params(params)
        if name in TRANSFORMS and transform is None and stage is None:
            transform = TRANSFORMS[name](kw)
        elif name in STAGES and stage is None:
            stage = STAGES[name](kw)
        elif name == "sparse" and stage is None and transform is None and spec == part:
            return SparseEvents(kw)
        else:
            raise EmedgeError(f"unknown or misplaced codec {name!r} in {spec!r}; transforms: {sorted(TRANSFORMS)}, "
                              f"stages: {sorted(STAGES)}, or 'sparse', 'auto'")
    codec = Codec(stage or Blosc2(), transform)
    codec.h5_filter()        # validates the stage parameters now, not at the first chunk
    return codec
