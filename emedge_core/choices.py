"""The names a user picks from, listed once, for the CLI and the Swift panels alike.

Light to import (no torch): argument parsers and panels read these at start-up.
The implementations check themselves against them (``tests/test_architecture.py``):
:data:`POLICIES` are the keys of :data:`emedge_core.acquisition.ACQUISITIONS`, and
:data:`HPC_BACKENDS` is :data:`hpc_client.config.BACKENDS`.
"""
from __future__ import annotations

from hpc_client.config import BACKENDS as HPC_BACKENDS

#: acquisition policies, in the order the CLI and the panel offer them
POLICIES: tuple[str, ...] = ("ucb", "ei", "maxvar", "thompson", "random")

__all__ = ["HPC_BACKENDS", "POLICIES"]
