"""RandomSearch and its duplicate-avoiding ConfigDrawer."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import RandomSearch
from lightning_maggy.optimizers.random_search import DRAWS_KEY, ConfigDrawer, finite_size
from lightning_maggy.searchspace import Categorical, Discrete, Double, Integer, Searchspace
from lightning_maggy.trial import Trial, TrialState

SPACE = Searchspace(lr=Double(1e-4, 1e-1, log=True), units=Integer(8, 64), act=Categorical(["relu", "tanh"]))


def setup(opt: RandomSearch, trials: dict[str, Trial], space: Searchspace = SPACE, num_trials: int | None = 5):
    opt.setup(space, num_trials=num_trials, direction="max", max_epochs=4, trials=trials)
    return opt


def drain(opt: RandomSearch, trials: dict[str, Trial], limit: int = 1000) -> list[Trial]:
    out = []
    for _ in range(limit):
        s = opt.get_suggestion(None)
        if s is None:
            return out
        assert isinstance(s, Trial)
        trials[s.trial_id] = s.evolve(state=TrialState.COMPLETED)
        out.append(s)
    raise AssertionError("did not stop")


def test_samples_num_trials_valid_configs_with_full_budget() -> None:
    trials: dict[str, Trial] = {}
    suggested = drain(setup(RandomSearch(seed=3), trials), trials)
    assert len(suggested) == 5
    for t in suggested:
        SPACE.validate(t.config)
        assert t.budget == 4 and t.state is TrialState.PENDING


def test_first_suggestion_is_the_first_sample_of_the_seeded_generator() -> None:
    s = setup(RandomSearch(seed=3), {}).get_suggestion(None)
    assert isinstance(s, Trial)
    assert s.config == SPACE.sample(np.random.default_rng(3))
    assert s.info[DRAWS_KEY] == 1


def test_setup_seed_used_when_constructor_seed_is_none() -> None:
    a = RandomSearch()
    a.setup(SPACE, num_trials=3, direction="max", max_epochs=4, trials={}, seed=9)
    b = RandomSearch(seed=9)
    b.setup(SPACE, num_trials=3, direction="max", max_epochs=4, trials={})
    assert a.get_suggestion(None) == b.get_suggestion(None)


def test_different_seeds_differ() -> None:
    a = setup(RandomSearch(seed=1), {}).get_suggestion(None)
    b = setup(RandomSearch(seed=2), {}).get_suggestion(None)
    assert a != b


def test_exhausts_a_small_categorical_space_then_returns_none() -> None:
    space = Searchspace(a=Categorical(["x", "y", "z"]), b=Discrete([1, 2]))
    trials: dict[str, Trial] = {}
    suggested = drain(setup(RandomSearch(seed=0), trials, space, num_trials=None), trials)
    assert len(suggested) == 6
    assert len({t.trial_id for t in suggested}) == 6


def test_exhausts_without_retries_by_enumerating_the_rest() -> None:
    space = Searchspace(a=Integer(0, 9), b=Categorical([True, False]))
    trials: dict[str, Trial] = {}
    suggested = drain(setup(RandomSearch(seed=0, max_retries=0), trials, space, num_trials=None), trials)
    assert len(suggested) == 20


def test_skips_configs_already_known_on_resume() -> None:
    first = setup(RandomSearch(seed=5), {}).get_suggestion(None)
    assert isinstance(first, Trial)
    trials = {first.trial_id: first.evolve(state=TrialState.COMPLETED)}
    second = setup(RandomSearch(seed=5), trials).get_suggestion(None)
    assert isinstance(second, Trial) and second.trial_id != first.trial_id


def test_num_trials_counts_every_known_trial() -> None:
    trials: dict[str, Trial] = {}
    opt = setup(RandomSearch(seed=5), trials, num_trials=2)
    drain(opt, trials)
    assert len(trials) == 2 and opt.get_suggestion(None) is None


def test_finite_size() -> None:
    assert finite_size(Searchspace(a=Integer(0, 9), b=Categorical(["x", "y"]), c=Discrete([1, 2, 3]))) == 60
    assert finite_size(SPACE) is None


def test_drawer_catch_up_replays_recorded_draws() -> None:
    drawer = ConfigDrawer()
    trials = {"t": Trial.create({"x": 1}, info={DRAWS_KEY: 3})}
    space = Searchspace(x=Double(0.0, 1.0))
    rng = np.random.default_rng(0)
    drawer.catch_up(space, rng, trials)
    assert drawer.draws == 3
    reference = np.random.default_rng(0)
    for _ in range(3):
        space.sample(reference)
    assert rng.random() == reference.random()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_retries_is_validated(bad) -> None:
    with pytest.raises(ConfigurationError, match="max_retries="):
        RandomSearch(max_retries=bad)
