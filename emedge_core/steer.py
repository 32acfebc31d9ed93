"""Ask/tell steering: ``Steerer.suggest`` where to measure, ``Steerer.observe`` what came back.

The steerer owns the candidate set (survey patches), the surrogate model and the acquisition.
It never suggests a position twice. Values that come back NaN (a bad frame) are kept as
failed measurements and not given to the model. The first ``seeds`` suggestions are
random (so are all of them for a policy that needs no model); after that every suggestion
scores every candidate under the model's current posterior.

The model is a surrogate with ``tell`` / ``posterior`` / ``prediction`` (:class:`emedge_core.gp.GPSurrogate`
by default: :func:`default_model`); a :class:`~emedge_core.dkl.DKLRegressor` is accepted too and
wrapped (:class:`~emedge_core.dkl.DKLSurrogate`). ``observe`` conditions the model on the new values
at once (a rank-1 update) and a refit runs in the background, so ``suggest`` does not wait for
training.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.acquisition import Acquisition
from emedge_core.dkl import DKLRegressor, DKLSurrogate, Posterior
from emedge_core.gp import STRUCTURES, GPSurrogate
from emedge_core.prediction import Prediction
from emedge_core.lattice import length_unit_px
from emedge_core.patches import Patches
from emedge_core.stopping import History


class Surrogate(typing.Protocol):
    refits: int
    updates: int

    def tell(self, idx: typing.Sequence[int], y: typing.Sequence[float]) -> None: ...

    def posterior(self) -> typing.Optional[Posterior]: ...

    def prediction(self, wait: bool = True) -> typing.Optional[Prediction]: ...

    def wait(self) -> None: ...

    def describe(self) -> dict[str, typing.Any]: ...


def default_model(patches: Patches, survey: np.ndarray, *, background: bool = True,
                  structures: typing.Sequence[str] = STRUCTURES, warp: str = "auto",
                  device: typing.Optional[str] = None) -> GPSurrogate:
    """The default surrogate for ``patches`` of ``survey`` (H, W): the GP on patch features and
    position, length scales in the survey's lattice period (or feature size when it has none)."""
    unit, _ = length_unit_px(survey)
    return GPSurrogate(patches.features, patches.coords, unit_px=unit, structures=structures, warp=warp,
                       background=background, device=device)


class Steerer:
    """patches: the candidates; model: a surrogate (see :func:`default_model`) or a DKLRegressor;
    acquisition: the policy; seeds: random positions measured before the model steers (>= 2);
    batch: default q; travel: travel-distance penalty weight (0 = none); seed: random generator seed."""

    def __init__(self, patches: Patches, model: typing.Union[Surrogate, DKLRegressor], acquisition: Acquisition, *,
                 seeds: int = 10, batch: int = 1, travel: float = 0.0, seed: int = 0) -> None:
        if seeds < 2:
            raise ValueError("seeds must be >= 2 (the GP needs two points)")
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.patches, self.acquisition = patches, acquisition
        self.model: Surrogate = (DKLSurrogate(model, patches.features, patches.coords)
                                 if isinstance(model, DKLRegressor) else model)
        self.seeds, self.batch, self.travel = int(seeds), int(batch), float(travel)
        if isinstance(self.model, GPSurrogate) and self.model.n_random is None:
            self.model.n_random = self.seeds        # its intervals are calibrated on the random seeds
        self.rng = np.random.default_rng(seed)
        self.measured = np.zeros(len(patches), bool)
        self.order: list[int] = []            # every measured candidate, in order
        self.values: list[float] = []         # its value (NaN = failed)
        self.predicted: list[float] = []      # prediction made before the value came (NaN = none)
        self._told = 0                        # entries of ``order`` handed to the model so far

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
        pred = self.model.prediction(wait=False) if self.acquisition.needs_model and not self.seeding else None
        for i, v in zip(idx.tolist(), vals.tolist(), strict=True):
            self.measured[i] = True
            self.order.append(i)
            self.values.append(v)
            self.predicted.append(float(pred.mean[i]) if pred is not None else np.nan)
        if self.acquisition.needs_model:
            self._tell_pending()

    def _tell_pending(self) -> None:
        """Hand the model the good values it has not seen yet."""
        new = [(self.order[k], self.values[k]) for k in range(self._told, len(self.order))
               if np.isfinite(self.values[k])]
        self._told = len(self.order)
        if new:
            self.model.tell([i for i, _ in new], [v for _, v in new])

    # -- suggestions -------------------------------------------------------------------
    @property
    def seeding(self) -> bool:
        return len(self.good) < self.seeds

    def suggest(self, n: typing.Optional[int] = None) -> np.ndarray:
        """(q, 2) survey pixels (row, col) to measure next; q = n, or the seeds still missing,
        or ``batch``. Empty when every candidate has been measured."""
        if self.measured.all():
            return np.zeros((0, 2), np.int64)
        post = None if self.seeding or not self.acquisition.needs_model else self.model.posterior()
        coords = self.patches.coords
        if post is None:
            q = n if n is not None else (self.seeds - len(self.good) if self.seeding else self.batch)
            idx = self.rng.choice(np.flatnonzero(~self.measured), size=min(q, int((~self.measured).sum())),
                                  replace=False).astype(np.int64)
        else:
            last = coords[self.order[-1]] if self.order else None
            idx = self.acquisition.select(post, n or self.batch, self.measured.copy(), self.rng,
                                          coords=coords, last=last, travel=self.travel)
        return coords[idx]

    def posterior(self, wait: bool = True) -> typing.Optional[Prediction]:
        """What the model believes at every candidate, in the scalar's units: ``.mean`` (N,), ``.std``
        (N,), ``.lower`` / ``.upper`` (N,) the 95 % interval; None before two values. Without ``wait``
        also None while the first fit is still running in the background."""
        self._tell_pending()
        return self.model.prediction(wait=wait)

    def history(self) -> History:
        """What the stopping rules look at."""
        good = self.good
        pred = self.model.prediction(wait=False) if self.acquisition.needs_model and len(good) >= 2 else None
        return History(n_measured=len(self.order),
                       max_std=float(pred.std[~self.measured].max()) if pred is not None and not self.measured.all()
                       else None,
                       predicted=np.asarray(self.predicted)[good], measured=np.asarray(self.values)[good])
