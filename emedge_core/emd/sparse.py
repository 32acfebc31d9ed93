"""The sparse store (opt-in codec ``sparse``): ``events_per_frame``, ``event_index``, ``event_count``.

The group has ``emd_group_type='emedge_sparse'`` and ``frame_shape`` / ``nav_shape`` attributes;
no plain HDF5 reader rebuilds the frames (see :mod:`emedge_core.compress.sparse` for the recipe).
"""
from __future__ import annotations

import typing

import h5py
import numpy as np

from emedge_core.compress import SparseCodec

KEYS = ("events_per_frame", "event_index", "event_count")


def create(group: h5py.Group, codec: SparseCodec, dtype: np.dtype, nav_shape: typing.Optional[tuple[int, ...]],
           frame_shape: tuple[int, ...]) -> dict[str, h5py.Dataset]:
    """The three growing data sets and the group's sparse attributes."""
    group.attrs.update({"emd_group_type": "emedge_sparse", "python_class": "EmedgeSparse",
                        "emedge_codec": codec.spec, "emedge_lossless": True, "emedge_original_dtype": dtype.str,
                        "frame_shape": np.asarray(frame_shape, np.int64),
                        "nav_shape": np.asarray(nav_shape or (-1,), np.int64)})
    out = {}
    for key, dt in zip(KEYS, (np.uint32, np.uint32, dtype), strict=True):
        out[key] = group.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dt, chunks=(1 << 16,),
                                        **codec.stage.h5_filter())
    out["events_per_frame"].attrs["frames_written"] = 0
    return out


def write_frames(ds: typing.Mapping[str, h5py.Dataset], codec: SparseCodec, frames: np.ndarray) -> None:
    """Append the events of ``frames`` (k, *frame)."""
    for key, values in zip(KEYS, codec.events(frames), strict=True):
        d = ds[key]
        n = d.shape[0]
        d.resize((n + len(values),))
        d[n:] = values


def read(g: h5py.Group, codec: SparseCodec, dtype: np.dtype) -> np.ndarray:
    """The frames, shaped (nav..., *frame) (a growing series: up to its last flushed frame)."""
    frame_shape = tuple(int(s) for s in g.attrs["frame_shape"])
    nav_shape = tuple(int(s) for s in g.attrs["nav_shape"])
    per_frame = g["events_per_frame"]
    written = int(per_frame.attrs.get("frames_written", per_frame.shape[0]))
    pf = per_frame[:written]
    nnz = int(pf.sum())
    frames = codec.frames(pf, g["event_index"][:nnz], g["event_count"][:nnz], frame_shape, dtype)
    if nav_shape == (-1,):
        return frames
    out = np.zeros((int(np.prod(nav_shape)), *frame_shape), dtype)
    out[:written] = frames
    return out.reshape(nav_shape + frame_shape)


def shape(g: h5py.Group) -> tuple[int, ...]:
    """The array's shape as written so far."""
    nav = tuple(int(s) for s in g.attrs["nav_shape"])
    written = int(g["events_per_frame"].attrs.get("frames_written", 0))
    return ((written,) if nav == (-1,) else nav) + tuple(int(s) for s in g.attrs["frame_shape"])
