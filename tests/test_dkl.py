"""The DKL model: its closed-form posterior is GPyTorch's, it learns, it is repeatable."""
import gpytorch
import numpy as np
import pytest
import torch

from emedge_core.dkl import DKLRegressor, pick_device


def toy(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
    return x, y


def test_posterior_equals_gpytorch_predictive():
    x, y = toy()
    m = DKLRegressor(8, iters=60, seed=1)
    m.fit(x, y)
    xq = np.random.default_rng(5).normal(size=(300, 8)).astype(np.float32)
    post = m.posterior(xq)
    m.model.eval(), m.likelihood.eval()
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        ref = m.model(torch.as_tensor(xq, device=m.device))
    mean = ref.mean.double().cpu().numpy() * m._y_std + m._y_mean
    var = ref.variance.double().cpu().numpy() * m._y_std ** 2
    np.testing.assert_allclose(post.mean, mean, rtol=1e-3, atol=1e-3 * np.std(y))
    np.testing.assert_allclose(post.var, var, rtol=2e-2, atol=1e-4 * np.var(y))


def test_learns_a_smooth_function_and_warm_starts():
    x, y = toy(200, d=4)
    xt, yt = toy(400, d=4, seed=9)
    m = DKLRegressor(4, iters=300, warm_iters=20, seed=0)
    m.fit(x[:150], y[:150])
    model = m.model
    m.fit(x, y)
    assert m.model is model                 # warm start: the same model continues
    rmse = np.sqrt(np.mean((m.posterior(xt).mean - yt) ** 2))
    assert rmse < 0.35 * np.std(yt)


def test_retrain_builds_a_new_model():
    x, y = toy()
    m = DKLRegressor(8, iters=10, retrain=True)
    m.fit(x[:30], y[:30])
    first = m.model
    m.fit(x, y)
    assert m.model is not first


def test_same_seed_same_answer():
    x, y = toy()
    a, b = DKLRegressor(8, iters=30, seed=3), DKLRegressor(8, iters=30, seed=3)
    a.fit(x, y)
    b.fit(x, y)
    np.testing.assert_array_equal(a.posterior(x).mean, b.posterior(x).mean)


def test_fantasize_shrinks_variance_at_and_near_the_point():
    x, y = toy()
    m = DKLRegressor(8, iters=40)
    m.fit(x, y)
    xq = np.concatenate([x[:1] + 3.0, x[:1] + 3.01, x[:1] - 3.0])
    post = m.posterior(xq)
    after = post.fantasize(0)
    v = post.var[0]
    assert after.var[0] == pytest.approx(v - v * v / (v + post.noise), rel=1e-6)
    assert after.var[0] < v
    assert after.var[1] < post.var[1]
    np.testing.assert_array_equal(after.mean, post.mean)


def test_cnn_extractor_runs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64)).astype(np.float32)
    y = x[:, :8].sum(1)
    m = DKLRegressor(64, window=8, extractor="cnn", widths=(4, 8), iters=20)
    m.fit(x, y)
    assert m.posterior(x).mean.shape == (40,)


def test_bad_configuration():
    with pytest.raises(ValueError, match="kernel"):
        DKLRegressor(4, kernel="linear")
    with pytest.raises(ValueError, match="CNN"):
        DKLRegressor(10, extractor="cnn", window=3)
    with pytest.raises(RuntimeError, match="fit"):
        DKLRegressor(4).posterior(np.zeros((2, 4)))


def test_device_is_automatic():
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"


def grid(n=24, d=6, seed=0):
    """Candidates on an n x n grid whose features are noise (unrelated to the value) and a value
    that is a smooth bump in space: only the spatial term can tell neighbours of a hit."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:n, 0:n]
    coords = np.stack([rr.ravel(), cc.ravel()], 1)
    x = rng.normal(size=(n * n, d)).astype(np.float32)
    y = np.exp(-((coords - [12, 12]) ** 2).sum(1) / (2 * 4.0 ** 2))
    train = np.concatenate([rng.choice(n * n, 40, replace=False), [12 * n + 12, 12 * n + 14]])
    return x, y, coords, train


def test_spatial_posterior_equals_gpytorch_predictive():
    x, y, coords, train = grid()
    m = DKLRegressor(6, iters=60, seed=1)
    m.fit(x[train], y[train], coords=coords[train])
    assert m.model.spatial_kernel is not None and "spatial_scale" in m.hyperparameters
    post = m.posterior(x, coords=coords)
    m.model.eval(), m.likelihood.eval()
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        ref = m.model(torch.as_tensor(m._inputs(x, coords), device=m.device))
    np.testing.assert_allclose(post.mean, ref.mean.double().cpu().numpy() * m._y_std + m._y_mean,
                               rtol=1e-3, atol=1e-3 * np.std(y[train]))
    np.testing.assert_allclose(post.var, ref.variance.double().cpu().numpy() * m._y_std ** 2,
                               rtol=2e-2, atol=1e-4 * np.var(y[train]))
    # the kriging believer and joint samples use the same additive kernel
    after = post.fantasize(int(train[0]))
    assert after.var[train[0]] < post.var[train[0]]
    s = post.sample(np.arange(10), 3, np.random.default_rng(0))
    assert s.shape == (3, 10) and np.isfinite(s).all()


def test_spatial_term_links_neighbours_of_a_hit():
    x, y, coords, train = grid()
    hit_neighbour, far = 13 * 24 + 13, 2 * 24 + 22          # 1.4 px and ~14 px from the bump's centre
    near, away = [], []
    for spatial in (True, False):
        m = DKLRegressor(6, iters=100, seed=0, spatial=spatial)
        m.fit(x[train], y[train], coords=coords[train])
        post = m.posterior(x, coords=coords)
        near.append(post.mean[hit_neighbour])
        away.append(post.mean[far])
    assert near[0] > away[0] + 0.3 * np.ptp(y)              # with space: the neighbour inherits the hit
    assert near[0] - away[0] > 2 * abs(near[1] - away[1])   # without: noise features cannot tell them apart


def test_coordinates_must_follow_a_spatial_fit():
    x, y, coords, train = grid()
    m = DKLRegressor(6, iters=10)
    m.fit(x[train], y[train], coords=coords[train])
    with pytest.raises(ValueError, match="coords"):
        m.posterior(x)
    m.fit(x[train], y[train])                                # no coordinates: a fresh embedding-only model
    assert m.model.spatial_kernel is None and m.posterior(x).mean.shape == (len(x),)
    with pytest.raises(ValueError, match="spatial_lengthscale"):
        DKLRegressor(6, spatial_lengthscale=0)
