"""GP, TPE / OptunaSampler and BOHB beyond the shared contract: how trial states feed the model,
every search-space type, jobs inline and in the background, errors, and a real quality check."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import BOHB, GP, IDLE, TPE, OptunaSampler, RandomSearch
from lightning_maggy.optimizers.gp import ModelSpace, propose_gp, warped_outcomes
from lightning_maggy.optimizers.model_based import (
    ModelBasedOptimizer,
    Observations,
    Proposal,
    derived_seed,
    observations,
)
from lightning_maggy.optimizers.optuna_sampler import optuna_distributions, propose_optuna
from lightning_maggy.searchspace import Categorical, Discrete, Double, Integer, Searchspace
from lightning_maggy.trial import Trial, TrialState

#: One hyperparameter of every type.
ALL_TYPES = Searchspace(
    lr=Double(1e-4, 1e-1, log=True),
    dropout=Double(0.0, 0.5),
    hidden=Integer(16, 256, log=True),
    layers=Integer(1, 6),
    batch=Discrete([32, 64, 128]),
    act=Categorical(["relu", "gelu", "tanh"]),
)
SMALL_GP = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32}


def score(config: dict[str, Any]) -> float:
    """A smooth function of every hyperparameter of ALL_TYPES (to minimize; minimum 0)."""
    return (
        (math.log10(config["lr"]) + 2.5) ** 2
        + (config["dropout"] - 0.2) ** 2
        + 0.1 * (math.log2(config["hidden"]) - 6) ** 2
        + 0.05 * (config["layers"] - 3) ** 2
        + (0.0 if config["batch"] == 64 else 0.2)
        + {"relu": 0.3, "gelu": 0.0, "tanh": 0.5}[config["act"]]
    )


def record(config: dict[str, Any], state: TrialState, value: float | None = None) -> Trial:
    return Trial.create(config, budget=1).evolve(
        state=state, final_metric=value, history=() if value is None else (value,)
    )


def records(space: Searchspace, n: int, seed: int = 0, fn=score) -> dict[str, Trial]:
    rng = np.random.default_rng(seed)
    out = {}
    for _ in range(n):
        config = space.sample(rng)
        trial = record(config, TrialState.COMPLETED, fn(config))
        out[trial.trial_id] = trial
    return out


def setup(opt, space: Searchspace, trials: dict[str, Trial], num_trials: int = 50, direction: str = "min"):
    opt.setup(space, num_trials=num_trials, direction=direction, max_epochs=1, trials=trials)
    return opt


# -- how trial states feed a model ---------------------------------------------------------------
def test_observations_pending_failed_and_stopped() -> None:
    space = Searchspace(x=Double(0.0, 1.0))
    trials = {}
    for i, (state, value) in enumerate([
        (TrialState.COMPLETED, 0.5), (TrialState.STOPPED, 0.2), (TrialState.FAILED, None),
        (TrialState.COMPLETED, float("nan")), (TrialState.RUNNING, None), (TrialState.PAUSED, 0.4),
        (TrialState.PENDING, None), (TrialState.LOST, None), (TrialState.STOPPED, None),
    ]):
        t = record({"x": i / 10}, state, value)
        trials[t.trial_id] = t
    obs = observations(trials, space, "max", seed=3)
    assert obs.observed == (({"x": 0.0}, 0.5), ({"x": 0.1}, 0.2))  # COMPLETED and STOPPED
    assert [c["x"] for c in obs.pending] == [0.4, 0.5, 0.6, 0.7]  # RUNNING, PAUSED, PENDING, LOST
    assert [c["x"] for c in obs.failed] == [0.2, 0.3, 0.8]  # FAILED, NaN, no value
    assert obs.known == frozenset(trials) and obs.seed == 3


def test_derived_seeds_differ_per_count_and_are_stable() -> None:
    seeds = [derived_seed(7, n) for n in range(50)]
    assert len(set(seeds)) == 50 and seeds == [derived_seed(7, n) for n in range(50)]
    assert all(0 <= s < 2**31 for s in seeds) and derived_seed(-1, 0) >= 0


def test_warped_outcomes_keep_the_order_and_flip_for_min() -> None:
    values = np.array([0.4, 300.0, 2.0, 1.0])
    up = warped_outcomes(values, "max")
    down = warped_outcomes(values, "min")
    assert list(np.argsort(up)) == list(np.argsort(values)) and list(np.argsort(down)) == list(np.argsort(-values))
    assert np.ptp(down) < np.ptp((values - values.mean()) / values.std())  # the outlier is compressed
    # The better-than-average side stays linear: equal gaps between good values stay equal.
    good = warped_outcomes(np.array([0.0, 0.0, 0.0, 0.0, 10.0, 11.0, 12.0]), "max")
    assert good[5] - good[4] == pytest.approx(good[6] - good[5])


# -- every search-space type ---------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_model_space_round_trips_every_type(seed: int) -> None:
    mspace = ModelSpace(ALL_TYPES)
    config = ALL_TYPES.sample(np.random.default_rng(seed))
    point = mspace.to_model(config)
    assert mspace.from_model(point) == config
    assert all(lo <= x <= hi for x, lo, hi in zip(point, mspace.lower, mspace.upper))


def test_model_space_kinds() -> None:
    mspace = ModelSpace(ALL_TYPES)
    assert set(mspace.discrete) == {2, 3, 4} and set(mspace.categorical) == {5} and not mspace.fixed
    assert mspace.categorical[5] == [0.0, 1.0, 2.0]
    assert len(mspace.discrete[2]) == 256 - 16 + 1  # every integer, on the log scale
    one = ModelSpace(Searchspace(x=Double(0.0, 1.0), c=Categorical(["only"])))
    assert one.fixed == {1: 0.0} and one.from_model([0.5, 0.0]) == {"x": 0.5, "c": "only"}


def test_optuna_distributions_of_every_type() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    d = optuna_distributions(ALL_TYPES)
    assert d["lr"] == FloatDistribution(1e-4, 1e-1, log=True) and d["dropout"] == FloatDistribution(0.0, 0.5)
    assert d["hidden"] == IntDistribution(16, 256, log=True) and d["layers"] == IntDistribution(1, 6)
    assert d["batch"] == CategoricalDistribution([32, 64, 128])
    assert d["act"] == CategoricalDistribution(["relu", "gelu", "tanh"])


@pytest.mark.parametrize("make", [lambda: GP(seed=1, n_initial=4, **SMALL_GP), lambda: TPE(seed=1, n_startup_trials=3)],
                         ids=["gp", "tpe"])
def test_proposals_in_a_space_of_every_type_with_paused_and_lost_trials(make) -> None:
    trials = records(ALL_TYPES, 8)
    extra = ALL_TYPES.sample(np.random.default_rng(99))
    for state, cfg in ((TrialState.PAUSED, extra), (TrialState.LOST, ALL_TYPES.sample(np.random.default_rng(98)))):
        t = record(cfg, state)
        trials[t.trial_id] = t
    opt = setup(make(), ALL_TYPES, trials)
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial) and suggestion.trial_id not in trials
    ALL_TYPES.validate(suggestion.config)
    assert suggestion.info["suggested_by"] in ("gp", "tpe")
    assert isinstance(suggestion.config["hidden"], int) and isinstance(suggestion.config["layers"], int)


def test_gp_pending_points_change_the_proposal() -> None:
    space = Searchspace(x=Double(0.0, 1.0))
    observed = tuple(({"x": x}, -((x - 0.3) ** 2)) for x in (0.0, 0.2, 0.45, 0.7, 1.0))
    base = Observations(space, "max", observed, (), (), frozenset(), seed=0)
    free = propose_gp(base)[0]["x"]
    assert abs(free - 0.3) < 0.1
    busy = propose_gp(Observations(space, "max", observed, ({"x": free},), (), frozenset(), seed=0))[0]["x"]
    # Same seed, same observations: only the pending point moves the proposal off it.
    assert abs(busy - free) > 1e-3


def test_a_gp_fit_on_another_thread_leaves_other_threads_warnings_alone(monkeypatch) -> None:
    """The fit runs on the controller's background thread. While it runs, another thread's
    warnings still show and a filter that thread adds stays after the fit (warnings'
    catch_warnings around the fit silenced every thread, then restored the old filter list)."""
    import threading
    import warnings

    from lightning_maggy.optimizers import gp as gp_module

    inside, resume = threading.Event(), threading.Event()
    real = gp_module._gp_model

    def paused_model(*args: Any) -> Any:
        inside.set()
        assert resume.wait(30)
        return real(*args)

    monkeypatch.setattr(gp_module, "_gp_model", paused_model)
    space = Searchspace(x=Double(0.0, 1.0))
    observed = tuple(({"x": x}, -((x - 0.3) ** 2)) for x in (0.0, 0.2, 0.45, 0.7, 1.0))
    proposals: list[Any] = []
    fit = threading.Thread(target=lambda: proposals.append(propose_gp(Observations(space, "max", observed, (), (), frozenset(), seed=0))))
    try:
        fit.start()
        assert inside.wait(60)
        with warnings.catch_warnings(record=True) as shown:  # the filters as they are, recorded
            warnings.warn("a user's warning during a fit", UserWarning)
        warnings.filterwarnings("error", message="added while a GP was fitting")
        added = warnings.filters[0]
        resume.set()
        fit.join(120)
        assert proposals and 0.0 <= proposals[0][0]["x"] <= 1.0
        assert [str(w.message) for w in shown] == ["a user's warning during a fit"]
        assert added in warnings.filters
    finally:  # (pytest puts the warning filters back after each test)
        resume.set()


def test_failed_configurations_are_never_proposed_again() -> None:
    space = Searchspace(a=Categorical(["x", "y", "z"]), b=Integer(0, 1))  # 6 configurations
    trials = {}
    configs = [{"a": a, "b": b} for a in "xyz" for b in (0, 1)]
    for i, config in enumerate(configs[:5]):
        state, value = (TrialState.FAILED, None) if i % 2 else (TrialState.COMPLETED, float(i))
        t = record(config, state, value)
        trials[t.trial_id] = t
    for make in (lambda: GP(seed=0, n_initial=2, **SMALL_GP), lambda: TPE(seed=0)):
        opt = setup(make(), space, dict(trials), num_trials=None, direction="max")
        suggestion = opt.get_suggestion(None)
        assert suggestion.config == configs[5]  # the only unknown one
        trials_all = {**trials, suggestion.trial_id: record(configs[5], TrialState.COMPLETED, 9.0)}
        assert setup(make(), space, trials_all, num_trials=None).get_suggestion(None) is None  # exhausted


# -- jobs: inline when driven directly, in the background under a controller ---------------------
@pytest.mark.parametrize("make", [lambda: GP(seed=2, n_initial=3, **SMALL_GP), lambda: TPE(seed=2)], ids=["gp", "tpe"])
def test_background_job_gives_the_inline_answer(make) -> None:
    space = Searchspace(x=Double(0.0, 1.0), y=Double(1e-3, 1.0, log=True))
    trials = records(space, 6, seed=1, fn=lambda c: c["x"] - c["y"])
    inline = setup(make(), space, dict(trials)).get_suggestion(None)
    opt = setup(make(), space, dict(trials))
    opt.enable_background_jobs(True)
    assert opt.get_suggestion(None) is IDLE
    job = opt.take_job()
    assert job is not None and opt.take_job() is None
    assert opt.get_suggestion(None) is IDLE and opt.take_job() is None  # one job at a time
    opt.complete_job(job, job.run())
    assert opt.get_suggestion(None) == inline


def test_initial_design_needs_no_job() -> None:
    opt = setup(GP(seed=0, n_initial=5), ALL_TYPES, {})
    opt.enable_background_jobs(True)
    first = opt.get_suggestion(None)
    assert isinstance(first, Trial) and first.info["suggested_by"] == "initial" and opt.take_job() is None


# -- BOHB ---------------------------------------------------------------------------------------
def test_bohb_promotes_a_rungs_first_result_by_default() -> None:
    from lightning_maggy.resume import settings_of

    space = Searchspace(x=Double(0.0, 1.0))
    first = Trial.create({"x": 0.5}, budget=1).evolve(state=TrialState.RUNNING, history=(0.5,))
    for opt, next_budget in ((BOHB(seed=0), 3), (BOHB(seed=0, early_promotion=False), None)):
        opt.setup(space, num_trials=50, direction="max", max_epochs=9, trials={first.trial_id: first})
        promoted = opt.promote_in_place(first)
        assert (promoted.budget if promoted is not None else None) == next_budget
        assert settings_of(opt)["early_promotion"] is (next_budget is not None)
    with pytest.raises(ConfigurationError, match="BOHB: early_promotion='no' must be True or False"):
        BOHB(early_promotion="no")


def test_bohb_fits_the_highest_rung_with_enough_results() -> None:
    space = Searchspace(x=Double(0.0, 1.0))
    opt = BOHB(reduction_factor=3, seed=0, min_points=3)
    trials: dict[str, Trial] = {}
    setup(opt, space, trials)
    opt.max_epochs = 9
    opt.initialize()  # rungs 1, 3, 9
    for i in range(6):
        epochs = 3 if i < 3 else 1
        t = Trial.create({"x": i / 10}, budget=epochs).evolve(state=TrialState.PAUSED, history=(0.1 * i,) * epochs)
        trials[t.trial_id] = t
    assert opt.model_snapshot() is not None and len(opt.model_snapshot().observed) == 3  # rung 3
    running = Trial.create({"x": 0.9}, budget=1).evolve(state=TrialState.RUNNING)
    trials[running.trial_id] = running
    snap = opt.model_snapshot()
    assert snap.pending == ({"x": 0.9},) and all(len(c) == 1 for c, _ in snap.observed)
    assert setup(BOHB(seed=0, min_points=7), space, dict(trials)).model_snapshot() is None


def test_bohb_with_a_gp_model_runs_and_proposes_from_the_model() -> None:
    space = Searchspace(x=Double(0.0, 1.0), c=Categorical(["a", "b"]))
    opt = BOHB(reduction_factor=3, seed=1, model="gp", min_points=4, random_fraction=0.0, model_options=SMALL_GP)
    trials = records(space, 5, fn=lambda c: c["x"])
    setup(opt, space, trials, direction="max")
    assert opt.model_snapshot() is not None
    suggestion = opt.get_suggestion(None)
    assert isinstance(suggestion, Trial) and suggestion.trial_id not in trials and suggestion.budget == 1


# -- errors --------------------------------------------------------------------------------------
def test_missing_library_names_the_install_command(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("botorch", "optuna") else real(name, *a))
    for make in (GP, TPE, lambda: BOHB(), lambda: BOHB(model="gp")):
        with pytest.raises(ConfigurationError, match=r"pip install 'lightning_maggy\[bo\]'"):
            make()


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ConfigurationError, match="n_initial=-1"):
        GP(n_initial=-1)
    with pytest.raises(ConfigurationError, match="raw_samples=0"):
        GP(raw_samples=0)
    with pytest.raises(ConfigurationError, match="unknown option"):
        TPE(n_startup=3)
    with pytest.raises(ConfigurationError, match="sampler=3"):
        OptunaSampler(3)
    with pytest.raises(ConfigurationError, match="model='smac'"):
        BOHB(model="smac")
    with pytest.raises(ConfigurationError, match="random_fraction=2"):
        BOHB(random_fraction=2)
    with pytest.raises(ConfigurationError, match="min_points=1"):
        BOHB(min_points=1)


def test_optuna_sampler_accepts_a_sampler_instance() -> None:
    import optuna

    opt = setup(OptunaSampler(optuna.samplers.RandomSampler(seed=0)), ALL_TYPES, records(ALL_TYPES, 3))
    suggestion = opt.get_suggestion(None)
    ALL_TYPES.validate(suggestion.config)
    obs = observations(records(ALL_TYPES, 3), ALL_TYPES, "min", seed=5)
    assert propose_optuna(obs, lambda seed: optuna.samplers.TPESampler(seed=seed)) == propose_optuna(
        obs, lambda seed: optuna.samplers.TPESampler(seed=seed))


# -- quality: better than random on a simple function --------------------------------------------
def _best_after(make, evals: int, seed: int) -> float:
    """Sequential search (1 worker) of a 2-d quadratic bowl; the best value found."""
    space = Searchspace(x=Double(-2.0, 2.0), y=Double(-2.0, 2.0))
    trials: dict[str, Trial] = {}
    opt = setup(make(seed), space, trials, num_trials=evals)
    for _ in range(evals):
        s = opt.get_suggestion(None)
        value = (s.config["x"] - 0.7) ** 2 + (s.config["y"] + 0.4) ** 2
        trials[s.trial_id] = s.evolve(state=TrialState.COMPLETED, final_metric=value, history=(value,))
    return min(t.final_metric for t in trials.values())


@pytest.mark.parametrize(
    ("name", "make", "evals"),
    [("gp", lambda s: GP(seed=s, n_initial=5, **SMALL_GP), 12), ("tpe", lambda s: TPE(seed=s), 30)],
)
def test_beats_random_search_on_a_quadratic(name, make, evals) -> None:
    model = [_best_after(make, evals, seed) for seed in range(3)]
    random = [_best_after(lambda s: RandomSearch(seed=s), evals, seed) for seed in range(3)]
    assert np.mean(model) < 0.5 * np.mean(random), (name, model, random)


# -- a Proposal: trial info from the proposer, and no random fallback for restricted models ------
class _FixedProposal(ModelBasedOptimizer):
    """Proposes what it is given (the base class's handling of a Proposal, without a model)."""

    def __init__(self, proposal: Proposal) -> None:
        super().__init__(seed=0, n_initial=0)
        self.proposal = proposal

    def _proposer(self):
        return lambda obs: self.proposal


def test_a_proposal_puts_its_info_on_the_trial_it_suggests() -> None:
    space = Searchspace(x=Integer(0, 9))
    taken = setup(_FixedProposal(Proposal(({"x": 3},), infos=({"k": 1},), fallback_info={"k": 2})), space, {})
    assert dict(taken.get_suggestion(None).info) == {"k": 1, "suggested_by": "model"}
    known = records(space, 1, fn=lambda c: 0.0)
    config = dict(next(iter(known.values())).config)
    fallback = setup(_FixedProposal(Proposal((config,), infos=({"k": 1},), fallback_info={"k": 2})), space, known)
    assert dict(fallback.get_suggestion(None).info) == {"k": 2, "suggested_by": "random"}


def test_a_proposal_without_random_fallback_ends_the_search() -> None:
    space = Searchspace(x=Integer(0, 9))
    known = records(space, 1, fn=lambda c: 0.0)
    config = dict(next(iter(known.values())).config)
    opt = setup(_FixedProposal(Proposal((config,), random_fallback=False)), space, known)
    assert opt.get_suggestion(None) is None
    assert setup(_FixedProposal(Proposal(random_fallback=False)), space, {}).get_suggestion(None) is None
