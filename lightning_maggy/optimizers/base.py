"""The developer API for optimizers, with the original Maggy's names.

An optimizer is a pure decision object. The controller gives it a read-only view of every trial
record (:attr:`AbstractOptimizer.trials`), asks it what to run next
(:meth:`AbstractOptimizer.get_suggestion`) and how to answer a metric report
(:meth:`AbstractOptimizer.on_report`). It imports no torch, Lightning, pyspark, sockets, files or
clocks, keeps its randomness in its own seeded generator, and derives its state from the trial
records, so that an experiment rebuilt from its journal continues exactly where it was.

A custom optimizer::

    class MyOptimizer(AbstractOptimizer):
        def initialize(self):
            pass

        def get_suggestion(self, trial=None):
            if len(self.trials) >= self.num_trials:
                return None
            return self.create_trial(self.searchspace.sample(self.rng))

        def finalize_experiment(self, trials):
            pass
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Union

import numpy as np

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState

__all__ = ["ALWAYS", "IDLE", "AbstractOptimizer", "Idle", "SuggestionResult"]


class Idle(enum.Enum):
    """Returned by :meth:`AbstractOptimizer.get_suggestion` when nothing can be suggested *yet*
    (for example ASHA waits for running trials before it can promote)."""

    IDLE = "idle"


IDLE = Idle.IDLE

#: ``continue_until`` for "no report can be answered otherwise": more epochs than any budget.
ALWAYS = 2**31 - 1

#: What ``get_suggestion`` returns: a trial to run (new, or a PAUSED one with a larger budget to
#: resume), :data:`IDLE` to wait, or ``None`` when the optimizer has nothing more to suggest.
SuggestionResult = Union[Trial, Idle, None]


class AbstractOptimizer(ABC):
    """Base class of every optimizer.

    The controller calls :meth:`setup` once (which calls :meth:`initialize`), then
    :meth:`get_suggestion` whenever a worker is free, :meth:`on_report` after every metric report,
    and :meth:`finalize_experiment` at the end.

    Attributes available after setup:
        searchspace: the :class:`~lightning_maggy.Searchspace`.
        num_trials: how many distinct configurations to start, or None (until the timeout).
        direction: "max" or "min".
        max_epochs: the full training budget of one trial, in epochs.
        rng: this optimizer's own :class:`numpy.random.Generator`, seeded from ``seed``.
        trials: read-only mapping trial_id -> :class:`~lightning_maggy.trial.Trial` of every
            trial of the experiment, always current.
    """

    #: Whether a median (or other) early-stop rule may be combined with this optimizer by default.
    uses_rungs: bool = False

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.searchspace: Searchspace = None  # type: ignore[assignment]
        self.num_trials: int | None = None
        self.direction: str = "max"
        self.max_epochs: int = 1
        self.rng: np.random.Generator = np.random.default_rng(seed)
        self._trials: Mapping[str, Trial] = MappingProxyType({})

    # -- wiring (called by the controller) ---------------------------------------------------
    def setup(
        self,
        searchspace: Searchspace,
        *,
        num_trials: int | None,
        direction: str,
        max_epochs: int,
        trials: Mapping[str, Trial],
        seed: int | None = None,
    ) -> None:
        """Binds the optimizer to an experiment, validates it, and calls :meth:`initialize`."""
        self.searchspace = searchspace
        self.num_trials = num_trials
        self.direction = direction
        self.max_epochs = int(max_epochs)
        if self.seed is None:
            self.seed = seed
        self.rng = np.random.default_rng(self.seed)
        self._trials = trials if isinstance(trials, MappingProxyType) else MappingProxyType(trials)
        self.validate()
        self.initialize()

    def validate(self) -> None:
        """Raises :class:`~lightning_maggy.exceptions.ConfigurationError` if the optimizer cannot
        run with this experiment's settings. Called before any worker starts."""

    # -- views of the trial history ----------------------------------------------------------
    @property
    def trials(self) -> Mapping[str, Trial]:
        return self._trials

    @property
    def final_store(self) -> list[Trial]:
        """Finished trials (the original Maggy's name)."""
        return [t for t in self._trials.values() if t.state.finished]

    @property
    def trial_store(self) -> list[Trial]:
        """Trials that are running or waiting (the original Maggy's name)."""
        return [t for t in self._trials.values() if not t.state.finished]

    def create_trial(
        self, config: Mapping[str, Any], budget: int | None = None, info: Mapping[str, Any] | None = None
    ) -> Trial:
        """A new PENDING trial for ``config`` with ``budget`` epochs (default: ``max_epochs``)."""
        return Trial.create(config, budget=self.max_epochs if budget is None else budget, info=info)

    def is_known(self, config: Mapping[str, Any]) -> bool:
        """Whether a trial with this configuration exists already."""
        return Trial.create(config).trial_id in self._trials

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b`` in this experiment's direction."""
        return a > b if self.direction == "max" else a < b

    # -- the developer API -------------------------------------------------------------------
    @abstractmethod
    def initialize(self) -> None:
        """Prepares the optimizer; called once after :attr:`searchspace` and friends are set."""

    @abstractmethod
    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        """What a free worker should run next.

        Args:
            trial: the trial that worker just finished (None on its first request).

        Returns:
            A new :class:`Trial` (``create_trial``), a PAUSED trial with a larger ``budget`` to
            resume it (``trial.evolve(budget=...)``), :data:`IDLE`, or None when done.
        """

    def on_report(self, trial: Trial) -> Decision:
        """The answer to a metric report; ``trial.history`` already holds the new value.

        The default continues; ASHA pauses a trial that reached its rung.
        """
        del trial
        return Decision.CONTINUE

    def continue_until(self, trial: Trial) -> int:
        """Reports of ``trial`` at epochs below this are answered CONTINUE whatever their value,
        so its worker sends them without waiting for the answer (they are recorded all the
        same). The default: every epoch when :meth:`on_report` is not overridden, none when it
        is (a custom ``on_report`` may decide anything at any epoch)."""
        del trial
        return ALWAYS if type(self).on_report is AbstractOptimizer.on_report else 0

    @abstractmethod
    def finalize_experiment(self, trials: list[Trial]) -> None:
        """Called once with every trial when the experiment ends."""

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State that cannot be derived from the trial records (JSON-able)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]

    # -- helpers for subclasses --------------------------------------------------------------
    def _started_count(self) -> int:
        return len(self._trials)

    def _budget_left(self) -> bool:
        return self.num_trials is None or self._started_count() < self.num_trials

    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise ConfigurationError(message)

    def _active(self) -> list[Trial]:
        return [t for t in self._trials.values() if t.state in (TrialState.RUNNING, TrialState.PENDING, TrialState.LOST)]
