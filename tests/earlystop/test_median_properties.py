"""Properties of MedianStoppingRule (hypothesis): the minimum number of finished trials, a trial
as good as every finished running average is never stopped, and direction symmetry."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.earlystop import MedianStoppingRule
from lightning_maggy.earlystop.median import running_average
from lightning_maggy.trial import Trial, TrialState

values = st.floats(-1e6, 1e6, allow_nan=False)
histories = st.lists(values, min_size=1, max_size=8)
rules = st.builds(
    MedianStoppingRule,
    min_trials=st.integers(1, 5),
    interval=st.integers(1, 3),
    grace_period=st.integers(1, 4),
)


def finished(hists: list[list[float]]) -> list[Trial]:
    return [
        Trial(trial_id=f"f{i}", config={"i": i}, state=TrialState.COMPLETED, budget=8, history=tuple(h))
        for i, h in enumerate(hists)
    ]


def stops(rule: MedianStoppingRule, history: list[float], hists: list[list[float]], direction: str) -> bool:
    running = Trial(trial_id="r", config={}, state=TrialState.RUNNING, budget=8, history=tuple(history))
    return rule.earlystop_check({"r": running}, finished(hists), direction) == ["r"]


directions = st.sampled_from(["max", "min"])


@given(rule=rules, history=histories, hists=st.lists(histories, max_size=5), direction=directions)
@settings(max_examples=200, deadline=None)
def test_never_stops_with_fewer_than_min_trials_finished(rule, history, hists, direction) -> None:
    hists = hists[: rule.min_trials - 1]
    assert not stops(rule, history, hists, direction)


@given(
    rule=rules,
    prefix=st.lists(values, max_size=7),
    hists=st.lists(histories, min_size=1, max_size=8),
    margin=st.floats(0.0, 1e3),
    direction=directions,
)
@settings(max_examples=200, deadline=None)
def test_a_trial_as_good_as_every_finished_running_average_is_never_stopped(
    rule, prefix, hists, margin, direction
) -> None:
    t = len(prefix)
    averages = [running_average(h, t) for h in hists if len(h) >= t + 1] or [0.0]
    # The last value is at least as good as the best running average at step t.
    last = max(averages) + margin if direction == "max" else min(averages) - margin
    assert not stops(rule, [*prefix, last], hists, direction)


@given(rule=rules, history=histories, hists=st.lists(histories, max_size=8), direction=directions)
@settings(max_examples=200, deadline=None)
def test_negating_every_value_and_flipping_direction_gives_the_same_decision(
    rule, history, hists, direction
) -> None:
    flipped = "min" if direction == "max" else "max"
    negated = [[-v for v in h] for h in hists]
    assert stops(rule, history, hists, direction) == stops(rule, [-v for v in history], negated, flipped)
