"""Scalarizers: frames -> one value (or a short vector) per position, on NumPy, CuPy or PyTorch.

A scalarizer (:mod:`~emedge_core.scalarize.base`) only declares what it needs and computes;
``from_spec`` builds one by name or JSON spec. A :class:`Reducer` runs it over one data set or
experiment - prepared once on the first good frames, then fed chunks (the experiment loop) -
and :func:`reduce` runs it over an array, an HDF5/EMD dataset or a live stream of chunks and
gives the map with per-position reason codes and the geometry every chunk used.
"""
from emedge_core.scalarize import diffraction, dpc, eels, virtual  # noqa: F401  (register the reductions)
from emedge_core.scalarize.backends import Backend, get_backend
from emedge_core.scalarize.base import (REGISTRY, SCALARIZER_GROUP, Reason, Scalarizer, ScalarResult, Signal,
                                        from_spec, load_plugins, reason_counts, register)
from emedge_core.scalarize.reducer import Reducer, saturation_level, screen
from emedge_core.scalarize.stream import MapResult, reduce

__all__ = ["REGISTRY", "SCALARIZER_GROUP", "Backend", "MapResult", "Reason", "Reducer", "ScalarResult", "Scalarizer",
           "Signal", "from_spec", "get_backend", "load_plugins", "reason_counts", "reduce", "register",
           "saturation_level", "screen"]
