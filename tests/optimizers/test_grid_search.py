"""GridSearch: order, limits, validation and resume."""

from __future__ import annotations

import pytest

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import GridSearch
from lightning_maggy.optimizers.grid_search import grid_point
from lightning_maggy.searchspace import Categorical, Double, Integer, Searchspace
from lightning_maggy.trial import Trial, TrialState

SPACE = Searchspace(lr=Double(1e-4, 1e-1, log=True), units=Integer(8, 64), act=Categorical(["relu", "tanh"]))


def setup(opt: GridSearch, trials: dict[str, Trial], num_trials: int | None = None) -> GridSearch:
    opt.setup(SPACE, num_trials=num_trials, direction="max", max_epochs=3, trials=trials)
    return opt


def drain(opt: GridSearch, trials: dict[str, Trial]) -> list[dict]:
    configs = []
    while (s := opt.get_suggestion(None)) is not None:
        assert isinstance(s, Trial) and s.budget == 3
        trials[s.trial_id] = s.evolve(state=TrialState.RUNNING)
        configs.append(dict(s.config))
    return configs


def test_enumerates_the_whole_grid_in_order() -> None:
    trials: dict[str, Trial] = {}
    assert drain(setup(GridSearch(grid_size=3), trials), trials) == SPACE.grid(3)
    assert len(trials) == 3 * 3 * 2


def test_num_trials_smaller_than_the_grid_runs_the_first_points() -> None:
    trials: dict[str, Trial] = {}
    assert drain(setup(GridSearch(grid_size=3), trials, num_trials=4), trials) == SPACE.grid(3)[:4]


def test_num_trials_equal_to_the_grid_is_allowed() -> None:
    trials: dict[str, Trial] = {}
    assert len(drain(setup(GridSearch(grid_size=2), trials, num_trials=8), trials)) == 8


def test_num_trials_larger_than_the_grid_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        setup(GridSearch(grid_size=2), {}, num_trials=9)
    message = str(info.value)
    assert "num_trials=9" in message and "8 points" in message
    assert "lr: 2 x units: 2 x act: 2" in message
    assert "num_trials=None" in message


def test_resume_skips_known_points() -> None:
    grid = SPACE.grid(2)
    trials = {
        t.trial_id: t.evolve(state=TrialState.COMPLETED)
        for t in (Trial.create(grid[0], budget=3), Trial.create(grid[2], budget=3))
    }
    remaining = drain(setup(GridSearch(grid_size=2), trials), trials)
    assert remaining == [grid[1]] + grid[3:]


def test_grid_point_matches_searchspace_grid_order() -> None:
    names = SPACE.names()
    axes = [hp.grid(4) for _, hp in SPACE.items()]
    assert [grid_point(axes, names, i) for i in range(len(SPACE.grid(4)))] == SPACE.grid(4)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5", None])
def test_grid_size_is_validated(bad) -> None:
    with pytest.raises(ConfigurationError, match="grid_size must be an int >= 1"):
        GridSearch(grid_size=bad)
