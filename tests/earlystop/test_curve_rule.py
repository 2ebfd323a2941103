"""CurvePredictionRule: properties (hypothesis), clearly bad and clearly good curves, the model's
pieces, and argument validation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.earlystop import CurvePredictionRule, get_earlystop
from lightning_maggy.earlystop.curve import FAMILIES, best_finished, fit_curves, probability_to_beat
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.trial import Trial, TrialState


def saturating(asymptote: float, start: float, rate: float, epochs: int, noise: float = 0.0, seed: int = 0):
    """An exponentially saturating accuracy curve with optional Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(1, epochs + 1)
    return list(asymptote - (asymptote - start) * np.exp(-rate * x) + noise * rng.standard_normal(epochs))


def finished(hists, state: TrialState = TrialState.COMPLETED) -> list[Trial]:
    return [
        Trial(trial_id=f"f{i}", config={"i": i}, state=state, budget=len(h), history=tuple(h))
        for i, h in enumerate(hists)
    ]


def running(history, budget: int) -> dict[str, Trial]:
    return {"r": Trial(trial_id="r", config={}, state=TrialState.RUNNING, budget=budget, history=tuple(history))}


# Three finished trials, the best reaching 0.95.
FINISHED = finished([saturating(0.95, 0.3, 0.4, 20, 0.005, 1), saturating(0.9, 0.2, 0.3, 20, 0.005, 2),
                     saturating(0.8, 0.3, 0.5, 20, 0.005, 3)])


# -- unit tests ------------------------------------------------------------------------------
def test_a_clearly_bad_curve_is_stopped() -> None:
    bad = saturating(0.6, 0.2, 0.5, 6, 0.005, 4)  # levels off near 0.6 < 0.95
    rule = CurvePredictionRule()
    assert rule.earlystop_check(running(bad, 20), FINISHED, "max") == ["r"]
    p = rule.probability(bad, 20, [t.history for t in FINISHED], "max")
    assert p is not None and p < 1e-3


def test_a_clearly_good_curve_continues() -> None:
    good = saturating(0.99, 0.3, 0.3, 6, 0.005, 5)  # 0.86 after 6 epochs and still rising fast
    rule = CurvePredictionRule()
    assert rule.earlystop_check(running(good, 20), FINISHED, "max") == []
    p = rule.probability(good, 20, [t.history for t in FINISHED], "max")
    assert p is not None and p > 0.2


def test_the_same_curve_for_a_loss() -> None:
    losses = finished([[-v for v in t.history] for t in FINISHED])
    bad = [-v for v in saturating(0.6, 0.2, 0.5, 6, 0.005, 4)]
    good = [-v for v in saturating(0.99, 0.3, 0.3, 6, 0.005, 5)]
    rule = CurvePredictionRule()
    assert rule.earlystop_check({**running(bad, 20), "g": running(good, 20)["r"].evolve(trial_id="g")},
                                losses, "min") == ["r"]


def test_the_horizon_is_the_trials_budget() -> None:
    # Slowly rising: cannot reach 0.95 by epoch 8, may well by epoch 200.
    slow = saturating(1.0, 0.1, 0.02, 6, 0.002, 6)
    rule = CurvePredictionRule()
    assert rule.earlystop_check(running(slow, 8), FINISHED, "max") == ["r"]
    assert rule.earlystop_check(running(slow, 200), FINISHED, "max") == []
    # No epoch left: nothing to save, no decision.
    assert rule.earlystop_check(running(slow, 6), FINISHED, "max") == []


def test_grace_period_min_trials_failed_trials_and_nan() -> None:
    bad = saturating(0.6, 0.2, 0.5, 6, 0.005, 4)
    assert CurvePredictionRule(grace_period=7).earlystop_check(running(bad, 20), FINISHED, "max") == []
    assert CurvePredictionRule(min_trials=4).earlystop_check(running(bad, 20), FINISHED, "max") == []
    failed = finished([[1.0] * 5], TrialState.FAILED)
    assert CurvePredictionRule(min_trials=4).earlystop_check(running(bad, 20), FINISHED + failed, "max") == []
    # A failed trial's value is not the best to beat.
    assert CurvePredictionRule().earlystop_check(running([0.96] * 5, 20), FINISHED + failed, "max") == []
    # Fewer than 3 finite values: no judgement; NaN values are left out of the fit.
    few = running([math.nan, math.nan, 0.1, 0.1], 20)
    assert CurvePredictionRule().earlystop_check(few, FINISHED, "max") == []
    assert CurvePredictionRule().earlystop_check(running([math.nan, *bad], 20), FINISHED, "max") == ["r"]


def test_helpers() -> None:
    assert best_finished([[1.0, 3.0], [2.0, math.nan], []], "max") == (3.0, 2)
    assert best_finished([[1.0, 3.0], [2.0, math.nan]], "min") == (1.0, 2)
    assert best_finished([[math.nan]], "max")[1] == 0
    # A noiseless exponential curve: exp3 fits it best (up to its grid of beta) and gets the most weight.
    y = saturating(0.9, 0.1, 0.3, 8)
    fits = {f.family: f for f in fit_curves(range(1, 9), y, 30)}
    assert set(fits) == set(FAMILIES)
    assert math.isclose(sum(f.weight for f in fits.values()), 1.0)
    assert fits["exp3"].weight == max(f.weight for f in fits.values()) > 0.5
    assert abs(fits["exp3"].mean - saturating(0.9, 0.1, 0.3, 30)[-1]) < 0.02
    assert probability_to_beat([0.1, 0.5, 0.2], 10, 0.5) == 1.0  # already there
    with pytest.raises(ValueError, match="at least 3"):
        fit_curves([1, 2], [0.1, 0.2], 5)


def test_a_decision_takes_milliseconds() -> None:
    rule = CurvePredictionRule()
    hist = [t.history for t in FINISHED]
    curve = saturating(0.6, 0.2, 0.5, 50, 0.01)
    start = time.perf_counter()
    for _ in range(20):
        rule.probability(curve, 100, hist, "max")
    assert (time.perf_counter() - start) / 20 < 0.02


def test_get_earlystop_curve() -> None:
    rule = get_earlystop("curve", threshold=0.1, grace_period=5, min_trials=2, families=["pow3", "exp3"])
    assert isinstance(rule, CurvePredictionRule)
    assert (rule.threshold, rule.grace_period, rule.min_trials, rule.families) == (0.1, 5, 2, ("pow3", "exp3"))
    assert "threshold=0.1" in repr(rule)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"threshold": 0.0}, "threshold=0.0): threshold must be a probability strictly between 0 and 1"),
        ({"threshold": 1}, "threshold=1): threshold must be a probability"),
        ({"threshold": "0.1"}, "threshold='0.1'): threshold must be a probability"),
        ({"threshold": math.nan}, "threshold=nan): threshold must be a probability"),
        ({"grace_period": 2}, "grace_period=2): grace_period must be an int >= 3"),
        ({"grace_period": 4.0}, "grace_period=4.0): grace_period must be an int >= 3"),
        ({"min_trials": 0}, "min_trials=0): min_trials must be an int >= 1"),
        ({"min_trials": True}, "min_trials=True): min_trials must be an int >= 1"),
        ({"families": ["pow3", "weibull"]}, "unknown ['weibull']; choose one or more of"),
        ({"families": []}, "no family given"),
        ({"families": "pow3"}, "families must be a list of names"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, fragment) -> None:
    with pytest.raises(ConfigurationError) as info:
        CurvePredictionRule(**kwargs)
    assert fragment in str(info.value) and "CurvePredictionRule(" in str(info.value)


def test_unknown_direction() -> None:
    with pytest.raises(ConfigurationError, match="direction='up'"):
        CurvePredictionRule().earlystop_check(running([0.1] * 5, 10), FINISHED, "up")


# -- properties ------------------------------------------------------------------------------
values = st.floats(-1e3, 1e3, allow_nan=False)
histories = st.lists(values, max_size=12)
finished_histories = st.lists(st.lists(values, min_size=1, max_size=12), max_size=5)
rules = st.builds(
    CurvePredictionRule,
    threshold=st.floats(0.01, 0.99),
    grace_period=st.integers(3, 8),
    min_trials=st.integers(1, 3),
)
directions = st.sampled_from(["max", "min"])


def stops(rule: CurvePredictionRule, history, budget: int, hists, direction: str) -> bool:
    return rule.earlystop_check(running(history, budget), finished(hists), direction) == ["r"]


@given(rule=rules, history=histories, extra=st.integers(0, 30), hists=finished_histories, direction=directions)
@settings(max_examples=150, deadline=None)
def test_never_stops_before_its_grace_period(rule, history, extra, hists, direction) -> None:
    history = history[: rule.grace_period - 1]
    assert not stops(rule, history, len(history) + extra, hists, direction)


@given(
    rule=rules,
    history=st.lists(values, min_size=3, max_size=12),
    extra=st.integers(1, 30),
    hists=finished_histories,
    margin=st.floats(0.0, 10.0),
    direction=directions,
)
@settings(max_examples=150, deadline=None)
def test_never_stops_a_trial_already_as_good_as_the_best_finished(
    rule, history, extra, hists, margin, direction
) -> None:
    best, count = best_finished(hists, direction)
    if count:  # make the trial's best so far at least as good as the best finished value
        history = [*history[:-1], best + margin if direction == "max" else best - margin]
    assert not stops(rule, history, len(history) + extra, hists, direction)


@given(rule=rules, history=histories, extra=st.integers(0, 30), hists=finished_histories, direction=directions)
@settings(max_examples=150, deadline=None)
def test_negating_every_value_and_flipping_direction_gives_the_same_decision(
    rule, history, extra, hists, direction
) -> None:
    flipped = "min" if direction == "max" else "max"
    negated = [[-v for v in h] for h in hists]
    budget = len(history) + extra
    decision = stops(rule, history, budget, hists, direction)
    assert decision == stops(rule, [-v for v in history], budget, negated, flipped)


@given(
    low=st.floats(0.01, 0.99),
    high=st.floats(0.01, 0.99),
    history=st.lists(values, min_size=3, max_size=12),
    extra=st.integers(1, 30),
    hists=finished_histories,
    direction=directions,
)
@settings(max_examples=150, deadline=None)
def test_stopping_is_monotone_in_the_threshold(low, high, history, extra, hists, direction) -> None:
    low, high = min(low, high), max(low, high)
    budget = len(history) + extra
    strict, lenient = (CurvePredictionRule(threshold=t, grace_period=3, min_trials=1) for t in (high, low))
    if stops(lenient, history, budget, hists, direction):
        assert stops(strict, history, budget, hists, direction)


def test_properties_are_not_vacuous() -> None:
    # The monotonicity and symmetry properties do see stopped trials.
    bad = saturating(0.6, 0.2, 0.5, 6, 0.005, 4)
    hists = [list(t.history) for t in FINISHED]
    assert stops(CurvePredictionRule(threshold=0.01, min_trials=1), bad, 20, hists, "max")
    assert stops(CurvePredictionRule(min_trials=1), [-v for v in bad], 20, [[-v for v in h] for h in hists], "min")
