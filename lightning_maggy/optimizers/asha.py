"""Asynchronous successive halving (ASHA).

Li, Jamieson, Rostamizadeh, Gonina, Hardt, Recht, Talwalkar: "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020, arXiv:1810.05934 (Algorithm 2).

The rung arithmetic (:func:`rung_budgets`) and the promotion rule (:func:`promotable`) are small
pure functions; :class:`ASHA` only reads the trial records to build the rungs and composes them
with a config sampler (a :data:`~lightning_maggy.optimizers.random_search.Suggester`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.base import ALWAYS, IDLE, Idle, SuggestionResult
from lightning_maggy.optimizers.random_search import ConfigDrawer, DrawingOptimizer, Suggester
from lightning_maggy.optimizers.rungs import RungIndex, SyncedIndex, first_paused, rank_key, top_count
from lightning_maggy.trial import Decision, Trial, TrialState

__all__ = [
    "ASHA",
    "RungDecisions",
    "RungIndex",
    "SyncedIndex",
    "check_resources",
    "check_resources_fit",
    "warn_if_top_rung_unreachable",
    "promotable",
    "promotion_at",
    "rung_budgets",
    "rung_results",
    "top_count",
]

_DIRECTIONS = ("max", "min")


def _check_reduction_factor(value: Any, where: str) -> None:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(float(value))
        or value < 2
    ):
        raise ConfigurationError(
            f"{where}: reduction_factor={value!r} must be a number >= 2 (the paper's eta: each "
            "rung keeps the top 1/eta of its trials); e.g. reduction_factor=3."
        )


def _check_positive_int(name: str, value: Any, where: str, example: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{where}: {name}={value!r} must be an int >= 1 (epochs); e.g. {example}.")


def check_resources(reduction_factor: Any, resource_min: Any, resource_max: Any, where: str) -> None:
    """Checks eta, r and R (None: ``max_epochs``) as ASHA-like optimizers take them."""
    _check_reduction_factor(reduction_factor, where)
    _check_positive_int("resource_min", resource_min, where, f"{where}(resource_min=1)")
    if resource_max is not None:
        _check_positive_int("resource_max", resource_max, where, f"{where}(resource_max=27)")
        if resource_max < resource_min:
            raise ConfigurationError(
                f"{where}: resource_max={resource_max} must be >= resource_min={resource_min} "
                "(the top rung cannot train less than the bottom one); raise resource_max or "
                "lower resource_min."
            )


def check_flag(name: str, value: Any, where: str) -> None:
    """Checks that a switch is a bool."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where}: {name}={value!r} must be True or False.")


def check_resources_fit(resource_min: int, resource_max: int | None, max_epochs: int, where: str) -> None:
    """Checks r and R (None: ``max_epochs``) against the experiment's ``max_epochs``."""
    R = resource_max if resource_max is not None else max_epochs
    source = "resource_max" if resource_max is not None else "max_epochs (resource_max=None)"
    if R < resource_min:
        raise ConfigurationError(
            f"{where}: resource_min={resource_min} must be <= {source}={R}: the bottom rung "
            f"cannot train more epochs than the top one. Lower resource_min or raise "
            f"{'resource_max' if resource_max is not None else 'max_epochs'}."
        )
    if resource_max is not None and resource_max > max_epochs:
        raise ConfigurationError(
            f"{where}: resource_max={resource_max} must be <= max_epochs={max_epochs} "
            "(a trial never trains longer than max_epochs); lower resource_max, raise "
            "max_epochs, or pass resource_max=None to use max_epochs."
        )


def rung_budgets(resource_min: int, reduction_factor: float, resource_max: int) -> list[int]:
    """The budget (epochs) of every rung: ``r * eta**k`` for every k with ``r * eta**k < R``
    (rounded down), then ``R`` itself as the top rung.

    Examples: ``rung_budgets(1, 3, 27) == [1, 3, 9, 27]``, ``rung_budgets(1, 3, 10) ==
    [1, 3, 9, 10]``, ``rung_budgets(5, 3, 5) == [5]``.

    Args:
        resource_min: r, the budget of the bottom rung (int >= 1).
        reduction_factor: eta (>= 2).
        resource_max: R, the budget of the top rung (int >= r).

    Raises:
        ConfigurationError: if an argument breaks its rule.
    """
    where = f"rung_budgets({resource_min!r}, {reduction_factor!r}, {resource_max!r})"
    _check_positive_int("resource_min", resource_min, where, "resource_min=1")
    _check_reduction_factor(reduction_factor, where)
    _check_positive_int("resource_max", resource_max, where, "resource_max=27")
    if resource_max < resource_min:
        raise ConfigurationError(
            f"{where}: resource_max={resource_max} must be >= resource_min={resource_min}."
        )
    budgets: list[int] = []
    k = 0
    while True:
        budget = int(math.floor(resource_min * reduction_factor**k + 1e-9))
        if budget >= resource_max:
            break
        budgets.append(budget)
        k += 1
    budgets.append(int(resource_max))
    return budgets


def promotable(
    rung_results: Mapping[str, float] | Sequence[tuple[str, float]],
    promoted_ids: Collection[str],
    reduction_factor: float,
    direction: str,
    early_promotion: bool = False,
) -> list[str]:
    """The ids that may be promoted out of one rung, best first.

    A trial is promotable if it is among the top ``floor(n / eta)`` of the rung by value in
    ``direction`` (n counts every trial that reached the rung, promoted ones included) and has
    not been promoted yet. Ties are broken by trial id so the answer does not depend on record
    order; NaN values rank last and are never promoted.

    Args:
        rung_results: trial_id -> the trial's value at this rung (mapping or pairs).
        promoted_ids: ids already promoted out of this rung.
        reduction_factor: eta.
        direction: "max" or "min".
        early_promotion: the top ``max(1, floor(n / eta))`` instead (:func:`top_count`).
    """
    if direction not in _DIRECTIONS:
        raise ConfigurationError(f"direction={direction!r} must be one of {list(_DIRECTIONS)}.")
    items = list(rung_results.items()) if isinstance(rung_results, Mapping) else list(rung_results)
    n_top = top_count(len(items), reduction_factor, early_promotion)
    if n_top <= 0:
        return []
    ranked = sorted(items, key=lambda item: (rank_key(float(item[1]), direction), item[0]))
    promoted = set(promoted_ids)
    return [tid for tid, value in ranked[:n_top] if value == value and tid not in promoted]


def warn_if_top_rung_unreachable(num_trials: int, reduction_factor: float, budgets: Sequence[int], where: str) -> None:
    """Warns, before the study starts, when ``num_trials`` new trials are too few for the
    paper's promotion rule to take any of them to the top rung: each rung promotes only its top
    ``floor(n / eta)``, so with 6 trials, eta 3 and rungs [1, 3, 9] no trial trains 9 epochs and
    the best result is a 3-epoch one."""
    n, reached = num_trials, 0
    while reached < len(budgets) - 1 and top_count(n, reduction_factor) > 0:
        n = top_count(n, reduction_factor)
        reached += 1
    if reached == len(budgets) - 1:
        return
    needed = 1  # the fewest trials whose promotions reach the top rung: ceil(eta * n) per rung down
    for _ in budgets[1:]:
        needed = math.ceil(needed * reduction_factor)
    warnings.warn(
        f"{where}: with num_trials={num_trials} and reduction_factor={reduction_factor:g}, no trial can be promoted "
        f"beyond {budgets[reached]} epochs (rungs {list(budgets)}): each rung promotes only its top 1/"
        f"{reduction_factor:g}, so a trial trains {budgets[-1]} epochs only with num_trials >= {needed}. Raise "
        f"num_trials, pass early_promotion=True (a rung with fewer than {reduction_factor:g} results promotes its "
        "best so far), or raise resource_min.",
        UserWarning,
        stacklevel=2,
    )


def rung_results(trials: Mapping[str, Trial], budget: int) -> dict[str, float]:
    """trial_id -> value at the rung of ``budget`` epochs (``history[budget - 1]``) of every trial
    that reached it (``len(history) >= budget``)."""
    return {tid: float(t.history[budget - 1]) for tid, t in trials.items() if len(t.history) >= budget}


def promotion_at(
    trials: Mapping[str, Trial],
    budget: int,
    next_budget: int,
    reduction_factor: float,
    direction: str,
    early_promotion: bool = False,
) -> Trial | Idle | None:
    """The promotion out of the rung of ``budget`` epochs among ``trials``, if any.

    Goes through :func:`promotable` best first. The first candidate that is PAUSED at this rung
    is promoted: returned evolved to ``next_budget``. A candidate that reached this rung but has
    not ended yet (RUNNING: answered PAUSE, its worker is checkpointing it; or LOST and
    re-queued) will be PAUSED when its end arrives, so the answer is
    :data:`~lightning_maggy.optimizers.base.IDLE` (ask again then) rather than promoting a worse
    trial or starting a new one: the decision never depends on message timing. Candidates that
    ended otherwise (FAILED, STOPPED) are skipped. None: nothing in this rung is promotable.
    """
    results = rung_results(trials, budget)
    promoted = [tid for tid in results if trials[tid].budget > budget]
    candidates = promotable(results, promoted, reduction_factor, direction, early_promotion)
    return first_paused(candidates, trials, budget, next_budget)


class RungDecisions:
    """The answers to reports of an optimizer whose trials pause at rungs below the top one
    (``max_resource``, R): ASHA, and every bracket of Hyperband."""

    uses_rungs = True
    #: R, the top rung's budget: each optimizer using these decisions defines it (a property of
    #: ``resource_max`` and the experiment's ``max_epochs``).
    max_resource: int
    #: The promotion ``get_suggestion`` would make from the given records (a trial evolved to
    #: its next budget, IDLE or None); each optimizer using these decisions defines it.
    _promotion_among: Callable[[Mapping[str, Trial]], Trial | Idle | None]
    #: The rungs kept up to date from the records (a :class:`SyncedIndex` with
    #: ``first_promotion(trials, paused=None)``), set by ``initialize``; None: none kept.
    _index: Any = None

    def on_report(self, trial: Trial) -> Decision:
        """PAUSE when the trial reached its budget and that budget is below the top rung R."""
        if len(trial.history) >= trial.budget and trial.budget < self.max_resource:
            return Decision.PAUSE
        return Decision.CONTINUE

    def continue_until(self, trial: Trial) -> int:
        """Only the report of a rung's last epoch can be answered PAUSE."""
        return trial.budget - 1 if trial.budget < self.max_resource else ALWAYS

    def pauses_at_budget(self, trial: Trial) -> bool:
        """A trial that trained its budget is PAUSED below the top rung R and COMPLETED at R
        (even when R is below the experiment's ``max_epochs``)."""
        return trial.budget < self.max_resource

    def _kept_promotion(self, paused: str | None = None) -> Trial | Idle | None:
        """The promotion from the kept index, brought up to date with the records first
        (``paused``: an id counted as PAUSED whatever its record says)."""
        self._index.sync(self.trials, self.changes)
        return self._index.first_promotion(self.trials, paused=paused)

    def promote_in_place(self, trial: Trial) -> Trial | None:
        """The promotion a free worker would get next if ``trial`` (just answered PAUSE at its
        rung) were paused: when that is ``trial`` itself, it is returned with its next rung's
        budget and trains on in the same run. When ``trial``'s record already holds the report
        that reached its rung, the kept index answers (no copy of the records)."""
        if self._index is not None and self.trials.get(trial.trial_id) == trial:
            promotion = self._kept_promotion(paused=trial.trial_id)
        else:
            view = {**self.trials, trial.trial_id: trial.evolve(state=TrialState.PAUSED)}
            promotion = self._promotion_among(view)
        if isinstance(promotion, Trial) and promotion.trial_id == trial.trial_id:
            return promotion.evolve(state=trial.state)
        return None


class ASHA(RungDecisions, DrawingOptimizer):
    """Asynchronous successive halving (Li et al. 2018, arXiv:1810.05934, Algorithm 2).

    Trials start on the bottom rung with ``r`` epochs. Whenever a worker is free, ASHA looks at
    the rungs from the second highest down: a trial paused at rung k that is in the top
    ``1/eta`` of rung k is promoted, i.e. resumed from its checkpoint up to the next rung's
    budget; if none is, a new configuration starts at the bottom rung. Trials are paused when
    they reach their rung (:meth:`on_report` returns ``Decision.PAUSE``).

    The rungs are derived from the trial records alone: a trial *is in* rung k when
    ``len(history) >= budgets[k]`` (its value there is ``history[budgets[k] - 1]``) and *was
    promoted* from rung k when ``budget > budgets[k]``.

    Args:
        reduction_factor: eta, the paper's reduction factor (a number >= 2): the top 1/eta of
            each rung is promoted and rung budgets grow by a factor eta.
        resource_min: r, the paper's minimum resource: epochs of the bottom rung (int >= 1).
        resource_max: R, the paper's maximum resource: epochs of the top rung. None: the
            experiment's ``max_epochs``. Must not exceed ``max_epochs``.
        seed: seed of the optimizer's generator; None takes the experiment's seed.
        suggester: the config sampler for new trials, ``(searchspace, rng, trials) -> config``
            (default: random sampling), so a model-based sampler can be composed with the rungs.
        max_retries: extra draws per new trial when a drawn configuration is already known.
        early_promotion: False (default): the paper's rule, a rung promotes its top
            ``floor(n / eta)``, so nothing before it has eta results. True: while a rung has
            fewer than eta results, its best trial so far is promoted too (the top
            ``max(1, floor(n / eta))``, the rule of Optuna's ``SuccessiveHalvingPruner``):
            the first configurations train on to R instead of waiting for eta others, so a
            fully trained model comes sooner. At most eta - 1 promotions per rung differ from
            the paper's, all among the rung's first eta results.

    Rung budgets are ``r * eta**k`` while below R, then R: r=1, eta=3, R=27 gives
    [1, 3, 9, 27]; R=10 gives [1, 3, 9, 10].
    """

    def __init__(
        self,
        reduction_factor: float = 3,
        resource_min: int = 1,
        resource_max: int | None = None,
        seed: int | None = None,
        *,
        suggester: Suggester | None = None,
        max_retries: int = 100,
        early_promotion: bool = False,
    ) -> None:
        check_resources(reduction_factor, resource_min, resource_max, "ASHA")
        check_flag("early_promotion", early_promotion, "ASHA")
        super().__init__(seed=seed)
        self.early_promotion = early_promotion
        self.reduction_factor = reduction_factor
        self.resource_min = int(resource_min)
        self.resource_max = None if resource_max is None else int(resource_max)
        self._drawer = ConfigDrawer(suggester=suggester, max_retries=max_retries)
        self.budgets: list[int] = []

    @property
    def max_resource(self) -> int:
        """R: ``resource_max``, or the experiment's ``max_epochs``."""
        return self.resource_max if self.resource_max is not None else self.max_epochs

    def validate(self) -> None:
        check_resources_fit(self.resource_min, self.resource_max, self.max_epochs, "ASHA")
        if self.num_trials is not None and not self.early_promotion:
            warn_if_top_rung_unreachable(
                self.num_trials, self.reduction_factor, rung_budgets(self.resource_min, self.reduction_factor,
                                                                     self.max_resource), type(self).__name__,
            )

    def initialize(self) -> None:
        self.budgets = rung_budgets(self.resource_min, self.reduction_factor, self.max_resource)
        self._index = RungIndex(self.budgets, self.reduction_factor, self.direction, self.early_promotion)
        self._drawer.reset()

    # -- decisions ---------------------------------------------------------------------------
    def _promotion(self) -> Trial | Idle | None:
        """The promotion from the highest rung that has one (see :func:`promotion_at`), from
        the rungs kept up to date (:class:`RungIndex`)."""
        return self._kept_promotion()

    def _promotion_among(self, trials: Mapping[str, Trial]) -> Trial | Idle | None:
        """The promotion from the highest rung that has one among ``trials`` (any records)."""
        for k in range(len(self.budgets) - 2, -1, -1):
            promotion = promotion_at(
                trials, self.budgets[k], self.budgets[k + 1], self.reduction_factor, self.direction,
                self.early_promotion,
            )
            if promotion is not None:
                return promotion
        return None

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        del trial
        promotion = self._promotion()
        if promotion is not None:
            return promotion
        if self._budget_left():
            config = self._drawer.draw(self.searchspace, self.rng, self.trials)
            if config is not None:
                return self.create_trial(config, budget=self.budgets[0], info=self._drawer.info())
        # Running trials may still reach a rung and make a paused trial promotable.
        return IDLE if self._active() else None
