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

Space: with ``spatial=True`` (the default) and probe coordinates given to :meth:`DKLRegressor.fit`
and :meth:`DKLRegressor.posterior`, the kernel is a sum

    k(x, x') = s_e * base(f(x), f(x')) + s_s * base(|p - p'| / l_s)

of the learned-embedding kernel and a spatial kernel on the probe positions p (lengthscale l_s,
``spatial_lengthscale`` px to start with, kept within 1/2x..2x of it). The embedding term carries
what a patch looks like to look-alike patches anywhere; the spatial term says a physical property
is continuous in space, so one high measurement raises the prediction at its neighbours even
where the lattice phase makes their patches look unrelated, and the acquisition exploits
around a hit.
"""
from __future__ import annotations

import dataclasses
import typing

import gpytorch
import numpy as np
import torch
from linear_operator.utils.errors import NotPSDError

from emedge_core.prediction import Prediction

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


def _base_kernel(kernel: str, dims: int, constraint: gpytorch.constraints.Interval) -> gpytorch.kernels.Kernel:
    if kernel == "rbf":
        return gpytorch.kernels.RBFKernel(ard_num_dims=dims, lengthscale_constraint=constraint)
    nu = 2.5 if kernel == "matern52" else 1.5
    return gpytorch.kernels.MaternKernel(nu=nu, ard_num_dims=dims, lengthscale_constraint=constraint)


class DKLModel(gpytorch.models.ExactGP):
    """Exact GP with a learned embedding: k(x, x') = s * base(f(x), f(x')), plus with
    ``spatial_dims`` > 0 a spatial term s_s * base(p, p') on the last ``spatial_dims`` input
    columns (probe coordinates, already divided by the initial spatial lengthscale), which
    bypass the feature extractor."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood,
                 feature_extractor: torch.nn.Module, embed_dim: int, kernel: str = "rbf",
                 min_lengthscale: float = 0.0, spatial_dims: int = 0) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.feature_extractor = feature_extractor
        self.spatial_dims = int(spatial_dims)
        emb = gpytorch.kernels.ScaleKernel(
            _base_kernel(kernel, embed_dim, gpytorch.constraints.GreaterThan(min_lengthscale)),
            active_dims=torch.arange(embed_dim))
        self.mean_module = gpytorch.means.ConstantMean()
        if self.spatial_dims:
            space = gpytorch.kernels.ScaleKernel(
                _base_kernel(kernel, 1, gpytorch.constraints.Interval(0.5, 2.0)),
                active_dims=torch.arange(embed_dim, embed_dim + self.spatial_dims))
            self.covar_module: gpytorch.kernels.Kernel = gpytorch.kernels.AdditiveKernel(emb, space)
        else:
            self.covar_module = emb

    @property
    def embedding_kernel(self) -> gpytorch.kernels.ScaleKernel:
        return self.covar_module.kernels[0] if self.spatial_dims else self.covar_module

    @property
    def spatial_kernel(self) -> typing.Optional[gpytorch.kernels.ScaleKernel]:
        return self.covar_module.kernels[1] if self.spatial_dims else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """GP inputs: the learned embedding of the features, then the scaled coordinates (if any)."""
        if not self.spatial_dims:
            return self.feature_extractor(x)
        return torch.cat([self.feature_extractor(x[:, :-self.spatial_dims]), x[:, -self.spatial_dims:]], dim=1)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        z = self.embed(x)
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
    spatial: add the spatial kernel on probe coordinates when :meth:`fit` gets ``coords``;
    spatial_lengthscale: its starting lengthscale in coordinate units (survey px), free to move
    within 1/2x..2x; spatial_scale: its starting output scale (the embedding term starts at 1).
    """

    def __init__(self, n_features: int, *, window: typing.Optional[int] = None, extractor: str = "mlp",
                 widths: typing.Optional[typing.Sequence[int]] = None, embed_dim: int = 2, kernel: str = "rbf",
                 iters: int = 200, warm_iters: int = 50, retrain: bool = False, lr: float = 0.03,
                 device: typing.Optional[str] = None, seed: int = 0, batch_size: int = 8192,
                 init_noise: float = 0.01, init_lengthscale: float = 0.3, max_noise: float = 0.1,
                 min_lengthscale: float = 0.0, refit_every: int = 10, spatial: bool = True,
                 spatial_lengthscale: float = 4.0, spatial_scale: float = 0.5) -> None:
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
        if spatial_lengthscale <= 0:
            raise ValueError("spatial_lengthscale must be > 0")
        self.spatial, self.spatial_lengthscale = bool(spatial), float(spatial_lengthscale)
        self.spatial_scale = float(spatial_scale)
        self._spatial_dims = 0           # coordinate columns of the fitted model (0 = none)
        self.model: typing.Optional[DKLModel] = None
        self.likelihood: typing.Optional[gpytorch.likelihoods.GaussianLikelihood] = None
        self._optimizer: typing.Optional[torch.optim.Optimizer] = None
        self._y_mean, self._y_std = 0.0, 1.0
        self._y_best = 0.0
        self.losses: list[float] = []

    def _inputs(self, x: np.ndarray, coords: typing.Optional[np.ndarray]) -> np.ndarray:
        """Model inputs: features, then (with the spatial term) coordinates / spatial_lengthscale."""
        x = np.asarray(x, np.float32)
        if not self._spatial_dims:
            return x
        if coords is None:
            raise ValueError("this model was fitted with coordinates; pass coords for every row too")
        c = np.asarray(coords, np.float32).reshape(len(x), -1)
        if c.shape[1] != self._spatial_dims:
            raise ValueError(f"coords must have {self._spatial_dims} columns, not {c.shape[1]}")
        return np.concatenate([x, c / np.float32(self.spatial_lengthscale)], axis=1)

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
                              self.min_lengthscale, self._spatial_dims).to(self.device)
        # start from a low-noise, short-lengthscale GP on standardised targets: GPyTorch's defaults
        # (noise 0.69, lengthscale 0.69) explain a few rare high values as noise and flatten the map
        self.likelihood.noise = self.init_noise
        self.model.embedding_kernel.base_kernel.lengthscale = self.init_lengthscale
        self.model.embedding_kernel.outputscale = 1.0
        space = self.model.spatial_kernel
        if space is not None:
            space.base_kernel.lengthscale = 1.0      # coordinates come divided by spatial_lengthscale
            space.outputscale = self.spatial_scale
        self._optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def fit(self, x: np.ndarray, y: np.ndarray, coords: typing.Optional[np.ndarray] = None) -> None:
        """Fit to features ``x`` (n, F) and values ``y`` (n,), measured at probe positions
        ``coords`` (n, 2) survey px (used by the spatial term; None = embedding only);
        warm-started unless ``retrain``."""
        if len(x) != len(y) or len(y) < 2:
            raise ValueError("fit needs at least two (features, value) pairs of equal count")
        spatial_dims = 0
        if self.spatial and coords is not None:
            spatial_dims = int(np.asarray(coords).reshape(len(y), -1).shape[1])
        y = np.asarray(y, dtype=np.float64)
        # float32 kernel gradients underflow into denormal numbers, which the CPU handles ~100x
        # slower: flushing them to zero (on this thread) makes a warm step 2-3x faster
        torch.set_flush_denormal(True)
        self._y_mean = float(y.mean())
        self._y_std = float(y.std()) or 1.0
        self._y_best = float(y.max())
        fresh = (self.model is None or self.retrain or spatial_dims != self._spatial_dims
                 or (self.refit_every > 0 and len(self.losses) % self.refit_every == 0))
        self._spatial_dims = spatial_dims
        xt = torch.as_tensor(self._inputs(x, coords), device=self.device)
        yt = torch.as_tensor((y - self._y_mean) / self._y_std, dtype=torch.float32, device=self.device)
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
    def embed(self, x: np.ndarray, coords: typing.Optional[np.ndarray] = None) -> torch.Tensor:
        """(N, embed_dim [+ 2]) GP inputs of features ``x`` (N, F): the learned embedding, then the
        scaled ``coords`` when the model has the spatial term; computed in batches."""
        assert self.model is not None
        self.model.eval()
        xt = torch.as_tensor(self._inputs(x, coords))
        return torch.cat([self.model.embed(xt[i:i + self.batch_size].to(self.device))
                          for i in range(0, len(xt), self.batch_size)])

    @property
    def hyperparameters(self) -> dict[str, typing.Any]:
        """The fitted kernel's scales and noise (standardised targets; spatial lengthscale in px)."""
        assert self.model is not None and self.likelihood is not None
        emb = self.model.embedding_kernel
        out = {"noise": float(self.likelihood.noise.item()), "embedding_scale": float(emb.outputscale.item()),
               "embedding_lengthscale": emb.base_kernel.lengthscale.detach().cpu().numpy().ravel().tolist()}
        space = self.model.spatial_kernel
        if space is not None:
            out["spatial_scale"] = float(space.outputscale.item())
            out["spatial_lengthscale_px"] = float(space.base_kernel.lengthscale.item()) * self.spatial_lengthscale
        return out

    @torch.no_grad()
    def posterior(self, x_all: np.ndarray, coords: typing.Optional[np.ndarray] = None) -> Posterior:
        """Exact predictive mean and variance at every row of ``x_all`` (N, F), in y units;
        ``coords`` (N, 2): the rows' probe positions, needed when :meth:`fit` had them."""
        if self.model is None or self.likelihood is None:
            raise RuntimeError("fit the model before asking for a posterior")
        self.model.eval()
        self.likelihood.eval()
        z_all = self.embed(x_all, coords)
        z_tr = self.model.embed(self.model.train_inputs[0])
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


class DKLSurrogate:
    """:class:`DKLRegressor` behind the steerer's surrogate interface (tell / posterior / prediction):
    refitted (warm start) on every new value, in line - the project's earlier default, kept as a
    variant. features (N, F), coords (N, 2) px: the candidates."""

    def __init__(self, model: DKLRegressor, features: np.ndarray, coords: np.ndarray) -> None:
        self.model, self.features, self.coords = model, features, coords
        self.idx: list[int] = []
        self.y: list[float] = []
        self.refits = 0
        self.updates = 0
        self._post: typing.Optional[Posterior] = None
        self._fitted_on = -1

    def tell(self, idx: typing.Sequence[int], y: typing.Sequence[float]) -> None:
        self.idx += [int(i) for i in idx]
        self.y += [float(v) for v in y]

    def posterior(self) -> typing.Optional[Posterior]:
        if len(self.y) < 2:
            return None
        if self._fitted_on != len(self.y):
            idx = np.asarray(self.idx)
            self.model.fit(self.features[idx], np.asarray(self.y), coords=self.coords[idx])
            self._post = self.model.posterior(self.features, coords=self.coords)
            self._fitted_on = len(self.y)
            self.refits += 1
        return self._post

    def prediction(self, wait: bool = True) -> typing.Any:
        """Mean, std, mean -+ 1.96 std and mean -+ 1.96 sqrt(var + noise) (scalar units), as
        :class:`emedge_core.prediction.Prediction`."""
        post = self.posterior()
        if post is None:
            return None
        a, b = 1.96 * post.std, 1.96 * np.sqrt(post.var + post.noise)
        return Prediction(post.mean, post.std, post.mean - a, post.mean + a, post.mean - b, post.mean + b)

    def wait(self) -> None:
        """Nothing runs in the background."""

    def describe(self) -> dict[str, typing.Any]:
        if self.model.model is None:
            return {}
        return {"kernel": "dkl", "hyperparameters": self.model.hyperparameters, "refits": self.refits,
                "updates": self.updates, "spatial": self.model.model.spatial_kernel is not None,
                "final_loss": self.model.losses[-1]}
