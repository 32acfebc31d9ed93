"""Acquisition functions: which candidates to measure next, given the model's posterior.

Each acquisition scores every candidate (:meth:`Acquisition.score`); :meth:`Acquisition.select`
picks a batch of q distinct, never-measured candidates. For q > 1 the deterministic
scores use the kriging believer: after each pick the posterior is conditioned on that
point at its predicted mean (its variance shrinks nearby) and the scores are recomputed.
An optional travel penalty subtracts ``travel * distance / survey diagonal`` from the
min-max normalised score, so the probe prefers short moves.
"""
from __future__ import annotations

import abc
import typing

import numpy as np
import torch

from emedge_core import EmedgeError
from emedge_core.dkl import Posterior


class Acquisition(abc.ABC):
    name: typing.ClassVar[str]
    needs_model: typing.ClassVar[bool] = True      # False: select() ignores the posterior (may be None)

    @abc.abstractmethod
    def score(self, post: Posterior, rng: np.random.Generator) -> np.ndarray:
        """(N,) score per candidate; higher is better."""

    def select(self, post: Posterior, q: int, exclude: np.ndarray, rng: np.random.Generator,
               coords: typing.Optional[np.ndarray] = None, last: typing.Optional[np.ndarray] = None,
               travel: float = 0.0) -> np.ndarray:
        """Indices (q,) of the next candidates; ``exclude`` (N,) bool marks measured ones."""
        free = ~exclude
        q = min(q, int(free.sum()))
        chosen: list[int] = []
        for _ in range(q):
            s = self._penalised(self.score(post, rng), coords, last, travel)
            s[~free] = -np.inf
            i = int(rng.choice(np.flatnonzero(s == s.max())))     # ties broken at random, not by index
            chosen.append(i)
            free[i] = False
            if len(chosen) < q:
                post = post.fantasize(i)
                if coords is not None:
                    last = coords[i]
        return np.array(chosen, dtype=np.int64)

    @staticmethod
    def _penalised(s: np.ndarray, coords: typing.Optional[np.ndarray], last: typing.Optional[np.ndarray],
                   travel: float) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64).copy()
        if travel <= 0 or coords is None or last is None:
            return s
        lo, hi = np.nanmin(s), np.nanmax(s)
        s = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
        span = coords.max(axis=0) - coords.min(axis=0)
        diag = float(np.hypot(*span)) or 1.0
        return s - travel * np.hypot(*(coords - last).T) / diag


class UCB(Acquisition):
    """Upper confidence bound: mean + beta * std."""

    name = "ucb"

    def __init__(self, beta: float = 2.0) -> None:
        self.beta = float(beta)

    def score(self, post: Posterior, rng: np.random.Generator) -> np.ndarray:
        return post.mean + self.beta * post.std


class EI(Acquisition):
    """Expected improvement over the best observed value (+ xi)."""

    name = "ei"

    def __init__(self, xi: float = 0.01) -> None:
        self.xi = float(xi)

    def score(self, post: Posterior, rng: np.random.Generator) -> np.ndarray:
        std = np.maximum(post.std, 1e-12)
        imp = post.mean - post.y_best - self.xi
        z = imp / std
        cdf = 0.5 * (1 + _erf(z / np.sqrt(2)))
        pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        return imp * cdf + std * pdf


class MaxVariance(Acquisition):
    """Pure exploration: the largest predictive variance."""

    name = "maxvar"

    def score(self, post: Posterior, rng: np.random.Generator) -> np.ndarray:
        return post.var


class Thompson(Acquisition):
    """Thompson sampling: argmax of joint posterior samples, one sample per pick.

    A joint sample over all candidates would need an N x N covariance, so each draw is
    taken jointly over a pool: the ``pool`` best candidates by UCB(2) plus as many drawn
    at random; elsewhere the score is -inf.
    """

    name = "thompson"

    def __init__(self, pool: int = 512) -> None:
        self.pool = int(pool)

    def select(self, post: Posterior, q: int, exclude: np.ndarray, rng: np.random.Generator,
               coords: typing.Optional[np.ndarray] = None, last: typing.Optional[np.ndarray] = None,
               travel: float = 0.0) -> np.ndarray:
        free = np.flatnonzero(~exclude)
        q = min(q, len(free))
        ucb = (post.mean + 2 * post.std)[free]
        top = free[np.argsort(ucb)[::-1][: self.pool]]
        rest = np.setdiff1d(free, top)
        extra = rng.choice(rest, size=min(self.pool, len(rest)), replace=False) if len(rest) else rest
        pool = np.concatenate([top, extra])
        draws = post.sample(pool, max(q * 4, 8), rng)
        chosen: list[int] = []
        for d in draws:
            s = self._penalised(d, coords[pool] if coords is not None else None, last, travel)
            s[np.isin(pool, chosen)] = -np.inf
            chosen.append(int(pool[int(np.argmax(s))]))
            if len(chosen) == q:
                break
        return np.array(chosen, dtype=np.int64)

    def score(self, post: Posterior, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(post.mean, post.std)


class Random(Acquisition):
    """Baseline: uniformly random unmeasured candidates."""

    name = "random"
    needs_model = False

    def score(self, post: Posterior, rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(post.mean))

    def select(self, post: typing.Optional[Posterior], q: int, exclude: np.ndarray,
               rng: np.random.Generator, coords: typing.Optional[np.ndarray] = None,
               last: typing.Optional[np.ndarray] = None, travel: float = 0.0) -> np.ndarray:
        free = np.flatnonzero(~exclude)
        return rng.choice(free, size=min(q, len(free)), replace=False).astype(np.int64)


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised error function (torch's, on float64)."""
    return torch.special.erf(torch.as_tensor(x, dtype=torch.float64)).numpy()


ACQUISITIONS: dict[str, type[Acquisition]] = {c.name: c for c in (UCB, EI, MaxVariance, Thompson, Random)}


def make_acquisition(name: str, **params: typing.Any) -> Acquisition:
    """Acquisition by name (ucb, ei, maxvar, thompson, random) with its parameters."""
    cls = ACQUISITIONS.get(name)
    if cls is None:
        raise EmedgeError(f"unknown acquisition {name!r}; known: {', '.join(ACQUISITIONS)}")
    try:
        return cls(**params)
    except TypeError as e:
        raise EmedgeError(f"bad parameters for acquisition {name!r}: {e}") from None
