"""EMD 1.0 files on HDF5: a streaming writer in bounded memory, a whole-array writer, a reader.

Public API::

    emd.write(path, {"data": array}, codec="auto", provenance=provenance.collect(...),
              dims={"data": [emd.Axis("energy", "eV", energies), ...]}, metadata={"data": {"swift": props}})
    with emd.StreamWriter(path, "data", frame_shape=(ky, kx), dtype="uint16", nav_shape=(H, W)) as w:
        w.append(frames)                  # (k, ky, kx) as they arrive; a chunk is flushed when full
    emd.read(path) -> {name: array};  emd.read(path, "data") -> array;  emd.info(path) -> dict
    emd.value(h5_group_or_dataset) -> array      # one array of an open file, EMD group or plain data set
    emd.metadata(path, "data") -> dict           # the free-form metadata of one array

Every codec ``auto`` picks stores the original dtype and values behind a stock HDF5 filter, so
h5py + hdf5plugin, rosettasciio / HyperSpy and emdfile / py4DSTEM read them as they are; the
opt-in codecs that need emedge's inverse (``delta+...``, ``sqrt:...``, ``sparse``) are flagged
by :func:`info` (``warning``). One job per module:

- :mod:`.layout` - chunk layout, attribute names, axes (dim vectors), metadata groups, file creation;
- :mod:`.dense`, :mod:`.sparse` - the two stores (HDF5 data sets of one array);
- :mod:`.writer` - :class:`ArraySink`, :class:`StreamWriter`, :func:`write` (chunking, encoding
  threads, flushes, checksums);
- :mod:`.reader` - :func:`read`, :func:`read_array`, :func:`value`, :func:`metadata` (inverse,
  CRC-32 check);
- :mod:`.inspect` - :func:`info`.
"""
from __future__ import annotations

from emedge_core.emd.inspect import info, reader_warning
from emedge_core.emd.layout import (
                                    CHUNK_BYTES,
                                    CHUNK_BYTES_DETECTOR,
                                    Axis,
                                    AxisSpec,
                                    Dim,
                                    axis,
                                    chunk_grid,
                                    chunk_runs,
                                    default_sig_ndim,
                                    jsonable,
)
from emedge_core.emd.reader import is_array, metadata, read, read_array, root_group, value
from emedge_core.emd.writer import FLUSH_SECONDS, INFLIGHT, ArraySink, StreamWriter, encode_pool, write

__all__ = ["ArraySink", "Axis", "AxisSpec", "CHUNK_BYTES", "CHUNK_BYTES_DETECTOR", "Dim", "FLUSH_SECONDS", "INFLIGHT",
           "StreamWriter", "axis", "chunk_grid", "chunk_runs", "default_sig_ndim", "encode_pool", "info", "is_array",
           "jsonable", "metadata", "read", "read_array", "reader_warning", "root_group", "value", "write"]
