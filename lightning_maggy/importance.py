"""Hyperparameter importance of a study: how much each hyperparameter explains the variation of
the trials' scores (:func:`importance`), the data behind ``importance.png`` of
:meth:`~lightning_maggy.results.SearchResult.plot`.

Scores are :func:`~lightning_maggy.trial.trial_value` under the study's ``scope`` (FAILED and
NaN trials left out). scikit-learn is optional: with it, a random forest and permutation
importance; without it, the bias-corrected correlation ratio of each hyperparameter (numpy only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_maggy.exceptions import SearchspaceError
from lightning_maggy.trial import Trial, trial_value

__all__ = ["MIN_IMPORTANCE_TRIALS", "Importance", "importance"]

#: Fewer scored trials than this: no importance (``plot()`` warns and leaves its figure out).
MIN_IMPORTANCE_TRIALS = 5


@dataclasses.dataclass(frozen=True)
class Importance:
    """Hyperparameter importance, most important first.

    Attributes:
        names: the hyperparameters.
        scores: their importance (see :func:`importance` for what the number means per method).
        std: the spread of each score over the permutation repeats ("forest"); zeros for "eta".
        method: "forest" or "eta".
        n_trials: how many scored trials it was computed from.
        budget: the epoch the scores were taken at, or None for the trials' final scores.
    """

    names: tuple[str, ...]
    scores: np.ndarray
    std: np.ndarray
    method: str
    n_trials: int
    budget: int | None = None


def _encode(configs: Sequence[Mapping[str, Any]], space: Any) -> tuple[list[str], np.ndarray, list[bool]]:
    """The configurations as a matrix, and which columns are categorical. With the search space
    its own encoding (the unit cube, log dimensions in log); without it numbers as they are
    (log10 when positive over two decades or more), booleans 0/1, anything else as codes."""
    if space is not None:
        try:
            X = np.array([space.encode(c) for c in configs], dtype=float)
            return space.names(), X, [type(hp).__name__ == "Categorical" for _, hp in space.items()]
        except (SearchspaceError, TypeError, ValueError):  # configs outside the space: encode them plainly
            pass
    names: list[str] = []
    for c in configs:
        names += [k for k in c if k not in names]
    columns, categorical = [], []
    for name in names:
        values = [c.get(name) for c in configs]
        if all(isinstance(v, (int, float)) for v in values):
            x = np.array(values, dtype=float)
            if not any(isinstance(v, bool) for v in values) and x.min() > 0 and x.max() >= 100 * x.min():
                x = np.log10(x)
            columns.append(x)
            categorical.append(False)
        else:
            codes = {v: i for i, v in enumerate(sorted({repr(v) for v in values}))}
            columns.append(np.array([codes[repr(v)] for v in values], dtype=float))
            categorical.append(True)
    return names, np.column_stack(columns), categorical


def _epsilon_squared(x: np.ndarray, y: np.ndarray, categorical: bool, bins: int) -> float:
    """The bias-corrected correlation ratio of ``y`` on the groups of ``x`` (a categorical's
    values; a number's quantile bins), clipped at 0."""
    if categorical or len(np.unique(x)) <= bins:
        groups = np.unique(x, return_inverse=True)[1]
    else:
        groups = np.searchsorted(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]), x, side="right")
    total = float(np.sum((y - y.mean()) ** 2))
    labels = np.unique(groups)
    if total == 0.0 or len(labels) < 2:
        return 0.0
    between = sum(float(np.sum(groups == g)) * (y[groups == g].mean() - y.mean()) ** 2 for g in labels)
    within_ms = (total - between) / max(1, len(y) - len(labels))
    return max(0.0, (between - (len(labels) - 1) * within_ms) / total)


def importance(
    trials: Sequence[Trial],
    direction: str,
    scope: str = "last",
    *,
    space: Any = None,
    budget: int | None = None,
    method: str = "auto",
    seed: int = 0,
) -> Importance:
    """How much each hyperparameter explains the variation of the scores.

    Two methods (``method=``):

    - "forest" (the default when scikit-learn is installed): a ``RandomForestRegressor`` (100
      trees) fitted on the encoded configurations, and the permutation importance of each
      hyperparameter (scikit-learn's ``permutation_importance``, 10 repeats): the mean drop of
      the forest's R² when that column is shuffled. A categorical is one column of codes, so it
      is permuted as a whole.
    - "eta" (the fallback without scikit-learn): per hyperparameter, the correlation ratio of
      the scores on its values (a categorical's values; a number's quantile bins, up to 5),
      bias-corrected (epsilon squared): the share of the variance its main effect explains, as a
      first-order fANOVA term; about 0 for a hyperparameter that does not matter.

    Args:
        trials: the trial records; those without a score are left out.
        direction: "max" or "min".
        scope: "last" or "all" (as for :func:`best_so_far`).
        space: the :class:`~lightning_maggy.searchspace.Searchspace`, whose encoding is used
            (log dimensions in log); None encodes the values plainly.
        budget: compare the trials at this epoch (e.g. ASHA's bottom rung, which every trial
            trained): each trial's score on its first ``budget`` epochs; trials that trained
            fewer are left out. None: their final scores.
        method: "auto", "forest" or "eta".
        seed: the seed of the forest and the permutations.

    Raises:
        ValueError: fewer than :data:`MIN_IMPORTANCE_TRIALS` scored trials, or an unknown method.
        ImportError: ``method="forest"`` without scikit-learn.
    """
    scored = []
    for t in trials:
        if budget is not None:
            if len(t.history) < budget:
                continue
            t = t.evolve(history=t.history[:budget], final_metric=t.history[budget - 1])
        value = trial_value(t, direction, scope)
        if value is not None:
            scored.append((t.config, value))
    if len(scored) < MIN_IMPORTANCE_TRIALS:
        raise ValueError(f"importance needs at least {MIN_IMPORTANCE_TRIALS} scored trials, got {len(scored)}")
    if method == "auto":
        try:
            import sklearn.ensemble  # noqa: F401
        except ImportError:
            method = "eta"
        else:
            method = "forest"
    if method not in ("forest", "eta"):
        raise ValueError(f"method={method!r}: expected 'auto', 'forest' or 'eta'")
    names, X, categorical = _encode([c for c, _ in scored], space)
    y = np.array([v for _, v in scored], dtype=float)
    std = np.zeros(len(names))
    if method == "eta":
        scores = np.array([_epsilon_squared(X[:, j], y, categorical[j], max(2, min(5, len(y) // 5))) for j in range(len(names))])
    elif np.ptp(y) == 0:
        scores = np.zeros(len(names))
    else:
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.inspection import permutation_importance

        forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1).fit(X, y)
        perm = permutation_importance(forest, X, y, n_repeats=10, random_state=seed, n_jobs=1)
        scores, std = perm.importances_mean, perm.importances_std
    order = np.argsort(-scores, kind="stable")
    return Importance(tuple(names[j] for j in order), scores[order], std[order], method, len(y), budget)
