"""Chunk layout, attribute names, axes and metadata of emedge's EMD 1.0 files (no codec, no I/O loop).

Layout (the root attributes and groups as emdfile/py4DSTEM write them, so emdfile, rosettasciio
and plain h5py + hdf5plugin read the arrays)::

    /                      emd_group_type='file', version_major=1, version_minor=0, UUID, authoring_*
    /<root>                emd_group_type='root', python_class='Root'
    /<root>/metadatabundle/provenance   emd_group_type='metadata': one JSON string per key
    /<root>/<name>         emd_group_type='array', python_class='Array', emedge_* codec attributes
    /<root>/<name>/data    the array (stored dtype), chunks (1, .., 1, r, c, *frame) along the scan,
                           attrs units, frames_written
    /<root>/<name>/dim0..  one axis vector per dimension, full length (float64), attrs name, units
    /<root>/<name>/metadatabundle/emedge_metadata   free-form metadata: one JSON string per key
    /<root>/<name>/checksums  CRC-32 per chunk of the original data, in write order
"""
from __future__ import annotations

import errno
import json
import typing
import uuid

import h5py
import numpy as np

from emedge_core import EmedgeError, __version__

CHUNK_BYTES = 1 << 20            # target raw size of one HDF5 chunk: 1 MiB
#: ... for integer detector frames (counting data): 4 MiB, the chunk size of the counting peer
#: (Blosc2 Zstd-5 + bitshuffle, whole frames); 2 MiB Blosc2 blocks inside gain 1.5-3.6 % ratio
CHUNK_BYTES_DETECTOR = 4 << 20
DETECTOR_MIN_PIXELS = 1024       # frames of at least this many pixels count as detector images
METADATA_BUNDLE = "emedge_metadata"

Dim = tuple[str, str, float, float]     # (name, units, start, step) of one uniform axis


class Axis(typing.NamedTuple):
    """One calibrated axis: ``values`` has one entry per index along it (e.g. energies in eV)."""

    name: str
    units: str
    values: typing.Union[np.ndarray, typing.Sequence[float]]


AxisSpec = typing.Union[Axis, Dim]


def axis(name: str, units: str, start: float = 0.0, step: float = 1.0, n: typing.Optional[int] = None) -> AxisSpec:
    """A uniform axis: an :class:`Axis` with ``n`` values from ``start`` by ``step``, or the
    ``Dim`` tuple (name, units, start, step) when the length is not known yet."""
    if n is None:
        return (name, units, float(start), float(step))
    return Axis(name, units, float(start) + float(step) * np.arange(int(n), dtype=np.float64))


def default_sig_ndim(ndim: int) -> int:
    """Frame dimensions when not given: scalars for 1-D, rows for 2-D, images for 3-D and 4-D."""
    return {0: 0, 1: 0, 2: 1}.get(ndim, 2)


def chunk_target(frame_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Raw bytes of one chunk: ``CHUNK_BYTES_DETECTOR`` for integer frames of at least
    ``DETECTOR_MIN_PIXELS`` pixels, else ``CHUNK_BYTES``."""
    px = int(np.prod(frame_shape, dtype=np.int64))
    return CHUNK_BYTES_DETECTOR if np.dtype(dtype).kind in "ui" and px >= DETECTOR_MIN_PIXELS else CHUNK_BYTES


def chunk_grid(nav_shape: typing.Optional[tuple[int, ...]], frame_shape: tuple[int, ...], itemsize: int,
               chunk_frames: typing.Optional[int] = None, chunk_bytes: typing.Optional[int] = None) -> tuple[int, int]:
    """(rows r, frames c) of one chunk: ``c`` frames along the last scan axis (about ``chunk_bytes``,
    default ``CHUNK_BYTES``, at most one scan row); when a whole row is smaller, ``r`` rows of it
    (small frames such as spectra). ``chunk_frames`` fixes ``c`` (and r = 1)."""
    target = CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    frame = max(1, int(np.prod(frame_shape, dtype=np.int64)) * itemsize)
    if chunk_frames:
        return 1, int(chunk_frames)
    c = max(1, target // frame)
    if not nav_shape:
        return 1, c
    last = max(1, nav_shape[-1])
    if c < last or len(nav_shape) < 2:
        return 1, min(c, last)
    return max(1, min(nav_shape[-2], target // (frame * last))), last


def chunk_runs(nav_shape: tuple[int, ...], c: int, r: int = 1) -> typing.Iterator[tuple[tuple[slice, ...], int, int]]:
    """Chunks in write order: (nav slices, first flat frame index, frames in the chunk)."""
    if not nav_shape or 0 in nav_shape:
        return
    last = nav_shape[-1]
    if len(nav_shape) == 1:
        for j in range(0, last, c):
            yield (slice(j, j + min(c, last - j)),), j, min(c, last - j)
        return
    rows = nav_shape[-2]
    for n, lead in enumerate(np.ndindex(*nav_shape[:-2])):
        head = tuple(slice(i, i + 1) for i in lead)
        for i in range(0, rows, r):
            ri = min(r, rows - i)
            for j in range(0, last, c):
                k = min(c, last - j)
                yield head + (slice(i, i + ri), slice(j, j + k)), (n * rows + i) * last + j, ri * k


def axis_vector(spec: typing.Optional[AxisSpec], i: int, n: typing.Optional[int],
                where: str) -> tuple[str, str, np.ndarray]:
    """(name, units, values) of axis ``i`` of length ``n`` (None: unknown yet, a growing series:
    the two values [start, start + step]). No spec: ``dim<i>`` in pixels."""
    if spec is None:
        spec = (f"dim{i}", "pixels", 0.0, 1.0)
    if isinstance(spec, Axis):
        values = np.asarray(spec.values, np.float64).ravel()
        if n is not None and len(values) != n:
            raise EmedgeError(f"{where}: dims axis {i} ({spec.name!r}) has {len(values)} values for an axis of "
                              f"length {n}; give one value per index")
        return str(spec.name), str(spec.units), values
    if len(spec) != 4:
        raise EmedgeError(f"{where}: dims axis {i} must be emd.Axis(name, units, values) or (name, units, start, step)")
    name, units, start, step = spec
    count = 2 if n is None else n
    return str(name), str(units), float(start) + float(step) * np.arange(count, dtype=np.float64)


def check_dims(where: str, shape: tuple[typing.Optional[int], ...],
               dims: typing.Optional[typing.Sequence[AxisSpec]]) -> None:
    """Raise :class:`EmedgeError` (naming ``dims``) unless ``dims`` fits ``shape`` (None: a length not known yet)."""
    specs = list(dims or [])
    if len(specs) > len(shape):
        raise EmedgeError(f"{where}: dims has {len(specs)} axes for an array of {len(shape)} dimensions")
    for i, spec in enumerate(specs):
        axis_vector(spec, i, shape[i], where)


def write_dims(group: h5py.Group, shape: tuple[int, ...], dims: typing.Optional[typing.Sequence[AxisSpec]],
               growing: bool = False) -> None:
    """The EMD 1.0 dim vectors ``dim0..`` of an array group (replaced if present). ``growing``:
    the length of axis 0 is not known yet (rewritten at close)."""
    specs = list(dims or [])
    if len(specs) > len(shape):
        raise EmedgeError(f"{group.name}: dims has {len(specs)} axes for an array of shape {shape}")
    for i, n in enumerate(shape):
        name, units, values = axis_vector(specs[i] if i < len(specs) else None, i, None if growing and i == 0 else n,
                                          group.name)
        key = f"dim{i}"
        if key in group:
            del group[key]
        d = group.create_dataset(key, data=values)
        d.attrs.update({"name": name, "units": units})


def read_dims(group: h5py.Group, shape: tuple[int, ...]) -> list[dict[str, typing.Any]]:
    """Per axis: name, units, size, start, step (step from the first two values; None for one value)."""
    out = []
    for i, n in enumerate(shape):
        d = group.get(f"dim{i}")
        if not isinstance(d, h5py.Dataset):
            out.append({"name": f"dim{i}", "units": "", "size": int(n), "start": 0.0, "step": 1.0})
            continue
        v = np.asarray(d[()], np.float64).ravel()
        out.append({"name": _text(d.attrs.get("name", f"dim{i}")), "units": _text(d.attrs.get("units", "")),
                    "size": int(n), "start": float(v[0]) if len(v) else 0.0,
                    "step": float(v[1] - v[0]) if len(v) > 1 else None})
    return out


def _text(x: typing.Any) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def write_json_group(parent: h5py.Group, name: str, values: typing.Mapping[str, typing.Any]) -> h5py.Group:
    """An emdfile Metadata group ``parent/name``: one JSON string data set per key."""
    md = parent.create_group(name)
    md.attrs.update({"emd_group_type": "metadata", "python_class": "Metadata"})
    for key, value in values.items():
        ds = md.create_dataset(str(key), data=json.dumps(value, default=jsonable))
        ds.attrs["type"] = np.bytes_(b"string")
    return md


def read_json_group(md: typing.Optional[h5py.Group]) -> dict[str, typing.Any]:
    """Inverse of :func:`write_json_group` (a value that is not JSON comes back as its text)."""
    out: dict[str, typing.Any] = {}
    if not isinstance(md, h5py.Group):
        return out
    for key in md.keys():
        item = md[key]
        if not isinstance(item, h5py.Dataset):
            continue
        text = _text(item[()])
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def write_metadata(group: h5py.Group, metadata: typing.Optional[typing.Mapping[str, typing.Any]]) -> None:
    """Free-form metadata of one array under ``<group>/metadatabundle/emedge_metadata``."""
    if not metadata:
        return
    bundle = group.require_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    write_json_group(bundle, METADATA_BUNDLE, metadata)


def create_file(path: str, root: str,
                provenance: typing.Optional[dict[str, typing.Any]]) -> tuple[h5py.File, h5py.Group]:
    """A new EMD 1.0 file with its root group and the provenance metadata (flushed)."""
    try:
        f = h5py.File(path, "w")
    except OSError as e:
        raise EmedgeError(f"cannot create {path}: {os_error(e)}") from None
    f.attrs.update({"emd_group_type": "file", "version_major": np.int64(1), "version_minor": np.int64(0),
                    "UUID": str(uuid.uuid4()), "authoring_program": f"nionswift-emedge {__version__}",
                    "authoring_user": ""})
    g = f.create_group(root)
    g.attrs.update({"emd_group_type": "root", "python_class": "Root"})
    bundle = g.create_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    write_json_group(bundle, "provenance", provenance or {})
    f.flush()
    return f, g


def is_payload(key: str, item: typing.Any) -> bool:
    """True for the data sets that hold an array's values (not its checksums or axis vectors)."""
    return isinstance(item, h5py.Dataset) and key != "checksums" and not key.startswith("dim")


def os_error(e: OSError) -> str:
    """One line for an I/O error (HDF5's messages span lines and name buffers)."""
    if e.errno == errno.ENOSPC:
        return "disk full: No space left on device"
    text = " ".join(str(e).split())
    return text if len(text) < 200 else text[:200] + "..."


def jsonable(x: typing.Any) -> typing.Any:
    """``json.dumps`` fallback: NumPy values as lists/numbers, anything else as its string."""
    return x.tolist() if hasattr(x, "tolist") else str(x)
