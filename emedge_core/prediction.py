"""What a surrogate answers for every candidate, in the scalar's own units.

Shared by :mod:`emedge_core.gp` (the default surrogate) and :mod:`emedge_core.dkl`, so neither
imports the other for it.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prediction:
    """(N,) arrays in scalar units: median (the prediction), std, 95 % interval."""

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
