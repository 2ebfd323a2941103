"""OptunaSampler with samplers that keep state in the Optuna study (QMC, Grid, NSGA-II,
BruteForce): the state an ask leaves is kept with the trial it proposed and replayed into every
rebuilt study, so the proposals are the native sequence, survive a journal round trip, and a
restricted sampler ends the search instead of handing out random configurations."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from test_optimizer_contract import SimController

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import OptunaSampler
from lightning_maggy.optimizers.optuna_sampler import optuna_distributions
from lightning_maggy.searchspace import Categorical, Double, Integer, Searchspace
from lightning_maggy.trial import Trial, TrialState

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = Searchspace(x=Double(0.0, 1.0), y=Double(0.0, 1.0))
GRID = {"x": [0.0, 0.25, 0.5, 0.75], "y": [0.1, 0.6, 0.9]}


def value(config: dict[str, Any]) -> float:
    return -((config["x"] - 0.3) ** 2) - (config["y"] - 0.6) ** 2


def drive(
    opt: OptunaSampler, n: int | None, space: Searchspace = SPACE, limit: int = 40
) -> tuple[list[Trial], OptunaSampler]:
    """Sequential search (one worker): the suggested trials, until None or ``limit``."""
    trials: dict[str, Trial] = {}
    opt.setup(space, num_trials=n, direction="max", max_epochs=1, trials=trials)
    suggested = []
    for _ in range(limit):
        s = opt.get_suggestion(None)
        if s is None:
            break
        v = value(s.config) if "y" in s.config else float(len(trials))
        trials[s.trial_id] = s.evolve(state=TrialState.COMPLETED, final_metric=v, history=(v,))
        suggested.append(s)
    return suggested, opt


def qmc_optimizer() -> OptunaSampler:
    """QMC through a function of the seed, which the optimizer calls with its own seed, 5."""
    return OptunaSampler(lambda seed: optuna.samplers.QMCSampler(seed=seed), seed=5)


def native_qmc(seed: int, n: int) -> list[dict[str, Any]]:
    """The first ``n`` configurations of one Optuna study with ``QMCSampler(seed=seed)``."""
    study = optuna.create_study(sampler=optuna.samplers.QMCSampler(seed=seed), direction="maximize")
    out = []
    for _ in range(n):
        trial = study.ask(optuna_distributions(SPACE))
        out.append(dict(trial.params))
        study.tell(trial, value(trial.params))
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda: qmc_optimizer(),
        lambda: OptunaSampler(optuna.samplers.QMCSampler(seed=5)),
    ],
    ids=["function", "instance"],
)
def test_qmc_proposals_are_the_native_sequence(make) -> None:
    suggested, _ = drive(make(), 20)
    assert [dict(s.config) for s in suggested] == native_qmc(5, 20)
    assert Counter(s.info["suggested_by"] for s in suggested) == {"optuna": 20}


def test_qmc_continues_its_sequence_after_a_journal_round_trip() -> None:
    """The records as a resumed driver has them (JSON from the journal): a fresh optimizer
    proposes the next point of the sequence, as the one that kept running does."""
    _, running = drive(qmc_optimizer(), 12, limit=10)
    resumed = {tid: Trial.from_dict(json.loads(json.dumps(t.to_dict()))) for tid, t in running.trials.items()}
    fresh = qmc_optimizer()
    fresh.setup(SPACE, num_trials=12, direction="max", max_epochs=1, trials=resumed)
    after_resume, expected = fresh.get_suggestion(None), running.get_suggestion(None)
    assert after_resume == expected
    assert dict(after_resume.config) == native_qmc(5, 11)[10]
    assert "optuna" in after_resume.info


def test_grid_sampler_covers_its_grid_exactly_once_then_ends() -> None:
    opt = OptunaSampler(lambda seed: optuna.samplers.GridSampler(GRID, seed=seed), seed=0)
    suggested, _ = drive(opt, None)  # no trial limit: the grid ends the search
    configs = [(s.config["x"], s.config["y"]) for s in suggested]
    assert sorted(configs) == sorted((x, y) for x in GRID["x"] for y in GRID["y"])
    assert Counter(s.info["suggested_by"] for s in suggested) == {"optuna": 12}
    assert opt.get_suggestion(None) is None


def test_grid_sampler_never_leaves_its_grid_when_num_trials_is_larger() -> None:
    grid = {"x": [0.1, 0.2, 0.3], "y": [0.5, 0.7]}  # 6 points of a continuous space
    suggested, opt = drive(OptunaSampler(optuna.samplers.GridSampler(grid)), 50)
    assert len(suggested) == 6
    assert all(s.config["x"] in grid["x"] and s.config["y"] in grid["y"] for s in suggested)
    assert opt.get_suggestion(None) is None


def test_grid_sampler_with_parallel_workers_is_derivable_from_the_records() -> None:
    """Three workers (pending trials in every rebuilt study); a fresh optimizer over the
    records answers exactly like the running one at every step (check_rebuild)."""
    space = Searchspace(a=Categorical(["p", "q", "r"]), b=Integer(0, 3), c=Double(0.0, 1.0))
    grid = {"a": ["p", "q", "r"], "b": [0, 2, 3], "c": [0.5]}
    sim = SimController(
        lambda: OptunaSampler(lambda seed: optuna.samplers.GridSampler(grid, seed=seed), seed=3),
        space, num_trials=30, check_rebuild=True,
    ).run()
    assert sorted((t.config["a"], t.config["b"]) for t in sim.trials.values()) == sorted(
        (a, b) for a in grid["a"] for b in grid["b"])
    assert {t.info["suggested_by"] for t in sim.trials.values()} == {"optuna"}


@pytest.mark.filterwarnings("ignore:The value `2.0` is out of range")
def test_a_grid_point_outside_the_search_space_is_an_error() -> None:
    opt = OptunaSampler(optuna.samplers.GridSampler({"x": [0.5, 2.0], "y": [0.5]}))
    with pytest.raises(ConfigurationError, match="outside the search space"):
        drive(opt, None)


def test_brute_force_sampler_enumerates_the_space_then_ends() -> None:
    space = Searchspace(a=Categorical(["p", "q"]), b=Integer(0, 2))
    opt = OptunaSampler(lambda seed: optuna.samplers.BruteForceSampler(seed=seed), seed=1)
    suggested, opt = drive(opt, None, space)
    assert len({(s.config["a"], s.config["b"]) for s in suggested}) == len(suggested) == 6
    assert {s.info["suggested_by"] for s in suggested} == {"optuna"}
    assert opt.get_suggestion(None) is None


def test_nsga2_gets_past_its_first_generation() -> None:
    opt = OptunaSampler(lambda seed: optuna.samplers.NSGAIISampler(population_size=4, seed=seed), seed=2)
    suggested, _ = drive(opt, 16)
    generations = [s.info["optuna"]["trial"]["NSGAIISampler:generation"] for s in suggested]
    assert generations == sorted(generations) and generations[-1] >= 2
    assert {s.info["suggested_by"] for s in suggested} == {"optuna"}


def test_tpe_trials_keep_no_copy_of_their_parameters() -> None:
    """TPE's constant liar stores the relative parameters as a trial attribute; the rebuilt
    RUNNING trials carry their parameters, so nothing of that is kept."""
    suggested, _ = drive(OptunaSampler(lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=2, multivariate=True, constant_liar=True)), 5)
    assert all("optuna" not in s.info for s in suggested)
