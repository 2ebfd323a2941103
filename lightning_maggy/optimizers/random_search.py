"""Random search, and the reproducible "draw a configuration not tried yet" helper it shares with
ASHA.

Reproducibility from the trial records: every configuration drawn from the optimizer's generator
counts as one *draw*, and each suggested trial records in ``trial.info["draws"]`` how many draws
had been made when it was suggested. An optimizer rebuilt over the same records with the same
seed replays that many draws before its next one, so it suggests exactly what the original would
have suggested (see :class:`ConfigDrawer`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.base import AbstractOptimizer, SuggestionResult
from lightning_maggy.searchspace import Categorical, Discrete, Integer, Searchspace
from lightning_maggy.trial import Trial, trial_id_for

__all__ = [
    "DRAWS_KEY",
    "ConfigDrawer",
    "RandomSearch",
    "Suggester",
    "finite_size",
    "random_suggester",
]

#: A config sampler: ``(searchspace, rng, trials) -> config``. It must draw its randomness from
#: ``rng`` only, so that a search with a fixed seed is reproducible.
Suggester = Callable[[Searchspace, np.random.Generator, Mapping[str, Trial]], Mapping[str, Any]]

#: The key of ``trial.info`` that records the optimizer's draw count when the trial was suggested.
DRAWS_KEY = "draws"

#: Enumerate the unknown configurations of a finite space when random draws keep hitting known
#: ones, up to this many configurations.
_ENUMERATION_LIMIT = 100_000


def random_suggester(
    searchspace: Searchspace, rng: np.random.Generator, trials: Mapping[str, Trial]
) -> dict[str, Any]:
    """The default :data:`Suggester`: one uniform (or log-uniform) sample of the space."""
    del trials
    return searchspace.sample(rng)


def finite_size(searchspace: Searchspace) -> int | None:
    """The number of distinct configurations of ``searchspace``, or None if it has a
    :class:`~lightning_maggy.searchspace.Double` dimension (infinitely many)."""
    size = 1
    for _, hp in searchspace.items():
        if isinstance(hp, Integer):
            size *= int(hp.high) - int(hp.low) + 1
        elif isinstance(hp, (Discrete, Categorical)):
            size *= len(hp.values)
        else:
            return None
    return size


def _enumerate_finite(searchspace: Searchspace) -> Iterator[dict[str, Any]]:
    """Every configuration of a finite space, in :meth:`Searchspace.grid` order, lazily."""
    axes = []
    for _, hp in searchspace.items():
        if isinstance(hp, Integer):
            axes.append(range(int(hp.low), int(hp.high) + 1))
        else:
            axes.append(list(hp.values))  # type: ignore[attr-defined]
    names = searchspace.names()
    for combo in itertools.product(*axes):
        yield dict(zip(names, combo))


def _recorded_draws(trials: Mapping[str, Trial]) -> int:
    """The largest draw count recorded in the trials' ``info`` (0 if none)."""
    best = 0
    for trial in trials.values():
        value = trial.info.get(DRAWS_KEY) if isinstance(trial.info, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > best:
            best = value
    return best


class ConfigDrawer:
    """Draws configurations that no trial has yet, reproducibly from the trial records.

    The "what to try" half of an optimizer (STYLE point 2): it wraps a :data:`Suggester` and
    adds duplicate avoidance with a bounded number of retries. If ``max_retries`` draws in a row
    are known configurations and the space is finite (no Double), it takes the first unknown
    configuration in grid order instead; it returns None once every configuration is known.

    Args:
        suggester: the config sampler; default :func:`random_suggester`.
        max_retries: draws allowed per call beyond the first before giving up on sampling.

    Attributes:
        draws: how many configurations this drawer has drawn from the generator so far.
    """

    def __init__(self, suggester: Suggester | None = None, max_retries: int = 100) -> None:
        if suggester is not None and not callable(suggester):
            raise ConfigurationError(
                f"suggester={suggester!r} is not callable; pass a function "
                "(searchspace, rng, trials) -> config, or None for random sampling."
            )
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigurationError(
                f"max_retries={max_retries!r}: must be an int >= 0 (draws allowed beyond the first "
                "when a drawn configuration is already known); e.g. max_retries=100."
            )
        self.suggester: Suggester = suggester if suggester is not None else random_suggester
        self.max_retries = max_retries
        self.reset()

    def reset(self) -> None:
        """Forgets all draws (a fresh optimizer); the next draw first catches up with the records."""
        self.draws = 0
        self._synced = False

    def _draw_one(
        self, searchspace: Searchspace, rng: np.random.Generator, trials: Mapping[str, Trial]
    ) -> dict[str, Any]:
        config = dict(self.suggester(searchspace, rng, trials))
        self.draws += 1
        # A suggester's own draws (rng.choice, rng.integers) give NumPy scalars: configurations
        # hold Python values, which JSON records and the module receives as the space's types.
        return {name: v.item() if isinstance(v, np.generic) else v for name, v in config.items()}

    def restore(self, draws: int) -> None:
        """Sets the draw count from a saved state; the records may still move it forward."""
        self.draws = draws
        self._synced = False

    def catch_up(
        self, searchspace: Searchspace, rng: np.random.Generator, trials: Mapping[str, Trial]
    ) -> None:
        """Replays the draws recorded in ``trials`` that this drawer has not made yet (after the
        optimizer was rebuilt from the records), so that ``rng`` is where the original's was."""
        if self._synced:  # after the first catch-up, every draw is this drawer's own
            return
        target = _recorded_draws(trials)
        while self.draws < target:
            self._draw_one(searchspace, rng, trials)
        self._synced = True

    def draw(
        self, searchspace: Searchspace, rng: np.random.Generator, trials: Mapping[str, Trial]
    ) -> dict[str, Any] | None:
        """A valid configuration no trial in ``trials`` has, or None if there seems to be none.

        Raises:
            SearchspaceError: if the suggester returned a configuration outside the space.
        """
        self.catch_up(searchspace, rng, trials)
        for _ in range(self.max_retries + 1):
            config = self._draw_one(searchspace, rng, trials)
            searchspace.validate(config)
            if trial_id_for(config) not in trials:
                return config
        size = finite_size(searchspace)
        if size is not None and size <= _ENUMERATION_LIMIT:
            for config in _enumerate_finite(searchspace):
                if trial_id_for(config) not in trials:
                    return config
        return None

    def info(self) -> dict[str, Any]:
        """The ``trial.info`` entries to record with a trial suggested right now."""
        return {DRAWS_KEY: self.draws}


class DrawingOptimizer(AbstractOptimizer):
    """Base of optimizers that draw new configurations with a :class:`ConfigDrawer`: keeps the
    draw count in ``state_dict()`` next to the generator's state."""

    _drawer: ConfigDrawer

    def finalize_experiment(self, trials: list[Trial]) -> None:
        del trials

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), DRAWS_KEY: self._drawer.draws}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if DRAWS_KEY in state:
            self._drawer.restore(int(state[DRAWS_KEY]))


class RandomSearch(DrawingOptimizer):
    """Samples configurations uniformly (log-uniformly for ``log=True`` dimensions) from the
    search space with the optimizer's own seeded generator; each trial trains ``max_epochs``.

    It stops after ``num_trials`` trials were started (``num_trials=None``: until the
    controller's timeout) or when every configuration of a finite space has been tried. A
    configuration already known is drawn again, up to ``max_retries`` times per suggestion.

    Args:
        seed: seed of the optimizer's generator; None takes the experiment's seed.
        max_retries: extra draws per suggestion when a drawn configuration is already known.

    Example::

        opt = RandomSearch(seed=42)
    """

    def __init__(self, seed: int | None = None, *, max_retries: int = 100) -> None:
        super().__init__(seed=seed)
        self._drawer = ConfigDrawer(max_retries=max_retries)

    def initialize(self) -> None:
        self._drawer.reset()

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        del trial
        if not self._budget_left():
            return None
        config = self._drawer.draw(self.searchspace, self.rng, self.trials)
        if config is None:
            return None
        return self.create_trial(config, budget=self.max_epochs, info=self._drawer.info())

