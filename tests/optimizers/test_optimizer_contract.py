"""The contract every optimizer must pass, driven by a small simulated controller.

The simulation follows the controller's rules: a free worker asks ``get_suggestion(last)``; a new
trial is inserted RUNNING, a PAUSED trial returned with a larger budget is resumed; after each
epoch the metric is appended to ``history`` and ``on_report`` answers; a trial that reached its
budget ends PAUSED (budget < max_epochs) or COMPLETED. IDLE means ask again after the next state
change; None means the optimizer is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from lightning_maggy.optimizers import (
    ASHA,
    BOHB,
    GP,
    IDLE,
    TPE,
    AbstractOptimizer,
    GridSearch,
    Hyperband,
    OptunaSampler,
    RandomSearch,
)
from lightning_maggy.searchspace import Categorical, Double, Integer, Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState

MAX_EPOCHS = 9
NUM_TRIALS = 12

SPACE = Searchspace(
    lr=Double(1e-4, 1e-1, log=True),
    units=Integer(8, 64),
    act=Categorical(["relu", "tanh"]),
)
TINY_SPACE = Searchspace(a=Categorical(["x", "y"]), b=Integer(0, 1))  # 4 configurations

FACTORIES: dict[str, Callable[[], AbstractOptimizer]] = {
    "random": lambda: RandomSearch(seed=7),
    "grid": lambda: GridSearch(grid_size=3),
    "asha": lambda: ASHA(reduction_factor=3, resource_min=1, seed=7),
    "asha-eta2": lambda: ASHA(reduction_factor=2, resource_min=2, resource_max=8, seed=3),
    # Without retries, a rebuilt optimizer must replay the recorded draws to stay in step.
    "random-noretry": lambda: RandomSearch(seed=11, max_retries=0),
    "asha-noretry": lambda: ASHA(seed=11, max_retries=0),
    "hyperband": lambda: Hyperband(reduction_factor=3, resource_min=1, seed=7),
    "hyperband-eta2": lambda: Hyperband(reduction_factor=2, resource_max=8, brackets=3, seed=3),
    "hyperband-noretry": lambda: Hyperband(seed=11, max_retries=0),
    "asha-early": lambda: ASHA(seed=7, early_promotion=True),
    "hyperband-early": lambda: Hyperband(seed=7, early_promotion=True),
    # Model-based: small settings keep the GP fits few and short (2 model proposals of 12).
    # BOHB with a GP: tests/optimizers/test_model_based.py.
    "gp": lambda: GP(seed=7, n_initial=10, num_restarts=2, raw_samples=32, mc_samples=32),
    "tpe": lambda: TPE(seed=7, n_startup_trials=4),
    "bohb": lambda: BOHB(seed=7, min_points=3),
    # A sampler whose state (its place in the sequence) lives in the Optuna study.
    "qmc": lambda: OptunaSampler(qmc_sampler, seed=7),
}


def qmc_sampler(seed: int):
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def fake_metric(space: Searchspace, config: dict, epoch: int) -> float:
    """Deterministic learning curve: a per-config quality that rises over epochs."""
    quality = float(sum(math.sin(3.0 * (i + 1) * u) for i, u in enumerate(space.encode(config))))
    return quality * (1.0 - 0.5 ** (epoch + 1))


class SimController:
    """A deterministic stand-in for the controller, with ``workers`` parallel slots."""

    def __init__(
        self,
        factory: Callable[[], AbstractOptimizer],
        space: Searchspace = SPACE,
        *,
        num_trials: int | None = NUM_TRIALS,
        direction: str = "max",
        max_epochs: int = MAX_EPOCHS,
        workers: int = 3,
        check_rebuild: bool = False,
    ) -> None:
        self.factory = factory
        self.space = space
        self.num_trials = num_trials
        self.direction = direction
        self.max_epochs = max_epochs
        self.check_rebuild = check_rebuild
        self.trials: dict[str, Trial] = {}
        self.opt = self._setup(factory(), self.trials)
        self.running: list[str | None] = [None] * workers
        self.last: list[Trial | None] = [None] * workers
        self.log: list[tuple[str, int]] = []  # (trial_id, budget) of every suggestion
        self.done = False

    def _setup(self, opt: AbstractOptimizer, trials: dict[str, Trial]) -> AbstractOptimizer:
        opt.setup(
            self.space,
            num_trials=self.num_trials,
            direction=self.direction,
            max_epochs=self.max_epochs,
            trials=trials,
        )
        return opt

    def ask(self, worker: int) -> None:
        if self.check_rebuild:
            # State is derivable from the records: a fresh optimizer over a copy of them must
            # answer exactly like the one that has been running all along.
            fresh = self._setup(self.factory(), dict(self.trials))
            expected = fresh.get_suggestion(self.last[worker])
        suggestion = self.opt.get_suggestion(self.last[worker])
        if self.check_rebuild:
            assert suggestion == expected
        self.last[worker] = None
        if suggestion is None:
            self.done = True
            return
        if suggestion is IDLE:
            return
        assert isinstance(suggestion, Trial)
        assert 1 <= suggestion.budget <= self.max_epochs
        self.space.validate(suggestion.config)
        known = self.trials.get(suggestion.trial_id)
        if known is None:
            assert suggestion.state is TrialState.PENDING
            assert suggestion.history == ()
            self.trials[suggestion.trial_id] = suggestion.evolve(state=TrialState.RUNNING)
        else:
            assert known.state is TrialState.PAUSED, "duplicate suggestion of a trial that is not PAUSED"
            assert suggestion.config == known.config
            assert suggestion.budget > known.budget
            assert suggestion.history == known.history
            self.trials[suggestion.trial_id] = suggestion.evolve(state=TrialState.RUNNING)
        self.log.append((suggestion.trial_id, suggestion.budget))
        self.running[worker] = suggestion.trial_id

    def train_one_epoch(self, worker: int) -> None:
        tid = self.running[worker]
        assert tid is not None
        trial = self.trials[tid]
        value = fake_metric(self.space, dict(trial.config), len(trial.history))
        trial = trial.evolve(history=trial.history + (value,))
        self.trials[tid] = trial
        decision = self.opt.on_report(trial)
        assert isinstance(decision, Decision)
        state = None
        if decision is Decision.STOP:
            state = TrialState.STOPPED
        elif len(trial.history) >= self.max_epochs:
            state = TrialState.COMPLETED
        elif decision is Decision.PAUSE or len(trial.history) >= trial.budget:
            state = TrialState.PAUSED
        if state is not None:
            assert len(trial.history) <= trial.budget
            self.trials[tid] = trial.evolve(state=state, final_metric=trial.best(self.direction))
            self.running[worker] = None
            self.last[worker] = self.trials[tid]

    def run(self, max_ticks: int = 10_000) -> SimController:
        for _ in range(max_ticks):
            if not self.done:
                for w in range(len(self.running)):
                    if self.running[w] is None and not self.done:
                        self.ask(w)
            if not any(self.running):
                if self.done:
                    return self
                raise AssertionError("optimizer answered IDLE with nothing running: deadlock")
            for w in range(len(self.running)):
                if self.running[w] is not None:
                    self.train_one_epoch(w)
        raise AssertionError("the search did not terminate")


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Callable[[], AbstractOptimizer]:
    return FACTORIES[request.param]


@pytest.mark.parametrize("direction", ["max", "min"])
def test_runs_num_trials_distinct_configs_and_terminates(factory, direction: str) -> None:
    sim = SimController(factory, direction=direction).run()
    assert len(sim.trials) == NUM_TRIALS
    assert len({tuple(sorted(t.config.items())) for t in sim.trials.values()}) == NUM_TRIALS
    assert len({tid for tid, _ in sim.log}) == NUM_TRIALS
    for trial in sim.trials.values():
        assert trial.state in (TrialState.COMPLETED, TrialState.PAUSED, TrialState.STOPPED)
        assert 1 <= len(trial.history) <= MAX_EPOCHS
    # Once done, it stays done.
    assert sim.opt.get_suggestion(None) is None


def test_same_seed_same_sequence(factory) -> None:
    first = SimController(factory).run()
    second = SimController(factory).run()
    assert first.log == second.log
    assert first.trials == second.trials


@pytest.mark.parametrize("direction", ["max", "min"])
def test_state_is_derivable_from_the_trial_records(factory, direction: str) -> None:
    SimController(factory, direction=direction, check_rebuild=True).run()


def test_unlimited_num_trials_on_a_tiny_space_ends_when_exhausted(factory) -> None:
    sim = SimController(factory, TINY_SPACE, num_trials=None, check_rebuild=True).run()
    assert len(sim.trials) == 4
    assert sim.opt.get_suggestion(None) is None


def test_new_trials_budget_is_max_epochs_for_non_rung_optimizers() -> None:
    for name in ("random", "grid"):
        sim = SimController(FACTORIES[name]).run()
        assert all(t.budget == MAX_EPOCHS for t in sim.trials.values())
        assert all(t.state is TrialState.COMPLETED for t in sim.trials.values())


def test_asha_pauses_and_promotes_in_the_simulation() -> None:
    eta, budgets = 3, [1, 3, 9]
    sim = SimController(lambda: ASHA(reduction_factor=eta, seed=0), num_trials=27, workers=4)
    promotions: list[tuple[str, int]] = []
    original_ask = sim.ask

    def ask_and_check(worker: int) -> None:
        before, suggestions = dict(sim.trials), len(sim.log)
        original_ask(worker)
        if len(sim.log) == suggestions or sim.log[-1][0] not in before:
            return  # IDLE, None or a new trial
        tid, new_budget = sim.log[-1]
        old_budget = before[tid].budget
        assert budgets.index(new_budget) == budgets.index(old_budget) + 1
        # At the moment of promotion it is in the top floor(n / eta) of its rung.
        rung = {t: v.history[old_budget - 1] for t, v in before.items() if len(v.history) >= old_budget}
        ranked = sorted(rung, key=lambda t: -rung[t])
        assert tid in ranked[: len(rung) // eta]
        promotions.append((tid, new_budget))

    sim.ask = ask_and_check  # type: ignore[method-assign]
    sim.run()
    assert promotions, "ASHA never promoted a trial"
    assert len(promotions) == len(set(promotions)), "a trial was promoted twice to the same rung"
    assert any(b == 9 for _, b in promotions)
    assert {t.budget for t in sim.trials.values()} <= set(budgets)


def test_state_dict_round_trip_continues_identically(factory) -> None:
    sim = SimController(factory)
    for w in range(len(sim.running)):
        sim.ask(w)
    state = sim.opt.state_dict()
    fresh = sim._setup(sim.factory(), dict(sim.trials))
    fresh.load_state_dict(state)
    assert fresh.get_suggestion(None) == sim.opt.get_suggestion(None)


def test_hyperband_promotes_within_several_brackets_in_the_simulation() -> None:
    eta = 3
    rungs = [[1, 3, 9], [3, 9], [9]]  # r=1, eta=3, R=9: brackets s=0, 1, 2
    sim = SimController(lambda: Hyperband(reduction_factor=eta, seed=0), num_trials=45, workers=4)
    promotions: list[tuple[str, int, int]] = []  # (trial_id, bracket, new budget)
    new_brackets: list[int] = []
    original_ask = sim.ask

    def ask_and_check(worker: int) -> None:
        before, suggestions = dict(sim.trials), len(sim.log)
        original_ask(worker)
        if len(sim.log) == suggestions:
            return  # IDLE or None
        tid, new_budget = sim.log[-1]
        s = sim.trials[tid].info["bracket"]
        if tid not in before:  # a new trial: round robin, at its bracket's bottom rung
            new_brackets.append(s)
            assert new_budget == rungs[s][0]
            return
        old_budget = before[tid].budget
        assert rungs[s].index(new_budget) == rungs[s].index(old_budget) + 1
        # At the moment of promotion it is in the top floor(n / eta) of its bracket's rung.
        rung = {
            t: v.history[old_budget - 1]
            for t, v in before.items()
            if v.info["bracket"] == s and len(v.history) >= old_budget
        }
        ranked = sorted(rung, key=lambda t: -rung[t])
        assert tid in ranked[: len(rung) // eta]
        promotions.append((tid, s, new_budget))

    sim.ask = ask_and_check  # type: ignore[method-assign]
    sim.run()
    assert new_brackets == [i % 3 for i in range(45)]
    assert {s for _, s, _ in promotions} == {0, 1}, "Hyperband did not promote in brackets 0 and 1"
    assert (0, 9) in {(s, b) for _, s, b in promotions} and (1, 9) in {(s, b) for _, s, b in promotions}
    assert len(promotions) == len({(t, b) for t, _, b in promotions}), "a trial was promoted twice to a rung"
    for trial in sim.trials.values():
        assert trial.budget in rungs[trial.info["bracket"]]
        if trial.info["bracket"] == 2:
            assert trial.state is TrialState.COMPLETED and len(trial.history) == 9


def test_hyperband_with_one_bracket_decides_like_asha() -> None:
    for kwargs in ({"reduction_factor": 3}, {"reduction_factor": 2, "resource_min": 2, "resource_max": 8}):
        asha = SimController(lambda: ASHA(seed=5, **kwargs), num_trials=20).run()
        hyperband = SimController(lambda: Hyperband(brackets=1, seed=5, **kwargs), num_trials=20).run()
        assert hyperband.log == asha.log
        histories = {t: v.history for t, v in asha.trials.items()}
        assert {t: v.history for t, v in hyperband.trials.items()} == histories
