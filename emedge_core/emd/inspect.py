"""``emd.info``: layout, codecs, ratios, axes, metadata and provenance of an EMD file (what
``emedge inspect`` prints), with a warning for every array other readers would get wrong."""
from __future__ import annotations

import json
import typing

import h5py
import numpy as np

from emedge_core import EmedgeError, compress
from emedge_core.compress import SparseCodec
from emedge_core.emd import sparse
from emedge_core.emd.layout import is_payload, read_dims, read_json_group
from emedge_core.emd.reader import array_metadata, is_array, open_file, root_group


def reader_warning(spec: str) -> typing.Optional[str]:
    """One line when arrays stored with codec ``spec`` need emedge's inverse (None when plain
    h5py + hdf5plugin read the original dtype and values)."""
    try:
        codec = compress.get(spec)
    except EmedgeError:      # a codec of a newer version: say so, do not fail
        return f"codec {spec!r} is unknown to this version; other readers may see stored values, not the data"
    if codec.plain_readable:
        return None
    what = "sparse events" if isinstance(codec, SparseCodec) else getattr(codec.transform, "name", "a transform")
    return (f"stored with {spec} ({what}): h5py, HyperSpy/rosettasciio and py4DSTEM/emdfile see the stored "
            "values, not the data; read it with emedge (emd.read) or rewrite it with --codec auto")


def info(path: str) -> dict[str, typing.Any]:
    """Layout, codecs, ratios, axes, metadata and provenance of an EMD file.

    Per array: shape, dtype, codec, lossless, error_bound, chunks, filters, frames_written,
    raw/stored bytes, ratio, ``dataset`` (full HDF5 path of the values), ``dims`` (name, units,
    size, start, step per axis), ``metadata``, ``warning`` (None, or one line when other readers
    would see stored values instead of the data) and ``auto_trial`` (when ``auto`` chose the codec:
    {candidate: ratio on the first chunk}, the best ratio won); ``warnings`` lists those lines by array.
    """
    with open_file(path) as f:
        g = root_group(f, None)
        prov = read_json_group(g.get("metadatabundle/provenance"))
        arrays, warnings = {}, []
        for name, a in g.items():
            if not is_array(a):
                continue
            arrays[name] = _array(a)
            if arrays[name]["warning"]:
                warnings.append(f"{name}: {arrays[name]['warning']}")
        root_attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        return {"path": path, "file_attrs": root_attrs, "root": g.name, "arrays": arrays, "provenance": prov,
                "warnings": warnings}


def _array(a: h5py.Group) -> dict[str, typing.Any]:
    ds = [d for k, d in a.items() if is_payload(k, d)]
    stored = sum(d.id.get_storage_size() for d in ds)
    dtype = np.dtype(str(a.attrs.get("emedge_original_dtype", ds[0].dtype.str if ds else "u1")))
    main = a["data"] if "data" in a else a.get("events_per_frame")
    if a.attrs.get("emd_group_type") == "emedge_sparse":
        shape = sparse.shape(a)
    else:
        shape = tuple(main.shape) if main is not None else ()
    raw = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    spec = str(a.attrs.get("emedge_codec", "h5py"))
    return {"shape": list(shape), "dtype": dtype.name, "codec": spec,
            "lossless": bool(a.attrs.get("emedge_lossless", True)),
            "error_bound": json.loads(a.attrs["emedge_error_bound"]) if "emedge_error_bound" in a.attrs else None,
            "chunks": list(main.chunks or ()) if main is not None else [],
            "filters": _filters(main), "frames_written": int(main.attrs.get("frames_written", -1))
            if main is not None else 0,
            "raw_bytes": raw, "stored_bytes": stored, "ratio": raw / stored if stored else None,
            "dataset": main.name if main is not None else None, "dims": read_dims(a, shape),
            "metadata": array_metadata(a), "warning": None if spec == "h5py" else reader_warning(spec),
            "auto_trial": json.loads(a.attrs["emedge_auto_trial"]) if "emedge_auto_trial" in a.attrs else None}


def _filters(d: typing.Optional[h5py.Dataset]) -> list[str]:
    if d is None:
        return []
    plist = d.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _, _, fname = plist.get_filter(i)
        out.append(f"{code} {fname.decode(errors='replace').split(';')[0]}")
    return out
