"""Hyperband: bracket arithmetic, round-robin assignment and promotions against hand-computed
brackets and rungs, and argument validation. (The simulated searches are in
test_optimizer_contract.py.)"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import IDLE, Hyperband
from lightning_maggy.optimizers.asha import rung_budgets
from lightning_maggy.optimizers.hyperband import bracket_budgets, bracket_for, max_brackets
from lightning_maggy.searchspace import Integer, Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState
from record_ops import OPS, apply_op

SPACE = Searchspace(x=Integer(0, 10_000))


def make_trial(x: int, history: list[float], budget: int, state: TrialState, bracket: int | None) -> Trial:
    info = {} if bracket is None else {"bracket": bracket}
    return Trial.create({"x": x}, budget=budget, info=info).evolve(history=tuple(history), state=state)


def as_dict(*trials: Trial) -> dict[str, Trial]:
    return {t.trial_id: t for t in trials}


def setup_hb(trials: dict[str, Trial], *, num_trials: int | None = None, direction: str = "max",
             max_epochs: int = 27, **kwargs) -> Hyperband:
    opt = Hyperband(seed=0, **kwargs)
    opt.setup(SPACE, num_trials=num_trials, direction=direction, max_epochs=max_epochs, trials=trials)
    return opt


# -- bracket arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("r", "eta", "R", "expected"),
    [
        (1, 3, 27, [[1, 3, 9, 27], [3, 9, 27], [9, 27], [27]]),
        (1, 3, 26, [[1, 3, 9, 26], [3, 9, 26], [9, 26]]),  # s_max = floor(log_3 26) = 2
        (1, 3, 10, [[1, 3, 9, 10], [3, 9, 10], [9, 10]]),
        (1, 2, 8, [[1, 2, 4, 8], [2, 4, 8], [4, 8], [8]]),
        (2, 2, 9, [[2, 4, 8, 9], [4, 8, 9], [8, 9]]),  # s_max = floor(log_2 4.5) = 2
        (1, 3, 2, [[1, 2]]),
        (5, 3, 5, [[5]]),
        (1, 2.5, 20, [[1, 2, 6, 15, 20], [2, 6, 15, 20], [6, 15, 20], [15, 20]]),
    ],
)
def test_bracket_budgets(r, eta, R, expected) -> None:
    assert bracket_budgets(r, eta, R) == expected
    assert max_brackets(r, eta, R) == len(expected)
    assert bracket_budgets(r, eta, R, brackets=1) == [rung_budgets(r, eta, R)]
    assert bracket_budgets(r, eta, R, brackets=len(expected)) == expected


@given(r=st.integers(1, 20), eta=st.one_of(st.integers(2, 6), st.floats(2.0, 6.0)), extra=st.integers(0, 500))
@settings(max_examples=100, deadline=None)
def test_bracket_count_is_floor_log_eta_of_R_over_r_plus_one(r: int, eta: float, extra: int) -> None:
    R = r + extra
    brackets = bracket_budgets(r, eta, R)
    s_max = len(brackets) - 1
    assert math.floor(r * eta**s_max + 1e-9) <= R < math.floor(r * eta ** (s_max + 1) + 1e-9)
    for s, rungs in enumerate(brackets):
        assert rungs[0] == math.floor(r * eta**s + 1e-9) and rungs[-1] == R


def test_more_brackets_than_the_budgets_allow_is_a_clear_error() -> None:
    message = r"brackets=5 .* at most 4 bracket\(s\) \(s_max = floor\(log_eta\(R / r\)\) = 3\)"
    with pytest.raises(ConfigurationError, match=message):
        bracket_budgets(1, 3, 27, brackets=5)
    with pytest.raises(ConfigurationError, match=r"brackets=5 .*raise R"):
        Hyperband(resource_max=27, brackets=5)
    opt = Hyperband(brackets=3)  # fine for R = 9 ... (3 brackets: [1,3,9], [3,9], [9])
    opt.setup(SPACE, num_trials=None, direction="max", max_epochs=9, trials={})
    with pytest.raises(ConfigurationError, match=r"brackets=3 .*R=8 .*at most 2 bracket"):
        Hyperband(brackets=3).setup(SPACE, num_trials=None, direction="max", max_epochs=8, trials={})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"reduction_factor": 1}, "reduction_factor=1"),
        ({"resource_min": 0}, "resource_min=0"),
        ({"resource_max": 0}, "resource_max=0"),
        ({"resource_min": 5, "resource_max": 4}, "resource_max=4 must be >= resource_min=5"),
        ({"brackets": 0}, "brackets=0 must be an int >= 1"),
        ({"brackets": 2.0}, "brackets=2.0 must be an int >= 1"),
        ({"brackets": True}, "brackets=True must be an int >= 1"),
        ({"suggester": 3}, "suggester=3 is not callable"),
    ],
)
def test_arguments_are_validated(kwargs, fragment) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        Hyperband(**kwargs)


def test_setup_validates_against_max_epochs() -> None:
    with pytest.raises(ConfigurationError, match="resource_max=30 must be <= max_epochs=27"):
        setup_hb({}, resource_max=30)
    with pytest.raises(ConfigurationError, match=r"resource_min=30 must be <= max_epochs \(resource_max=None\)"):
        setup_hb({}, resource_min=30)


def test_bracket_for_is_round_robin() -> None:
    assert [bracket_for(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="trial_index=-1"):
        bracket_for(-1, 3)


# -- decisions ---------------------------------------------------------------------------------
def test_new_trials_go_to_the_brackets_in_round_robin_at_their_bottom_rung() -> None:
    trials: dict[str, Trial] = {}
    opt = setup_hb(trials, num_trials=9)  # r=1, eta=3, R=27: 4 brackets
    budgets, brackets = [], []
    for _ in range(9):
        suggestion = opt.get_suggestion()
        assert isinstance(suggestion, Trial)
        trials[suggestion.trial_id] = suggestion.evolve(state=TrialState.RUNNING)
        budgets.append(suggestion.budget)
        brackets.append(suggestion.info["bracket"])
    assert brackets == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert budgets == [1, 3, 9, 27, 1, 3, 9, 27, 1]
    assert opt.get_suggestion() is IDLE  # num_trials reached, trials running
    # A fresh optimizer over the same records continues the round robin where it was.
    more: dict[str, Trial] = dict(trials)
    fresh = setup_hb(more, num_trials=None)
    assert fresh.get_suggestion().info["bracket"] == 1  # type: ignore[union-attr]


def test_promotion_counts_only_the_trials_of_the_bracket_and_prefers_larger_budgets() -> None:
    P = TrialState.PAUSED
    # Bracket 0 (rungs 1, 3, 9, 27): nine trials reached rung 1; the top three (0.9, 0.8, 0.7) are
    # promotable, two of them were promoted to rung 3 and paused there (values 0.95 and 0.99).
    bracket0 = [
        make_trial(1, [0.9, 0.9, 0.95], 3, P, 0),
        make_trial(2, [0.8, 0.8, 0.99], 3, P, 0),
        make_trial(3, [0.7], 1, P, 0),
        *[make_trial(10 + i, [0.1 * i], 1, P, 0) for i in range(6)],
    ]
    # Bracket 1 (rungs 3, 9, 27): three trials at rung 3 with values 0.5, 0.6 and 0.1.
    bracket1 = [
        make_trial(20, [0.1, 0.2, 0.5], 3, P, 1),
        make_trial(21, [0.1, 0.2, 0.6], 3, P, 1),
        make_trial(22, [0.1, 0.2, 0.1], 3, P, 1),
    ]
    trials = as_dict(*bracket0, *bracket1)
    opt = setup_hb(trials, num_trials=len(trials))
    # Rung 3 of bracket 0 has two trials: floor(2/3) = 0, none promotable there, although 0.99
    # would top a merged rung 3. Rung 3 (budget 3) of bracket 1 comes before rung 1 of bracket 0.
    first = opt.get_suggestion()
    assert isinstance(first, Trial) and first.config == {"x": 21} and first.budget == 9
    assert first.info["bracket"] == 1 and first.history == (0.1, 0.2, 0.6)
    trials[first.trial_id] = first.evolve(state=TrialState.RUNNING)
    second = opt.get_suggestion()
    assert isinstance(second, Trial) and second.config == {"x": 3} and second.budget == 3
    trials[second.trial_id] = second.evolve(state=TrialState.RUNNING)
    assert opt.get_suggestion() is IDLE  # num_trials reached, nothing else promotable
    # Minimizing, bracket 1 promotes its lowest value at rung 3 (0.1).
    trials_min = as_dict(*bracket1)
    suggestion = setup_hb(trials_min, num_trials=3, direction="min").get_suggestion()
    assert isinstance(suggestion, Trial) and suggestion.config == {"x": 22} and suggestion.budget == 9


def test_promotion_in_place_follows_the_bracket_of_the_trial() -> None:
    P, R = TrialState.PAUSED, TrialState.RUNNING
    # Bracket 1 (rungs 3, 9, 27): two paused at rung 3 and the best one reaching it running.
    running = make_trial(22, [0.1, 0.2, 0.9], 3, R, 1)
    bracket1 = [make_trial(20, [0.1, 0.2, 0.5], 3, P, 1), make_trial(21, [0.1, 0.2, 0.6], 3, P, 1)]
    opt = setup_hb(as_dict(*bracket1, running), num_trials=10)
    promoted = opt.promote_in_place(running)
    assert isinstance(promoted, Trial) and promoted.trial_id == running.trial_id and promoted.budget == 9
    # The same in bracket 0 (rungs 1, 3, 9, 27): its rung 1 has nothing left to promote, and at
    # rung 3 the running trial is the best of three.
    bracket0 = [make_trial(30, [0.1, 0.2, 0.5], 3, P, 0), make_trial(31, [0.1, 0.2, 0.6], 3, P, 0)]
    running0 = make_trial(32, [0.1, 0.2, 0.9], 3, R, 0)
    promoted = setup_hb(as_dict(*bracket0, running0), num_trials=10).promote_in_place(running0)
    assert isinstance(promoted, Trial) and promoted.budget == 9
    # Trials of another bracket do not count: alone in bracket 2's rung, nothing is promotable.
    alone = make_trial(40, [0.1] * 9, 9, R, 2)
    assert setup_hb(as_dict(*bracket1, alone), num_trials=10).promote_in_place(alone) is None
    # With early_promotion, the best (here the only) result of a rung is promoted at once.
    promoted = setup_hb(as_dict(*bracket1, alone), num_trials=10, early_promotion=True).promote_in_place(alone)
    assert isinstance(promoted, Trial) and promoted.trial_id == alone.trial_id and promoted.budget == 27
    assert "early_promotion=True" in repr(setup_hb({}, early_promotion=True))


def test_trials_without_a_bracket_are_ignored() -> None:
    foreign = [make_trial(i, [float(i)], 1, TrialState.PAUSED, None) for i in range(9)]
    trials = as_dict(*foreign)
    opt = setup_hb(trials, num_trials=10)
    suggestion = opt.get_suggestion()
    assert isinstance(suggestion, Trial) and suggestion.trial_id not in trials
    assert suggestion.info["bracket"] == 0


def test_on_report_pauses_at_rungs_below_R_and_continue_until() -> None:
    opt = setup_hb({}, max_epochs=9)
    at_rung = make_trial(1, [0.1, 0.2, 0.3], 3, TrialState.RUNNING, 1)
    assert opt.on_report(at_rung) is Decision.PAUSE
    assert opt.on_report(at_rung.evolve(history=(0.1, 0.2))) is Decision.CONTINUE
    assert opt.continue_until(at_rung) == 2
    top = make_trial(2, [0.1] * 9, 9, TrialState.RUNNING, 2)
    assert opt.on_report(top) is Decision.CONTINUE
    assert opt.continue_until(top) > 10**6


def test_suggester_is_used_for_new_trials() -> None:
    calls = []

    def suggester(space, rng, trials):
        calls.append(len(trials))
        return {"x": int(rng.integers(0, 10_000))}

    trials: dict[str, Trial] = {}
    opt = Hyperband(seed=1, suggester=suggester)
    opt.setup(SPACE, num_trials=3, direction="max", max_epochs=9, trials=trials)
    for _ in range(3):
        suggestion = opt.get_suggestion()
        assert isinstance(suggestion, Trial)
        trials[suggestion.trial_id] = suggestion.evolve(state=TrialState.RUNNING)
    assert calls == [0, 1, 2]


# -- the kept brackets (BracketIndex) against the brackets rebuilt from every record ---------------
@settings(max_examples=60, deadline=None)
@given(
    ops=OPS,
    direction=st.sampled_from(["max", "min"]),
    early=st.booleans(),
)
def test_kept_brackets_decide_as_the_brackets_rebuilt_from_the_records(ops, direction: str, early: bool) -> None:
    from lightning_maggy.records import TrialRecords

    rungs = [[1, 3, 9], [3, 9], [9]]  # r=1, eta=3, R=9
    records = TrialRecords()
    opt = setup_hb(records, num_trials=100, direction=direction, max_epochs=9, early_promotion=early)
    assert opt.changes is records.changes and opt.bracket_rungs == rungs
    for x, op, value in ops:
        s = None if x >= 36 else x % 3  # a few trials without a bracket, which never count
        fresh = make_trial(x, [], 1 if s is None else rungs[s][0], TrialState.RUNNING, s)
        trial = records.get(fresh.trial_id) or fresh
        next_budget = rungs[s][rungs[s].index(trial.budget) + 1] if s is not None and trial.budget < 9 else None
        trial = apply_op(trial, op, value, next_budget)
        records[trial.trial_id] = trial
        rebuilt = opt._promotion_among(dict(records))
        opt._index.sync(records, records.changes)
        assert opt._index.first_promotion(records) == rebuilt
        assert len(opt._index.members) == sum(1 for t in records.values() if "bracket" in t.info)
        # In place: the kept brackets (no copy of the records) answer as a copy with it PAUSED.
        if trial.state is TrialState.RUNNING and len(trial.history) >= trial.budget:
            view = {**records, trial.trial_id: trial.evolve(state=TrialState.PAUSED)}
            expected = opt._promotion_among(view)
            expected = (expected.evolve(state=trial.state)
                        if isinstance(expected, Trial) and expected.trial_id == trial.trial_id else None)
            assert opt.promote_in_place(trial) == expected
    # A plain dict (no change log): rebuilt on every call, same answers.
    plain = dict(records)
    opt2 = setup_hb(plain, num_trials=100, direction=direction, max_epochs=9, early_promotion=early)
    assert opt2.changes is None
    opt2._index.sync(plain, None)
    assert opt2._index.first_promotion(plain) == opt._index.first_promotion(records)
