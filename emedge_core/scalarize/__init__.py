"""Scalarizers: frames -> one value per position. ``from_spec`` builds one by name or JSON spec."""
from emedge_core.scalarize.base import REGISTRY, Reason, ScalarResult, Scalarizer, from_spec, register, screen
from emedge_core.scalarize import diffraction, eels  # noqa: F401  (register the reductions)

__all__ = ["REGISTRY", "Reason", "ScalarResult", "Scalarizer", "from_spec", "register", "screen"]
