"""Reading emedge's EMD files (and plain EMD 1.0 arrays written by others): values, checked."""
from __future__ import annotations

import typing

import h5py
import hdf5plugin  # noqa: F401  (registers the HDF5 filters used by the codecs)
import numpy as np

from emedge_core import EmedgeError, compress
from emedge_core.compress import SparseCodec
from emedge_core.compress.crc import checksum
from emedge_core.emd import dense, sparse
from emedge_core.emd.layout import METADATA_BUNDLE, chunk_runs, os_error, read_json_group


def open_file(path: str) -> h5py.File:
    """``path`` opened read-only; a one-line :class:`EmedgeError` when it is missing or not HDF5."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise EmedgeError(f"file not found: {path}") from None
    except OSError as e:
        raise EmedgeError(f"cannot open {path} as HDF5 (corrupt or truncated?): {os_error(e)}") from None


def root_group(f: h5py.File, root: typing.Optional[str]) -> h5py.Group:
    """The EMD root group named ``root``, or the first group with ``emd_group_type='root'``."""
    if root is not None:
        if root not in f:
            raise EmedgeError(f"{f.filename} has no group {root!r}")
        return f[root]
    for g in f.values():
        if isinstance(g, h5py.Group) and g.attrs.get("emd_group_type") == "root":
            return g
    raise EmedgeError(f"{f.filename} is not an EMD 1.0 file (no group with emd_group_type='root')")


def is_array(g: typing.Any) -> bool:
    """True for an EMD array group (dense, or emedge's sparse events)."""
    return isinstance(g, h5py.Group) and g.attrs.get("emd_group_type") in ("array", "emedge_sparse")


def read(path: str, name: typing.Optional[str] = None, root: typing.Optional[str] = None,
         verify: bool = True) -> typing.Any:
    """Arrays of an EMD file: ``{name: array}``, or one array when ``name`` is given.

    Undoes the opt-in prediction / quantisation / sparse storage (also in files of earlier
    versions, whose ``auto`` could pick frame-delta); with ``verify`` checks each complete chunk
    of a lossless array against its CRC-32. A stream cut short (crash) reads up to its last flushed
    chunk: growing series are cut there, fixed scans hold zeros after it. Corrupt, truncated or
    foreign files raise :class:`EmedgeError`.
    """
    with open_file(path) as f:
        g = root_group(f, root)
        if name is not None:
            if name not in g or not is_array(g[name]):
                raise EmedgeError(f"{path} has no array {name!r} under {g.name}")
            return read_array(g[name], verify)
        return {k: read_array(v, verify) for k, v in g.items() if is_array(v)}


def value(item: typing.Union[h5py.Group, h5py.Dataset], verify: bool = True) -> np.ndarray:
    """The values of an EMD array group (decoded, checked) or of a plain data set - e.g. both
    layouts of ``experiment.h5``: ``emd.value(f["experiment/positions"])``."""
    return read_array(item, verify) if isinstance(item, h5py.Group) else item[()]


def metadata(path: str, name: str, root: typing.Optional[str] = None) -> dict[str, typing.Any]:
    """The free-form metadata of array ``name`` (``metadata=`` of the writers), JSON-decoded."""
    with open_file(path) as f:
        g = root_group(f, root)
        if name not in g or not is_array(g[name]):
            raise EmedgeError(f"{path} has no array {name!r} under {g.name}")
        return array_metadata(g[name])


def array_metadata(g: h5py.Group) -> dict[str, typing.Any]:
    """The free-form metadata of one open array group."""
    return read_json_group(g.get(f"metadatabundle/{METADATA_BUNDLE}"))


def read_array(g: h5py.Group, verify: bool = True) -> np.ndarray:
    """One array group (see :func:`read`)."""
    where = f"{g.file.filename}:{g.name}"
    try:
        if "emedge_codec" not in g.attrs:            # a plain EMD array written by someone else
            return g["data"][()]
        codec = compress.get(str(g.attrs["emedge_codec"]))
        dtype = np.dtype(str(g.attrs["emedge_original_dtype"]))
        nav_ndim, c = int(g.attrs["emedge_nav_ndim"]), int(g.attrs["emedge_chunk_frames"])
        r = int(g.attrs.get("emedge_chunk_rows", 1))
        if isinstance(codec, SparseCodec):
            out = sparse.read(g, codec, dtype)
        else:
            out = dense.read(g, codec, dtype, nav_ndim, c)
        nav_shape = out.shape[:nav_ndim]
        written = int(g["data" if "data" in g else "events_per_frame"].attrs.get("frames_written", 0))
        if verify and codec.lossless:
            _verify(out, nav_shape, c, r, written, g["checksums"][()], where)
        return out
    except OSError as e:
        raise EmedgeError(f"cannot read {where} (corrupt or truncated file): {os_error(e)}") from None
    except (KeyError, ValueError) as e:
        raise EmedgeError(f"{where} is not a complete emedge array: {e}") from None


def _verify(out: np.ndarray, nav_shape: tuple[int, ...], c: int, r: int, written: int, crcs: np.ndarray,
            where: str) -> None:
    flat = out.reshape((-1, *out.shape[len(nav_shape):]))
    for j, (_, start, k) in enumerate(chunk_runs(nav_shape, c, r)):
        if start + k > written or j >= len(crcs):
            break
        if checksum(flat[start:start + k]) != int(crcs[j]):
            raise EmedgeError(f"{where}: chunk {j} (frames {start}..{start + k - 1}) fails its CRC-32 checksum "
                              "(corrupt data)")
