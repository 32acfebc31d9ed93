"""Scalarizers: frames -> one value (or a short vector) per position, on NumPy, CuPy or PyTorch.

``from_spec`` builds one by name or JSON spec; calling it on :class:`~emedge_core.instrument.Frames`
gives a :class:`ScalarResult` (the experiment loop); :func:`reduce` runs it over an array, an
HDF5/EMD dataset or a live stream of chunks and gives the map with per-position reason codes.
"""
from emedge_core.scalarize import diffraction, dpc, eels, virtual  # noqa: F401  (register the reductions)
from emedge_core.scalarize.backends import Backend, get_backend
from emedge_core.scalarize.base import REGISTRY, Reason, Scalarizer, ScalarResult, Signal, from_spec, register, screen
from emedge_core.scalarize.stream import MapResult, reduce

__all__ = ["REGISTRY", "Backend", "MapResult", "Reason", "ScalarResult", "Scalarizer", "Signal", "from_spec",
           "get_backend", "reduce", "register", "screen"]
