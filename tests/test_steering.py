"""The steering surrogate (emedge_core.gp): exact rank-1 updates, background refits, honest
uncertainty, non-negative predictions, and discovery against the plain GP. Seeded; no timing asserts."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from emedge_core import gp
from emedge_core.acquisition import UCB, Random
from emedge_core.gp import GPState, GPSurrogate, Hypers, Inputs, Warp
from emedge_core.lattice import length_unit_px, period_px
from emedge_core.patches import make_patches
from emedge_core.steer import Steerer, default_model
from emedge_core.twin import DigitalTwin


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def grid(n: int) -> np.ndarray:
    return np.stack(np.mgrid[0:n, 0:n], axis=-1).reshape(-1, 2).astype(np.float64)


def test_rank1_updates_equal_one_full_factorisation():
    rng = np.random.default_rng(0)
    coords = grid(30)
    feats = rng.standard_normal((len(coords), 4))
    y = np.abs(np.sin(coords[:, 0] / 4) + 0.3 * feats[:, 0]) + 0.05
    inp = Inputs(feats, coords, 5.0)
    h = Hypers("pca+space", sf=0.7, lf=2.0, ss=0.4, ls=0.8, noise=0.02, mean=0.1)
    wp = Warp.fit(y, 0.3)
    idx = rng.choice(len(y), 40, replace=False)
    grown = GPState(inp, h, wp, capacity=4).build(idx[:5], y[idx[:5]])
    for i in idx[5:]:
        grown.update(int(i), float(y[i]))
    full = GPState(inp, h, wp).build(idx, y[idx])
    assert np.allclose(grown.mean_u.numpy(), full.mean_u.numpy(), atol=1e-9)
    assert np.allclose(grown.var_u.numpy(), full.var_u.numpy(), atol=1e-9)
    # the acquisition's fantasy (kriging believer) shrinks the variance at the point to the noise level
    post = full.posterior()
    j = int(np.argmax(post.var))
    assert post.fantasize(j).var[j] < 0.5 * post.var[j]


def test_lattice_period_is_measured_from_the_survey():
    yy, xx = np.mgrid[0:128, 0:128]
    lattice = np.cos(2 * np.pi * xx / 6.4) + np.cos(2 * np.pi * yy / 6.4)
    assert period_px(lattice) == pytest.approx(6.4, rel=0.05)
    blobs = np.exp(-((yy - 64) ** 2 + (xx - 40) ** 2) / 50.0)
    assert period_px(blobs) is None
    unit, kind = length_unit_px(blobs)
    assert kind == "correlation length" and 2 < unit < 30


def test_coverage_of_a_known_gp_sample():
    # a draw from a known GP (Matern 5/2, lengthscale 1 unit = 6 px, noise sd 0.1): the fitted model's
    # 95 % interval holds ~95 % of the unmeasured truth, its 1-sigma band ~68 %
    rng = np.random.default_rng(3)
    coords = grid(36)
    inp = Inputs(np.zeros((len(coords), 1)), coords, 6.0)
    h = Hypers("space", ss=1.0, ls=1.0, noise=0.01)
    k = gp.kernel(h, inp.f, inp.p, inp.f, inp.p).numpy()
    truth = np.linalg.cholesky(k + 1e-8 * np.eye(len(k))) @ rng.standard_normal(len(k))
    idx = rng.choice(len(truth), 120, replace=False)
    m = GPSurrogate(np.zeros((len(coords), 1)), coords, unit_px=6.0, structures=("space",), warp="none",
                    background=False)
    m.tell(idx.tolist(), (truth[idx] + 0.1 * rng.standard_normal(len(idx))).tolist())
    free = np.ones(len(truth), bool)
    free[idx] = False
    z = m.zscores(truth)[free]
    assert 0.88 <= np.mean(z <= 1.96) <= 1.0
    assert 0.55 <= np.mean(z <= 1.0) <= 0.85
    loo = m.describe()["loo_coverage"]
    assert 0.85 <= loo["2sigma"] <= 1.0


def misspecified_case(seed: int):
    """A known GP sample (Matern 5/2, lengthscale 1 unit = 4 px), 20 random seeds and 60 points picked
    in one corner (as an acquisition clusters them), and a model whose lengthscale is 3x too long."""
    rng = np.random.default_rng(seed)
    coords = grid(40)
    inp = Inputs(np.zeros((len(coords), 1)), coords, 4.0)
    k = gp.kernel(Hypers("space", ss=1.0, ls=1.0), inp.f, inp.p, inp.f, inp.p).numpy()
    truth = np.linalg.cholesky(k + 1e-8 * np.eye(len(k))) @ rng.standard_normal(len(k))
    y = truth + 0.1 * rng.standard_normal(len(truth))
    seeds = rng.choice(len(truth), 20, replace=False)
    corner = np.flatnonzero((coords[:, 0] < 12) & (coords[:, 1] < 12))
    idx = np.concatenate([seeds, rng.choice(np.setdiff1d(corner, seeds), 60, replace=False)])
    return inp, truth, y, idx, Hypers("space", ss=1.0, ls=3.0, noise=0.01)


@pytest.mark.parametrize("seed", [0, 1])
def test_seed_calibration_restores_the_coverage_of_a_misspecified_model(seed):
    inp, truth, y, idx, wrong = misspecified_case(seed)
    mu, var = gp.loo(inp, idx, y[idx], wrong)
    r = y[idx] - mu
    k_seed = gp.seed_calibration(r[:20], var[:20], wrong.noise)
    q95 = max(1.0, float(np.quantile(np.abs(r) / np.sqrt(var), 0.95)) / 1.96)     # LOO over every point
    free = np.ones(len(truth), bool)
    free[idx] = False

    def coverage(factor: float) -> float:
        st = GPState(inp, wrong, Warp(None, 0.0, 1.0), interval_calibration=factor).build(idx, y[idx])
        sd = np.sqrt(st.var_u.numpy()) * st.interval_calibration
        return float(np.mean((np.abs(truth - st.mean_u.numpy()) / sd)[free] <= 1.96))

    assert coverage(1.0) < 0.6                     # overconfident far from the measurements
    assert 0.9 <= coverage(k_seed) <= 1.0          # the random seeds' residuals restore it
    assert coverage(q95) < coverage(k_seed)        # the clustered points' LOO does not (alone)


def test_the_first_batch_told_calibrates_the_intervals():
    # a field smooth in one corner, rough elsewhere; 20 random seeds, then 80 points in the corner (as an
    # acquisition clusters them): the MAP fit follows the corner and is overconfident elsewhere. The
    # surrogate takes its first fit's points as the random seeds: the interval factor is theirs (from
    # their leave-one-out residuals under the chosen model), above the LOO one of all points
    rng = np.random.default_rng(2)
    coords = grid(40)
    inp = Inputs(np.zeros((len(coords), 1)), coords, 4.0)

    def sample(ls: float) -> np.ndarray:
        k = gp.kernel(Hypers("space", ss=1.0, ls=ls), inp.f, inp.p, inp.f, inp.p).numpy()
        return np.linalg.cholesky(k + 1e-8 * np.eye(len(k))) @ rng.standard_normal(len(k))

    corner = (coords[:, 0] < 14) & (coords[:, 1] < 14)
    truth = sample(3.0) + np.where(corner, 0.0, 1.0) * sample(0.5)
    y = truth + 0.05 * rng.standard_normal(len(truth))
    seeds = rng.choice(len(truth), 20, replace=False)
    idx = np.concatenate([seeds, rng.choice(np.setdiff1d(np.flatnonzero(corner), seeds), 80, replace=False)])
    m = GPSurrogate(np.zeros((len(coords), 1)), coords, unit_px=4.0, structures=("space",), warp="none",
                    background=False, refit_fraction=10 ** 9, interval_hull=False)     # the MAP interval alone
    m.tell(idx[:20].tolist(), y[idx[:20]].tolist())
    m.tell(idx[20:].tolist(), y[idx[20:]].tolist())
    c = m.choice
    assert c is not None and m.state is not None and m.refits == 2
    u = c.warp.forward(y[idx])
    mu, var = gp.loo(m.inputs, idx, u, c.hypers)
    one = gp.seed_calibration((u - mu)[:20], var[:20], c.hypers.noise)          # left out one at a time
    r, v = gp.leave_seeds_out(m.inputs, idx, u, c.hypers, 20)                    # all together
    # the seeds predicted from the corner points alone: what the rough part does to the model
    picked = GPState(m.inputs, c.hypers, c.warp).build(idx[20:], y[idx[20:]])
    assert np.allclose(r, u[:20] - picked.mean_u.numpy()[idx[:20]])
    assert np.allclose(v, picked.var_u.numpy()[idx[:20]] + c.hypers.noise)
    want = max(c.calibration, one, gp.seed_calibration(r, v, c.hypers.noise))
    assert c.interval_calibration == pytest.approx(want) and want > 1.2 * c.calibration
    assert m.describe()["hyperparameters"]["interval_calibration"] == c.interval_calibration
    # the steering std keeps the LOO factor; the reported intervals and z-scores use the seeds' one
    assert m.state.calibration == c.calibration
    free = np.ones(len(truth), bool)
    free[idx] = False
    z = m.zscores(truth)[free]
    assert np.mean(z <= 1.96) >= 0.9 > np.mean(z * c.interval_calibration / c.calibration <= 1.96)
    pred = m.prediction()
    assert pred is not None
    assert np.allclose(pred.upper - pred.mean, 1.96 * np.sqrt(m.state.var_u.numpy()) * want * c.warp.scale)
    # told in pieces, the seeds count as such when the surrogate knows how many there are (the Steerer
    # tells it its ``seeds``); the first fit (on 10 points) no longer decides
    halves = GPSurrogate(np.zeros((len(coords), 1)), coords, unit_px=4.0, structures=("space",), warp="none",
                         background=False, refit_fraction=10 ** 9, n_random=20, interval_hull=False)
    for part in (idx[:10], idx[10:20], idx[20:]):
        halves.tell(part.tolist(), y[part].tolist())
    hc = halves.choice
    assert hc is not None
    u = hc.warp.forward(y[idx])
    mu, var = gp.loo(halves.inputs, idx, u, hc.hypers)
    r, v = gp.leave_seeds_out(halves.inputs, idx, u, hc.hypers, 20)
    assert hc.interval_calibration == pytest.approx(max(hc.calibration, gp.seed_calibration(r, v, hc.hypers.noise),
                                                        gp.seed_calibration((u - mu)[:20], var[:20], hc.hypers.noise)))
    twin = DigitalTwin(size=32, seed=0)
    st = Steerer(make_patches(twin.survey().image, 8, components=4),
                 default_model(make_patches(twin.survey().image, 8, components=4), twin.survey().image,
                               background=False), UCB(2.0), seeds=7)
    assert st.model.n_random == 7


def test_laplace_sigma_points_of_the_hyperparameters_narrow_with_data():
    # a known GP sample: the sigma points centre on the MAP and spread less with 300 points than with 15
    rng = np.random.default_rng(5)
    coords = grid(30)
    inp = Inputs(np.zeros((len(coords), 1)), coords, 5.0)
    k = gp.kernel(Hypers("space", ss=1.0, ls=1.0), inp.f, inp.p, inp.f, inp.p).numpy()
    truth = np.linalg.cholesky(k + 1e-8 * np.eye(len(k))) @ rng.standard_normal(len(k))
    spread = []
    for n in (15, 300):
        idx = rng.choice(len(truth), n, replace=False)
        u = truth[idx] + 0.1 * rng.standard_normal(n)
        h = gp.fit_hypers(inp, idx, u, Hypers("space"))
        points = gp.hyper_points(inp, idx, u, h)
        ls = np.log([p.ls for p in points])
        assert len(points) == 2 * 4            # noise, ss, ls and the mean: +- along each axis
        assert abs(np.mean(ls) - np.log(h.ls)) < 0.05
        spread.append(float(ls.std()))
    assert spread[1] < 0.5 * spread[0]


def test_reported_intervals_are_the_hull_of_the_fits():
    # the same points told to a surrogate with and without the hull: the same choice and acquisition
    # view; intervals that contain the MAP ones and are wider somewhere; z-scores that say "inside"
    # exactly where the reported interval holds the value
    rng = np.random.default_rng(4)
    coords = grid(30)
    feats = rng.standard_normal((len(coords), 3))
    y = np.exp(np.sin(coords[:, 0] / 5) + 0.5 * feats[:, 0]) + 0.2 * rng.standard_normal(len(coords)) ** 2
    idx = np.concatenate([rng.choice(len(y), 10, replace=False), np.argsort(y)[::-1][:30:2]])
    models = []
    for hull in (False, True):
        m = GPSurrogate(feats, coords, unit_px=5.0, background=False, n_random=10, interval_hull=hull)
        m.tell(idx[:10].tolist(), y[idx[:10]].tolist())
        m.tell(idx[10:].tolist(), y[idx[10:]].tolist())
        models.append(m)
    plain, hull = models
    assert plain.choice == hull.choice
    assert np.array_equal(plain.posterior().var, hull.posterior().var)
    p0, p1 = plain.prediction(), hull.prediction()
    assert np.allclose(p0.mean, p1.mean)
    assert (p1.lower <= p0.lower + 1e-9).all() and (p1.upper >= p0.upper - 1e-9).all()
    assert (p1.upper > p0.upper * 1.01).mean() > 0.5
    assert hull.state.report is not None and plain.state.report is None
    probe = y * rng.uniform(0.3, 2.5, len(y))
    inside = (probe >= p1.lower) & (probe <= p1.upper)
    assert np.mean(inside == (hull.zscores(probe) <= 1.96)) > 0.999
    assert (p1.lower >= 0).all()
    # the predictive interval of a new measurement: the latent one widened by the noise, never < 0 here
    assert (p1.predictive_lower <= p1.lower + 1e-12).all() and (p1.predictive_upper >= p1.upper - 1e-12).all()
    assert (p1.predictive_upper > p1.upper).all() and (p1.predictive_lower >= 0).all()
    new = (probe >= p1.predictive_lower) & (probe <= p1.predictive_upper)
    assert new[inside].all()
    assert np.mean(new == (hull.zscores(probe, noise=True) <= 1.96)) > 0.999


def test_nonnegative_scalar_is_never_predicted_negative():
    # counts: a few bright spots on a near-zero background, Poisson noise
    rng = np.random.default_rng(1)
    coords = grid(40)
    lam = 0.5 + 400 * sum(np.exp(-((coords[:, 0] - cy) ** 2 + (coords[:, 1] - cx) ** 2) / 6.0)
                          for cy, cx in rng.uniform(5, 35, (4, 2)))
    counts = rng.poisson(lam).astype(float)
    m = GPSurrogate(np.zeros((len(coords), 1)), coords, unit_px=4.0, background=False)
    idx = rng.choice(len(coords), 60, replace=False)
    m.tell(idx.tolist(), counts[idx].tolist())
    pred = m.prediction()
    assert pred is not None and m.choice is not None and m.choice.warp.c is not None     # log-warped
    assert (pred.mean >= 0).all() and (pred.lower >= 0).all() and (pred.upper >= pred.mean).all()
    # a new measurement (Poisson counts here) is never below 0 either, and noisier than the scalar itself
    assert (pred.predictive_lower >= 0).all() and (pred.predictive_upper - pred.upper > 0.05 * pred.upper).all()


def test_suggest_does_not_wait_for_a_refit(monkeypatch):
    # the background refit is held until released: suggest() keeps answering from rank-1 updates
    twin = DigitalTwin(size=48, seed=0)
    patches = make_patches(twin.survey().image, 8, components=8)
    model = default_model(patches, twin.survey().image, background=True)
    release, started = threading.Event(), threading.Event()
    real = gp.choose

    def held(*a, **k):
        if model.refits >= 1:               # the first fit is in line; the later ones wait for us
            started.set()
            assert release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(gp, "choose", held)
    st = Steerer(patches, model, UCB(2.0), seeds=6, seed=0)
    truth = twin.truth("eels_peak_energy")

    def steps(k: int) -> None:
        for _ in range(k):
            pos = st.suggest()
            st.observe(pos, truth[pos[:, 0], pos[:, 1]])

    steps(1)                       # the seeds and the first fit (in line)
    assert model.refits == 1 and model.updates == 0
    steps(12)                      # a refit starts and is held: suggest() keeps answering meanwhile
    assert started.wait(30)
    assert model.refits == 1 and model.updates == 12      # rank-1 updates only, no waiting
    threads: list[str] = []
    real_update = GPState.update

    def update(self, i, y):
        threads.append(threading.current_thread().name)
        return real_update(self, i, y)

    monkeypatch.setattr(GPState, "update", update)
    release.set()
    model.wait()
    came = 6 + 12 - model.history[-1]["n"]         # told while the refit ran (it started at the 7th point)
    assert came == 11 and model.refits == 2 and model.updates == 12 + came
    # they were added to the refit's posterior by the worker, not on the steering thread at the swap-in
    assert threads == ["emedge-gp-refit"] * came
    c = model.choice
    full = GPState(model.inputs, c.hypers, c.warp).build(np.asarray(model.idx), np.asarray(model.y))
    assert np.allclose(model.state.mean_u.numpy(), full.mean_u.numpy(), atol=1e-8)
    assert np.allclose(model.state.var_u.numpy(), full.var_u.numpy(), atol=1e-8)
    assert len(set(st.order)) == len(st.order) == 6 + 12


def test_random_needs_no_model():
    class Refuses:
        refits = updates = 0

        def tell(self, idx, y):
            raise AssertionError("the random policy must not train a model")

        def posterior(self):
            raise AssertionError("no posterior for random")

        prediction = posterior

        def wait(self):
            pass

        def describe(self):
            return {}

    twin = DigitalTwin(size=32, seed=0)
    patches = make_patches(twin.survey().image, 8, components=4)
    st = Steerer(patches, Refuses(), Random(), seeds=3, seed=0)
    for _ in range(5):
        pos = st.suggest()
        st.observe(pos, np.ones(len(pos)))
    assert len(set(st.order)) == len(st.order) == 3 + 4


def top_found(policy: str, seed: int, twin: DigitalTwin, truth: np.ndarray, budget: int = 40) -> int:
    survey = twin.survey().image
    patches = make_patches(survey, 8, components=8)
    vals = truth[patches.coords[:, 0], patches.coords[:, 1]]
    top = set(np.argsort(vals)[::-1][: max(1, len(vals) // 100)].tolist())
    if policy == "default":
        model = default_model(patches, survey, background=False)
    else:                                                    # the plain GP: PCA features only, no warp
        model = GPSurrogate(patches.features, patches.coords, unit_px=1.0, structures=("pca",), warp="none",
                            background=False)
    model.refit_fraction = 10 ** 9
    st = Steerer(patches, model, UCB(2.0), seeds=8, seed=seed)
    rng = np.random.default_rng(seed)
    while len(st.order) < budget:
        pos = st.suggest()
        st.observe(pos, truth[pos[:, 0], pos[:, 1]] + 0.05 * rng.standard_normal(len(pos)))
    return len(set(st.order) & top)


def test_default_finds_at_least_the_plain_gps_top_sites():
    # the twin's plasmon-energy map (physics-based: Drude plasmons over grains), 64 px, 3 seeds
    twin = DigitalTwin(size=64, seed=1)
    truth = twin.truth("eels_peak_energy")
    default = sum(top_found("default", s, twin, truth) for s in range(3))
    plain = sum(top_found("plain", s, twin, truth) for s in range(3))
    assert default >= plain, (default, plain)


def test_run_summary_has_latency_idle_and_loo_coverage():
    from emedge_core.experiment import Experiment, ExperimentConfig

    twin = DigitalTwin(size=48, seed=2)
    cfg = ExperimentConfig(budget=20, seeds=6, window=8, components=8, dwell_s=0.002)
    res = Experiment(twin, "eels_peak_energy", cfg).run()
    s = res.summary()
    assert s["seconds_per_step_p95"] >= s["seconds_per_step_median"] > 0
    assert 0 < s["instrument_idle_fraction"] < 1 and s["dwell_s"] == 0.002
    assert s["model"] in gp.STRUCTURES
    assert set(s["loo_coverage"]) == {"1sigma", "2sigma"} and 0 <= s["loo_coverage"]["2sigma"] <= 1
    assert np.isfinite(res.prediction[~np.isnan(res.prediction)]).all()
