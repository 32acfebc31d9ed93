"""Helpers shared by the dense codecs (:mod:`.codec`) and sparse events (:mod:`.sparse`): the
self-describing byte layout of ``encode`` and spec-parameter parsing. Imports nothing else of
:mod:`emedge_core.compress`, so both sides can use it without an import cycle."""
from __future__ import annotations

import json
import struct
import typing

from emedge_core import EmedgeError

MAGIC = b"EMDGEC1\0"


def pack(head: dict[str, typing.Any], body: bytes) -> bytes:
    """``MAGIC`` + header length (uint32 LE) + JSON header + body."""
    text = json.dumps(head).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + body


def split_header(payload: bytes) -> tuple[dict[str, typing.Any], bytes]:
    """(header, body) of bytes from a codec's ``encode``; a clear error for anything else."""
    if len(payload) < 12 or payload[:8] != MAGIC:
        raise EmedgeError("not an emedge codec payload (bad magic)")
    n = struct.unpack("<I", payload[8:12])[0]
    try:
        return json.loads(payload[12:12 + n]), payload[12 + n:]
    except ValueError:
        raise EmedgeError("emedge codec payload has a corrupt header") from None


def parse_params(text: str) -> dict[str, typing.Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (ints, floats, strings)."""
    out: dict[str, typing.Any] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise EmedgeError(f"codec parameter {item!r} is not KEY=VALUE")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out
