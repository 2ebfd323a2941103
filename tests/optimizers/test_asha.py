"""ASHA: rung arithmetic, the promotion rule against hand-computed rungs, and the optimizer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.exceptions import ConfigurationError, SearchspaceError
from lightning_maggy.optimizers import ASHA, IDLE
from lightning_maggy.optimizers.asha import promotable, rung_budgets, rung_results, top_count
from lightning_maggy.searchspace import Double, Integer, Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState
from record_ops import OPS, apply_op

SPACE = Searchspace(x=Integer(0, 10_000))


def make_trial(x: int, history: list[float], budget: int, state: TrialState) -> Trial:
    return Trial.create({"x": x}, budget=budget).evolve(history=tuple(history), state=state)


def setup_asha(trials: dict[str, Trial], *, num_trials: int | None = None, direction: str = "max",
               max_epochs: int = 9, **kwargs) -> ASHA:
    opt = ASHA(seed=0, **kwargs)
    opt.setup(SPACE, num_trials=num_trials, direction=direction, max_epochs=max_epochs, trials=trials)
    return opt


def as_dict(*trials: Trial) -> dict[str, Trial]:
    return {t.trial_id: t for t in trials}


# -- rung_budgets ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("r", "eta", "R", "expected"),
    [
        (1, 3, 27, [1, 3, 9, 27]),
        (1, 3, 10, [1, 3, 9, 10]),
        (1, 3, 9, [1, 3, 9]),
        (1, 2, 8, [1, 2, 4, 8]),
        (2, 2, 9, [2, 4, 8, 9]),
        (5, 3, 5, [5]),
        (1, 3, 1, [1]),
        (3, 4, 100, [3, 12, 48, 100]),
        (1, 2.5, 20, [1, 2, 6, 15, 20]),
    ],
)
def test_rung_budgets(r, eta, R, expected) -> None:
    assert rung_budgets(r, eta, R) == expected


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((0, 3, 9), "resource_min=0"),
        ((1, 1, 9), "reduction_factor=1"),
        ((1, True, 9), "reduction_factor=True"),
        ((1, 3, 0), "resource_max=0"),
        ((5, 3, 4), "resource_max=4 must be >= resource_min=5"),
        ((1.5, 3, 9), "resource_min=1.5"),
    ],
)
def test_rung_budgets_rejects_bad_arguments(args, fragment) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        rung_budgets(*args)


@given(
    r=st.integers(1, 20),
    eta=st.one_of(st.integers(2, 6), st.floats(2.0, 6.0)),
    extra=st.integers(0, 500),
)
@settings(max_examples=200, deadline=None)
def test_rung_budgets_properties(r: int, eta: float, extra: int) -> None:
    R = r + extra
    budgets = rung_budgets(r, eta, R)
    assert budgets[0] == min(r, R) and budgets[-1] == R
    assert all(a < b for a, b in zip(budgets, budgets[1:]))
    for k, b in enumerate(budgets[:-1]):
        assert b == math.floor(r * eta**k + 1e-9)


# -- promotable --------------------------------------------------------------------------------
NINE = {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.7, "e": 0.3, "f": 0.8, "g": 0.2, "h": 0.6, "i": 0.4}


def test_promotable_top_third_max_best_first() -> None:
    assert promotable(NINE, [], 3, "max") == ["b", "f", "d"]


def test_promotable_top_third_min_best_first() -> None:
    assert promotable(NINE, [], 3, "min") == ["c", "g", "e"]


def test_promotable_accepts_pairs_and_eta_2() -> None:
    assert promotable(list(NINE.items()), [], 2, "max") == ["b", "f", "d", "h"]


def test_promoted_trials_are_not_promoted_twice() -> None:
    assert promotable(NINE, ["b"], 3, "max") == ["f", "d"]
    assert promotable(NINE, ["b", "f", "d"], 3, "max") == []
    # Promoted trials still count in n and still occupy their place in the ranking.
    assert promotable(NINE, ["c"], 3, "max") == ["b", "f", "d"]


def test_no_promotion_when_floor_n_over_eta_is_zero() -> None:
    assert promotable({"a": 1.0, "b": 2.0}, [], 3, "max") == []
    assert promotable({}, [], 3, "max") == []
    assert promotable({"a": 1.0, "b": 2.0, "c": 3.0}, [], 3, "max") == ["c"]


def test_promotable_ties_broken_by_id_and_nan_never_promoted() -> None:
    assert promotable({"z": 1.0, "y": 1.0, "x": 0.0}, [], 3, "max") == ["y"]
    assert promotable({"a": math.nan, "b": math.nan, "c": math.nan}, [], 3, "max") == []
    assert promotable({"a": math.nan, "b": 0.0, "c": -1.0}, [], 3, "max") == ["b"]
    assert promotable({"a": math.nan, "b": 0.0, "c": -1.0}, [], 3, "min") == ["c"]


def test_early_promotion_promotes_a_rungs_best_before_it_has_eta_results() -> None:
    early = {"early_promotion": True}
    assert promotable({"a": 1.0}, [], 3, "max", **early) == ["a"]
    assert promotable({"a": 1.0, "b": 2.0}, [], 3, "max", **early) == ["b"]
    assert promotable({"a": 1.0, "b": 2.0}, [], 3, "min", **early) == ["a"]
    # The first result was promoted; a better second one is promoted too, a worse one is not
    # (Optuna's SuccessiveHalvingPruner continues a trial that is the best of its rung so far).
    assert promotable({"a": 1.0, "b": 2.0}, ["a"], 3, "max", **early) == ["b"]
    assert promotable({"a": 2.0, "b": 1.0}, ["a"], 3, "max", **early) == []
    assert promotable({}, [], 3, "max", **early) == []
    assert promotable({"a": math.nan}, [], 3, "max", **early) == []
    # From eta results on, the paper's rule.
    for promoted in ([], ["b"], ["c"]):
        assert promotable(NINE, promoted, 3, "max", **early) == promotable(NINE, promoted, 3, "max")


def test_with_early_promotion_the_first_trial_trains_on_to_the_top_rung() -> None:
    R = TrialState.RUNNING
    first = make_trial(1, [0.5], 1, R)
    assert setup_asha(as_dict(first), num_trials=9).promote_in_place(first) is None  # the paper's rule
    promoted = setup_asha(as_dict(first), num_trials=9, early_promotion=True).promote_in_place(first)
    assert isinstance(promoted, Trial) and promoted.budget == 3 and promoted.state is R
    at_rung_1 = promoted.evolve(history=(0.5, 0.6, 0.7))
    promoted = setup_asha(as_dict(at_rung_1), num_trials=9, early_promotion=True).promote_in_place(at_rung_1)
    assert isinstance(promoted, Trial) and promoted.budget == 9
    # A second trial worse than the first pauses at rung 0; a better one trains on.
    trained = at_rung_1.evolve(budget=9)
    worse, better = make_trial(2, [0.4], 1, R), make_trial(3, [0.8], 1, R)
    assert setup_asha(as_dict(trained, worse), num_trials=9, early_promotion=True).promote_in_place(worse) is None
    promoted = setup_asha(as_dict(trained, better), num_trials=9, early_promotion=True).promote_in_place(better)
    assert isinstance(promoted, Trial) and promoted.trial_id == better.trial_id and promoted.budget == 3
    # A free worker gets the same promotions: the best paused trial of a rung with one result.
    paused = make_trial(4, [0.3], 1, TrialState.PAUSED)
    suggestion = setup_asha(as_dict(paused), num_trials=9, early_promotion=True).get_suggestion(None)
    assert isinstance(suggestion, Trial) and suggestion.trial_id == paused.trial_id and suggestion.budget == 3


def test_promotable_rejects_unknown_direction() -> None:
    with pytest.raises(ConfigurationError, match="direction='maximize'"):
        promotable(NINE, [], 3, "maximize")


@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=40),
    eta=st.integers(2, 5),
    direction=st.sampled_from(["max", "min"]),
    promoted_mask=st.lists(st.booleans(), max_size=40),
    early=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_promotable_property(values, eta, direction, promoted_mask, early) -> None:
    results = {f"t{i:02d}": v for i, v in enumerate(values)}
    promoted = [tid for tid, flag in zip(results, promoted_mask) if flag]
    chosen = promotable(results, promoted, eta, direction, early)
    n_top = max(len(values) // eta, 1 if early and values else 0)
    assert top_count(len(values), eta, early) == n_top
    assert len(chosen) <= n_top
    assert len(set(chosen)) == len(chosen)
    assert not set(chosen) & set(promoted)
    better_or_equal = (lambda a, b: a >= b) if direction == "max" else (lambda a, b: a <= b)
    candidates = set(promotable(results, [], eta, direction, early))
    assert set(chosen) <= candidates and len(candidates) == n_top
    for tid in chosen:
        for other, value in results.items():
            if other not in candidates:
                assert better_or_equal(results[tid], value)
    # Best first.
    chosen_values = [results[t] for t in chosen]
    assert chosen_values == sorted(chosen_values, reverse=direction == "max")


def test_rung_results_reads_history_at_the_rung_budget() -> None:
    t1 = make_trial(1, [0.1, 0.2, 0.3], 3, TrialState.PAUSED)
    t2 = make_trial(2, [0.5], 1, TrialState.PAUSED)
    trials = as_dict(t1, t2)
    assert rung_results(trials, 1) == {t1.trial_id: 0.1, t2.trial_id: 0.5}
    assert rung_results(trials, 3) == {t1.trial_id: 0.3}
    assert rung_results(trials, 9) == {}


# -- the optimizer -----------------------------------------------------------------------------
def rung0(values: list[float], state: TrialState = TrialState.PAUSED) -> list[Trial]:
    return [make_trial(i, [v], 1, state) for i, v in enumerate(values)]


@pytest.mark.parametrize(("direction", "best_x"), [("max", 1), ("min", 2)])
def test_promotes_the_best_paused_trial_to_the_next_rung(direction: str, best_x: int) -> None:
    trials = as_dict(*rung0([0.5, 0.9, 0.1]))
    opt = setup_asha(trials, num_trials=3, direction=direction)
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial)
    assert suggestion.config == {"x": best_x}
    assert suggestion.budget == 3
    assert suggestion.history == trials[suggestion.trial_id].history
    assert suggestion.state is TrialState.PAUSED  # the controller sets RUNNING when it resumes


def test_promoted_trial_is_not_promoted_twice_and_waits_with_idle() -> None:
    trials = as_dict(*rung0([0.5, 0.9, 0.1]))
    opt = setup_asha(trials, num_trials=3)
    first = opt.get_suggestion(None)
    assert isinstance(first, Trial)
    trials[first.trial_id] = first.evolve(state=TrialState.RUNNING)
    # n=3, floor(3/3)=1 and that one is promoted: nothing to do but wait for the running trial.
    assert opt.get_suggestion(None) is IDLE
    # It reaches rung 1 (budget 3): n_1 = 1, floor(1/3) = 0, nothing left to run.
    trials[first.trial_id] = first.evolve(state=TrialState.PAUSED, history=(0.9, 0.95, 0.97))
    assert opt.get_suggestion(None) is None


def test_starts_new_trials_at_the_bottom_rung_when_nothing_is_promotable() -> None:
    trials = as_dict(*rung0([0.5, 0.9]))
    opt = setup_asha(trials, num_trials=5)
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial)
    assert suggestion.trial_id not in trials
    assert suggestion.budget == 1 and suggestion.state is TrialState.PENDING
    SPACE.validate(suggestion.config)


def test_promotion_comes_before_new_trials_and_higher_rungs_first() -> None:
    # Rung 1 (budget 3) has 3 trials: the best one there (x=10) is promoted to 9 first.
    upper = [make_trial(10 + i, [0.0, 0.0, v], 3, TrialState.PAUSED) for i, v in enumerate([0.8, 0.2, 0.4])]
    lower = rung0([0.1] * 6)
    trials = as_dict(*upper, *lower)
    opt = setup_asha(trials, num_trials=100)
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial)
    assert suggestion.config == {"x": 10} and suggestion.budget == 9


def test_stopped_trials_are_skipped_and_a_top_trial_still_ending_is_waited_for() -> None:
    trials = as_dict(
        make_trial(0, [0.9], 1, TrialState.STOPPED),  # best, but early-stopped: skipped
        make_trial(1, [0.8], 1, TrialState.RUNNING),  # second, reached its rung, end in flight
        make_trial(2, [0.7], 1, TrialState.PAUSED),
        *[make_trial(3 + i, [0.1], 1, TrialState.PAUSED) for i in range(6)],
    )
    # n = 9 -> top 3 = x0, x1, x2. x1 will be PAUSED once its end arrives, and it ranks above
    # x2: promoting x2 (or starting a new trial) now would depend on message timing.
    x1 = make_trial(1, [0.8], 1, TrialState.RUNNING).trial_id
    opt = setup_asha(trials, num_trials=9)
    assert opt.get_suggestion(None) is IDLE
    for state in (TrialState.LOST, TrialState.PENDING):  # lost and re-queued: same
        opt = setup_asha({**trials, x1: trials[x1].evolve(state=state)}, num_trials=9)
        assert opt.get_suggestion(None) is IDLE
    opt = setup_asha({**trials, x1: trials[x1].evolve(state=TrialState.PAUSED)}, num_trials=9)
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial) and suggestion.config == {"x": 1} and suggestion.budget == 3
    opt = setup_asha({**trials, x1: trials[x1].evolve(state=TrialState.FAILED)}, num_trials=9)
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial) and suggestion.config == {"x": 2} and suggestion.budget == 3


def test_promotion_in_place_is_the_promotion_a_free_worker_would_get_next() -> None:
    R = TrialState.RUNNING
    # Two paused trials at rung 1; the third one reaches it running.
    paused = rung0([0.5, 0.2])
    best = make_trial(7, [0.9], 1, R)
    opt = setup_asha(as_dict(*paused, best), num_trials=9)
    promoted = opt.promote_in_place(best)
    assert isinstance(promoted, Trial) and promoted.trial_id == best.trial_id
    assert promoted.budget == 3 and promoted.state is R and promoted.history == (0.9,)
    # Not the best of its rung: the best paused one is promoted next, on a free worker.
    worse = make_trial(7, [0.1], 1, R)
    assert setup_asha(as_dict(*paused, worse), num_trials=9).promote_in_place(worse) is None
    # Fewer than eta trials at the rung: nothing is promotable yet, the trial pauses.
    assert setup_asha(as_dict(paused[0], best), num_trials=9).promote_in_place(best) is None
    # A promotable paused trial on a higher rung comes first.
    upper = [make_trial(10 + i, [0.0, 0.0, v], 3, TrialState.PAUSED) for i, v in enumerate([0.8, 0.2, 0.4])]
    assert setup_asha(as_dict(*upper, *paused, best), num_trials=9).promote_in_place(best) is None
    # At the top rung's boundary the answer stays the top budget.
    top_rung = make_trial(8, [0.9, 0.9, 0.99], 3, R)
    third = [make_trial(20 + i, [0.0, 0.0, v], 3, TrialState.PAUSED) for i, v in enumerate([0.5, 0.4])]
    promoted = setup_asha(as_dict(*third, top_rung), num_trials=9).promote_in_place(top_rung)
    assert isinstance(promoted, Trial) and promoted.budget == 9


def test_a_trial_that_trained_the_top_rung_completes_even_below_max_epochs() -> None:
    opt = setup_asha({}, max_epochs=9)
    assert opt.pauses_at_budget(make_trial(0, [0.1], 1, TrialState.RUNNING))
    assert not opt.pauses_at_budget(make_trial(0, [0.1] * 9, 9, TrialState.RUNNING))
    opt = setup_asha({}, max_epochs=9, resource_max=3)
    assert opt.budgets == [1, 3]
    assert opt.pauses_at_budget(make_trial(0, [0.1], 1, TrialState.RUNNING))
    assert not opt.pauses_at_budget(make_trial(0, [0.1] * 3, 3, TrialState.RUNNING))
    assert opt.on_report(make_trial(0, [0.1] * 3, 3, TrialState.RUNNING)) is Decision.CONTINUE


def test_returns_none_when_budget_spent_and_nothing_active() -> None:
    trials = as_dict(*rung0([0.1, 0.2]), make_trial(5, [0.3] * 9, 9, TrialState.COMPLETED))
    opt = setup_asha(trials, num_trials=3)
    assert opt.get_suggestion(None) is None


@pytest.mark.parametrize("state", [TrialState.RUNNING, TrialState.PENDING, TrialState.LOST])
def test_idle_while_trials_may_still_produce_promotions(state: TrialState) -> None:
    trials = as_dict(*rung0([0.1, 0.2]), make_trial(7, [], 1, state))
    opt = setup_asha(trials, num_trials=3)
    assert opt.get_suggestion(None) is IDLE


def test_on_report_pauses_at_rungs_below_the_top() -> None:
    opt = setup_asha({}, max_epochs=9)
    assert opt.budgets == [1, 3, 9]
    assert opt.on_report(make_trial(0, [0.1], 1, TrialState.RUNNING)) is Decision.PAUSE
    assert opt.on_report(make_trial(0, [0.1], 3, TrialState.RUNNING)) is Decision.CONTINUE
    assert opt.on_report(make_trial(0, [0.1, 0.2, 0.3], 3, TrialState.RUNNING)) is Decision.PAUSE
    assert opt.on_report(make_trial(0, [0.1] * 8, 9, TrialState.RUNNING)) is Decision.CONTINUE
    assert opt.on_report(make_trial(0, [0.1] * 9, 9, TrialState.RUNNING)) is Decision.CONTINUE


def test_resource_max_defaults_to_max_epochs_and_can_be_lower() -> None:
    assert setup_asha({}, max_epochs=27).budgets == [1, 3, 9, 27]
    assert setup_asha({}, max_epochs=27, resource_max=10).budgets == [1, 3, 9, 10]
    assert setup_asha({}, max_epochs=27, resource_min=2, reduction_factor=2).budgets == [2, 4, 8, 16, 27]
    assert ASHA.uses_rungs is True


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"reduction_factor": 1}, "reduction_factor=1 must be a number >= 2"),
        ({"reduction_factor": "3"}, "reduction_factor='3'"),
        ({"reduction_factor": math.inf}, "reduction_factor=inf"),
        ({"resource_min": 0}, "resource_min=0 must be an int >= 1"),
        ({"resource_min": 1.5}, "resource_min=1.5"),
        ({"resource_max": 0}, "resource_max=0 must be an int >= 1"),
        ({"resource_min": 5, "resource_max": 3}, "resource_max=3 must be >= resource_min=5"),
        ({"suggester": "tpe"}, "suggester='tpe' is not callable"),
        ({"max_retries": -1}, "max_retries=-1"),
        ({"early_promotion": 1}, "early_promotion=1 must be True or False"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, fragment) -> None:
    with pytest.raises(ConfigurationError) as info:
        ASHA(**kwargs)
    assert fragment in str(info.value)


def test_validate_checks_against_max_epochs() -> None:
    with pytest.raises(ConfigurationError, match=r"resource_min=5 must be <= max_epochs .*=3"):
        setup_asha({}, max_epochs=3, resource_min=5)
    with pytest.raises(ConfigurationError, match="resource_max=20 must be <= max_epochs=9"):
        setup_asha({}, max_epochs=9, resource_max=20)


def test_suggester_seam_is_used_for_new_trials() -> None:
    calls = []

    def suggester(space, rng, trials):
        calls.append(len(trials))
        return {"x": int(rng.integers(100, 200))}

    opt = ASHA(seed=1, suggester=suggester)
    opt.setup(SPACE, num_trials=5, direction="max", max_epochs=9, trials={})
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial) and 100 <= suggestion.config["x"] < 200
    assert calls == [0]
    expected = np.random.default_rng(1).integers(100, 200)
    assert suggestion.config["x"] == expected


def test_suggester_returning_an_invalid_config_is_an_error() -> None:
    opt = ASHA(seed=1, suggester=lambda space, rng, trials: {"x": -5})
    opt.setup(SPACE, num_trials=5, direction="max", max_epochs=9, trials={})
    with pytest.raises(SearchspaceError, match="value -5"):
        opt.get_suggestion(None)


# -- the kept rungs (RungIndex) against the rungs rebuilt from every record ---------------------
@settings(max_examples=60, deadline=None)
@given(
    ops=OPS,
    direction=st.sampled_from(["max", "min"]),
    eta=st.sampled_from([2, 3]),
    early=st.booleans(),
)
def test_kept_rungs_decide_as_the_rungs_rebuilt_from_the_records(ops, direction: str, eta: int, early: bool) -> None:
    from lightning_maggy.records import TrialRecords

    records = TrialRecords()
    opt = setup_asha(records, num_trials=100, direction=direction, max_epochs=9, reduction_factor=eta,
                     early_promotion=early)
    assert opt.changes is records.changes
    for x, op, value in ops:
        tid = Trial.create({"x": x}, budget=1).trial_id
        trial = records.get(tid) or Trial.create({"x": x}, budget=1).evolve(state=TrialState.RUNNING)
        trial = apply_op(trial, op, value, {1: 3, 3: 9}.get(trial.budget))
        records[tid] = trial
        rebuilt = opt._promotion_among(dict(records))
        kept = opt._promotion()
        assert kept == rebuilt
        # In place: the kept rungs (no copy of the records) answer as a copy with it PAUSED.
        if trial.state is TrialState.RUNNING and len(trial.history) >= trial.budget:
            view = {**records, tid: trial.evolve(state=TrialState.PAUSED)}
            expected = opt._promotion_among(view)
            expected = expected.evolve(state=trial.state) if isinstance(expected, Trial) and expected.trial_id == tid else None
            assert opt.promote_in_place(trial) == expected
    # A plain dict (no change log): rebuilt on every call, same answers.
    plain = dict(records)
    opt2 = setup_asha(plain, num_trials=100, direction=direction, max_epochs=9, reduction_factor=eta,
                      early_promotion=early)
    assert opt2.changes is None
    assert opt2._promotion() == opt._promotion()


def test_the_change_log_lists_each_changed_record_once_newest_first() -> None:
    from lightning_maggy.records import TrialRecords

    records = TrialRecords({"a": make_trial(1, [], 1, TrialState.PENDING)})
    start = records.changes.version
    records["b"] = make_trial(2, [], 1, TrialState.PENDING)
    records["a"] = make_trial(1, [0.5], 1, TrialState.RUNNING)
    records["b"] = make_trial(2, [0.1], 1, TrialState.RUNNING)
    assert records.changes.changed_since(start) == ["b", "a"]
    assert records.changes.changed_since(records.changes.version) == []
    del records["a"]
    assert records.changes.changed_since(start + 3) == ["a"]


# -- too few trials for the top rung: a warning before the study starts ----------------------


@pytest.mark.parametrize(
    ("num_trials", "eta", "max_epochs", "warns"),
    [(6, 3, 9, True), (8, 3, 9, True), (9, 3, 9, False), (26, 3, 27, True), (27, 3, 27, False), (3, 3, 3, False),
     (19, 2.5, 27, True), (50, 2.5, 27, False)],
)
def test_too_few_trials_to_reach_the_top_rung_warn_before_the_study(
    num_trials: int, eta: float, max_epochs: int, warns: bool
) -> None:
    import warnings as w

    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        ASHA(reduction_factor=eta).setup(
            Searchspace(x=Double(0.0, 1.0)), num_trials=num_trials, direction="max", max_epochs=max_epochs,
            trials={}, validate_only=True,
        )
    messages = [str(c.message) for c in caught if "promoted beyond" in str(c.message)]
    assert bool(messages) is warns, messages
    if warns:
        assert f"num_trials={num_trials}" in messages[0] and "early_promotion=True" in messages[0]


@pytest.mark.parametrize("kwargs", [{"early_promotion": True}, {"resource_min": 9}])
def test_no_warning_when_the_top_rung_is_reachable_otherwise(kwargs: dict[str, Any]) -> None:
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        ASHA(**kwargs).setup(Searchspace(x=Double(0.0, 1.0)), num_trials=4, direction="max", max_epochs=9, trials={},
                             validate_only=True)
        ASHA().setup(Searchspace(x=Double(0.0, 1.0)), num_trials=None, direction="max", max_epochs=9, trials={},
                     validate_only=True)
