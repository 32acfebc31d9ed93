"""The scalarizer interface: one small, passive class per reduction (cf. LiberTEM's UDFs).

A scalarizer turns frames into one number (or a short vector) per position. It declares
its result (``name``, ``signal_kind``, ``components``, ``unit``, what it reads) and three verbs,
and never runs itself: a :class:`~emedge_core.scalarize.reducer.Reducer` calls them.

- :meth:`Scalarizer.prepare` - once per data set or experiment, on its first good frames:
  check the calibration, resolve "auto" parameters, and return the weight rows (k, P) the
  shared pass should project every frame on (row 0 >= 0, e.g. the mask; it also screens
  the frames), or None for the frame totals; :meth:`Scalarizer.resolved` then says what was found;
- :meth:`Scalarizer.process` - per chunk, on the device: reduce a
  :class:`~emedge_core.scalarize.backends.Chunk` to (n,) or (n, k) values with the
  array-API namespace ``be.xp``, never branching on the backend;
- :meth:`Scalarizer.finalize` - once, on the whole (H, W[, k]) map, for the
  reductions that need neighbours (DPC rotation, iCoM).

Screening bad frames, merging chunks and choosing the device live in the reducer and the
executor (:mod:`emedge_core.scalarize.stream`). Third-party scalarizers register with
:func:`register` or through the ``emedge.scalarizers`` entry-point group (see
``docs/architecture.md``).
"""
from __future__ import annotations

import abc
import dataclasses
import enum
import json
import typing

import numpy as np

from emedge_core import EmedgeError

if typing.TYPE_CHECKING:
    from emedge_core.scalarize.backends import Backend, Chunk


class Reason(enum.IntEnum):
    """Why a position has no value (stored beside every map as uint8)."""

    OK = 0
    NONFINITE = 1   # NaN or inf pixels
    EMPTY = 2       # all pixels zero
    SATURATED = 3   # at least one pixel at the saturation level
    SHAPE = 4       # frame of the wrong shape or dtype
    FAILED = 5      # the reduction itself gave a non-finite value


def reason_counts(reasons: np.ndarray) -> dict[str, int]:
    """How many of ``reasons`` ((n,) or a map of uint8 :class:`Reason` codes) are each reason other
    than OK, by lower-case name (zeros included)."""
    return {r.name.lower(): int((reasons == r).sum()) for r in Reason if r != Reason.OK}


@dataclasses.dataclass(frozen=True)
class ScalarResult:
    """values: (n,) or (n, k) float64, NaN where ``reason != OK``; reason: (n,) uint8."""

    values: np.ndarray
    reason: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.reason == Reason.OK


@dataclasses.dataclass(frozen=True)
class Signal:
    """What every frame of a data set is: kind, shape and calibration.

    kind: "spectrum" or "diffraction"; shape: (E,) or (ky, kx) pixels;
    energy_eV: (E,) channel energies (spectra); mrad_per_px: detector calibration or None.
    """

    kind: str
    shape: tuple[int, ...]
    energy_eV: typing.Optional[np.ndarray] = None
    mrad_per_px: typing.Optional[float] = None

    @property
    def pixels(self) -> int:
        return int(np.prod(self.shape))


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
    #: names of what :meth:`process` gives per frame when :meth:`finalize` turns it into ``components``
    frame_components: typing.ClassVar[typing.Optional[tuple[str, ...]]] = None
    #: True when a value needs the whole map (:meth:`finalize`), so frames alone cannot give it
    map_level: typing.ClassVar[bool] = False
    #: False when :meth:`process` reads only ``chunk.proj`` (and ``maxv``): the shared pass then
    #: keeps no float32 copy of the frames (``chunk.data`` stays the raw frames, for screening)
    needs_frames: typing.ClassVar[bool] = True
    #: True when :meth:`process` reads frames of any real dtype (it slices windows and converts only
    #: them): on a backend that computes on integers (NumPy) the shared pass then makes no float32 copy
    #: of the whole frames either
    any_dtype: typing.ClassVar[bool] = False

    def __init__(self, saturation: typing.Optional[float] = None) -> None:
        """saturation: counts at which a pixel counts as saturated (None = integer dtype max, floats unchecked)."""
        self.saturation = saturation
        self._backend = "auto"

    # -- declared by subclasses ------------------------------------------------
    def prepare(self, signal: Signal, sample: np.ndarray) -> typing.Optional[np.ndarray]:
        """Check ``signal`` and resolve data-dependent parameters from ``sample`` (m, *sig) float64
        good frames of the first chunk; return (k, P) weight rows to project every frame on
        (row 0 >= 0 and not all zero), or None for the frame totals alone."""
        if signal.kind != self.signal_kind:
            raise EmedgeError(f"scalarizer {self.name!r} needs {self.signal_kind} frames, got {signal.kind}")
        return None

    @abc.abstractmethod
    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        """Reduce a chunk (n frames) to (n,) or (n, k) values on the chunk's device
        (k = len(frame_components or components))."""

    def finalize(self, values: np.ndarray, reason: np.ndarray) -> np.ndarray:
        """Map-level step on (H, W[, k]) float64 values (NaN where ``reason`` (H, W) != OK)."""
        return values

    def resolved(self) -> dict[str, typing.Any]:
        """Parameters found from the data by :meth:`prepare` or :meth:`finalize` (e.g. an automatic centre)."""
        return {}

    # -- shared ----------------------------------------------------------------
    def params(self) -> dict[str, typing.Any]:
        """The parameters that define this reduction (JSON-able), name included."""
        out: dict[str, typing.Any] = {"name": self.name}
        for key, value in vars(self).items():
            if not key.startswith("_"):
                out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def use(self, backend: str) -> "Scalarizer":
        """Prefer ``backend`` ("auto", "numpy", "torch", "cupy", ...) when a reducer runs this
        scalarizer without being told one; returns self."""
        self._backend = backend
        return self

    @property
    def backend_choice(self) -> str:
        """The backend a reducer uses unless told otherwise (:meth:`use`; default "auto")."""
        return self._backend


REGISTRY: dict[str, type[Scalarizer]] = {}
#: entry-point group through which other packages add scalarizers: ``name = package.module:Class``
SCALARIZER_GROUP = "emedge.scalarizers"

S = typing.TypeVar("S", bound=type[Scalarizer])


def register(cls: S) -> S:
    """Class decorator: make a scalarizer selectable by name."""
    REGISTRY[cls.name] = cls
    return cls


def load_plugins(name: typing.Optional[str] = None) -> dict[str, type[Scalarizer]]:
    """Register the scalarizers installed through the ``emedge.scalarizers`` entry points (only
    ``name``'s when given; each once) and return the whole registry. A plug-in that fails to load
    raises EmedgeError naming it."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=SCALARIZER_GROUP):
        if ep.name in REGISTRY or (name is not None and ep.name != name):
            continue
        try:
            cls = ep.load()
        except Exception as e:  # a broken third-party package: say which
            raise EmedgeError(f"scalarizer plug-in {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(e).__name__}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Scalarizer)):
            raise EmedgeError(f"scalarizer plug-in {ep.name!r} ({ep.value}) is not a Scalarizer subclass")
        REGISTRY[ep.name] = cls
    return REGISTRY


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
    cls = REGISTRY.get(name) or load_plugins(name).get(name)
    if cls is None:
        raise EmedgeError(f"unknown scalarizer {name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise EmedgeError(f"bad parameters for scalarizer {name!r}: {e}") from None
