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

import dataclasses
import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Union

import numpy as np

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.records import ChangeLog, TrialRecords
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState

__all__ = ["ALWAYS", "IDLE", "AbstractOptimizer", "Idle", "Job", "SuggestionResult"]


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


@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    """Expensive, pure work an optimizer needs before it can answer (fitting a model).

    ``run`` is a closure over an immutable snapshot of the trial records: it must not read or
    change the optimizer, so that it can run on any thread while the optimizer keeps answering
    reports. See :meth:`AbstractOptimizer.take_job`.

    Attributes:
        run: computes the result; called once, without arguments.
        name: what it computes, for logs (e.g. ``"GP fit on 42 observations"``).
    """

    run: Callable[[], Any]
    name: str = "job"


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
        from lightning_maggy.validation import check_seed

        check_seed(seed, type(self).__name__)  # before numpy's own error, which says neither what nor where
        self.seed = seed
        self.searchspace: Searchspace = None  # type: ignore[assignment]
        self.num_trials: int | None = None
        self.direction: str = "max"
        self.max_epochs: int = 1
        self.rng: np.random.Generator = np.random.default_rng(seed)
        self._trials: Mapping[str, Trial] = MappingProxyType({})
        self._background_jobs = False
        self._job_wanted: Job | None = None
        self._job_running: Job | None = None
        self._job_outcome: tuple[Any, BaseException | None] | None = None

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
        validate_only: bool = False,
    ) -> None:
        """Binds the optimizer to an experiment, validates it, and calls :meth:`initialize`
        (``validate_only``: not yet; ``search()`` checks the settings before the controller
        sets the optimizer up for the study, so ``initialize`` runs once)."""
        self.searchspace = searchspace
        self.num_trials = num_trials
        self.direction = direction
        self.max_epochs = int(max_epochs)
        if self.seed is None:
            self.seed = seed
        self.rng = np.random.default_rng(self.seed)
        self._trials = trials if isinstance(trials, MappingProxyType) else MappingProxyType(trials)
        # The controller attaches its records' change log after setup (see ``changes``).
        self.changes = trials.changes if isinstance(trials, TrialRecords) else None
        self.validate()
        if not validate_only:
            self.initialize()

    def validate(self) -> None:
        """Raises :class:`~lightning_maggy.exceptions.ConfigurationError` if the optimizer cannot
        run with this experiment's settings. Called before any worker starts."""

    #: The log of which trial records changed (:class:`~lightning_maggy.records.ChangeLog`),
    #: attached by the controller; None when the records are a plain mapping (then derive
    #: everything from them afresh). For optimizers that keep something derived from the
    #: records up to date instead of rebuilding it on every call.
    changes: ChangeLog | None = None

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
        """A new PENDING trial for ``config`` with ``budget`` epochs (default: ``max_epochs``).
        NumPy scalars in ``config`` (``self.rng.choice([16, 32])``) become the Python values they
        hold, so that a configuration drawn with NumPy is recorded and handed to trials as plain
        Python (an Integer dimension still refuses a float, NumPy or not)."""
        plain = {name: value.item() if isinstance(value, np.generic) else value for name, value in config.items()}
        return Trial.create(plain, budget=self.max_epochs if budget is None else budget, info=info)

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

    def promote_in_place(self, trial: Trial) -> Trial | None:
        """Called when :meth:`on_report` answered PAUSE to a report whose worker can raise the
        running trial's budget (a Lightning Trainer run by the search): the trial evolved to a
        larger ``budget`` if :meth:`get_suggestion` would hand out exactly that promotion next,
        so the worker trains on in the same run instead of checkpointing, pausing and resuming
        (the same decision, without the cost of a new run). None: pause. The default: None."""
        del trial
        return None

    def pauses_at_budget(self, trial: Trial) -> bool:
        """Whether ``trial``, whose worker ended it after training its whole ``budget`` with no
        PAUSE answer on record, is PAUSED (it may be resumed later with a larger budget) rather
        than COMPLETED. The default: never; ASHA and Hyperband pause below their top rung."""
        del trial
        return False

    @abstractmethod
    def finalize_experiment(self, trials: list[Trial]) -> None:
        """Called once with every trial when the experiment ends."""

    # -- work off the report path (model fitting) ----------------------------------------------
    # A model-based optimizer must not fit its model inside get_suggestion() while a controller
    # serves other workers' reports. It wraps the fit in a Job (a pure closure over a snapshot
    # of the records) and calls _job_result(). Driven directly (tests, the contract test's
    # simulator, a user), the job runs inline and get_suggestion() answers at once. Under a
    # controller that called enable_background_jobs(), get_suggestion() answers IDLE instead and
    # leaves the job for the controller, which takes it (take_job), runs it on one background
    # thread and hands the result back on its serve thread (complete_job), then asks again.

    def enable_background_jobs(self, enabled: bool = True) -> None:
        """Called by a controller that runs this optimizer's jobs on a background thread
        (``True``), or stops doing so (``False``: jobs run inline again, a job in flight is
        forgotten)."""
        self._background_jobs = bool(enabled)
        if not enabled:
            self._job_wanted = self._job_running = None
            self._job_outcome = None

    def take_job(self) -> Job | None:
        """The job this optimizer waits for, handed to the caller to run (once), or None.

        The caller must eventually call :meth:`complete_job` with it."""
        job, self._job_wanted = self._job_wanted, None
        if job is not None:
            self._job_running = job
        return job

    def complete_job(self, job: Job, result: Any = None, error: BaseException | None = None) -> None:
        """Hands back the ``result`` of a job from :meth:`take_job` (or the ``error`` it raised);
        the next :meth:`get_suggestion` uses it. A job this optimizer no longer waits for is
        ignored."""
        if job is not self._job_running:
            return
        self._job_running = None
        self._job_outcome = (result, error)

    def _job_result(self, make_job: Callable[[], Job]) -> tuple[bool, Any]:
        """For subclasses: ``(True, result)`` of the job ``make_job()`` builds, or ``(False,
        None)`` when it runs in the background and the caller should return :data:`IDLE`.

        A result that came back from the background is used once, by the first call after it
        arrived, even if the records changed meanwhile (it is at most one fit old); a job that
        raised re-raises its error here.
        """
        if self._job_outcome is not None:
            (result, error), self._job_outcome = self._job_outcome, None
            if error is not None:
                raise error
            return True, result
        if not self._background_jobs:
            return True, make_job().run()
        if self._job_running is None and self._job_wanted is None:
            self._job_wanted = make_job()
        return False, None

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
