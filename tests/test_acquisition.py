import math

import numpy as np
import pytest

from emedge_core import EmedgeError
from emedge_core.acquisition import EI, UCB, MaxVariance, Random, Thompson, make_acquisition
from emedge_core.dkl import DKLRegressor


@pytest.fixture(scope="module")
def post():
    """A real posterior over 200 candidates on a line (1-D features), fitted on 12 points."""
    x = np.linspace(-3, 3, 200, dtype=np.float32)[:, None]
    y = np.sin(2 * x[:, 0])
    train = np.arange(5, 200, 17)
    m = DKLRegressor(1, widths=(16,), iters=150, seed=0)
    m.fit(x[train], y[train])
    p = m.posterior(x)
    p.train = train
    return p


def test_ucb_ei_maxvar_pick_their_argmax(post, rng):
    none = np.zeros(200, bool)
    assert UCB(2.0).select(post, 1, none.copy(), rng)[0] == np.argmax(post.mean + 2 * post.std)
    assert MaxVariance().select(post, 1, none.copy(), rng)[0] == np.argmax(post.var)
    s = EI(0.0).score(post, rng)
    i = 17
    z = (post.mean[i] - post.y_best) / post.std[i]
    pdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    ref = (post.mean[i] - post.y_best) * 0.5 * (1 + math.erf(z / math.sqrt(2))) + post.std[i] * pdf
    assert s[i] == pytest.approx(ref, rel=1e-9)
    assert np.all(s >= -1e-12)


@pytest.mark.parametrize("acq", [UCB(), EI(), MaxVariance(), Thompson(pool=50), Random()])
def test_batches_are_distinct_and_never_remeasure(acq, post, rng):
    measured = np.zeros(200, bool)
    measured[::2] = True
    picks = acq.select(post, 5, measured.copy(), rng)
    assert len(picks) == 5 == len(set(picks.tolist()))
    assert not measured[picks].any()


def test_kriging_believer_spreads_a_batch(post, rng):
    picks = MaxVariance().select(post, 3, np.zeros(200, bool), rng)
    assert np.min(np.diff(np.sort(picks))) > 3        # not three neighbours of one maximum


def test_travel_penalty_prefers_short_moves(post, rng):
    coords = np.stack([np.zeros(200, int), np.arange(200)], axis=1)
    far = MaxVariance().select(post, 1, np.zeros(200, bool), rng, coords=coords, last=np.array([0, 0]), travel=0)
    near = MaxVariance().select(post, 1, np.zeros(200, bool), rng, coords=coords, last=np.array([0, 0]), travel=50)
    assert near[0] < far[0] or far[0] < 10


def test_all_measured_gives_nothing(post, rng):
    assert len(UCB().select(post, 3, np.ones(200, bool), rng)) == 0


def test_names():
    assert isinstance(make_acquisition("ucb", beta=1.0), UCB)
    with pytest.raises(EmedgeError, match="unknown acquisition"):
        make_acquisition("pi")
    with pytest.raises(EmedgeError, match="bad parameters"):
        make_acquisition("ucb", gamma=1)
