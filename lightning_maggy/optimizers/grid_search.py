"""Grid search: every combination of per-dimension grids, in a stable order."""

from __future__ import annotations

import math
from typing import Any

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.base import AbstractOptimizer, SuggestionResult
from lightning_maggy.trial import Trial

__all__ = ["GridSearch", "grid_point"]


def grid_point(axes: list[list[Any]], names: list[str], index: int) -> dict[str, Any]:
    """The ``index``-th combination of ``axes`` in :func:`itertools.product` order (the last
    dimension varies fastest), the same order as :meth:`Searchspace.grid`, without building the
    whole grid.

    Args:
        axes: the values of each dimension.
        names: the dimension names, in the order of ``axes``.
        index: 0 <= index < prod(len(axis)).
    """
    values: list[Any] = [None] * len(axes)
    for d in range(len(axes) - 1, -1, -1):
        index, i = divmod(index, len(axes[d]))
        values[d] = axes[d][i]
    return dict(zip(names, values))


class GridSearch(AbstractOptimizer):
    """Runs the points of ``searchspace.grid(grid_size)`` in order, each for ``max_epochs``.

    Double dimensions get ``grid_size`` evenly spaced points (on a log scale for ``log=True``);
    Integer ranges wider than ``grid_size`` get ``grid_size`` points; Discrete and Categorical
    dimensions take all their values. ``num_trials=None`` runs the whole grid; a smaller
    ``num_trials`` runs its first ``num_trials`` points. Points already known (a resumed
    experiment) are skipped.

    Args:
        grid_size: points per continuous dimension, an int >= 1.
        seed: unused (a grid has no randomness); accepted so that every optimizer takes it.
    """

    def __init__(self, grid_size: int = 5, seed: int | None = None) -> None:
        if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 1:
            raise ConfigurationError(
                f"GridSearch(grid_size={grid_size!r}): grid_size must be an int >= 1 "
                "(points per continuous dimension), e.g. GridSearch(grid_size=5)."
            )
        super().__init__(seed=seed)
        self.grid_size = grid_size
        self._axes: list[list[Any]] = []
        self._names: list[str] = []
        self._count = 0
        self._limit = 0
        self._cursor = 0

    def _grid_axes(self) -> tuple[list[str], list[list[Any]]]:
        names = self.searchspace.names()
        axes = [list(hp.grid(self.grid_size)) for _, hp in self.searchspace.items()]
        return names, axes

    def validate(self) -> None:
        names, axes = self._grid_axes()
        count = math.prod(len(a) for a in axes)
        if self.num_trials is not None and self.num_trials > count:
            sizes = " x ".join(f"{n}: {len(a)}" for n, a in zip(names, axes))
            raise ConfigurationError(
                f"GridSearch(grid_size={self.grid_size}): num_trials={self.num_trials} is larger "
                f"than the grid, which has {count} points ({sizes}). Pass num_trials=None to run "
                f"the whole grid, num_trials <= {count} to run its first points, or a larger "
                "grid_size (it only widens Double and wide Integer dimensions)."
            )

    def initialize(self) -> None:
        self._names, self._axes = self._grid_axes()
        self._count = math.prod(len(a) for a in self._axes)
        self._limit = self._count if self.num_trials is None else min(self.num_trials, self._count)
        self._cursor = 0

    @property
    def planned_trials(self) -> int:
        """How many trials this grid runs (after :meth:`initialize`): its size, or ``num_trials``
        if smaller. The progress bar's total when the study gives none."""
        return self._limit

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        del trial
        # The cursor only moves past known points; the known set only grows, so a point skipped
        # once stays skipped, and an optimizer rebuilt from the records finds the same point.
        while self._cursor < self._limit:
            config = grid_point(self._axes, self._names, self._cursor)
            if not self.is_known(config):
                return self.create_trial(config, budget=self.max_epochs)
            self._cursor += 1
        return None

    def finalize_experiment(self, trials: list[Trial]) -> None:
        del trials
