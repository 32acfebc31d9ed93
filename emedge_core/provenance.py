"""Provenance recorded in every file: software versions, instrument state, parameters, checksums.

:func:`collect` builds the JSON-able record written under ``<root>/metadatabundle/provenance``.
The per-chunk checksum of the raw (original, un-transformed) data is the CRC-32 (the value of
``zlib.crc32``) of the chunk's C-order bytes (:mod:`emedge_core.compress.crc`), so a lossless
round trip can be verified by any reader with zlib.
"""
from __future__ import annotations

import datetime
import platform
import sys
import typing
from importlib import metadata

CHECKSUM_ALGORITHM = "crc32 (zlib) of the C-order bytes of each chunk's original frames, edge chunks unpadded"
_PACKAGES = ("nionswift-emedge", "numpy", "h5py", "hdf5plugin", "blosc2", "zstandard", "zlib-ng")


def software() -> dict[str, str]:
    """Versions of Python, HDF5 and the packages that wrote the file."""
    import h5py

    out = {"python": sys.version.split()[0], "hdf5": h5py.version.hdf5_version, "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def collect(parameters: typing.Optional[dict[str, typing.Any]] = None,
            instrument_state: typing.Optional[dict[str, typing.Any]] = None) -> dict[str, typing.Any]:
    """The provenance record: UTC time, software versions, the acquisition's instrument state
    (``Instrument.state()``) and all parameters of the step that wrote the file."""
    return {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "software": software(), "instrument_state": instrument_state or {}, "parameters": parameters or {}}
