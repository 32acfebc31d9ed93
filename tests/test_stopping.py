import numpy as np

from emedge_core.stopping import Budget, History, Predictability, Uncertainty, first_fired


def hist(n=5, max_std=None, pred=(), meas=()):
    return History(n, max_std, np.asarray(pred, float), np.asarray(meas, float))


def test_budget():
    assert not Budget(10).fired(hist(9)) and Budget(10).fired(hist(10))


def test_uncertainty():
    assert not Uncertainty(0.5).fired(hist(max_std=None))
    assert not Uncertainty(0.5).fired(hist(max_std=0.6))
    assert Uncertainty(0.5).fired(hist(max_std=0.4))


def test_predictability_needs_k_good_predictions():
    rule = Predictability(3, 0.1)
    assert not rule.fired(hist(pred=[1, 2], meas=[1, 2]))
    assert not rule.fired(hist(pred=[np.nan, 2, 3], meas=[1, 2, 3]))
    assert not rule.fired(hist(pred=[1, 2, 3.2], meas=[1, 2, 3]))
    assert rule.fired(hist(pred=[9, 1, 2, 3.05], meas=[0, 1, 2, 3]))


def test_first_fired_names_the_rule():
    rules = [Budget(100), Uncertainty(0.5), Predictability(2, 1.0)]
    assert first_fired(rules, hist(5, max_std=1.0)) is None
    assert first_fired(rules, hist(5, max_std=0.1)) == "uncertainty"
    assert first_fired(rules, hist(100, max_std=0.1)) == "budget"
    assert first_fired(rules, hist(5, max_std=1.0, pred=[1, 2], meas=[1.5, 2.5])) == "predictability"
