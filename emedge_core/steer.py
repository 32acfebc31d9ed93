"""Ask/tell steering: ``Steerer.suggest`` where to measure, ``Steerer.observe`` what came back.

The steerer owns the candidate set (survey patches), the DKL model and the acquisition.
It never suggests a position twice. Values that come back NaN (a bad frame) are kept as
failed measurements and not given to the model. The first ``seeds`` suggestions are
random; after that every suggestion refits the model (warm start) on all good
observations and scores every candidate.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.acquisition import Acquisition, Random
from emedge_core.dkl import DKLRegressor, Posterior
from emedge_core.patches import Patches
from emedge_core.stopping import History


class Steerer:
    """patches: the candidates; model: the DKL regressor; acquisition: the policy;
    seeds: random positions measured before the model steers (>= 2); batch: default q;
    travel: travel-distance penalty weight (0 = none); seed: random generator seed."""

    def __init__(self, patches: Patches, model: DKLRegressor, acquisition: Acquisition, *, seeds: int = 10,
                 batch: int = 1, travel: float = 0.0, seed: int = 0) -> None:
        if seeds < 2:
            raise ValueError("seeds must be >= 2 (the GP needs two points)")
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.patches, self.model, self.acquisition = patches, model, acquisition
        self.seeds, self.batch, self.travel = int(seeds), int(batch), float(travel)
        self.rng = np.random.default_rng(seed)
        self.measured = np.zeros(len(patches), bool)
        self.order: list[int] = []            # every measured candidate, in order
        self.values: list[float] = []         # its value (NaN = failed)
        self.predicted: list[float] = []      # prediction made before the value came (NaN = none)
        self._posterior: typing.Optional[Posterior] = None
        self._fitted_on = -1

    # -- observations ----------------------------------------------------------------
    @property
    def good(self) -> np.ndarray:
        """(m,) indices into ``order`` of the successful measurements."""
        return np.flatnonzero(np.isfinite(self.values))

    def observe(self, positions: np.ndarray, values: np.ndarray) -> None:
        """Record ``values`` (n,) measured at survey pixels ``positions`` (n, 2); NaN = failed."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(pos) != len(vals):
            raise ValueError(f"{len(pos)} positions but {len(vals)} values")
        idx = self.patches.lookup(pos)
        if (idx < 0).any():
            raise ValueError(f"positions {pos[idx < 0].tolist()} are not candidates")
        post = self._posterior
        for i, v in zip(idx.tolist(), vals.tolist()):
            self.measured[i] = True
            self.order.append(i)
            self.values.append(v)
            self.predicted.append(float(post.mean[i]) if post is not None else np.nan)

    # -- suggestions -------------------------------------------------------------------
    @property
    def seeding(self) -> bool:
        return len(self.good) < self.seeds

    def suggest(self, n: typing.Optional[int] = None) -> np.ndarray:
        """(q, 2) survey pixels (row, col) to measure next; q = n, or the seeds still missing,
        or ``batch``. Empty when every candidate has been measured."""
        if self.measured.all():
            return np.zeros((0, 2), np.int64)
        if self.seeding or isinstance(self.acquisition, Random):
            q = n if n is not None else (self.seeds - len(self.good) if self.seeding else self.batch)
            idx = Random().select(typing.cast(Posterior, None), q, self.measured.copy(), self.rng)
        else:
            post = self.posterior()
            assert post is not None
            coords = self.patches.coords
            last = coords[self.order[-1]] if self.order else None
            idx = self.acquisition.select(post, n or self.batch, self.measured.copy(), self.rng,
                                          coords=coords, last=last, travel=self.travel)
        return self.patches.coords[idx]

    def posterior(self) -> typing.Optional[Posterior]:
        """The model's posterior over all candidates, refitted if new values came; None before 2 values."""
        good = self.good
        if len(good) < 2:
            return None
        if self._fitted_on != len(self.values):
            idx = np.asarray(self.order)[good]
            y = np.asarray(self.values)[good]
            coords = self.patches.coords
            self.model.fit(self.patches.features[idx], y, coords=coords[idx])
            self._posterior = self.model.posterior(self.patches.features, coords=coords)
            self._fitted_on = len(self.values)
        return self._posterior

    def history(self) -> History:
        """What the stopping rules look at."""
        good = self.good
        post = self._posterior if self._fitted_on == len(self.values) else None
        return History(n_measured=len(self.order),
                       max_std=float(post.std[~self.measured].max()) if post is not None and not self.measured.all()
                       else None,
                       predicted=np.asarray(self.predicted)[good], measured=np.asarray(self.values)[good])
