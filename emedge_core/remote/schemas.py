"""Typed, validated requests of the remote-control server (JSON bodies only; nothing is executed).

Each request is a frozen dataclass whose fields carry their rule in ``metadata``: the JSON type,
a range or a set of choices. :func:`parse` turns a decoded JSON object into one of them or raises
:class:`BadRequest` with one line naming the field to change. Arrays travel only as lists of
numbers in (positions, values) and as ``.npz`` files without pickles out (:func:`npz_bytes`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import typing

import numpy as np

from emedge_core.choices import POLICIES

ACQUISITIONS = POLICIES
SIGNALS = ("spectrum", "diffraction")
MAX_POSITIONS = 4096          # positions in one measure/observe request
MAX_SPEC_CHARS = 2000         # characters of a scalarizer spec


class BadRequest(ValueError):
    """A request the server refuses; ``status`` is its HTTP status, the message one line."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _int(lo: int, hi: int, optional: bool = False) -> dict[str, typing.Any]:
    return {"kind": "int", "lo": lo, "hi": hi, "optional": optional}


def _float(lo: float, hi: float, optional: bool = False) -> dict[str, typing.Any]:
    return {"kind": "float", "lo": lo, "hi": hi, "optional": optional}


def _choice(*choices: str) -> dict[str, typing.Any]:
    return {"kind": "choice", "choices": choices}


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """``POST /v1/runs``: start a closed-loop experiment on the server's instrument.

    The fields mean what the ``emedge run`` options of the same name mean."""

    scalarizer: typing.Any = dataclasses.field(default="eels_peak_energy", metadata={"kind": "scalarizer"})
    budget: int = dataclasses.field(default=100, metadata=_int(1, 100_000))
    seeds: int = dataclasses.field(default=10, metadata=_int(2, 100_000))
    batch: int = dataclasses.field(default=1, metadata=_int(1, 1024))
    acquisition: str = dataclasses.field(default="ucb", metadata=_choice(*ACQUISITIONS))
    beta: float = dataclasses.field(default=2.0, metadata=_float(0.0, 1e6))
    window: int = dataclasses.field(default=16, metadata=_int(2, 256))
    seed: int = dataclasses.field(default=0, metadata=_int(0, 2**31 - 1))
    travel: float = dataclasses.field(default=0.0, metadata=_float(0.0, 1e6))
    stop_uncertainty: typing.Optional[float] = dataclasses.field(default=None, metadata=_float(0.0, 1e300, True))
    drift_every: typing.Optional[int] = dataclasses.field(default=None, metadata=_int(1, 100_000, True))
    model: typing.Optional[str] = dataclasses.field(default=None, metadata=_choice("gp", "dkl") | {"optional": True})


@dataclasses.dataclass(frozen=True)
class SteerRequest:
    """``POST /v1/steer``: a suggest/observe session on a fresh survey (the client measures)."""

    signal: str = dataclasses.field(default="spectrum", metadata=_choice(*SIGNALS))
    seeds: int = dataclasses.field(default=10, metadata=_int(2, 100_000))
    batch: int = dataclasses.field(default=1, metadata=_int(1, 1024))
    acquisition: str = dataclasses.field(default="ucb", metadata=_choice(*ACQUISITIONS))
    beta: float = dataclasses.field(default=2.0, metadata=_float(0.0, 1e6))
    window: int = dataclasses.field(default=16, metadata=_int(2, 256))
    seed: int = dataclasses.field(default=0, metadata=_int(0, 2**31 - 1))


@dataclasses.dataclass(frozen=True)
class SignalRequest:
    """``POST /v1/survey``: which kind of instrument to survey with."""

    signal: str = dataclasses.field(default="spectrum", metadata=_choice(*SIGNALS))


@dataclasses.dataclass(frozen=True)
class MeasureRequest:
    """``POST /v1/measure``: frames at ``positions`` (n, 2) survey px (row, col)."""

    positions: list[list[int]] = dataclasses.field(default_factory=list, metadata={"kind": "positions"})
    signal: str = dataclasses.field(default="spectrum", metadata=_choice(*SIGNALS))


@dataclasses.dataclass(frozen=True)
class SuggestRequest:
    """``POST /v1/steer/{id}/suggest``: ``n`` positions (None: the seeds still missing, or the batch)."""

    n: typing.Optional[int] = dataclasses.field(default=None, metadata=_int(1, 1024, True))


@dataclasses.dataclass(frozen=True)
class ObserveRequest:
    """``POST /v1/steer/{id}/observe``: ``values`` (n,) measured at ``positions`` (n, 2); null = failed."""

    positions: list[list[int]] = dataclasses.field(default_factory=list, metadata={"kind": "positions"})
    values: list[typing.Optional[float]] = dataclasses.field(default_factory=list, metadata={"kind": "values"})


R = typing.TypeVar("R")


def parse(cls: type[R], body: bytes) -> R:
    """Decode ``body`` (UTF-8 JSON object, may be empty for all defaults) into ``cls``."""
    if body.strip():
        try:
            obj = json.loads(body, parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise BadRequest(f"the request body is not valid JSON: {str(e)[:120]}") from None
    else:
        obj = {}
    if not isinstance(obj, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(typing.cast(typing.Any, cls))}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:40]!r}; allowed: {', '.join(fields)}")
    values = {name: _check(name, obj[name], fields[name].metadata) for name in obj}
    out = cls(**values)
    if isinstance(out, ObserveRequest) and len(out.positions) != len(out.values):
        raise BadRequest(f"{len(out.positions)} positions but {len(out.values)} values")
    return out


def _no_constant(name: str) -> None:
    raise BadRequest(f"{name} is not a JSON number")


def _check(name: str, v: typing.Any, rule: typing.Mapping[str, typing.Any]) -> typing.Any:
    kind = rule["kind"]
    if v is None and rule.get("optional"):
        return None
    if kind == "int":
        if not isinstance(v, int) or isinstance(v, bool) or not rule["lo"] <= v <= rule["hi"]:
            raise BadRequest(f"{name} must be an integer in {rule['lo']}..{rule['hi']}")
        return v
    if kind == "float":
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                or not rule["lo"] <= v <= rule["hi"]:
            raise BadRequest(f"{name} must be a number in {rule['lo']:g}..{rule['hi']:g}")
        return float(v)
    if kind == "choice":
        if v not in rule["choices"]:
            raise BadRequest(f"{name} must be one of {', '.join(rule['choices'])}")
        return v
    if kind == "positions":
        if not isinstance(v, list) or len(v) > MAX_POSITIONS or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(c, int) and not isinstance(c, bool)
                                                            and 0 <= c < 2**31 for c in p) for p in v):
            raise BadRequest(f"{name} must be a list of at most {MAX_POSITIONS} [row, col] pairs of "
                             "non-negative integers")
        return v
    if kind == "values":
        if not isinstance(v, list) or len(v) > MAX_POSITIONS or not all(
                x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))
                for x in v):
            raise BadRequest(f"{name} must be a list of at most {MAX_POSITIONS} finite numbers or null (failed)")
        return v
    if kind == "scalarizer":
        return _scalarizer(v)
    raise AssertionError(kind)


def _scalarizer(v: typing.Any) -> typing.Any:
    """A scalarizer name, a JSON object string or an object {"name": str, <param>: number|str|bool|list}."""
    if isinstance(v, str):
        if not 0 < len(v) <= MAX_SPEC_CHARS:
            raise BadRequest(f"scalarizer must be 1..{MAX_SPEC_CHARS} characters")
        if not v.strip().startswith("{"):
            return v
        try:
            v = json.loads(v, parse_constant=_no_constant)
        except (json.JSONDecodeError, RecursionError):
            raise BadRequest("scalarizer is not a name or a valid JSON object") from None
    if not isinstance(v, dict) or not isinstance(v.get("name"), str):
        raise BadRequest('scalarizer must be a name or an object {"name": ..., <params>}')
    if len(json.dumps(v)) > MAX_SPEC_CHARS or not all(isinstance(k, str) and _plain(x) for k, x in v.items()):
        raise BadRequest(f"scalarizer parameters must be numbers, strings, booleans or lists of numbers "
                         f"({MAX_SPEC_CHARS} characters at most)")
    return v


def _plain(x: typing.Any) -> bool:
    if isinstance(x, (str, bool, int)) or x is None:
        return True
    if isinstance(x, float):
        return math.isfinite(x)
    return isinstance(x, list) and len(x) <= 64 and all(
        isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in x)


def npz_bytes(**arrays: typing.Any) -> bytes:
    """``arrays`` as the bytes of an uncompressed ``.npz`` (numeric and unicode arrays only)."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})   # object arrays: refused
    return buf.getvalue()


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of ``.npz`` bytes; object (pickled) arrays are refused."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
