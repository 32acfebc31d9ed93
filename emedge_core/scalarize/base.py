"""The scalarizer interface: one small class per reduction (cf. LiberTEM's UDFs).

A scalarizer turns frames into one number (or a short vector) per position.
Subclasses declare ``name``, ``signal_kind`` and ``components`` and implement
:meth:`Scalarizer.process` on a chunk of frames with the array module handed
in (``xp`` = numpy, cupy or a torch shim), so the maths never branches on the
backend. :meth:`Scalarizer.__call__` screens bad frames first: a frame with
NaN/inf pixels, an all-zero frame, a saturated frame or a frame of the wrong
shape gets NaN and a reason code, and the rest go on.
"""
from __future__ import annotations

import abc
import dataclasses
import enum
import json
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames


class Reason(enum.IntEnum):
    """Why a position has no value (stored beside every map as uint8)."""

    OK = 0
    NONFINITE = 1   # NaN or inf pixels
    EMPTY = 2       # all pixels zero
    SATURATED = 3   # at least one pixel at the saturation level
    SHAPE = 4       # frame of the wrong shape or dtype
    FAILED = 5      # the reduction itself gave a non-finite value


@dataclasses.dataclass(frozen=True)
class ScalarResult:
    """values: (n,) or (n, k) float64, NaN where ``reason != OK``; reason: (n,) uint8."""

    values: np.ndarray
    reason: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.reason == Reason.OK


class Scalarizer(abc.ABC):
    """Base class. Subclasses set the class attributes and implement ``process``."""

    #: name used in specs and on the CLI
    name: typing.ClassVar[str]
    #: "spectrum" or "diffraction"
    signal_kind: typing.ClassVar[str]
    #: names of the result components; one name = a scalar per position
    components: typing.ClassVar[tuple[str, ...]] = ("value",)
    #: unit of the result, for plots and files
    unit: typing.ClassVar[str] = ""

    def __init__(self, saturation: typing.Optional[float] = None) -> None:
        """saturation: detector counts at which a pixel counts as saturated (None = integer dtype max)."""
        self.saturation = saturation

    # -- declared by subclasses ------------------------------------------------
    @abc.abstractmethod
    def process(self, data: typing.Any, frames: Frames, xp: typing.Any) -> typing.Any:
        """Reduce ``data`` (n, *sig) float32 on module ``xp`` to (n,) or (n, k) values."""

    def params(self) -> dict[str, typing.Any]:
        """The parameters that define this reduction (JSON-able), name included."""
        out: dict[str, typing.Any] = {"name": self.name}
        for key, value in vars(self).items():
            if not key.startswith("_"):
                out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def validate(self, frames: Frames) -> None:
        """Raise EmedgeError when these frames cannot be reduced at all (kind, calibration)."""
        if frames.kind != self.signal_kind:
            raise EmedgeError(f"scalarizer {self.name!r} needs {self.signal_kind} frames, got {frames.kind}")

    # -- the one public entry --------------------------------------------------
    def __call__(self, frames: Frames) -> ScalarResult:
        """Reduce frames (n, *sig) to a :class:`ScalarResult` on the CPU with NumPy."""
        self.validate(frames)
        reason = screen(frames.data, self.saturation)
        n = len(frames)
        shape = (n,) if len(self.components) == 1 else (n, len(self.components))
        values = np.full(shape, np.nan)
        good = reason == Reason.OK
        if good.any():
            data = np.asarray(frames.data[good], dtype=np.float32)
            out = np.asarray(self.process(data, frames, np), dtype=np.float64)
            values[good] = out
            finite = np.isfinite(out) if out.ndim == 1 else np.isfinite(out).all(axis=1)
            idx = np.flatnonzero(good)[~finite]
            reason[idx] = Reason.FAILED
            values[idx] = np.nan
        return ScalarResult(values, reason)


def screen(data: np.ndarray, saturation: typing.Optional[float] = None) -> np.ndarray:
    """Reason code (n,) uint8 for each frame of ``data`` (n, *sig)."""
    n = data.shape[0]
    flat = data.reshape(n, -1)
    reason = np.zeros(n, np.uint8)
    if not np.issubdtype(flat.dtype, np.number) or np.issubdtype(flat.dtype, np.complexfloating):
        reason[:] = Reason.SHAPE
        return reason
    if np.issubdtype(flat.dtype, np.floating):
        reason[~np.isfinite(flat).all(axis=1)] = Reason.NONFINITE
    empty = ~(flat != 0).any(axis=1)
    reason[(reason == Reason.OK) & empty] = Reason.EMPTY
    level = saturation
    if level is None and np.issubdtype(flat.dtype, np.integer):
        level = np.iinfo(flat.dtype).max
    if level is not None:
        with np.errstate(invalid="ignore"):
            sat = (flat >= level).any(axis=1)
        reason[(reason == Reason.OK) & sat] = Reason.SATURATED
    return reason


REGISTRY: dict[str, type[Scalarizer]] = {}

S = typing.TypeVar("S", bound=type[Scalarizer])


def register(cls: S) -> S:
    """Class decorator: make a scalarizer selectable by name."""
    REGISTRY[cls.name] = cls
    return cls


def from_spec(spec: typing.Union[str, dict[str, typing.Any], Scalarizer]) -> Scalarizer:
    """Build a scalarizer from a name, a JSON object string or a dict ``{"name": ..., **params}``."""
    if isinstance(spec, Scalarizer):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as e:
                raise EmedgeError(f"scalarizer spec is not valid JSON: {e}") from None
        else:
            spec = {"name": text}
    if not isinstance(spec, dict) or "name" not in spec:
        raise EmedgeError('scalarizer spec must be a name or a JSON object {"name": ..., <params>}')
    params = dict(spec)
    name = params.pop("name")
    cls = REGISTRY.get(name)
    if cls is None:
        raise EmedgeError(f"unknown scalarizer {name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise EmedgeError(f"bad parameters for scalarizer {name!r}: {e}") from None
