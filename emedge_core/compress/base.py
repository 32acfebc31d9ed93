"""The codec interface the file writer (:mod:`emedge_core.emd`) and ``auto`` program against.

Two kinds implement it: :class:`~.codec.Codec` (``kind == "dense"``: one HDF5 chunk of bytes per
chunk, decoded by a registered HDF5 filter) and :class:`~.sparse.SparseEvents` (``kind ==
"sparse"``: event lists in three data sets). Dense codecs with a ``transform`` store values that
a plain HDF5 reader cannot interpret alone (:attr:`CodecLike.plain_readable` is False).
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.compress.stages import Stage


class CodecLike(typing.Protocol):
    """What every codec offers (see :class:`~.codec.Codec` for the dense meaning of each)."""

    kind: typing.ClassVar[str]

    @property
    def spec(self) -> str:
        """The spec string that :func:`emedge_core.compress.get` parses back to this codec."""

    @property
    def lossless(self) -> bool:
        """True when decoding gives back the exact input."""

    @property
    def plain_readable(self) -> bool:
        """True when h5py + hdf5plugin alone read the original dtype and values from a file."""

    @property
    def stage(self) -> Stage:
        """The entropy stage (its HDF5 filter decodes the stored bytes)."""

    @property
    def threads(self) -> int:
        """Threads one chunk's encoding may use."""

    def with_threads(self, n: int) -> "CodecLike":
        """The same codec (same bytes) on ``n`` threads."""

    def check(self, dtype: np.dtype) -> None:
        """Raise :class:`~emedge_core.EmedgeError` if ``dtype`` cannot be stored."""

    def error_bound(self, data: typing.Optional[np.ndarray] = None) -> typing.Optional[dict[str, typing.Any]]:
        """The stated error bound (None when lossless)."""

    def encode(self, array: np.ndarray, axis: int = 0) -> bytes:
        """Self-describing bytes (for transport)."""

    def decode(self, payload: bytes) -> np.ndarray:
        """Inverse of :meth:`encode`."""


class DenseCodec(CodecLike, typing.Protocol):
    """A codec that stores one HDF5 chunk per chunk of frames (``kind == "dense"``)."""

    @property
    def transform(self) -> typing.Any:
        """None, or the pre-transform a reader must undo (frame-delta, sqrt quantisation)."""

    def stored_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype of the HDF5 data set."""

    def h5_filter(self) -> dict[str, typing.Any]:
        """``create_dataset`` keyword arguments that install the decoding HDF5 filter."""

    def encode_chunk(self, chunk: np.ndarray, axis: int = 0) -> bytes:
        """The bytes HDF5 stores for ``chunk`` (frames along ``axis``)."""

    def inverse(self, stored: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
        """Original values from what the HDF5 filter returns (identity without a transform)."""

    def attrs(self, dtype: np.dtype) -> dict[str, typing.Any]:
        """The array group's ``emedge_*`` attributes."""


@typing.runtime_checkable
class SparseCodec(CodecLike, typing.Protocol):
    """Electron events in three 1-D data sets (``kind == "sparse"``)."""

    def events(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(events_per_frame, event_index, event_count) of frames (k, *frame)."""

    def frames(self, per_frame: np.ndarray, index: np.ndarray, count: np.ndarray, frame_shape: tuple[int, ...],
               dtype: np.dtype) -> np.ndarray:
        """Frames (k, *frame_shape) from their events."""


AnyCodec = typing.Union[DenseCodec, SparseCodec]
#: tell them apart with ``isinstance(codec, SparseCodec)`` (narrows the other branch to DenseCodec)
