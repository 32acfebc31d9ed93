"""Pre-transforms before the entropy stage, each with an exact (or bounded) inverse a reader applies.

- :class:`Delta` - neighbouring-frame prediction. Inside each chunk the frames along the chunk's
  frame axis are replaced by their difference to the previous frame (the chunk's first frame is
  kept), computed on the unsigned-integer view of the bits, so it is exact for every dtype.
  Stored dtype: ``uint8/16/32/64`` of the same width. A reader undoes it per chunk with
  ``np.cumsum(stored, axis=frame_axis, dtype=stored.dtype).view(original_dtype)``.
- :class:`SqrtQuant` - dose-aware quantisation for Poisson data: ``y = round(2*sqrt(x + 3/8) / q)``
  stored as ``uint16``; inverse ``x = (q*y/2)**2 - 3/8``. The error of
  each value is at most ``q/2*sqrt(x + 3/8) + q**2/16`` (+0.5 for integer data, rounded back), i.e.
  ``q/2`` Poisson standard deviations; the bound and the realised maximum error are recorded.
"""
from __future__ import annotations

import dataclasses
import typing

import numpy as np

from emedge_core import EmedgeError


@dataclasses.dataclass(frozen=True)
class Delta:
    """Frame-to-frame difference inside each chunk along ``axis`` (exact, modular on the bit view)."""

    name: typing.ClassVar[str] = "delta"
    lossless: typing.ClassVar[bool] = True
    params: dict[str, typing.Any] = dataclasses.field(default_factory=dict)

    @staticmethod
    def stored_dtype(dtype: np.dtype) -> np.dtype:
        return np.dtype(f"u{np.dtype(dtype).itemsize}")

    def forward(self, chunk: np.ndarray, axis: int) -> np.ndarray:
        u = np.ascontiguousarray(chunk).view(self.stored_dtype(chunk.dtype))
        out = np.empty_like(u)
        lead = [slice(None)] * u.ndim
        first, tail = list(lead), list(lead)
        lead[axis], tail[axis], first[axis] = slice(1, None), slice(None, -1), slice(0, 1)
        out[tuple(first)] = u[tuple(first)]          # one pass over the data: no copy-then-subtract
        np.subtract(u[tuple(lead)], u[tuple(tail)], out=out[tuple(lead)])
        return out

    def inverse(self, stored: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
        return np.cumsum(stored, axis=axis, dtype=stored.dtype).view(dtype)

    def attrs(self) -> dict[str, typing.Any]:
        return {"emedge_prediction": "delta",
                "emedge_prediction_inverse": "per chunk: np.cumsum(stored, axis=frame_axis, dtype=stored.dtype)"
                                             ".view(emedge_original_dtype)"}

    def bound(self, data: np.ndarray) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class SqrtQuant:
    """Anscombe (square-root) quantisation with step ``q`` in units of Poisson standard deviations."""

    name: typing.ClassVar[str] = "sqrt"
    lossless: typing.ClassVar[bool] = False
    params: dict[str, typing.Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not float(self.params.get("q", 1.0)) > 0:
            raise EmedgeError(f"sqrt quantisation step q must be > 0, not {self.params.get('q')}")

    @property
    def q(self) -> float:
        return float(self.params.get("q", 1.0))

    @staticmethod
    def stored_dtype(dtype: np.dtype) -> np.dtype:
        return np.dtype(np.uint16)

    def forward(self, chunk: np.ndarray, axis: int) -> np.ndarray:
        x = np.asarray(chunk, np.float64)
        if x.size and (not np.isfinite(x).all() or x.min() < -0.375):
            raise EmedgeError("sqrt quantisation is for Poisson-like data >= -0.375 with no NaN/inf")
        y = np.rint(2.0 * np.sqrt(x + 0.375) / self.q)
        if y.size and y.max() > 65535:
            raise EmedgeError(f"values up to {x.max():g} are too large for sqrt quantisation at q={self.q} (uint16)")
        return y.astype(np.uint16)

    def inverse(self, stored: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
        x = (self.q * stored.astype(np.float64) / 2.0) ** 2 - 0.375
        if np.dtype(dtype).kind in "ui":
            return np.clip(np.rint(x), 0, np.iinfo(dtype).max).astype(dtype)
        return x.astype(dtype)

    def attrs(self) -> dict[str, typing.Any]:
        return {"emedge_prediction": "sqrt", "emedge_sqrt_q": self.q,
                "emedge_prediction_inverse": "x = (emedge_sqrt_q * stored / 2)**2 - 3/8 (rounded for integer dtypes)"}

    def bound(self, data: np.ndarray) -> dict[str, typing.Any]:
        """The stated bound for ``data``: a formula per value and its maximum over the data."""
        vmax = float(np.max(data)) if data.size else 0.0
        extra = 0.5 if np.dtype(data.dtype).kind in "ui" else 0.0
        return {"mode": "poisson_sqrt", "q": self.q,
                "formula": f"|x' - x| <= {self.q}/2*sqrt(x + 3/8) + {self.q}**2/16" + (" + 0.5" if extra else ""),
                "value": self.q / 2 * np.sqrt(vmax + 0.375) + self.q ** 2 / 16 + extra}


TRANSFORMS: dict[str, type] = {"delta": Delta, "sqrt": SqrtQuant}
