"""MedianStoppingRule against hand-computed medians, in both directions."""

from __future__ import annotations

import math

import pytest

from lightning_maggy.earlystop import MedianStoppingRule
from lightning_maggy.earlystop.median import best_so_far, median_of_running_averages, running_average
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.trial import Trial, TrialState


def trial(name: str, history: list[float], state: TrialState = TrialState.RUNNING) -> Trial:
    return Trial(trial_id=name, config={"name": name}, state=state, budget=10, history=tuple(history))


# Running averages of the finished trials:
#        t=0   t=1   t=2
#   A    1     1.5   2
#   B    2     2     2
#   C    0     2     4
#   D    5     -     -
# Medians: t=0 -> median(1, 2, 0, 5) = 1.5 ; t=1 -> median(1.5, 2, 2) = 2 ; t=2 -> median(2, 2, 4) = 2
FINISHED = [
    trial("A", [1, 2, 3], TrialState.COMPLETED),
    trial("B", [2, 2, 2], TrialState.COMPLETED),
    trial("C", [0, 4, 8], TrialState.STOPPED),
    trial("D", [5], TrialState.PAUSED),
]


def check(rule: MedianStoppingRule, running: list[Trial], direction: str, finished=FINISHED) -> list[str]:
    return rule.earlystop_check({t.trial_id: t for t in running}, finished, direction)


def test_helpers() -> None:
    assert running_average([1, 2, 3], 0) == 1
    assert running_average([1, 2, 3], 1) == 1.5
    assert running_average([1, 2, 3], 2) == 2
    with pytest.raises(ValueError, match="t=3"):
        running_average([1, 2, 3], 3)
    histories = [t.history for t in FINISHED]
    assert median_of_running_averages(histories, 0) == (1.5, 4)
    assert median_of_running_averages(histories, 1) == (2.0, 3)
    assert median_of_running_averages(histories, 2) == (2.0, 3)
    assert median_of_running_averages(histories, 3)[1] == 0
    assert best_so_far([1, 5, 2], 2, "max") == 5 and best_so_far([1, 5, 2], 2, "min") == 1
    assert best_so_far([3, 0, 9], 1, "max") == 3
    assert best_so_far([math.nan, 2.0], 1, "max") == 2.0


def test_max_direction() -> None:
    rule = MedianStoppingRule(min_trials=3)
    running = [
        trial("x", [0.5, 1.9]),  # best 1.9 < median 2 -> stop
        trial("y", [2.5, 0.1]),  # best 2.5 -> keep
        trial("z", [1.0, 2.0]),  # best 2.0 == median: not worse -> keep
        trial("w", [1.4]),  # t=0: 1.4 < 1.5 -> stop
        trial("v", [1.5]),  # keep
    ]
    assert check(rule, running, "max") == ["x", "w"]


def test_min_direction() -> None:
    rule = MedianStoppingRule(min_trials=3)
    running = [
        trial("x", [2.5, 2.1]),  # best (lowest) 2.1 > 2 -> stop
        trial("y", [1.9, 3.0]),  # best 1.9 -> keep
        trial("z", [2.0, 2.0]),  # equal -> keep
        trial("w", [1.6]),  # t=0: 1.6 > 1.5 -> stop
        trial("v", [1.4]),  # keep
    ]
    assert check(rule, running, "min") == ["x", "w"]


def test_directions_disagree_on_the_same_trial() -> None:
    rule = MedianStoppingRule(min_trials=3)
    assert check(rule, [trial("u", [2.4, 2.6])], "max") == []
    assert check(rule, [trial("u", [2.4, 2.6])], "min") == ["u"]


def test_min_trials_not_met_means_no_stop() -> None:
    # At t=1 only A, B, C have two values.
    assert check(MedianStoppingRule(min_trials=4), [trial("x", [0.0, 0.0])], "max") == []
    assert check(MedianStoppingRule(min_trials=4), [trial("w", [0.0])], "max") == ["w"]
    assert check(MedianStoppingRule(min_trials=1), [trial("x", [0.0, 0.0])], "max", finished=[]) == []


def test_failed_trials_do_not_count() -> None:
    finished = FINISHED[:2] + [trial("F", [9, 9], TrialState.FAILED)]
    assert check(MedianStoppingRule(min_trials=3), [trial("x", [0.0, 0.0])], "max", finished) == []


def test_interval_is_respected() -> None:
    rule = MedianStoppingRule(min_trials=3, interval=2)
    assert check(rule, [trial("w", [0.0])], "max") == []  # step 1: no decision
    assert check(rule, [trial("x", [0.0, 0.0])], "max") == ["x"]  # step 2: decide
    assert check(rule, [trial("x", [0.0, 0.0, 0.0])], "max") == []  # step 3: no decision


def test_grace_period_is_respected() -> None:
    rule = MedianStoppingRule(min_trials=3, grace_period=2)
    assert check(rule, [trial("w", [0.0])], "max") == []
    assert check(rule, [trial("x", [0.0, 0.0])], "max") == ["x"]
    assert check(MedianStoppingRule(min_trials=3, grace_period=3), [trial("x", [0.0, 0.0])], "max") == []


def test_empty_history_and_all_nan() -> None:
    rule = MedianStoppingRule(min_trials=3)
    assert check(rule, [trial("e", [])], "max") == []
    assert check(rule, [trial("n", [math.nan])], "max") == ["n"]


def test_trials_longer_than_every_finished_one_are_not_judged() -> None:
    assert check(MedianStoppingRule(min_trials=1), [trial("x", [0.0] * 5)], "max") == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_trials": 0}, "min_trials=0"),
        ({"interval": 0}, "interval=0"),
        ({"grace_period": 0}, "grace_period=0"),
        ({"min_trials": 2.5}, "min_trials=2.5"),
        ({"interval": True}, "interval=True"),
        ({"grace_period": "1"}, "grace_period='1'"),
    ],
)
def test_arguments_are_validated(kwargs, fragment) -> None:
    with pytest.raises(ConfigurationError) as info:
        MedianStoppingRule(**kwargs)
    assert fragment in str(info.value) and "must be an int >= 1" in str(info.value)


def test_unknown_direction() -> None:
    with pytest.raises(ConfigurationError, match="direction='up'"):
        check(MedianStoppingRule(), [trial("x", [1.0])], "up")


def test_epochs_without_validation_are_holes_not_poison() -> None:
    """With check_val_every_n_epoch=2 every other epoch is a NaN hole in a history: the running
    averages leave the holes out, so the rule still compares, and stops the worse trial."""
    nan = math.nan
    assert running_average([nan, 2.0, nan, 4.0], 3) == 3.0
    assert math.isnan(running_average([nan, nan], 1))
    finished = [trial(n, [nan, v, nan, v], TrialState.COMPLETED) for n, v in (("A", 0.8), ("B", 0.9), ("C", 0.7))]
    running = [trial("poor", [nan, 0.2]), trial("good", [nan, 0.95])]
    for kept in (finished, tuple(finished)):  # read afresh, and kept sorted per step
        assert check(MedianStoppingRule(min_trials=3), running, "max", kept) == ["poor"]
        assert check(MedianStoppingRule(min_trials=3), running, "min", kept) == ["good"]


def test_never_stops_a_trial_at_the_last_epoch_of_its_budget() -> None:
    """At its budget's last epoch a trial has trained in full: stopping it saves nothing and
    would record it STOPPED; one epoch earlier the same values are stopped."""
    finished = [trial(n, [v, v], TrialState.COMPLETED) for n, v in (("A", 0.8), ("B", 0.9), ("C", 0.7))]
    last = Trial(trial_id="last", config={}, state=TrialState.RUNNING, budget=2, history=(0.1, 0.1))
    early = Trial(trial_id="early", config={}, state=TrialState.RUNNING, budget=3, history=(0.1, 0.1))
    assert check(MedianStoppingRule(min_trials=3), [last, early], "max", finished) == ["early"]
