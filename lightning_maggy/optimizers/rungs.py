"""The rungs of ASHA-like optimizers as the server keeps them: sorted, and up to date from the
trial records' change log (:class:`SyncedIndex`, :class:`RungIndex`), with the promotion-rule
arithmetic they share with :mod:`lightning_maggy.optimizers.asha` (:func:`top_count`)."""

from __future__ import annotations

import abc
import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightning_maggy.optimizers.base import IDLE, Idle
from lightning_maggy.trial import Trial, TrialState

__all__ = ["RungIndex", "SyncedIndex", "first_paused", "rank_key", "top_count"]


def rank_key(value: float, direction: str) -> tuple[bool, float]:
    """How a rung ranks a result: best first in ``direction``, NaN last."""
    is_nan = value != value
    return (is_nan, 0.0 if is_nan else (-value if direction == "max" else value))


def top_count(n: int, reduction_factor: float, early_promotion: bool = False) -> int:
    """How many of a rung's ``n`` results may be promoted: ``floor(n / eta)`` (the paper's
    rule), or with ``early_promotion`` at least one as soon as the rung has a result
    (``max(1, floor(n / eta))``, Optuna's ``SuccessiveHalvingPruner``'s rule)."""
    n_top = int(math.floor(n / reduction_factor))
    return max(n_top, 1) if early_promotion and n > 0 else n_top


def first_paused(
    candidates: Iterable[str], trials: Mapping[str, Trial], budget: int, next_budget: int, paused: str | None = None
) -> Trial | Idle | None:
    """Goes through a rung's promotable ``candidates`` (ids, best first): the first one PAUSED
    at this rung (``paused`` counts as PAUSED whatever its record says) is returned evolved to
    ``next_budget``; IDLE if a candidate at this rung has not ended yet (RUNNING, or LOST /
    re-queued: its end is still to come); None if none is left. Candidates promoted out of the
    rung already, or that ended otherwise (FAILED, STOPPED), are skipped."""
    for tid in candidates:
        trial = trials[tid]
        if trial.budget != budget:
            continue
        state = TrialState.PAUSED if tid == paused else trial.state
        if state is TrialState.PAUSED:
            return trial.evolve(budget=next_budget)
        if not state.finished:
            return IDLE
    return None


def _file(order: list[tuple[tuple[bool, float], str]], keys: dict[str, tuple[bool, float]], tid: str,
          key: tuple[bool, float] | None) -> None:
    """Moves ``tid`` to ``key`` in a ranked list (``key=None``: out of it)."""
    old = keys.pop(tid, None)
    if old is not None:
        del order[bisect.bisect_left(order, (old, tid))]
    if key is not None:
        keys[tid] = key
        bisect.insort(order, (key, tid))


class SyncedIndex(abc.ABC):
    """Something derived from the trial records and kept up to date from their change log.

    :meth:`sync` brings it up to date: from the records written since the last sync when the
    records' change log is at hand (:attr:`~lightning_maggy.optimizers.base.AbstractOptimizer.changes`,
    the controller's records), else by rebuilding it from every record. Subclasses say how one
    record is filed (:meth:`_place`; None: the record is gone) and how to start afresh
    (:meth:`_reset`).
    """

    _log: Any = None
    _version = -1

    @abc.abstractmethod
    def _reset(self) -> None:
        """Forgets every record."""

    @abc.abstractmethod
    def _place(self, tid: str, trial: Trial | None) -> None:
        """Files the record of ``tid`` (None: it is gone) where it belongs now."""

    def sync(self, trials: Mapping[str, Trial], changes: Any) -> None:
        """Brings the index up to date with ``trials`` (``changes``: their ChangeLog, or None)."""
        if changes is not None and changes is self._log:
            for tid in changes.changed_since(self._version):
                self._place(tid, trials.get(tid))
        else:
            self._reset()
            for tid, trial in trials.items():
                self._place(tid, trial)
        self._log = changes
        self._version = -1 if changes is None else changes.version


class RungIndex(SyncedIndex):
    """The rungs of an ASHA-like optimizer, kept sorted and up to date from the trial records.

    For each rung below the top (budget b): every trial that reached it, ranked as
    :func:`~lightning_maggy.optimizers.asha.promotable` ranks them (best first, ties by id,
    NaN last); :meth:`sync` (a :class:`SyncedIndex`'s) brings it up to date. A promotion then
    looks at the top of each rung instead of re-reading and re-sorting every trial, so a
    10,000-trial study decides as fast as a small one. :meth:`promotion` answers exactly what
    :func:`~lightning_maggy.optimizers.asha.promotion_at` answers for the same records.
    """

    def __init__(
        self, budgets: Sequence[int], reduction_factor: float, direction: str, early_promotion: bool = False
    ) -> None:
        self.budgets = list(budgets)
        self.reduction_factor = reduction_factor
        self.direction = direction
        self.early_promotion = early_promotion
        self._reset()

    def _reset(self) -> None:
        rungs = range(len(self.budgets) - 1)
        self._order: list[list[tuple[tuple[bool, float], str]]] = [[] for _ in rungs]
        self._keys: list[dict[str, tuple[bool, float]]] = [{} for _ in rungs]
        # Per rung, ranked alike: the trials still open there (still at the rung's budget,
        # PAUSED or not ended), the only ones a promotion walk would not skip.
        self._open: list[list[tuple[tuple[bool, float], str]]] = [[] for _ in rungs]
        self._open_keys: list[dict[str, tuple[bool, float]]] = [{} for _ in rungs]

    def _place(self, tid: str, trial: Trial | None) -> None:
        for k, budget in enumerate(self.budgets[:-1]):
            key = None
            if trial is not None and len(trial.history) >= budget:
                key = rank_key(float(trial.history[budget - 1]), self.direction)
            _file(self._order[k], self._keys[k], tid, key)
            is_open = key is not None and trial.budget == budget and (  # type: ignore[union-attr]
                trial.state is TrialState.PAUSED or not trial.state.finished)  # type: ignore[union-attr]
            _file(self._open[k], self._open_keys[k], tid, key if is_open else None)

    def promotion(
        self, trials: Mapping[str, Trial], k: int, paused: str | None = None
    ) -> Trial | Idle | None:
        """The promotion out of rung ``k`` (as
        :func:`~lightning_maggy.optimizers.asha.promotion_at`), with the trial ``paused`` (an
        id) counted as PAUSED whatever its record says: the best open trial of the rung, if it
        ranks in the rung's top ``1/eta`` (NaN ranks last and is never promoted). The walk
        ``promotion_at`` makes over the top, skipping the trials promoted or ended already,
        would stop at the same trial; here it costs a lookup, however many were skipped."""
        if not self._open[k]:
            return None
        key, tid = self._open[k][0]
        n_top = top_count(len(self._order[k]), self.reduction_factor, self.early_promotion)
        if key[0] or bisect.bisect_left(self._order[k], (key, tid)) >= n_top:
            return None
        return first_paused((tid,), trials, self.budgets[k], self.budgets[k + 1], paused)

    def first_promotion(self, trials: Mapping[str, Trial], paused: str | None = None) -> Trial | Idle | None:
        """The promotion from the highest rung that has one."""
        for k in range(len(self.budgets) - 2, -1, -1):
            promotion = self.promotion(trials, k, paused)
            if promotion is not None:
                return promotion
        return None
