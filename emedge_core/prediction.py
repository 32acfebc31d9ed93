"""What a surrogate answers for every candidate, in the scalar's own units.

Shared by :mod:`emedge_core.gp` (the default surrogate) and :mod:`emedge_core.dkl`, so neither
imports the other for it.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prediction:
    """(N,) arrays in scalar units at every candidate.

    mean: the prediction (the median where the scalar is warped); std: the latent scalar's std;
    lower, upper: the 95 % interval of the scalar itself (latent: what the mean of many
    measurements there would be); predictive_lower, predictive_upper: the 95 % predictive interval
    of one new measurement there (latent + the fitted measurement noise), which is where an
    unmeasured value, noise and all, is expected to fall. It contains [lower, upper]."""

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    predictive_lower: np.ndarray
    predictive_upper: np.ndarray
