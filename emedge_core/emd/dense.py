"""The dense store: one HDF5 data set ``data`` written chunk by chunk with ``write_direct_chunk``.

A codec without a transform stores the original dtype and values; its HDF5 filter (hdf5plugin)
alone decodes them. A codec with a transform (opt-in frame-delta or sqrt quantisation) stores
residuals / quantised values that :func:`read` undoes per chunk.
"""
from __future__ import annotations

import typing

import h5py
import numpy as np

from emedge_core.compress import DenseCodec
from emedge_core.emd.layout import chunk_runs


def create(group: h5py.Group, codec: DenseCodec, dtype: np.dtype, nav_shape: typing.Optional[tuple[int, ...]],
           frame_shape: tuple[int, ...], chunk_nav: tuple[int, ...], units: str) -> h5py.Dataset:
    """The ``data`` data set (fixed scan shape, or a series growing along axis 0)."""
    nav = nav_shape if nav_shape is not None else (0,)
    d = group.create_dataset("data", shape=nav + frame_shape, maxshape=(None, *nav[1:], *frame_shape),
                             dtype=codec.stored_dtype(dtype), chunks=chunk_nav + frame_shape, **codec.h5_filter())
    d.attrs["units"] = units
    d.attrs["frames_written"] = 0
    return d


def write_chunk(d: h5py.Dataset, payload: bytes, committed: int, k: int,
                nav_shape: typing.Optional[tuple[int, ...]], frame_shape: tuple[int, ...]) -> None:
    """Write one encoded chunk whose first frame is flat frame ``committed`` (``k`` frames)."""
    if nav_shape is None:
        offset = (committed,) + (0,) * len(frame_shape)
        d.resize((committed + k, *frame_shape))
    else:
        nav = np.unravel_index(committed, nav_shape)
        offset = tuple(int(i) for i in nav) + (0,) * len(frame_shape)
    d.id.write_direct_chunk(offset, payload)


def read(g: h5py.Group, codec: DenseCodec, dtype: np.dtype, nav_ndim: int, c: int) -> np.ndarray:
    """The array of group ``g`` up to its last flushed frame (later frames read as zeros)."""
    d = g["data"]
    written = int(d.attrs.get("frames_written", d.shape[0]))
    growing = d.maxshape[0] is None and nav_ndim == 1
    shape = ((min(written, d.shape[0]),) if growing else d.shape[:nav_ndim]) + d.shape[nav_ndim:]
    if codec.transform is None:
        out = d[:shape[0]]
    else:
        out = np.zeros(shape, dtype)
        for nav, _, _ in chunk_runs(shape[:nav_ndim], c):
            out[nav] = codec.inverse(d[nav], nav_ndim - 1, dtype)
    out.reshape((-1, *shape[nav_ndim:]))[written:] = 0    # chunks written after the last flush: not vouched for
    return out
