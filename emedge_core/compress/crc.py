"""CRC-32 of raw chunks (the per-chunk checksum of :mod:`emedge_core.emd`), through zlib-ng.

The value is the standard CRC-32 (IEEE 802.3, what ``zlib.crc32`` returns), so any reader with
zlib verifies it. zlib-ng's ``crc32`` (carry-less multiply) computes it at ~34 GB/s on cold 1 MiB
chunks here, against ~7 GB/s for zlib 1.2.13; the values are identical (tested).

Not ``isal``: its ``crc32`` is as fast, but its hand-written AVX-512 code returns without
``vzeroupper``, and the non-VEX SSE code that runs next on the thread (measured: the hdf5plugin
bitshuffle-LZ4 filter) then ran ~30 % slower until some AVX code cleared the state.
"""
from __future__ import annotations

import numpy as np
from zlib_ng.zlib_ng import crc32


def checksum(chunk: np.ndarray) -> int:
    """CRC-32 (uint32 value) of ``chunk``'s C-order bytes; equal to ``zlib.crc32`` of them."""
    return int(crc32(np.ascontiguousarray(chunk).data)) & 0xFFFFFFFF
