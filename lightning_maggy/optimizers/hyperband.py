"""Asynchronous Hyperband: several ASHA brackets with different minimum resources.

Li, Jamieson, Rostamizadeh, Gonina, Hardt, Recht, Talwalkar: "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020, arXiv:1810.05934, section 3.3 ("asynchronous Hyperband");
after Li, Jamieson, DeSalvo, Rostamizadeh, Talwalkar: "Hyperband: A Novel Bandit-Based Approach
to Hyperparameter Optimization", JMLR 18 (2018).

ASHA with early-stopping rate s starts trials at ``r * eta**s`` epochs. A small s stops bad
trials early but also risks stopping slow starters; Hyperband hedges by running brackets
s = 0, ..., s_max side by side. The bracket arithmetic (:func:`bracket_budgets`,
:func:`bracket_for`) is made of small pure functions; every bracket reuses ASHA's rung rules
(:func:`~lightning_maggy.optimizers.asha.rung_budgets`,
:func:`~lightning_maggy.optimizers.asha.promotable`,
:func:`~lightning_maggy.optimizers.asha.rung_results`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.asha import (
    RungDecisions,
    check_flag,
    check_resources,
    check_resources_fit,
    promotion_at,
    rung_budgets,
)
from lightning_maggy.optimizers.base import IDLE, Idle, SuggestionResult
from lightning_maggy.optimizers.random_search import ConfigDrawer, DrawingOptimizer, Suggester
from lightning_maggy.optimizers.rungs import RungIndex, SyncedIndex
from lightning_maggy.trial import Trial

__all__ = ["BRACKET_KEY", "Hyperband", "bracket_budgets", "bracket_for", "max_brackets"]

#: The key of ``trial.info`` that records the bracket (the paper's s) a trial belongs to.
BRACKET_KEY = "bracket"


def max_brackets(resource_min: int, reduction_factor: float, resource_max: int) -> int:
    """``s_max + 1``: how many brackets ``r``, ``eta`` and ``R`` allow, where
    ``s_max = floor(log_eta(R / r))`` is the largest s with ``r * eta**s <= R``.

    Examples: ``max_brackets(1, 3, 27) == 4``, ``max_brackets(1, 3, 26) == 3``,
    ``max_brackets(5, 3, 5) == 1``.

    Raises:
        ConfigurationError: if an argument breaks its rule (as in ``rung_budgets``).
    """
    budgets = rung_budgets(resource_min, reduction_factor, resource_max)
    # rung_budgets ends with R itself; it is a bracket's minimum resource only if R = r * eta**k.
    top = int(math.floor(resource_min * reduction_factor ** (len(budgets) - 1) + 1e-9))
    return len(budgets) if top == resource_max else len(budgets) - 1


def bracket_budgets(
    resource_min: int, reduction_factor: float, resource_max: int, brackets: int | None = None
) -> list[list[int]]:
    """The rung budgets (epochs) of every bracket s = 0, 1, ...: bracket s is ASHA with minimum
    resource ``r_s = r * eta**s``, i.e. ``rung_budgets(r, eta, R)[s:]``.

    Example: ``bracket_budgets(1, 3, 27) == [[1, 3, 9, 27], [3, 9, 27], [9, 27], [27]]``; with
    ``R = 10``: ``[[1, 3, 9, 10], [3, 9, 10], [9, 10]]`` (``s_max = floor(log_3 10) = 2``).

    Args:
        resource_min: r, the bottom rung of bracket 0 (int >= 1).
        reduction_factor: eta (>= 2).
        resource_max: R, the top rung of every bracket (int >= r).
        brackets: how many brackets, ``s_max + 1`` when None; at most what r, eta and R allow.

    Raises:
        ConfigurationError: if an argument breaks its rule, or asks for more brackets than
            ``max_brackets(r, eta, R)``.
    """
    limit = max_brackets(resource_min, reduction_factor, resource_max)
    if brackets is None:
        brackets = limit
    where = f"bracket_budgets({resource_min!r}, {reduction_factor!r}, {resource_max!r})"
    _check_brackets(brackets, where)
    if brackets > limit:
        raise ConfigurationError(_too_many_brackets(brackets, limit, resource_min, reduction_factor, resource_max))
    budgets = rung_budgets(resource_min, reduction_factor, resource_max)
    return [budgets[s:] for s in range(brackets)]


def bracket_for(trial_index: int, brackets: int) -> int:
    """The bracket of the ``trial_index``-th new trial (0-based): round robin, ``i mod brackets``."""
    if trial_index < 0:
        raise ValueError(f"bracket_for: trial_index={trial_index} must be >= 0.")
    return trial_index % brackets


def _check_brackets(value: Any, where: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(
            f"{where}: brackets={value!r} must be an int >= 1 (the number of ASHA brackets, the "
            "paper's s_max + 1), or None for every bracket the budgets allow; e.g. brackets=3."
        )


def _too_many_brackets(brackets: int, limit: int, r: int, eta: float, R: int) -> str:
    return (
        f"Hyperband: brackets={brackets} is more than resource_min={r}, reduction_factor={eta} "
        f"and R={R} allow: bracket s starts at r * eta**s epochs, which must be <= R, so at most "
        f"{limit} bracket(s) (s_max = floor(log_eta(R / r)) = {limit - 1}). Pass brackets<={limit} "
        "(or None for all of them), lower resource_min or reduction_factor, or raise R."
    )


def _bracket_of(trial: Trial) -> int | None:
    value = trial.info.get(BRACKET_KEY) if isinstance(trial.info, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


class BracketIndex(SyncedIndex):
    """Every bracket's rungs (a :class:`~lightning_maggy.optimizers.asha.RungIndex` each), kept
    up to date from the trial records, and which bracket each trial belongs to (its count gives
    the round-robin position). A promotion then costs a lookup per rung, however large the
    study: :meth:`first_promotion` answers what :meth:`Hyperband._promotion` answers from the
    records."""

    def __init__(self, bracket_rungs: list[list[int]], reduction_factor: float, direction: str,
                 early_promotion: bool) -> None:
        self.brackets = [RungIndex(rungs, reduction_factor, direction, early_promotion) for rungs in bracket_rungs]
        # The rungs below the top of every bracket: largest budget first, lower bracket on ties.
        self.order = sorted(
            ((rungs[k], s, k) for s, rungs in enumerate(bracket_rungs) for k in range(len(rungs) - 1)),
            key=lambda item: (-item[0], item[1]),
        )
        self._reset()

    def _reset(self) -> None:
        self.members: dict[str, int] = {}
        for index in self.brackets:
            index._reset()

    def _place(self, tid: str, trial: Trial | None) -> None:
        s = self.members.pop(tid, None)
        if s is not None:
            self.brackets[s]._place(tid, None)
        s = None if trial is None else _bracket_of(trial)
        if s is not None and 0 <= s < len(self.brackets):
            self.members[tid] = s
            self.brackets[s]._place(tid, trial)

    def first_promotion(self, trials: Mapping[str, Trial], paused: str | None = None) -> Trial | Idle | None:
        """The promotion out of a rung of some bracket, with the trial ``paused`` (an id)
        counted as PAUSED whatever its record says."""
        for _, s, k in self.order:
            promotion = self.brackets[s].promotion(trials, k, paused)
            if promotion is not None:
                return promotion
        return None


class Hyperband(RungDecisions, DrawingOptimizer):
    """Asynchronous Hyperband (Li et al. 2018, arXiv:1810.05934, section 3.3).

    Runs brackets s = 0, ..., ``brackets - 1`` side by side; bracket s is ASHA whose bottom rung
    trains ``r_s = r * eta**s`` epochs, so its rungs are ``rung_budgets(r, eta, R)[s:]``
    (r=1, eta=3, R=27: [1, 3, 9, 27], [3, 9, 27], [9, 27], [27]; the last bracket is plain
    random search at R). New trials are assigned to the brackets in round robin: the i-th new
    trial goes to bracket ``i mod brackets``.

    Whenever a worker is free, Hyperband promotes if it can, exactly as ASHA does within each
    bracket: a trial PAUSED at a rung of its bracket that is in the top ``1/eta`` of that rung
    (counting only the bracket's trials) is resumed from its checkpoint up to the bracket's next
    rung. Among all brackets it looks at the rungs from the largest budget down (ties: lower
    s first). If nothing is promotable, a new configuration starts at the bottom rung of the
    bracket whose turn it is. Trials pause when they reach their rung (:meth:`on_report`).

    The state is derived from the trial records: each trial records its bracket in
    ``trial.info["bracket"]`` (and the draw count, see
    :class:`~lightning_maggy.optimizers.random_search.ConfigDrawer`); the number of trials with
    a bracket gives the round-robin position.

    Args:
        reduction_factor: eta, the paper's reduction factor (a number >= 2): the top 1/eta of
            each rung is promoted, rung budgets grow by eta, and so do the brackets' minimum
            resources.
        resource_min: r, the paper's minimum resource: the bottom rung of bracket s=0 (int >= 1).
        resource_max: R, the paper's maximum resource: the top rung of every bracket. None: the
            experiment's ``max_epochs``. Must not exceed ``max_epochs``.
        brackets: how many brackets, the paper's ``s_max + 1``. None (default): every bracket
            the budgets allow, ``s_max = floor(log_eta(R / r))``. ``brackets=1`` is ASHA.
        seed: seed of the optimizer's generator; None takes the experiment's seed.
        suggester: the config sampler for new trials, ``(searchspace, rng, trials) -> config``
            (default: random sampling), as with :class:`~lightning_maggy.optimizers.asha.ASHA`.
        max_retries: extra draws per new trial when a drawn configuration is already known.
        early_promotion: True: while a rung of a bracket has fewer than eta results, its best
            trial so far is promoted too, as with
            :class:`~lightning_maggy.optimizers.asha.ASHA`'s ``early_promotion``.

    Raises:
        ConfigurationError: for an argument that breaks its rule, or (at setup) more brackets
            than r, eta and R allow.

    Example::

        lm.search(MyModule, space, optimizer=lm.Hyperband(reduction_factor=3), max_epochs=27, ...)
    """

    def __init__(
        self,
        reduction_factor: float = 3,
        resource_min: int = 1,
        resource_max: int | None = None,
        brackets: int | None = None,
        seed: int | None = None,
        *,
        suggester: Suggester | None = None,
        max_retries: int = 100,
        early_promotion: bool = False,
    ) -> None:
        check_resources(reduction_factor, resource_min, resource_max, "Hyperband")
        check_flag("early_promotion", early_promotion, "Hyperband")
        if brackets is not None:
            _check_brackets(brackets, "Hyperband")
            if resource_max is not None:
                limit = max_brackets(int(resource_min), reduction_factor, int(resource_max))
                if brackets > limit:
                    raise ConfigurationError(
                        _too_many_brackets(brackets, limit, resource_min, reduction_factor, resource_max)
                    )
        super().__init__(seed=seed)
        self.early_promotion = early_promotion
        self.reduction_factor = reduction_factor
        self.resource_min = int(resource_min)
        self.resource_max = None if resource_max is None else int(resource_max)
        self.brackets = None if brackets is None else int(brackets)
        self._drawer = ConfigDrawer(suggester=suggester, max_retries=max_retries)
        #: The rung budgets of every bracket (set by :meth:`initialize`).
        self.bracket_rungs: list[list[int]] = []

    def __repr__(self) -> str:
        return (
            f"Hyperband(reduction_factor={self.reduction_factor}, resource_min={self.resource_min}, "
            f"resource_max={self.resource_max}, brackets={self.brackets}, seed={self.seed}"
            + (", early_promotion=True)" if self.early_promotion else ")")
        )

    @property
    def max_resource(self) -> int:
        """R: ``resource_max``, or the experiment's ``max_epochs``."""
        return self.resource_max if self.resource_max is not None else self.max_epochs

    def validate(self) -> None:
        check_resources_fit(self.resource_min, self.resource_max, self.max_epochs, "Hyperband")
        R = self.max_resource
        if self.brackets is not None:
            limit = max_brackets(self.resource_min, self.reduction_factor, R)
            if self.brackets > limit:
                raise ConfigurationError(
                    _too_many_brackets(self.brackets, limit, self.resource_min, self.reduction_factor, R)
                )

    def initialize(self) -> None:
        self.bracket_rungs = bracket_budgets(
            self.resource_min, self.reduction_factor, self.max_resource, self.brackets
        )
        self._index = BracketIndex(self.bracket_rungs, self.reduction_factor, self.direction, self.early_promotion)
        self._drawer.reset()

    # -- views of the records ----------------------------------------------------------------
    def _members(self, trials: Mapping[str, Trial]) -> list[dict[str, Trial]]:
        """trial_id -> trial of every bracket among ``trials``, from ``trial.info["bracket"]``."""
        members: list[dict[str, Trial]] = [{} for _ in self.bracket_rungs]
        for tid, trial in trials.items():
            s = _bracket_of(trial)
            if s is not None and 0 <= s < len(members):
                members[s][tid] = trial
        return members

    # -- decisions ---------------------------------------------------------------------------
    def _promotion(self, members: list[dict[str, Trial]]) -> Trial | Idle | None:
        """The promotion out of a rung of some bracket (see
        :func:`~lightning_maggy.optimizers.asha.promotion_at`): rungs from the largest budget
        down, lower bracket first on ties (the kept index's order), best trial of a rung first."""
        for budget, s, k in self._index.order:
            promotion = promotion_at(
                members[s], budget, self.bracket_rungs[s][k + 1], self.reduction_factor, self.direction,
                self.early_promotion,
            )
            if promotion is not None:
                return promotion
        return None

    def _promotion_among(self, trials: Mapping[str, Trial]) -> Trial | Idle | None:
        return self._promotion(self._members(trials))

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        del trial
        promotion = self._kept_promotion()
        if promotion is not None:
            return promotion
        if self._budget_left():
            config = self._drawer.draw(self.searchspace, self.rng, self.trials)
            if config is not None:
                s = bracket_for(len(self._index.members), len(self.bracket_rungs))
                info = {**self._drawer.info(), BRACKET_KEY: s}
                return self.create_trial(config, budget=self.bracket_rungs[s][0], info=info)
        # Running trials may still reach a rung and make a paused trial promotable.
        return IDLE if self._active() else None
