"""Learning-curve prediction: stop a trial that will probably not beat the best finished trial.

After Domhan, Springenberg, Hutter: "Speeding up Automatic Hyperparameter Optimization of Deep
Neural Networks by Extrapolation of Learning Curves", IJCAI 2015, and the original Maggy's
"performance curve prediction" early stopping. A running trial's metric history is fitted with
an ensemble of parametric learning-curve families, extrapolated to the end of the trial's budget,
and the trial is stopped when the probability that it beats the best finished result is below a
threshold.

The model, in the "max" orientation (for ``direction="min"`` every value is negated first, so
both directions make exactly the same decisions). Epoch ``x = 1, 2, ...`` has value ``y_x``.

* Families (each non-decreasing and concave in x: learning with diminishing returns): every
  family is ``y = c + b * g(x; theta)`` with ``b >= 0`` and a shape parameter ``theta``:

  ==============  ==================================  ==============================  ======
  name            curve                               shape grid                      params
  ==============  ==================================  ==============================  ======
  ``pow3``        ``c - a * x**-alpha``               alpha: 24 in [0.05, 4]          3
  ``log_linear``  ``c + b * log(x)``                  (none)                          2
  ``ilog2``       ``c - a / log(x + 1)``              (none)                          2
  ``exp3``        ``c - a * exp(-beta * x)``          beta: 24 in [0.005, 3]          3
  ``janoschek``   ``c - a * exp(-kappa * x**delta)``  kappa: 12 in [0.005, 3],        4
                                                      delta in {0.3, 0.5, 0.7}
  ``mmf``         ``c - a / (1 + (kappa*x)**delta)``  kappa: 12 in [0.005, 3],        4
                                                      delta in {0.5, 0.75, 1}
  ==============  ==================================  ==============================  ======

  (the alpha, beta and kappa grids are geometric; a, b >= 0.) These are Domhan et al.'s pow3, log-linear, ilog2,
  exp3, Janoschek and MMF; their sigmoidal shapes are left out (delta <= 1), since a concave
  family never predicts a late acceleration the data do not show.
* Fit: for each theta of the grid, ``(c, b)`` is the closed-form least-squares line of y on
  ``g(x; theta)`` (with ``b`` clipped at 0); the theta with the smallest residual sum of squares
  RSS wins (variable projection over a grid: numpy only, no iterations, about a millisecond).
* Uncertainty of one family at the horizon T: a normal with the fitted mean ``c + b g(T)`` and
  the least-squares prediction variance ``s2 * (1 + 1/n + (g(T) - mean g)**2 / Sxx)``, where
  ``s2 = RSS / max(n - params, 1)`` is the residual noise; the leverage term grows with the
  distance of the horizon from the data.
* Ensemble: the families are mixed with Akaike weights ``exp(-AIC/2)``, ``AIC = n log(RSS/n) +
  2 params``, so the spread between families adds to the uncertainty.
* Decision: with ``y_best`` the best value any finished trial reached, the probability that the
  trial beats it is the mixture's ``P(Y_T > y_best)`` (every fitted curve is non-decreasing, so
  its value at T is also its best). A trial whose best value so far already equals or beats
  ``y_best`` has probability 1 and is never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_maggy.earlystop.base import AbstractEarlyStop
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.trial import Trial, TrialState

__all__ = [
    "FAMILIES",
    "CurveFit",
    "CurvePredictionRule",
    "best_finished",
    "fit_curves",
    "probability_to_beat",
]

_DIRECTIONS = ("max", "min")

_ALPHAS = np.geomspace(0.05, 4.0, 24)
_BETAS = np.geomspace(0.005, 3.0, 24)
_KAPPAS = np.geomspace(0.005, 3.0, 12)
_JANOSCHEK_DELTAS = np.array([0.3, 0.5, 0.7])
_MMF_DELTAS = np.array([0.5, 0.75, 1.0])


def _pow3(x: np.ndarray) -> np.ndarray:
    return -(x[None, :] ** -_ALPHAS[:, None])


def _log_linear(x: np.ndarray) -> np.ndarray:
    return np.log(x)[None, :]


def _ilog2(x: np.ndarray) -> np.ndarray:
    return (-1.0 / np.log(x + 1.0))[None, :]


def _exp3(x: np.ndarray) -> np.ndarray:
    return -np.exp(-_BETAS[:, None] * x[None, :])


def _janoschek(x: np.ndarray) -> np.ndarray:
    kappa, delta = np.meshgrid(_KAPPAS, _JANOSCHEK_DELTAS, indexing="ij")
    return -np.exp(-kappa.reshape(-1, 1) * x[None, :] ** delta.reshape(-1, 1))


def _mmf(x: np.ndarray) -> np.ndarray:
    kappa, delta = np.meshgrid(_KAPPAS, _MMF_DELTAS, indexing="ij")
    return -1.0 / (1.0 + (kappa.reshape(-1, 1) * x[None, :]) ** delta.reshape(-1, 1))


#: name -> (number of parameters, basis): ``basis(x)`` is the matrix ``g(x; theta)`` with one row
#: per theta of the family's grid, each row non-decreasing and concave in x.
FAMILIES: Mapping[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "pow3": (3, _pow3),
    "log_linear": (2, _log_linear),
    "ilog2": (2, _ilog2),
    "exp3": (3, _exp3),
    "janoschek": (4, _janoschek),
    "mmf": (4, _mmf),
}


@dataclasses.dataclass(frozen=True)
class CurveFit:
    """One family's extrapolation to the horizon.

    Attributes:
        family: the family's name (a key of :data:`FAMILIES`).
        mean: the predicted value at the horizon.
        std: the standard deviation of that prediction (noise and extrapolation).
        weight: the family's Akaike weight in the ensemble (weights sum to 1).
        rss: the residual sum of squares of the fit.
    """

    family: str
    mean: float
    std: float
    weight: float
    rss: float


def fit_curves(
    epochs: Sequence[float], values: Sequence[float], horizon: float, families: Iterable[str] = tuple(FAMILIES)
) -> list[CurveFit]:
    """Fits every family to ``values`` at ``epochs`` (maximizing orientation) and extrapolates
    each to ``horizon``; see the module docstring for the model.

    Args:
        epochs: the x of each value (1-based epoch numbers), at least 3, increasing.
        values: the finite values, as many as ``epochs``.
        horizon: the x to predict (normally the trial's budget).
        families: names of :data:`FAMILIES` to fit.

    Raises:
        ValueError: fewer than 3 points, or lengths that differ.
    """
    x = np.asarray(epochs, dtype=float)
    y = np.asarray(values, dtype=float)
    n = len(y)
    if n < 3 or len(x) != n:
        raise ValueError(
            f"fit_curves: needs at least 3 (epoch, value) pairs of equal length, got {len(x)} and {n}."
        )
    x_all = np.append(x, float(horizon))
    # Fit in units of the largest |value| (least squares is affine-equivariant): no overflow.
    scale = float(np.max(np.abs(y))) or 1.0
    y = y / scale
    y_mean = float(y.mean())
    y_c = y - y_mean
    syy = float(y_c @ y_c)
    floor = 1e-12 * (syy / n) + 1e-300  # keeps log(RSS) finite for a perfect fit
    fits: list[tuple[str, float, float, float, float]] = []  # name, mean, std, aic, rss
    for name in families:
        params, basis = FAMILIES[name]
        g_all = basis(x_all)
        g, g_t = g_all[:, :n], g_all[:, n]
        g_mean = g.mean(axis=1)
        g_c = g - g_mean[:, None]
        sxx = np.einsum("ij,ij->i", g_c, g_c)
        sxy = g_c @ y_c
        usable = sxx > 1e-14
        slope = np.where(usable, sxy / np.where(usable, sxx, 1.0), 0.0)
        slope = np.maximum(slope, 0.0)  # non-decreasing curves only
        rss_all = syy - 2.0 * slope * sxy + slope**2 * sxx
        i = int(np.argmin(rss_all))
        b = float(slope[i])
        residual = y_c - b * g_c[i]
        rss = float(residual @ residual)
        leverage = (g_t[i] - g_mean[i]) ** 2 / sxx[i] if usable[i] else 0.0
        s2 = rss / max(n - params, 1)
        mean = y_mean + b * float(g_t[i] - g_mean[i])
        std = math.sqrt(s2 * (1.0 + 1.0 / n + float(leverage)))
        aic = n * math.log(max(rss / n, floor)) + 2.0 * params
        fits.append((name, scale * mean, scale * std, aic, scale * scale * rss))
    best_aic = min(f[3] for f in fits)
    raw = [math.exp(-(f[3] - best_aic) / 2.0) for f in fits]
    total = math.fsum(raw)
    return [
        CurveFit(family=name, mean=mean, std=std, weight=w / total, rss=rss)
        for (name, mean, std, _, rss), w in zip(fits, raw)
    ]


def _prob_above(mean: float, std: float, target: float) -> float:
    """``P(Y > target)`` for ``Y ~ Normal(mean, std**2)`` (a point mass when ``std == 0``)."""
    if not std > 0.0:
        return 1.0 if mean > target else 0.0
    return 0.5 * math.erfc((target - mean) / (std * math.sqrt(2.0)))


def probability_to_beat(
    history: Sequence[float], horizon: int, target: float, families: Iterable[str] = tuple(FAMILIES)
) -> float:
    """The probability that a trial with ``history`` (maximizing) ends above ``target`` at
    epoch ``horizon``: 1 if its best finite value already reaches ``target``, else the
    ensemble's ``P(Y_horizon > target)``. NaN and infinite values are left out of the fit.

    Raises:
        ValueError: fewer than 3 finite values (when the best value is below ``target``), or a
            ``target`` that is not finite.
    """
    if not math.isfinite(target):
        raise ValueError(f"probability_to_beat: target={target!r} must be a finite number.")
    points = [(e + 1.0, float(v)) for e, v in enumerate(history) if math.isfinite(v)]
    if points and max(v for _, v in points) >= target:
        return 1.0
    # Compare in units of the largest |value| or |target|, so that nothing overflows.
    scale = max([abs(target)] + [abs(v) for _, v in points]) or 1.0
    fits = fit_curves([e for e, _ in points], [v / scale for _, v in points], horizon, families)
    return min(1.0, math.fsum(f.weight * _prob_above(f.mean, f.std, target / scale) for f in fits))


def best_finished(histories: Iterable[Sequence[float]], direction: str) -> tuple[float, int]:
    """The best finite value in ``direction`` over all ``histories``, and how many histories
    have a finite value; ``(nan, 0)`` if none has. NaN and infinite values are left out."""
    best = math.nan
    count = 0
    for history in histories:
        values = [float(v) for v in history if math.isfinite(v)]
        if not values:
            continue
        count += 1
        value = max(values) if direction == "max" else min(values)
        if best != best or (value > best if direction == "max" else value < best):
            best = value
    return best, count


def _check_int(name: str, value: Any, minimum: int, meaning: str, example: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(
            f"CurvePredictionRule({name}={value!r}): {name} must be an int >= {minimum} ({meaning}); "
            f"e.g. CurvePredictionRule({name}={example})."
        )


class CurvePredictionRule(AbstractEarlyStop):
    """Stops a running trial whose extrapolated learning curve will probably not beat the best
    finished trial (Domhan et al., IJCAI 2015; the original Maggy's performance curve
    prediction).

    At every report the rule fits the trial's history with an ensemble of parametric learning
    curves (pow3, log-linear, ilog2, exp3, Janoschek, MMF; least squares per family, Akaike
    weights across families), extrapolates it to the trial's **horizon, ``trial.budget``** (the
    epochs of its current assignment: ``max_epochs`` for random and grid search, the rung for
    ASHA and Hyperband), and computes the probability that the trial's value there beats the
    best value any finished trial reached (failed trials excluded). The trial is stopped when
    that probability is below ``threshold``. The model is described in
    :mod:`lightning_maggy.earlystop.curve`.

    The rule decides only when the trial has reported at least ``grace_period`` values (3 of
    them finite), has epochs left (``len(history) < budget``), and at least ``min_trials``
    finished trials have a finite value. It never stops a trial whose best value so far is at
    least as good as the best finished value. Negating every value and flipping the direction
    gives the same decisions; a larger threshold stops a superset of the trials.

    Args:
        threshold: stop when ``P(final value beats the best finished) < threshold``, a
            probability in (0, 1); Domhan et al. use 0.05. Larger stops more.
        grace_period: values a trial reports before it may be judged (int >= 3: a fit with a
            noise estimate needs 3 points). More makes the extrapolation more reliable.
        min_trials: finished trials needed before any decision (int >= 1).
        families: names of the curve families to use (default all of :data:`FAMILIES`).

    Example::

        lm.search(MyModule, space, optimizer="random", early_stop=lm.CurvePredictionRule(threshold=0.05), ...)
    """

    def __init__(
        self,
        threshold: float = 0.05,
        grace_period: int = 4,
        min_trials: int = 3,
        families: Sequence[str] | None = None,
    ) -> None:
        if (
            not isinstance(threshold, numbers.Real)
            or isinstance(threshold, bool)
            or not 0.0 < float(threshold) < 1.0
        ):
            raise ConfigurationError(
                f"CurvePredictionRule(threshold={threshold!r}): threshold must be a probability "
                "strictly between 0 and 1 (stop a trial when the probability that it beats the best "
                "finished trial is below it); e.g. CurvePredictionRule(threshold=0.05)."
            )
        _check_int("grace_period", grace_period, 3, "values a trial reports before it may be judged", 4)
        _check_int("min_trials", min_trials, 1, "finished trials needed before stopping any", 3)
        if families is None:
            chosen = tuple(FAMILIES)
        else:
            if isinstance(families, str) or not isinstance(families, Iterable):
                raise ConfigurationError(
                    f"CurvePredictionRule(families={families!r}): families must be a list of names "
                    f"from {list(FAMILIES)}, e.g. families=['pow3', 'exp3'], or None for all."
                )
            chosen = tuple(families)
            unknown = [f for f in chosen if f not in FAMILIES]
            if unknown or not chosen:
                raise ConfigurationError(
                    f"CurvePredictionRule(families={families!r}): "
                    + (f"unknown {unknown}; " if unknown else "no family given; ")
                    + f"choose one or more of {list(FAMILIES)}, or None for all."
                )
        self.threshold = float(threshold)
        self.grace_period = int(grace_period)
        self.min_trials = int(min_trials)
        self.families = chosen

    def __repr__(self) -> str:
        return (
            f"CurvePredictionRule(threshold={self.threshold}, grace_period={self.grace_period}, "
            f"min_trials={self.min_trials}, families={list(self.families)})"
        )

    def probability(
        self, history: Sequence[float], horizon: int, finalized: Sequence[Sequence[float]], direction: str
    ) -> float | None:
        """The probability that a trial with ``history`` beats the best of ``finalized`` by
        epoch ``horizon``, or None when the rule does not judge it (see the class docstring)."""
        steps = len(history)
        if steps < self.grace_period or steps >= horizon:
            return None
        if sum(1 for v in history if math.isfinite(v)) < 3:
            return None
        best, counted = best_finished(finalized, direction)
        if counted < self.min_trials:
            return None
        sign = 1.0 if direction == "max" else -1.0
        oriented = [sign * float(v) for v in history]
        return probability_to_beat(oriented, horizon, sign * best, self.families)

    def should_stop(
        self, history: Sequence[float], horizon: int, finalized: Sequence[Sequence[float]], direction: str
    ) -> bool:
        """The decision for one trial; see the class docstring."""
        p = self.probability(history, horizon, finalized, direction)
        return p is not None and p < self.threshold

    def earlystop_check(
        self,
        to_check: Mapping[str, Trial],
        finalized_trials: Sequence[Trial],
        direction: str,
    ) -> list[str]:
        """The ids in ``to_check`` (in its order) to stop now; each trial's horizon is its
        ``budget``."""
        if direction not in _DIRECTIONS:
            raise ConfigurationError(f"direction={direction!r} must be one of {list(_DIRECTIONS)}.")
        finalized = [t.history for t in finalized_trials if t.state is not TrialState.FAILED]
        return [
            tid
            for tid, trial in to_check.items()
            if self.should_stop(trial.history, trial.budget, finalized, direction)
        ]
