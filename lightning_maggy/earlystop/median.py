"""The median stopping rule.

Golovin et al., "Google Vizier: A Service for Black-Box Optimization", KDD 2017: stop a trial at
step t if its best value so far is worse than the median of the running averages of the
finished trials at step t.
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightning_maggy.earlystop.base import AbstractEarlyStop
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.trial import Trial, TrialState

__all__ = ["MedianStoppingRule", "best_so_far", "median_of_running_averages", "running_average"]

_DIRECTIONS = ("max", "min")


def running_average(history: Sequence[float], t: int) -> float:
    """The mean of ``history[: t + 1]`` (the values of steps 0..t), NaN left out: an epoch
    without validation (``check_val_every_n_epoch`` > 1) is a NaN hole in a history. NaN if
    every value is NaN.

    Raises:
        ValueError: if ``t`` is negative or ``history`` has fewer than ``t + 1`` values.
    """
    if t < 0 or len(history) < t + 1:
        raise ValueError(f"running_average: step t={t} needs at least t + 1 values, got {len(history)}.")
    values = [float(v) for v in history[: t + 1] if v == v]
    return math.fsum(values) / len(values) if values else math.nan


def median_of_running_averages(histories: Iterable[Sequence[float]], t: int) -> tuple[float, int]:
    """The median of the running averages at step ``t`` of every history with at least ``t + 1``
    values, and how many histories counted. NaN averages are left out. Returns ``(nan, 0)`` if
    none counted."""
    averages = [running_average(h, t) for h in histories if len(h) >= t + 1]
    averages = [a for a in averages if a == a]
    if not averages:
        return math.nan, 0
    return float(statistics.median(averages)), len(averages)


def best_so_far(history: Sequence[float], t: int, direction: str) -> float:
    """The best of ``history[: t + 1]`` in ``direction`` ("max" or "min"), ignoring NaN; NaN if
    every value is NaN."""
    values = [float(v) for v in history[: t + 1] if v == v]
    if not values:
        return math.nan
    return max(values) if direction == "max" else min(values)


def _check_int(name: str, value: Any, minimum: int, meaning: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(
            f"MedianStoppingRule({name}={value!r}): {name} must be an int >= {minimum} ({meaning}); "
            f"e.g. MedianStoppingRule({name}={max(minimum, 1)})."
        )


class _StepAverages:
    """Every kept trial's running averages, one sorted list per step (NaN left out), so that the
    median at step t is read off the middle of its list."""

    def __init__(self) -> None:
        self._trials: dict[int, Trial] = {}  # id() -> the record (held, so the id stays its own)
        self._steps: list[list[float]] = []
        self._source: tuple[Trial, ...] | None = None  # the tuple last brought in (held too)

    def _averages(self, trial: Trial) -> list[float]:
        """:func:`running_average` at every step, in one pass."""
        out, total, count = [], 0.0, 0
        for v in trial.history:
            if v == v:
                total, count = total + float(v), count + 1
            out.append(total / count if count else math.nan)
        return out

    def update(self, source: tuple[Trial, ...]) -> None:
        """Brings the kept averages to ``source``'s trials (FAILED ones left out); nothing to do
        if it is the tuple last brought in."""
        if source is self._source:
            return
        self._source = source
        now = {id(t): t for t in source if t.state is not TrialState.FAILED}
        for key in [k for k in self._trials if k not in now]:
            for t, a in enumerate(self._averages(self._trials.pop(key))):
                if a == a:
                    steps = self._steps[t]
                    del steps[bisect.bisect_left(steps, a)]
        for key, trial in now.items():
            if key not in self._trials:
                self._trials[key] = trial
                for t, a in enumerate(self._averages(trial)):
                    if t == len(self._steps):
                        self._steps.append([])
                    if a == a:
                        bisect.insort(self._steps[t], a)

    def median(self, t: int) -> tuple[float, int]:
        """As :func:`median_of_running_averages` over the kept trials."""
        values = self._steps[t] if t < len(self._steps) else []
        if not values:
            return math.nan, 0
        mid = len(values) // 2
        return (values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2), len(values)


class MedianStoppingRule(AbstractEarlyStop):
    """Stops a running trial whose best value so far is worse than the median of the finished
    trials' running averages at the same step.

    At step t (the trial has reported ``t + 1`` values, ``t = len(history) - 1``) the rule
    compares the trial's best value over ``history[: t + 1]`` with the median, over the finished
    trials that have at least ``t + 1`` values, of ``mean(history[: t + 1])``. It decides only if
    at least ``min_trials`` finished trials count, ``t + 1 >= grace_period`` and
    ``(t + 1) % interval == 0``, and never at the last epoch of the trial's budget (stopping
    there saves nothing, and the trial trained in full). A trial whose values so far are all
    NaN is stopped once a median exists. NaN values are left out of the running averages: an
    epoch without validation (``check_val_every_n_epoch`` > 1) leaves a NaN hole in a history.

    Args:
        min_trials: finished trials needed at step t before any decision (int >= 1).
        interval: decide only every ``interval`` steps (int >= 1).
        grace_period: never stop before a trial reported this many values (int >= 1).
    """

    def __init__(self, min_trials: int = 3, interval: int = 1, grace_period: int = 1) -> None:
        _check_int("min_trials", min_trials, 1, "finished trials needed before stopping any")
        _check_int("interval", interval, 1, "steps between two decisions")
        _check_int("grace_period", grace_period, 1, "values a trial reports before it may stop")
        self.min_trials = int(min_trials)
        self._kept: _StepAverages | None = None
        self.interval = int(interval)
        self.grace_period = int(grace_period)

    def __repr__(self) -> str:
        return (
            f"MedianStoppingRule(min_trials={self.min_trials}, interval={self.interval}, "
            f"grace_period={self.grace_period})"
        )

    def should_stop(self, history: Sequence[float], finalized: Sequence[Sequence[float]], direction: str) -> bool:
        """The decision for one trial's ``history`` against the finished trials' histories."""
        return self._should_stop(history, lambda t: median_of_running_averages(finalized, t), direction)

    def _should_stop(self, history: Sequence[float], median_at: Callable[[int], tuple[float, int]], direction: str) -> bool:
        steps = len(history)
        if steps == 0 or steps < self.grace_period or steps % self.interval != 0:
            return False
        t = steps - 1
        median, counted = median_at(t)
        if counted < self.min_trials:
            return False
        best = best_so_far(history, t, direction)
        if best != best:
            return True
        return best < median if direction == "max" else best > median

    def earlystop_check(
        self,
        to_check: Mapping[str, Trial],
        finalized_trials: Sequence[Trial],
        direction: str,
    ) -> list[str]:
        """The ids in ``to_check`` (in its order) to stop now; see the class docstring."""
        if direction not in _DIRECTIONS:
            raise ConfigurationError(f"direction={direction!r} must be one of {list(_DIRECTIONS)}.")
        median_at = self._medians(finalized_trials)
        return [
            tid for tid, trial in to_check.items()
            if (trial.budget is None or len(trial.history) < trial.budget)
            and self._should_stop(trial.history, median_at, direction)
        ]

    def _medians(self, finalized_trials: Sequence[Trial]) -> Callable[[int], tuple[float, int]]:
        """The median at step t of ``finalized_trials``. For a tuple (what the controller
        passes: the same object until a finished trial changes) the running averages are kept
        sorted per step (:class:`_StepAverages`) and brought up to date with the trials that
        entered or left it, so a report costs a lookup, not a pass over every finished trial.
        Any other sequence is read afresh."""
        if not isinstance(finalized_trials, tuple):
            histories = [t.history for t in finalized_trials if t.state is not TrialState.FAILED]
            return functools.lru_cache(maxsize=None)(lambda t: median_of_running_averages(histories, t))
        if self._kept is None:
            self._kept = _StepAverages()
        self._kept.update(finalized_trials)
        return self._kept.median
