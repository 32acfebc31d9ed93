"""Shared fixtures. Each test module keeps its own data small: the suite runs on 2 cores."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
