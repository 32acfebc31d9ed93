"""The steering surrogate: an exact GP on patch features and probe position, chosen and calibrated
on the points already measured, conditioned on each new point by a rank-1 Cholesky update.

Kernel (on standardised, possibly warped targets)::

    k(i, j) = s_f exp(-|f_i - f_j|^2 / 2 l_f^2)  +  s_s matern52(|p_i - p_j| / (l_s * unit))

f: the candidate's patch features (PCA scores of the survey patch); p: its probe position (px);
unit: the survey's lattice period from its FFT, or the size of its features when it has no lattice
(:mod:`emedge_core.lattice`), so l_s is in lattice periods, never in pixels.

What is decided from the measured points, re-decided at every refit:

- the structure: ``"pca"`` (features only, the plain GP), ``"space"`` or ``"pca+space"``;
- the warp: for a scalar that was never negative, z = log(y + c) with c in {0.1, 1, 10} x the median
  (a large c is nearly the identity); predictions then stay >= 0;
- by the leave-one-out (LOO) log predictive density of the measured values, in the scalar's units
  (warp Jacobian included), closed form from one Cholesky factor (Rasmussen & Williams eq. 5.12).

Hyper-parameters are MAP estimates (log-normal priors around lengths set by the data: the median
feature distance, half a lattice period) started from the previous ones, and the previous ones are
kept when the new ones do not improve the LOO score, so they do not jump between steps. The
std the acquisition sees is calibrated by the LOO z-scores: multiplied by max(1, q95(|z|) / 1.96). The
reported intervals are calibrated on the random seeds too, the only measured points exchangeable with
the unmeasured candidates (the acquisition picks the others where values are high): the largest of
that factor and the seeds' maximum-likelihood std factors, left out one at a time and all together
(predicted from the picked points alone), times t_m(0.975) / 1.96 for m seeds. They are then widened
to the hull of what one plug-in fit leaves out (:func:`interval_hull`): a second fit standardised with
all values instead of the seeds', and each fit averaged over the Laplace approximation of its
hyper-parameters (at its sigma points).

Between refits, :meth:`GPState.update` conditions the posterior over all N candidates on a new
point exactly (same hyper-parameters): with V = L^-1 K(train, all) kept, the new row of V is
(K(x, all) - V^T l) / d, l = V[:, x], d^2 = k(x, x) + noise - l.l; mean += row * w_new, var -= row^2.
That is O(n N) - milliseconds - against O(n^2 N) for the full posterior.
"""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import torch

from emedge_core.dkl import Posterior
from emedge_core.prediction import Prediction

STRUCTURES = ("pca", "space", "pca+space")
WARP_FACTORS = (0.1, 1.0, 10.0, 100.0)     # x the median; 100 is nearly the identity (kept >= 0)
MARGIN = 0.05    # nats per measured point a position-term kernel must gain over the feature kernel
_BOUNDS = {"sf": (1e-3, 20.0), "lf": (1e-2, 1e2), "ss": (1e-3, 20.0), "ls": (0.05, 20.0), "noise": (1e-4, 2.0)}


@dataclasses.dataclass(frozen=True)
class Warp:
    """z = log(y + c) (``c`` > 0) or z = y (``c`` None); then standardised: (z - mean) / scale."""

    c: typing.Optional[float]
    mean: float
    scale: float

    def forward(self, y: np.ndarray) -> np.ndarray:
        z = np.log(np.asarray(y, np.float64) + self.c) if self.c is not None else np.asarray(y, np.float64)
        return (z - self.mean) / self.scale

    def inverse(self, u: np.ndarray) -> np.ndarray:
        z = np.asarray(u, np.float64) * self.scale + self.mean
        return np.maximum(np.exp(z) - self.c, 0.0) if self.c is not None else z

    def log_jacobian(self, y: np.ndarray) -> np.ndarray:
        """log |du/dy| per value (density in u -> density in y)."""
        if self.c is None:
            return np.full(np.shape(y), -math.log(self.scale))
        return -np.log(np.asarray(y, np.float64) + self.c) - math.log(self.scale)

    @staticmethod
    def fit(y: np.ndarray, c: typing.Optional[float]) -> "Warp":
        z = np.log(y + c) if c is not None else np.asarray(y, np.float64)
        sd = float(z.std())
        return Warp(c, float(z.mean()), sd if sd > 1e-12 else 1.0)


@dataclasses.dataclass(frozen=True)
class Hypers:
    """Kernel hyper-parameters on standardised targets; ls in length units (lattice periods)."""

    structure: str
    sf: float = 0.5
    lf: float = 1.0
    ss: float = 0.5
    ls: float = 0.5
    noise: float = 0.05
    mean: float = 0.0

    def as_dict(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)


class Inputs:
    """Candidate inputs on one device: features (N, F) and coordinates in length units (N, 2)."""

    def __init__(self, features: np.ndarray, coords: np.ndarray, unit_px: float,
                 device: typing.Optional[str] = None) -> None:
        self.device = torch.device(device or "cpu")
        self.f = torch.as_tensor(np.asarray(features, np.float64), device=self.device)
        self.p = torch.as_tensor(np.asarray(coords, np.float64) / float(unit_px), device=self.device)
        self.unit_px = float(unit_px)
        self.z = torch.cat([self.f, self.p], dim=1)        # (N, F + 2), what Posterior samples over
        sub = np.asarray(features, np.float64)[:: max(1, len(features) // 512)]
        d = np.sqrt(((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1))
        self.median_feature_distance = float(np.median(d[d > 0])) if (d > 0).any() else 1.0

    def __len__(self) -> int:
        return int(self.f.shape[0])


def sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) squared Euclidean distances by one matrix product (torch.cdist is ~10x
    slower for a single row against many)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_(min=0.0)


def kernel(h: Hypers, fa: torch.Tensor, pa: torch.Tensor, fb: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) covariance between inputs a and b under ``h``."""
    out = torch.zeros((fa.shape[0], fb.shape[0]), dtype=torch.float64, device=fa.device)
    if "pca" in h.structure:
        out += h.sf * torch.exp(sqdist(fa, fb) * (-0.5 / h.lf ** 2))
    if "space" in h.structure:
        r = sqdist(pa, pb).sqrt_() * (math.sqrt(5.0) / h.ls)
        out += h.ss * (1 + r + r * r / 3) * torch.exp(-r)
    return out


def prior_diag(h: Hypers) -> float:
    return (h.sf if "pca" in h.structure else 0.0) + (h.ss if "space" in h.structure else 0.0)


# -- hyper-parameter fit -----------------------------------------------------------------------------
_NAMES = ("sf", "lf", "ss", "ls", "noise")


def _active(structure: str) -> list[str]:
    names = ["noise"]
    if "pca" in structure:
        names += ["sf", "lf"]
    if "space" in structure:
        names += ["ss", "ls"]
    return names


def _objective(inputs: Inputs, idx: np.ndarray, u: np.ndarray,
               structure: str) -> tuple[list[str], typing.Callable[[torch.Tensor], torch.Tensor]]:
    """The negative log posterior of ``structure``'s hyper-parameters on standardised targets ``u`` at
    candidates ``idx``: the exact marginal likelihood plus log-normal priors, as a function of
    x = (log of each active hyper-parameter, in the order of the returned names; the constant mean)."""
    names = _active(structure)
    centre = {"sf": 0.5, "ss": 0.5, "lf": inputs.median_feature_distance, "ls": 0.5, "noise": 0.05}
    width = {"sf": 1.5, "ss": 1.5, "lf": 1.0, "ls": 1.0, "noise": 1.5}
    it = torch.as_tensor(idx, device=inputs.device)
    fa, pa = inputs.f[it], inputs.p[it]
    df2 = torch.cdist(fa, fa).square()
    dp = torch.cdist(pa, pa)
    y = torch.as_tensor(u, dtype=torch.float64, device=inputs.device)
    eye = torch.eye(len(u), dtype=torch.float64, device=inputs.device)
    lo = torch.tensor([math.log(_BOUNDS[k][0]) for k in names], dtype=torch.float64, device=inputs.device)
    hi = torch.tensor([math.log(_BOUNDS[k][1]) for k in names], dtype=torch.float64, device=inputs.device)
    mu0 = torch.tensor([math.log(centre[k]) for k in names], dtype=torch.float64, device=inputs.device)
    sd0 = torch.tensor([width[k] for k in names], dtype=torch.float64, device=inputs.device)

    def loss(x: torch.Tensor) -> torch.Tensor:
        logs = torch.clamp(x[:-1], lo, hi)
        v = dict(zip(names, torch.exp(logs), strict=True))
        k = v["noise"] * eye
        if "sf" in v:
            k = k + v["sf"] * torch.exp(-0.5 * df2 / v["lf"] ** 2)
        if "ss" in v:
            r = math.sqrt(5.0) * dp / v["ls"]
            k = k + v["ss"] * (1 + r + r * r / 3) * torch.exp(-r)
        chol, info = torch.linalg.cholesky_ex(k + 1e-8 * eye)
        if int(info) != 0:
            chol = torch.linalg.cholesky(k + 1e-4 * eye)
        r_ = (y - x[-1])[:, None]
        a = torch.cholesky_solve(r_, chol)
        nll = 0.5 * (r_ * a).sum() + torch.log(torch.diagonal(chol)).sum()
        prior = 0.5 * (((logs - mu0) / sd0) ** 2).sum() + 0.5 * x[-1] ** 2
        return nll + prior

    return names, loss


def _x(h: Hypers, names: typing.Sequence[str]) -> list[float]:
    """x of :func:`_objective` for ``h``: the log of each hyper-parameter in ``names``, then the mean."""
    return [math.log(getattr(h, k)) for k in names] + [h.mean]


def _clamped(h: Hypers, names: typing.Sequence[str], x: typing.Sequence[float]) -> Hypers:
    """``h`` with the active hyper-parameters exp(x[i]) (within their bounds) and the mean x[-1]."""
    vals = {k: float(math.exp(min(max(float(x[i]), math.log(_BOUNDS[k][0])), math.log(_BOUNDS[k][1]))))
            for i, k in enumerate(names)}
    return dataclasses.replace(h, mean=float(x[-1]), **vals)  # type: ignore[arg-type]


def fit_hypers(inputs: Inputs, idx: np.ndarray, u: np.ndarray, init: Hypers, iters: int = 40) -> Hypers:
    """MAP hyper-parameters of ``init.structure`` on standardised targets ``u`` at candidates ``idx``,
    started from ``init`` (L-BFGS on :func:`_objective`)."""
    names, loss = _objective(inputs, idx, u, init.structure)
    x = torch.tensor(_x(init, names), dtype=torch.float64, device=inputs.device, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss(x)
        value.backward()
        return value

    try:
        opt.step(closure)
    except (RuntimeError, torch.linalg.LinAlgError):
        return init
    if not torch.isfinite(x).all():
        return init
    return _clamped(init, names, x.detach().cpu().tolist())


HESSIAN_FLOOR = 0.25     # a direction the data leave flat gets a log-sd of at most 2 (1 / sqrt(0.25))


def hyper_points(inputs: Inputs, idx: np.ndarray, u: np.ndarray, h: Hypers) -> list[Hypers]:
    """The 2d sigma points of the Laplace approximation of the posterior of ``h.structure``'s d
    hyper-parameters (x of :func:`_objective`, the mean included) at the MAP ``h``: x_MAP +- sqrt(d) sd_j e_j
    along each eigenvector e_j of the Hessian of the negative log posterior (sd_j = its eigenvalue^-1/2,
    eigenvalues floored at :data:`HESSIAN_FLOOR`). Equal weights give the Gaussian's mean and
    covariance exactly (the unscented transform), with no random draws. Empty when the Hessian cannot
    be had."""
    names, loss = _objective(inputs, idx, u, h.structure)
    x0 = torch.tensor(_x(h, names), dtype=torch.float64, device=inputs.device)
    try:
        hess = torch.autograd.functional.hessian(loss, x0).cpu().numpy()
    except (RuntimeError, torch.linalg.LinAlgError):
        return []
    if not np.isfinite(hess).all():
        return []
    w, vecs = np.linalg.eigh((hess + hess.T) / 2)
    d = len(w)
    step = math.sqrt(d) / np.sqrt(np.maximum(w, HESSIAN_FLOOR))
    x = x0.cpu().numpy()
    return [_clamped(h, names, x + sign * step[j] * vecs[:, j]) for j in range(d) for sign in (1.0, -1.0)]


def _chol(k: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(k), dtype=k.dtype, device=k.device)
    jitter = 0.0
    while True:
        chol, info = torch.linalg.cholesky_ex(k + jitter * eye)
        if int(info) == 0:
            return chol
        jitter = max(jitter * 10, 1e-8)
        if jitter > 1.0:
            raise torch.linalg.LinAlgError("kernel matrix is not positive definite")


def loo(inputs: Inputs, idx: np.ndarray, u: np.ndarray, h: Hypers) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out predictive mean and variance (noisy, standardised units) of every training point."""
    it = torch.as_tensor(idx, device=inputs.device)
    f, p = inputs.f[it], inputs.p[it]
    k = kernel(h, f, p, f, p) + h.noise * torch.eye(len(idx), dtype=torch.float64, device=inputs.device)
    chol = _chol(k)
    kinv = torch.cholesky_inverse(chol)
    y = torch.as_tensor(u, dtype=torch.float64, device=inputs.device) - h.mean
    alpha = kinv @ y
    d = torch.diagonal(kinv)
    mu = (torch.as_tensor(u, dtype=torch.float64, device=inputs.device) - alpha / d).cpu().numpy()
    return mu, (1.0 / d).cpu().numpy()


def loo_log_score(y: np.ndarray, warp: Warp, mu: np.ndarray, var: np.ndarray) -> float:
    """Mean LOO log predictive density of ``y`` in its own units."""
    u = warp.forward(y)
    lp = -0.5 * np.log(2 * np.pi * var) - 0.5 * (u - mu) ** 2 / var + warp.log_jacobian(y)
    return float(np.mean(lp))


# -- the posterior over all candidates, with rank-1 updates -------------------------------------------
class GPState:
    """Posterior over every candidate for fixed hyper-parameters and warp, grown one point at a time.

    mean_u, var_u: (N,) latent mean and variance in standardised warped units.
    calibration: the std factor the acquisition sees; interval_calibration: the one for the reported
    intervals and z-scores (None: the same).
    report: None, or (N,), (N,) lower and upper bounds in scalar units that the reported 95 % intervals
    are widened to where they are wider (:func:`interval_hull`); report_n: how many points it was
    computed from (it is kept while points are added: conservative near the new points).
    """

    def __init__(self, inputs: Inputs, hypers: Hypers, warp: Warp, calibration: float = 1.0,
                 capacity: int = 64, interval_calibration: typing.Optional[float] = None) -> None:
        self.inputs, self.h, self.warp, self.calibration = inputs, hypers, warp, float(calibration)
        self.interval_calibration = float(interval_calibration if interval_calibration is not None else calibration)
        n_all = len(inputs)
        dev = inputs.device
        self.idx: list[int] = []
        self._v = torch.zeros((capacity, n_all), dtype=torch.float64, device=dev)   # rows: L^-1 K(train, all)
        self._l = torch.zeros((capacity, capacity), dtype=torch.float64, device=dev)
        self._w = torch.zeros(capacity, dtype=torch.float64, device=dev)            # L^-1 (u - mean)
        self.mean_u = torch.full((n_all,), hypers.mean, dtype=torch.float64, device=dev)
        self.var_u = torch.full((n_all,), prior_diag(hypers), dtype=torch.float64, device=dev)
        self.y_best = -np.inf
        self.report: typing.Optional[tuple[np.ndarray, np.ndarray]] = None
        self.report_n = 0

    @property
    def n(self) -> int:
        return len(self.idx)

    def _grow(self) -> None:
        cap = self._v.shape[0] * 2
        v = torch.zeros((cap, self._v.shape[1]), dtype=torch.float64, device=self._v.device)
        v[: self.n] = self._v[: self.n]
        ll = torch.zeros((cap, cap), dtype=torch.float64, device=self._v.device)
        ll[: self.n, : self.n] = self._l[: self.n, : self.n]
        w = torch.zeros(cap, dtype=torch.float64, device=self._v.device)
        w[: self.n] = self._w[: self.n]
        self._v, self._l, self._w = v, ll, w

    @torch.no_grad()
    def update(self, i: int, y: float) -> None:
        """Condition on value ``y`` (scalar units) at candidate ``i``: exact, O(n N)."""
        if self.n == self._v.shape[0]:
            self._grow()
        n, inp, h = self.n, self.inputs, self.h
        k_row = kernel(h, inp.f[i:i + 1], inp.p[i:i + 1], inp.f, inp.p)[0]        # (N,)
        l_vec = self._v[:n, i]                                                        # (n,)
        d2 = float(k_row[i]) + h.noise - float(l_vec @ l_vec)
        d = math.sqrt(max(d2, 1e-10))
        row = (k_row - l_vec @ self._v[:n]) / d
        u = float(self.warp.forward(np.array([y]))[0])
        w_new = (u - h.mean - float(l_vec @ self._w[:n])) / d
        self._v[n] = row
        self._l[n, :n] = l_vec
        self._l[n, n] = d
        self._w[n] = w_new
        self.mean_u += row * w_new
        self.var_u -= row * row
        self.var_u.clamp_(min=0.0)
        self.idx.append(int(i))
        self.y_best = max(self.y_best, float(y))

    @torch.no_grad()
    def build(self, idx: np.ndarray, y: np.ndarray) -> "GPState":
        """Condition on all of ``idx``/``y`` at once (one Cholesky, O(n^2 N)); returns self."""
        idx = np.asarray(idx, np.int64)
        n = len(idx)
        while self._v.shape[0] < n + 1:
            self._grow()
        inp, h = self.inputs, self.h
        it = torch.as_tensor(idx, device=inp.device)
        k_tt = kernel(h, inp.f[it], inp.p[it], inp.f[it], inp.p[it])
        k_tt += h.noise * torch.eye(n, dtype=torch.float64, device=inp.device)
        chol = _chol(k_tt)
        k_ta = kernel(h, inp.f[it], inp.p[it], inp.f, inp.p)
        v = torch.linalg.solve_triangular(chol, k_ta, upper=False)
        u = torch.as_tensor(self.warp.forward(y), dtype=torch.float64, device=inp.device)
        w = torch.linalg.solve_triangular(chol, (u - h.mean)[:, None], upper=False)[:, 0]
        self._v[:n], self._l[:n, :n], self._w[:n] = v, chol, w
        self.mean_u = h.mean + v.T @ w
        self.var_u = torch.clamp(prior_diag(h) - (v * v).sum(0), min=0.0)
        self.idx = idx.tolist()
        self.y_best = float(np.max(y)) if n else -np.inf
        return self

    def posterior(self) -> Posterior:
        """The acquisition's view, in warped units (log scale when warped): a :class:`Posterior`."""
        s, cal = self.warp.scale, self.calibration
        inp, h = self.inputs, self.h
        z = inp.z
        nf = inp.f.shape[1]

        def kern(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return kernel(h, a[:, :nf], a[:, nf:], b[:, :nf], b[:, nf:])

        y_best = float(self.warp.forward(np.array([self.y_best]))[0]) * s + self.warp.mean if self.n else 0.0
        # covariances are (k - V^T V) * _scale^2: the calibration factor rides on _scale
        return Posterior(mean=self.mean_u.cpu().numpy() * s + self.warp.mean,
                         var=self.var_u.cpu().numpy() * (s * cal) ** 2, noise=h.noise * s * s,
                         y_best=y_best, _z=z, _v=self._v[: self.n], _kernel=kern, _scale=s * cal)

    def half_widths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,) latent mean and the reported 95 % interval's half-widths below and above it (N,), (N,),
        in standardised warped units: 1.96 interval-calibrated std, or as far as :attr:`report` reaches."""
        m = self.mean_u.cpu().numpy()
        a = 1.96 * np.sqrt(self.var_u.cpu().numpy()) * self.interval_calibration
        if self.report is None:
            return m, a, a
        lo, hi = self.report
        if self.warp.c is not None:                # down to the warp's floor (y = -c) at most
            lo = np.maximum(lo, -self.warp.c * (1 - 1e-9))
        return m, np.maximum(a, m - self.warp.forward(lo)), np.maximum(a, self.warp.forward(hi) - m)

    def with_noise(self, a: np.ndarray) -> np.ndarray:
        """Half-widths ``a`` of the latent 95 % interval -> those of a new measurement's (standardised
        warped units): sqrt(a^2 + 1.96^2 noise)."""
        return np.sqrt(a * a + 1.96 ** 2 * self.h.noise)

    def predictive(self) -> "Prediction":
        """Median, std and 95 % interval of the latent scalar at every candidate, in scalar units, and
        the 95 % predictive interval of a new measurement (each side's latent variance + the noise
        variance, in standardised warped units); the std is that of the interval's mean half-width (its
        half-width / 1.96 without a report)."""
        m, a_lo, a_hi = self.half_widths()
        sd = (a_lo + a_hi) / (2 * 1.96)
        lower, upper = self.warp.inverse(m - a_lo), self.warp.inverse(m + a_hi)
        b_lo, b_hi = self.with_noise(a_lo), self.with_noise(a_hi)
        lo_new = m - b_lo
        if self.warp.c is not None:                # a new measurement is >= 0 too
            lo_new = np.maximum(lo_new, self.warp.forward(np.zeros(1))[0])
        new_lower, new_upper = self.warp.inverse(lo_new), self.warp.inverse(m + b_hi)
        median = self.warp.inverse(m)
        if self.warp.c is None:
            std = sd * self.warp.scale
        else:                                    # log-normal std of y + c
            s2 = (sd * self.warp.scale) ** 2
            std = np.sqrt(np.expm1(s2)) * np.exp(self.warp.mean + m * self.warp.scale + s2 / 2)
        return Prediction(median, std, lower, upper, np.minimum(new_lower, lower), new_upper)


@dataclasses.dataclass(frozen=True)
class Choice:
    """A refit's outcome: hyper-parameters, warp, calibration factors and the LOO figures.

    calibration: the steering std factor, max(1, q95(|z_LOO|) / 1.96) over the measured points;
    interval_calibration: the factor for the reported intervals, >= calibration: also the random
    seeds' factors (:func:`seed_calibration`, :func:`leave_seeds_out`)."""

    hypers: Hypers
    warp: Warp
    calibration: float
    score: float
    loo_coverage: dict[str, float]
    interval_calibration: float = 1.0


def seed_calibration(r: np.ndarray, var: np.ndarray, noise: float, alpha: float = 0.05) -> float:
    """The latent-std factor that the random seeds' leave-one-out residuals ask for.

    r, var: (m,) LOO residuals and LOO predictive variances (latent + ``noise``) of m points drawn
    uniformly at random from the candidates - exchangeable with the unmeasured ones, unlike the points
    the acquisition picked. k is the maximum-likelihood factor of the latent std under
    r_i ~ N(0, k^2 (var_i - noise) + noise); as it is estimated from m residuals, the interval uses the
    Student-t quantile with m degrees of freedom: the factor is k t_m(1 - alpha/2) / z(1 - alpha/2)."""
    from scipy import stats

    r, var = np.asarray(r, np.float64), np.asarray(var, np.float64)
    m = len(r)
    if m < 3:
        return 1.0
    lat = np.maximum(var - noise, 1e-12)
    ks = np.exp(np.linspace(math.log(0.2), math.log(50.0), 400))
    s2 = ks[:, None] ** 2 * lat[None, :] + noise
    ll = -0.5 * (np.log(s2) + r[None, :] ** 2 / s2).sum(1)
    k = float(ks[int(np.argmax(ll))])
    return k * float(stats.t.ppf(1 - alpha / 2, m)) / float(stats.norm.ppf(1 - alpha / 2))


def leave_seeds_out(inputs: Inputs, idx: np.ndarray, u: np.ndarray, h: Hypers, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (k,) and predictive variances (k,) (latent + noise) of the first ``k`` points (the
    random seeds) predicted from the other points alone (those the acquisition picked): how wrong the
    model is, far from what it measured on purpose, when the seeds are not there to help."""
    it = torch.as_tensor(np.asarray(idx), device=inputs.device)
    a, s_ = it[k:], it[:k]
    k_aa = kernel(h, inputs.f[a], inputs.p[a], inputs.f[a], inputs.p[a])
    k_aa += h.noise * torch.eye(len(a), dtype=torch.float64, device=inputs.device)
    chol = _chol(k_aa)
    v = torch.linalg.solve_triangular(chol, kernel(h, inputs.f[a], inputs.p[a], inputs.f[s_], inputs.p[s_]),
                                      upper=False)
    ua = torch.as_tensor(u[k:], dtype=torch.float64, device=inputs.device) - h.mean
    w = torch.linalg.solve_triangular(chol, ua[:, None], upper=False)[:, 0]
    mean = (h.mean + v.T @ w).cpu().numpy()
    var = np.maximum(prior_diag(h) - (v * v).sum(0).cpu().numpy(), 0.0) + h.noise
    return np.asarray(u[:k], np.float64) - mean, var


def interval_hull(inputs: Inputs, idx: np.ndarray, y: np.ndarray, own: Choice,
                  others: typing.Sequence[Choice] = ()) -> typing.Optional[tuple[np.ndarray, np.ndarray]]:
    """(N,), (N,): lower and upper bounds in scalar units of the hull of 95 % intervals, conditioned on
    ``y`` (n,) at ``idx`` (n,), each with its fit's interval calibration: the posterior of ``own`` averaged
    over its hyper-parameters' Laplace approximation (the mixture of the posteriors at the
    :func:`hyper_points`: its mean and variance), and, for each of ``others``, its MAP posterior and
    that average. ``own``'s MAP interval is not repeated: it is the state's own (:meth:`GPState.half_widths`
    widens it to the hull). None when nothing could be conditioned. What one plug-in fit leaves out: how
    uncertain its hyper-parameters are, and how the targets were standardised."""
    y = np.asarray(y, np.float64)
    bounds: list[tuple[np.ndarray, np.ndarray]] = []

    def add(c: Choice, m: np.ndarray, v: np.ndarray) -> None:
        a = 1.96 * np.sqrt(v) * c.interval_calibration
        bounds.append((c.warp.inverse(m - a), c.warp.inverse(m + a)))

    for c, with_map in [(own, False), *((o, True) for o in others)]:
        moments = []
        for h in ([c.hypers] if with_map else []) + hyper_points(inputs, idx, c.warp.forward(y), c.hypers):
            try:
                st = GPState(inputs, h, c.warp, capacity=len(idx) + 1).build(idx, y)
            except torch.linalg.LinAlgError:
                continue
            moments.append((st.mean_u.cpu().numpy(), st.var_u.cpu().numpy()))
        if with_map and moments:
            add(c, *moments.pop(0))
        if moments:                                 # the sigma points, equally weighted
            means, variances = np.asarray([m for m, _ in moments]), np.asarray([v for _, v in moments])
            mix_m = means.mean(axis=0)
            add(c, mix_m, np.maximum((variances + means ** 2).mean(axis=0) - mix_m ** 2, 0.0))
    if not bounds:
        return None
    return np.min([b[0] for b in bounds], axis=0), np.max([b[1] for b in bounds], axis=0)


def choose(inputs: Inputs, idx: np.ndarray, y: np.ndarray, previous: typing.Optional[Choice],
           structures: typing.Sequence[str] = STRUCTURES, warp: str = "auto", margin: float = MARGIN,
           population: typing.Optional[np.ndarray] = None, n_random: int = 0) -> Choice:
    """Fit every structure x warp on the measured points and keep the best LOO log score (the
    previous choice, refitted on today's data without moving its hyper-parameters, competes too).
    A structure with the position term must beat the plain feature kernel by ``margin`` nats per point.
    ``population``: values measured at random (the seeds); the targets are standardised with their
    mean and spread, not those of all points, which the acquisition picked where values are high - so
    the prior mean far from the measurements is the specimen's, not that of the hits.
    ``n_random``: the first n_random points were drawn uniformly at random (the seeds), exchangeable
    with the unmeasured candidates; the reported intervals are calibrated on their residuals too
    (:func:`seed_calibration`): left out one at a time, and all together (:func:`leave_seeds_out`, the
    seeds predicted from the picked points alone); the largest factor is kept."""
    y = np.asarray(y, np.float64)
    cs: list[typing.Optional[float]] = [None]
    if warp == "auto" and (y >= 0).all():
        med = float(np.median(y)) or float(np.mean(y)) or 1.0
        cs = [f * med for f in WARP_FACTORS]
    best: typing.Optional[Choice] = None
    prev_h = {previous.hypers.structure: previous.hypers} if previous is not None else {}
    candidates: list[tuple[Hypers, Warp]] = []
    for c in cs:
        wp = Warp.fit(population if population is not None else y, c)
        u = wp.forward(y)
        for st in structures:
            init = prev_h.get(st)
            # a warm start needs few steps; a cold one more
            h = fit_hypers(inputs, idx, u, init, iters=15) if init else fit_hypers(
                inputs, idx, u, Hypers(st, lf=inputs.median_feature_distance), iters=40)
            candidates.append((h, wp))
    if previous is not None and previous.hypers.structure in structures:
        # keep them if no better (refitted warp statistics when standardising with all points)
        candidates.append((previous.hypers, previous.warp if population is not None else Warp.fit(y, previous.warp.c)))
    for h, wp in candidates:
        if wp.c is not None and (y + wp.c <= 0).any():
            continue
        try:
            mu, var = loo(inputs, idx, wp.forward(y), h)
        except torch.linalg.LinAlgError:
            continue
        score = loo_log_score(y, wp, mu, var) - (margin if "space" in h.structure and "pca" in structures else 0.0)
        if best is None or score > best.score + 1e-9:
            z = np.abs(wp.forward(y) - mu) / np.sqrt(var)
            cal = max(1.0, float(np.quantile(z, 0.95)) / 1.96) if len(z) >= 10 else 1.0
            k = min(n_random, len(y))
            seed_cal = seed_calibration((wp.forward(y) - mu)[:k], var[:k], h.noise)
            best = Choice(h, wp, cal, score, {"1sigma": float(np.mean(z <= 1.0)), "2sigma": float(np.mean(z <= 2.0))},
                          interval_calibration=max(cal, seed_cal))
    if best is not None and 0 < n_random < len(y):
        # the seeds predicted from the picked points alone: the far field's errors (conservative)
        r, v = leave_seeds_out(inputs, idx, best.warp.forward(y), best.hypers, n_random)
        far = seed_calibration(r, v, best.hypers.noise)
        best = dataclasses.replace(best, interval_calibration=max(best.interval_calibration, far))
    if best is None:
        raise RuntimeError("no kernel could be fitted to the measured points")
    return best


# -- the steerer's surrogate: cheap updates now, refits in the background ---------------------------------
class GPSurrogate:
    """The steering model over fixed candidates: :meth:`tell` conditions the posterior on new points at
    once (rank-1 updates, the current hyper-parameters); refits (:func:`choose` + a full
    :meth:`GPState.build`) run in a worker thread with ``background`` and are swapped in, with the
    points that came meanwhile added by rank-1 updates, when done - so :meth:`posterior` never waits
    for training, except for the very first fit (in line: in the background it starved behind a
    fast loop holding the GIL, and the run went on at random). Without ``background`` a refit runs
    in line when the
    points added since the last one reach max(1, n / ``refit_fraction``) - deterministic, for tests
    and benchmarks.

    features: (N, F) candidate features; coords: (N, 2) px; unit_px: the length unit (lattice period);
    structures: the kernels to choose from; warp: "auto" (log-warp a never-negative scalar) or "none";
    standardise_by_seeds: standardise the targets with the values of the first fit (the random seeds)
    rather than with all values (see :func:`choose`);
    n_random: how many of the first points told were drawn uniformly at random (the seeds; the
    :class:`~emedge_core.steer.Steerer` sets it), None: those of the first fit.
    interval_hull: the reported 95 % intervals are the hull (:func:`interval_hull`) of two fits, the
    steering one and one whose targets are standardised with all values (with ``standardise_by_seeds``),
    each at its MAP and averaged over its hyper-parameters' Laplace approximation; computed with each
    background refit, and from every point told by :meth:`prediction` with ``wait`` and by
    :meth:`zscores` (in line). False: the steering fit's MAP interval alone. The acquisition's std is
    never widened.
    On CPU torch runs one intra-op thread (small matrices; OpenMP threads spinning against another
    process on a 2-core box made a fit 20-60x slower).
    """

    def __init__(self, features: np.ndarray, coords: np.ndarray, *, unit_px: float,
                 structures: typing.Sequence[str] = STRUCTURES, warp: str = "auto", background: bool = True,
                 refit_fraction: int = 10, device: typing.Optional[str] = None,
                 standardise_by_seeds: bool = True, n_random: typing.Optional[int] = None,
                 interval_hull: bool = True) -> None:
        import threading

        bad = [s for s in structures if s not in STRUCTURES]
        if bad or not structures:
            raise ValueError(f"structures must be among {STRUCTURES}, not {list(structures)}")
        if warp not in ("auto", "none"):
            raise ValueError(f"warp must be 'auto' or 'none', not {warp!r}")
        self.inputs = Inputs(features, coords, unit_px, device)
        if self.inputs.device.type == "cpu":
            torch.set_num_threads(1)
        self.structures, self.warp, self.background = tuple(structures), warp, bool(background)
        self.refit_fraction = int(refit_fraction)
        self.standardise_by_seeds = bool(standardise_by_seeds)
        self.interval_hull = bool(interval_hull)
        self.idx: list[int] = []
        self.y: list[float] = []
        self.state: typing.Optional[GPState] = None
        self.choice: typing.Optional[Choice] = None
        self.refits = 0            # refits swapped in
        self.updates = 0           # rank-1 updates
        self.history: list[dict[str, typing.Any]] = []       # per refit: n, structure, hypers, score
        self._fitted_n = 0
        self._population: typing.Optional[np.ndarray] = None
        self.n_random = n_random
        self._n_random = 0
        self._lock = threading.Lock()
        self._worker: typing.Optional[threading.Thread] = None
        self._ready: typing.Optional[tuple[int, Choice, GPState, int, int]] = None
        self._error: typing.Optional[BaseException] = None

    # -- data in -------------------------------------------------------------------------
    def tell(self, idx: typing.Sequence[int], y: typing.Sequence[float]) -> None:
        """Add values ``y`` measured at candidates ``idx`` (finite only) and condition on them."""
        for i, v in zip(idx, y, strict=True):
            self.idx.append(int(i))
            self.y.append(float(v))
            if self.state is not None and self.state.warp.c is not None and v <= -self.state.warp.c:
                self.wait()                 # a negative value: the log warp no longer holds, refit now
                self.state = None
            if self.state is not None:
                self.state.update(int(i), float(v))
                self.updates += 1
        self._schedule()

    def _schedule(self) -> None:
        self._swap()
        n = len(self.y)
        if n < 2:
            return
        if self.state is None:
            self._install(*self._refit(n, None))
        elif self.background:
            if self._worker is None and n > self._fitted_n:
                import threading

                prev = self.choice
                # not a daemon: the interpreter joins it at exit (killing torch mid-op aborts the process)
                self._worker = threading.Thread(target=self._work, args=(n, prev), daemon=False,
                                                name="emedge-gp-refit")
                self._worker.start()
        elif n - self._fitted_n >= max(1, n // self.refit_fraction):
            self._install(*self._refit(n, self.choice))

    def _refit(self, n: int, prev: typing.Optional[Choice]) -> tuple[int, Choice, GPState]:
        idx, y = np.asarray(self.idx[:n]), np.asarray(self.y[:n])
        if self._n_random == 0:
            self._n_random = int(self.n_random) if self.n_random is not None else n
        if self._population is None and self.standardise_by_seeds:
            self._population = y.copy()
        c = choose(self.inputs, idx, y, prev, self.structures, self.warp, population=self._population,
                   n_random=self._n_random)
        return n, c, GPState(self.inputs, c.hypers, c.warp, c.calibration, capacity=max(64, 2 * n),
                             interval_calibration=c.interval_calibration).build(idx, y)

    def _report(self, state: GPState, c: Choice, n: int) -> None:
        """Set ``state.report`` for the fit ``c`` conditioned on the first ``n`` points told
        (:func:`interval_hull`); nothing without ``interval_hull``."""
        if not self.interval_hull:
            return
        idx, y = np.asarray(self.idx[:n]), np.asarray(self.y[:n])
        others = [choose(self.inputs, idx, y, None, self.structures, self.warp, n_random=self._n_random)
                  ] if self.standardise_by_seeds else []
        state.report = interval_hull(self.inputs, idx, y, c, others)
        state.report_n = n

    def _work(self, n: int, prev: typing.Optional[Choice]) -> None:
        """The background refit; then the points told meanwhile are added to the new posterior here,
        not on the steering thread, so that the swap-in is a reference swap (+ the odd last point)."""
        if self.inputs.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            n_fit, c, state = self._refit(n, prev)
            self._report(state, c, n_fit)
            have, updates = n_fit, 0
            while True:
                m = len(self.y)             # tell() appends idx before y: y's length bounds both
                if m <= have:
                    break
                for i, v in zip(self.idx[have:m], self.y[have:m], strict=True):
                    state.update(i, v)
                    updates += 1
                have = m
            with self._lock:
                self._ready = (n_fit, c, state, have, updates)
        except BaseException as e:          # handed to the steering thread at the next swap
            with self._lock:
                self._error = e

    def _swap(self) -> None:
        """Install a finished background refit (adding the points that came since)."""
        with self._lock:
            ready, err = self._ready, self._error
            self._ready = self._error = None
        if err is not None:
            self._worker = None
            raise err
        if ready is None:
            return
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        n_fit, c, state, have, updates = ready
        self.updates += updates
        self._install(n_fit, c, state, have)

    def _install(self, n: int, c: Choice, state: GPState, have: typing.Optional[int] = None) -> None:
        """Make ``state`` (hyper-parameters fitted on the first ``n`` points, conditioned on the first
        ``have``, default n) the current posterior, conditioned on the rest first."""
        start = n if have is None else have
        for i, v in zip(self.idx[start:], self.y[start:], strict=True):
            state.update(i, v)
            self.updates += 1
        self.state, self.choice, self._fitted_n = state, c, n
        self.refits += 1
        self.history.append({"n": n, "structure": c.hypers.structure, "warp_c": c.warp.c,
                             "calibration": c.calibration, "interval_calibration": c.interval_calibration,
                             "loo_log_score": c.score, **c.hypers.as_dict()})

    def wait(self) -> None:
        """Block until a running background refit is done and swapped in (for final maps)."""
        if self._worker is not None:
            self._worker.join()
        self._swap()

    # -- what the steerer reads ---------------------------------------------------------------------
    def posterior(self) -> typing.Optional[Posterior]:
        """The acquisition's view (warped units); None before two values."""
        self._swap()
        return self.state.posterior() if self.state is not None else None

    def prediction(self, wait: bool = True) -> typing.Optional[Prediction]:
        """Median, std and 95 % interval in scalar units; None before two values. With ``wait`` (final
        maps) the interval hull is brought up to every point told (in line); without, until the first
        background fit is in it is None, and the intervals are widened by the last refit's hull."""
        if wait and self.state is None and len(self.y) >= 2:
            self.wait()
        self._swap()
        if self.state is None:
            return None
        if wait:
            self._current_report()
        return self.state.predictive()

    def _current_report(self) -> None:
        """Recompute the interval hull from every point told, unless it is from them already."""
        st = self.state
        if st is not None and self.choice is not None and self.interval_hull and st.report_n < st.n:
            self._report(st, self.choice, st.n)

    def zscores(self, values: np.ndarray, noise: bool = False) -> np.ndarray:
        """(N,) |warped value - latent mean| / the reported latent std on the value's side (the 95 %
        interval's half-width there / 1.96) at every candidate, for ``values`` (N,) in scalar units
        (e.g. the ground truth): <= 1.96 means inside the reported 95 % interval. With ``noise`` the
        std is that of a new measurement (latent + noise): the predictive interval."""
        self._swap()
        if self.state is None:
            raise RuntimeError("no model yet: tell at least two values")
        self._current_report()
        st = self.state
        v = np.asarray(values, np.float64)
        if st.warp.c is not None:
            v = np.maximum(v, -st.warp.c * (1 - 1e-9))
        u = st.warp.forward(v)
        m, a_lo, a_hi = st.half_widths()
        a = np.where(u >= m, a_hi, a_lo)
        if noise:
            a = st.with_noise(a)
        return np.abs(u - m) / np.maximum(a / 1.96, 1e-150)

    def describe(self) -> dict[str, typing.Any]:
        """The current choice (kernel, hyper-parameters, LOO coverage) for summaries."""
        if self.choice is None:
            return {}
        c = self.choice
        return {"kernel": c.hypers.structure, "hyperparameters": dict(c.hypers.as_dict(), warp_c=c.warp.c,
                                                                      calibration=c.calibration,
                                                                      interval_calibration=c.interval_calibration,
                                                                      length_unit_px=self.inputs.unit_px,
                                                                      interval_hull=self.interval_hull),
                "loo_coverage": c.loo_coverage, "refits": self.refits, "updates": self.updates,
                "spatial": any("space" in st for st in self.structures), "final_loss": None,
                "loo_log_score": c.score}
