"""Small data sets of every kind the codecs serve (shared by the compress/EMD tests)."""
from __future__ import annotations

import numpy as np


def disk(k: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:k, :k]
    return ((yy - k / 2) ** 2 + (xx - k / 2) ** 2) < r ** 2


def kinds(seed: int = 7) -> dict[str, np.ndarray]:
    """counting 4D uint16 (0.05-0.5 e/px + bright disk), integrating 4D float32, EELS SI float32,
    in-situ series uint16 with drift, and a 2-D survey image float64."""
    rng = np.random.default_rng(seed)
    k = 32
    lam = np.where(disk(k, 6), 3.0, rng.uniform(0.05, 0.5))
    counting = rng.poisson(lam, (5, 6, k, k)).astype(np.uint16)
    integrating = (np.where(disk(k, 6), 1000.0, 10.0) + rng.normal(0, 3, (4, 5, k, k))).astype(np.float32)
    e = np.linspace(100, 600, 200)
    eels = (rng.poisson(1e4 * (e / 100) ** -3 + 50 * (e > 284), (4, 6, 200))).astype(np.float32)
    yy, xx = np.mgrid[:48, :48]
    series = np.stack([rng.poisson(20 + 10 * np.sin((xx + 0.3 * t) / 3) * np.sin(yy / 3)) for t in range(9)]).astype(np.uint16)
    survey = rng.normal(size=(20, 24))
    return {"counting": counting, "integrating": integrating, "eels": eels, "series": series, "survey": survey}


def frame_axis(a: np.ndarray) -> int:
    """Axis the frames run along when the whole array is one chunk (the last scan axis)."""
    return {4: 1, 3: 0, 2: 0}[a.ndim] if a.ndim != 3 or a.shape[-1] != 200 else 1
