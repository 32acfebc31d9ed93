"""Deep kernel learning: a neural feature extractor under an exact Gaussian process (GPyTorch).

The split follows GPyTorch's own DKL example: :class:`DKLModel` is an ``ExactGP``
whose kernel acts on the output of an explicit ``feature_extractor``; the
:class:`~gpytorch.likelihoods.GaussianLikelihood` is a separate object; the
training loop is a plain visible loop in :meth:`DKLRegressor.fit`.

Speed between measurements comes from three things:

- warm start: each :meth:`DKLRegressor.fit` continues from the previous weights,
  hyper-parameters and optimizer state (``warm_iters`` steps), unless ``retrain``;
- the candidate features go through the network once per step, in batches;
- :meth:`DKLRegressor.posterior` computes the exact predictive mean and variance
  in closed form from one Cholesky factor of the n x n training kernel (the same
  numbers as GPyTorch's predictive distribution, without its per-call set-up),
  and keeps ``V = L^-1 K(train, all)`` so batch selection can condition on
  pending points cheaply (:meth:`Posterior.fantasize`).
"""
from __future__ import annotations

import dataclasses
import typing

import gpytorch
import numpy as np
import torch
from linear_operator.utils.errors import NotPSDError

KERNELS = ("rbf", "matern52", "matern32")
EXTRACTORS = ("mlp", "cnn")


def pick_device(device: typing.Optional[str] = None) -> torch.device:
    """``device`` if given, else CUDA when a GPU is present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MLPExtractor(torch.nn.Sequential):
    """Flattened patch (W*W) -> ``widths`` hidden ReLU layers -> ``embed_dim`` in (-1, 1) (tanh)."""

    def __init__(self, n_features: int, widths: typing.Sequence[int] = (64, 64), embed_dim: int = 2) -> None:
        layers: list[torch.nn.Module] = []
        prev = n_features
        for width in widths:
            layers += [torch.nn.Linear(prev, int(width)), torch.nn.ReLU()]
            prev = int(width)
        layers += [torch.nn.Linear(prev, embed_dim), torch.nn.Tanh()]
        super().__init__(*layers)


class CNNExtractor(torch.nn.Module):
    """Patch (W x W) -> two conv/pool stages -> linear -> ``embed_dim`` in (-1, 1)."""

    def __init__(self, window: int, channels: typing.Sequence[int] = (8, 16), embed_dim: int = 2) -> None:
        super().__init__()
        c1, c2 = int(channels[0]), int(channels[1])
        self.window = window
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2))
        self.head = torch.nn.Sequential(torch.nn.Linear(4 * c2, embed_dim), torch.nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x.reshape(-1, 1, self.window, self.window))
        return self.head(z.flatten(1))


class DKLModel(gpytorch.models.ExactGP):
    """Exact GP with a learned embedding: k(x, x') = s * base(f(x), f(x'))."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood,
                 feature_extractor: torch.nn.Module, embed_dim: int, kernel: str = "rbf",
                 min_lengthscale: float = 0.0) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.feature_extractor = feature_extractor
        if kernel == "rbf":
            base: gpytorch.kernels.Kernel = gpytorch.kernels.RBFKernel(
                ard_num_dims=embed_dim, lengthscale_constraint=gpytorch.constraints.GreaterThan(min_lengthscale))
        else:
            nu = 2.5 if kernel == "matern52" else 1.5
            base = gpytorch.kernels.MaternKernel(
                nu=nu, ard_num_dims=embed_dim, lengthscale_constraint=gpytorch.constraints.GreaterThan(min_lengthscale))
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(base)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        z = self.feature_extractor(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


@dataclasses.dataclass
class Posterior:
    """Predictive distribution over all candidates, in the units of the observed values.

    mean, var: (N,) numpy float64 (latent function, no observation noise).
    The torch members let acquisition functions condition on pending points.
    """

    mean: np.ndarray
    var: np.ndarray
    noise: float            # observation noise variance (y units^2)
    y_best: float           # best observed value (y units)
    _z: torch.Tensor = dataclasses.field(repr=False)       # (N, e) embeddings
    _v: torch.Tensor = dataclasses.field(repr=False)       # (n, N) L^-1 K(train, all), standardised
    _kernel: typing.Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = dataclasses.field(repr=False)
    _scale: float = 1.0     # y standard deviation

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.clip(self.var, 0, None))

    @torch.no_grad()
    def covariance_with(self, idx: int) -> np.ndarray:
        """(N,) posterior covariance between every candidate and candidate ``idx`` (y units^2)."""
        k = self._kernel(self._z, self._z[idx:idx + 1])[:, 0]
        c = k - self._v.T @ self._v[:, idx]
        return c.double().cpu().numpy() * self._scale ** 2

    def fantasize(self, idx: int) -> "Posterior":
        """Posterior after observing candidate ``idx`` at its current mean (kriging believer)."""
        c = self.covariance_with(idx)
        var = self.var - c ** 2 / (self.var[idx] + self.noise)
        return dataclasses.replace(self, var=np.clip(var, 0, None))

    @torch.no_grad()
    def sample(self, idx: np.ndarray, n_samples: int, generator: np.random.Generator) -> np.ndarray:
        """Joint samples (n_samples, len(idx)) of the latent function at candidates ``idx``."""
        z = self._z[torch.as_tensor(idx, device=self._z.device)]
        v = self._v[:, torch.as_tensor(idx, device=self._v.device)]
        cov = (self._kernel(z, z) - v.T @ v).double().cpu().numpy() * self._scale ** 2
        w, u = np.linalg.eigh(0.5 * (cov + cov.T))
        root = u * np.sqrt(np.clip(w, 0, None))          # cov = root @ root.T, round-off negatives clipped
        return self.mean[idx] + generator.standard_normal((n_samples, len(idx))) @ root.T


class DKLRegressor:
    """Patch features -> scalar with deep kernel learning; fit / posterior with warm starts.

    n_features: length of one feature vector (W*W for MLP); window: W (CNN only).
    widths: hidden layer widths (MLP, default 64, 64) or conv channels (CNN, default 8, 16);
    embed_dim: GP input dimension.
    kernel: "rbf", "matern52" or "matern32". iters: Adam steps of a fresh fit;
    warm_iters: steps of a warm update; retrain: always fit from scratch.
    lr: Adam learning rate. device: "cpu", "cuda", ... (None = automatic). seed: torch seed.
    init_noise, init_lengthscale: starting noise variance and lengthscale (standardised targets,
    embedding in (-1, 1)); max_noise: upper bound of the noise variance on standardised targets,
    so a few rare high values are never written off as noise. refit_every: fit from scratch on
    every k-th call (0 = never), so a warm start cannot stay stuck in a collapsed optimum
    (a flat map with all variance called noise).
    """

    def __init__(self, n_features: int, *, window: typing.Optional[int] = None, extractor: str = "mlp",
                 widths: typing.Optional[typing.Sequence[int]] = None, embed_dim: int = 2, kernel: str = "rbf",
                 iters: int = 200, warm_iters: int = 50, retrain: bool = False, lr: float = 0.03,
                 device: typing.Optional[str] = None, seed: int = 0, batch_size: int = 8192,
                 init_noise: float = 0.01, init_lengthscale: float = 0.3, max_noise: float = 0.1,
                 min_lengthscale: float = 0.0, refit_every: int = 10) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, not {kernel!r}")
        if extractor not in EXTRACTORS:
            raise ValueError(f"extractor must be one of {EXTRACTORS}, not {extractor!r}")
        if extractor == "cnn" and (window is None or window * window != n_features):
            raise ValueError("the CNN extractor needs window with window*window == n_features")
        self.n_features, self.window, self.extractor = n_features, window, extractor
        widths = widths if widths is not None else ((64, 64) if extractor == "mlp" else (8, 16))
        self.widths, self.embed_dim, self.kernel = tuple(int(w) for w in widths), int(embed_dim), kernel
        self.iters, self.warm_iters, self.retrain, self.lr = int(iters), int(warm_iters), bool(retrain), float(lr)
        self.device = pick_device(device)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.init_noise, self.init_lengthscale = float(init_noise), float(init_lengthscale)
        self.max_noise, self.min_lengthscale = float(max_noise), float(min_lengthscale)
        self.refit_every = int(refit_every)
        self.model: typing.Optional[DKLModel] = None
        self.likelihood: typing.Optional[gpytorch.likelihoods.GaussianLikelihood] = None
        self._optimizer: typing.Optional[torch.optim.Optimizer] = None
        self._y_mean, self._y_std = 0.0, 1.0
        self._y_best = 0.0
        self.losses: list[float] = []

    def _new_model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        torch.manual_seed(self.seed)
        if self.extractor == "mlp":
            fe: torch.nn.Module = MLPExtractor(self.n_features, self.widths, self.embed_dim)
        else:
            assert self.window is not None
            fe = CNNExtractor(self.window, self.widths, self.embed_dim)
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.Interval(1e-4, self.max_noise)).to(self.device)
        self.model = DKLModel(x, y, self.likelihood, fe, self.embed_dim, self.kernel,
                              self.min_lengthscale).to(self.device)
        # start from a low-noise, short-lengthscale GP on standardised targets: GPyTorch's defaults
        # (noise 0.69, lengthscale 0.69) explain a few rare high values as noise and flatten the map
        self.likelihood.noise = self.init_noise
        self.model.covar_module.base_kernel.lengthscale = self.init_lengthscale
        self.model.covar_module.outputscale = 1.0
        self._optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit to features ``x`` (n, F) and values ``y`` (n,); warm-started unless ``retrain``."""
        if len(x) != len(y) or len(y) < 2:
            raise ValueError("fit needs at least two (features, value) pairs of equal count")
        y = np.asarray(y, dtype=np.float64)
        # float32 kernel gradients underflow into denormal numbers, which the CPU handles ~100x
        # slower: flushing them to zero (on this thread) makes a warm step 2-3x faster
        torch.set_flush_denormal(True)
        self._y_mean = float(y.mean())
        self._y_std = float(y.std()) or 1.0
        self._y_best = float(y.max())
        xt = torch.as_tensor(np.asarray(x, np.float32), device=self.device)
        yt = torch.as_tensor((y - self._y_mean) / self._y_std, dtype=torch.float32, device=self.device)
        fresh = (self.model is None or self.retrain
                 or (self.refit_every > 0 and len(self.losses) % self.refit_every == 0))
        if fresh:
            self._new_model(xt, yt)
        else:
            assert self.model is not None
            self.model.set_train_data(xt, yt, strict=False)
        try:
            loss = self._train(xt, yt, self.iters if fresh else self.warm_iters)
        except NotPSDError:
            # a warm state gone numerically singular (two embeddings collapsed): start afresh once
            self._new_model(xt, yt)
            loss = self._train(xt, yt, self.iters)
        self.losses.append(loss)

    def _train(self, xt: torch.Tensor, yt: torch.Tensor, steps: int) -> float:
        """``steps`` Adam steps on the negative exact marginal log likelihood; returns the last loss."""
        assert self.model is not None and self.likelihood is not None and self._optimizer is not None
        self.model.train()
        self.likelihood.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.model)
        loss = torch.zeros(())
        for _ in range(steps):
            self._optimizer.zero_grad()
            loss = -mll(self.model(xt), yt)
            loss.backward()
            self._optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def embed(self, x: np.ndarray) -> torch.Tensor:
        """(N, embed_dim) learned embedding of features ``x`` (N, F), computed in batches."""
        assert self.model is not None
        self.model.eval()
        xt = torch.as_tensor(np.asarray(x, np.float32))
        return torch.cat([self.model.feature_extractor(xt[i:i + self.batch_size].to(self.device))
                          for i in range(0, len(xt), self.batch_size)])

    @torch.no_grad()
    def posterior(self, x_all: np.ndarray) -> Posterior:
        """Exact predictive mean and variance at every row of ``x_all`` (N, F), in y units."""
        if self.model is None or self.likelihood is None:
            raise RuntimeError("fit the model before asking for a posterior")
        self.model.eval()
        self.likelihood.eval()
        z_all = self.embed(x_all)
        z_tr = self.model.feature_extractor(self.model.train_inputs[0])
        y_tr = self.model.train_targets
        kern = self.model.covar_module
        noise = float(self.likelihood.noise.item())
        mean_c = float(self.model.mean_module.constant.item())

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return kern(a, b).to_dense()

        k_tt = kernel(z_tr, z_tr).double()
        k_tt += torch.eye(len(k_tt), dtype=k_tt.dtype, device=k_tt.device) * noise
        chol, info = torch.linalg.cholesky_ex(k_tt)
        jitter = 1e-6
        while int(info) != 0 and jitter < 1.0:    # round-off: add jitter until it factorises
            chol, info = torch.linalg.cholesky_ex(k_tt + torch.eye(len(k_tt), dtype=k_tt.dtype,
                                                                   device=k_tt.device) * jitter)
            jitter *= 10
        k_ta = kernel(z_tr, z_all).double()
        v = torch.linalg.solve_triangular(chol, k_ta, upper=False)
        alpha = torch.cholesky_solve((y_tr.double() - mean_c)[:, None], chol)[:, 0]
        mean = mean_c + k_ta.T @ alpha
        prior = kern(z_all, diag=True).double()
        var = torch.clamp(prior - (v ** 2).sum(0), min=0)
        s = self._y_std
        return Posterior(mean=(mean.cpu().numpy() * s + self._y_mean), var=var.cpu().numpy() * s * s,
                         noise=noise * s * s, y_best=self._y_best, _z=z_all.double(), _v=v, _kernel=lambda a, b:
                         kernel(a.float(), b.float()).double(), _scale=s)
