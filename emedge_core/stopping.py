"""Stopping rules. Each looks at the steering history and names itself when it fires.

- :class:`Budget` - the number of measurements (failed ones included) reached N;
- :class:`Uncertainty` - the largest predictive standard deviation over the candidates
  fell below ``threshold`` (in the scalar's units);
- :class:`Predictability` - the model predicted each of the last ``k`` measurements within
  ``tolerance`` (in the scalar's units) before it saw them.
"""
from __future__ import annotations

import abc
import dataclasses
import typing

import numpy as np


@dataclasses.dataclass(frozen=True)
class History:
    """What the rules see: counts, the latest max std, and predicted-vs-measured pairs."""

    n_measured: int
    max_std: typing.Optional[float]
    predicted: np.ndarray   # (m,) predictions made before each successful measurement (NaN = none)
    measured: np.ndarray    # (m,) the measured values, same order


class StoppingRule(abc.ABC):
    name: typing.ClassVar[str]

    @abc.abstractmethod
    def fired(self, history: History) -> bool:
        """True when the experiment should stop."""


@dataclasses.dataclass(frozen=True)
class Budget(StoppingRule):
    n: int
    name: typing.ClassVar[str] = "budget"

    def fired(self, history: History) -> bool:
        return history.n_measured >= self.n


@dataclasses.dataclass(frozen=True)
class Uncertainty(StoppingRule):
    threshold: float
    name: typing.ClassVar[str] = "uncertainty"

    def fired(self, history: History) -> bool:
        return history.max_std is not None and history.max_std < self.threshold


@dataclasses.dataclass(frozen=True)
class Predictability(StoppingRule):
    k: int
    tolerance: float
    name: typing.ClassVar[str] = "predictability"

    def fired(self, history: History) -> bool:
        if len(history.predicted) < self.k:
            return False
        err = np.abs(history.predicted[-self.k:] - history.measured[-self.k:])
        return bool(np.all(np.isfinite(err)) and np.all(err <= self.tolerance))


def first_fired(rules: typing.Sequence[StoppingRule], history: History) -> typing.Optional[str]:
    """Name of the first rule that fires, or None."""
    for rule in rules:
        if rule.fired(history):
            return rule.name
    return None
