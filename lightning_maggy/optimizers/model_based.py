"""What the model-based optimizers (GP, Optuna samplers, BOHB) share.

* :class:`Observations`: an immutable snapshot of the trial records as a model sees them, built
  by :func:`observations`; it is what a model-fitting :class:`~lightning_maggy.optimizers.base.Job`
  closes over, so the fit may run on another thread while the records keep changing.
* :class:`ModelBasedOptimizer`: the suggestion loop (budget, initial design, one model proposal
  per new trial, duplicate avoidance, seeding) around a pure *proposer*
  ``(Observations) -> [config, ...]`` (or a :class:`Proposal`, which says more).

How trial outcomes feed a model (:func:`observations`):

* COMPLETED and STOPPED trials with a finite ``final_metric`` are **observations** (config,
  value). A STOPPED trial was stopped early (by the early-stop rule or the timeout) and its value
  is the one it reached when it was stopped: a pessimistic estimate of a configuration that the
  stopping rule judged poor, which is the information the stop carries.
* FAILED trials and finished trials without a finite value (None, NaN, inf) are **failures**:
  not observations (a made-up value would distort the model), not pending; their
  configurations are known records and are never proposed again.
* RUNNING, PAUSED, PENDING and LOST (re-queued) trials are **pending**: being evaluated (or
  about to be), so an acquisition function treats them as points whose value will come
  (BoTorch's ``X_pending``, Optuna's RUNNING trials with the constant liar).

Reproducibility: a proposal depends only on the snapshot and a seed derived from the optimizer's
seed and the number of trial records (:func:`derived_seed`), so a fresh optimizer over the same
records proposes the same configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

from lightning_maggy.exceptions import ConfigurationError, SearchspaceError
from lightning_maggy.optimizers.base import IDLE, AbstractOptimizer, Job, SuggestionResult
from lightning_maggy.optimizers.random_search import _ENUMERATION_LIMIT, _enumerate_finite, finite_size
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Trial, TrialState, trial_id_for

__all__ = [
    "BO_INSTALL_HINT",
    "ModelBasedOptimizer",
    "Observations",
    "Proposal",
    "Proposer",
    "derived_seed",
    "observations",
    "random_unknown",
    "require_modules",
]

BO_INSTALL_HINT = "pip install 'lightning_maggy[bo]'"

#: States whose trials are being evaluated or will be: pending points for an acquisition.
PENDING_STATES = frozenset({TrialState.RUNNING, TrialState.PAUSED, TrialState.PENDING, TrialState.LOST})


@dataclasses.dataclass(frozen=True)
class Observations:
    """An immutable snapshot of the trial records, as a model sees them.

    Attributes:
        space: the search space.
        direction: "max" or "min".
        observed: ``(config, value)`` pairs, in record order.
        pending: configurations being evaluated (their values will come).
        failed: configurations that failed or have no finite value.
        known: trial ids of every record (a proposal must not be one of them).
        seed: the seed of this proposal.
    """

    space: Searchspace
    direction: str
    observed: tuple[tuple[Mapping[str, Any], float], ...]
    pending: tuple[Mapping[str, Any], ...]
    failed: tuple[Mapping[str, Any], ...]
    known: frozenset[str]
    seed: int

    def values(self) -> np.ndarray:
        """The observed values, as a float array in record order."""
        return np.array([v for _, v in self.observed], dtype=float)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A proposer's answer when candidate configurations are not all it has to say.

    Attributes:
        candidates: configurations, best first (may be empty).
        infos: for each candidate, entries for the ``trial.info`` of the trial suggested for it
            (e.g. model state that belongs to that configuration); empty: none.
        fallback_info: entries for the ``trial.info`` of a trial suggested at random because
            no candidate was taken (e.g. model state that advanced while it found nothing new).
        random_fallback: whether a random configuration may replace the proposal when no
            candidate is taken. False for a model whose proposals are restricted by design (a
            grid): the optimizer is then done instead.
    """

    candidates: tuple[Mapping[str, Any], ...] = ()
    infos: tuple[Mapping[str, Any], ...] = ()
    fallback_info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    random_fallback: bool = True


#: A pure function from a snapshot to candidate configurations, best first (may be empty), or
#: to a :class:`Proposal`.
Proposer = Callable[[Observations], Union[Sequence[Mapping[str, Any]], Proposal]]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def observations(
    trials: Mapping[str, Trial], space: Searchspace, direction: str, seed: int
) -> Observations:
    """The snapshot of ``trials`` a model is fitted on (see the module docstring for how each
    trial state counts)."""
    observed: list[tuple[Mapping[str, Any], float]] = []
    pending: list[Mapping[str, Any]] = []
    failed: list[Mapping[str, Any]] = []
    for trial in trials.values():
        config = dict(trial.config)
        if trial.state in PENDING_STATES:
            pending.append(config)
        elif trial.state in (TrialState.COMPLETED, TrialState.STOPPED) and _finite(trial.final_metric):
            observed.append((config, float(trial.final_metric)))  # type: ignore[arg-type]
        else:
            failed.append(config)
    return Observations(
        space=space,
        direction=direction,
        observed=tuple(observed),
        pending=tuple(pending),
        failed=tuple(failed),
        known=frozenset(trials),
        seed=seed,
    )


def derived_seed(seed: int, count: int) -> int:
    """A seed for the suggestion made when ``count`` trial records exist (a non-negative int
    below 2**31, so that numpy, torch and Optuna accept it)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(count)]).generate_state(1)[0]
    return int(state) % 2**31


def random_unknown(
    space: Searchspace, rng: np.random.Generator, known: Mapping[str, Any] | frozenset[str], tries: int = 100
) -> dict[str, Any] | None:
    """A random configuration whose trial id is not in ``known``; in a finite space whose
    random draws keep hitting known ones, the first unknown one in grid order; None if none."""
    for _ in range(tries):
        config = space.sample(rng)
        if trial_id_for(config) not in known:
            return config
    size = finite_size(space)
    if size is not None and size <= _ENUMERATION_LIMIT:
        for config in _enumerate_finite(space):
            if trial_id_for(config) not in known:
                return config
    return None


def require_modules(owner: str, *modules: str) -> None:
    """Raises ConfigurationError with the install hint if one of ``modules`` is not installed
    (checked without importing them)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            f"{owner} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed; install the optional dependencies with: {BO_INSTALL_HINT}"
        )


def check_int(owner: str, name: str, value: Any, minimum: int, example: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{owner}: {name}={value!r} must be an int >= {minimum}; e.g. {example}.")
    return int(value)


class ModelBasedOptimizer(AbstractOptimizer):
    """The suggestion loop of a model-based optimizer that trains every trial ``max_epochs``.

    For each new trial: while fewer than :attr:`n_initial` trials exist (or fewer than two
    observations), a configuration of the initial design (:meth:`_initial_config`); afterwards
    the first unknown candidate of the model's proposal, computed by :meth:`_proposer` from a
    snapshot of the records as a :class:`~lightning_maggy.optimizers.base.Job` (inline, or on
    the controller's background thread: :meth:`AbstractOptimizer._job_result`). When every
    candidate is known (or the model could not be fitted), a random unknown configuration; when
    none is left in a finite space, or the :class:`Proposal` forbids the random fallback, the
    optimizer is done.

    Each suggested trial records who proposed it in ``trial.info["suggested_by"]``
    (``"initial"``, the model's name, or ``"random"``), and the proposal's ``infos`` or
    ``fallback_info`` entries.
    """

    #: ``trial.info["suggested_by"]`` of model proposals.
    model_name = "model"

    def __init__(self, seed: int | None = None, *, n_initial: int | None = None) -> None:
        super().__init__(seed=seed)
        if n_initial is not None:
            check_int(type(self).__name__, "n_initial", n_initial, 0, f"{type(self).__name__}(n_initial=5)")
        self._n_initial_arg = n_initial
        self._base_seed = 0

    @property
    def n_initial(self) -> int:
        """Trials of the initial design before the model proposes."""
        return self._n_initial_arg if self._n_initial_arg is not None else self._default_n_initial()

    def _default_n_initial(self) -> int:
        return 0

    def initialize(self) -> None:
        # Without a seed the experiment is not reproducible anyway: draw one from OS entropy.
        self._base_seed = int(self.seed) if self.seed is not None else int(self.rng.integers(2**31))

    def finalize_experiment(self, trials: list[Trial]) -> None:
        del trials

    @abstractmethod
    def _proposer(self) -> Proposer:
        """The pure function that proposes candidates from a snapshot (it must not refer to
        ``self``'s mutable state: it may run on another thread)."""

    def _initial_config(self, count: int, rng: np.random.Generator) -> dict[str, Any] | None:
        """The configuration of the initial design suggested when ``count`` records exist."""
        del count
        return random_unknown(self.searchspace, rng, self.trials)

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        del trial
        if not self._budget_left():
            return None
        count = len(self.trials)
        seed = derived_seed(self._base_seed, count)
        rng = np.random.default_rng(seed)
        snapshot = observations(self.trials, self.searchspace, self.direction, seed)
        config: dict[str, Any] | None = None
        source = "random"
        extra: Mapping[str, Any] = {}
        if count < self.n_initial or len(snapshot.observed) < 2 and self.n_initial > 0:
            config, source = self._initial_config(count, rng), "initial"
        else:
            proposer = self._proposer()
            ready, candidates = self._job_result(
                lambda: Job(functools.partial(proposer, snapshot), name=f"{self.model_name} on {len(snapshot.observed)} observations")
            )
            if not ready:
                return IDLE
            proposal = candidates if isinstance(candidates, Proposal) else Proposal(tuple(candidates or ()))
            extra = proposal.fallback_info
            for i, candidate in enumerate(proposal.candidates):
                if not self.is_known(candidate) and self._valid(candidate):
                    config, source = dict(candidate), self.model_name
                    extra = proposal.infos[i] if i < len(proposal.infos) else {}
                    break
            if config is None and not proposal.random_fallback:
                return None
        if config is None or self.is_known(config):
            config, source = random_unknown(self.searchspace, rng, self.trials), "random"
        if config is None:
            return None
        return self.create_trial(config, budget=self.max_epochs, info={**extra, "suggested_by": source})

    def _valid(self, config: Mapping[str, Any]) -> bool:
        try:
            self.searchspace.validate(config)
        except SearchspaceError:  # a proposer bug must not start an invalid trial: use random
            return False
        return True

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "base_seed": self._base_seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "base_seed" in state:
            self._base_seed = int(state["base_seed"])
