"""Plots of a study, for :meth:`~lightning_maggy.results.SearchResult.plot`:
the optimization history, the learning curves and the hyperparameter importance, as PNG files.

The figures are drawn from small pure functions that can be used (and tested) on their own:
:func:`best_so_far` (the series behind the history), :func:`infer_rungs` (the rung lines of the
learning curves) and :func:`~lightning_maggy.importance.importance` (the bars). Scores are
:func:`~lightning_maggy.trial.trial_value` under the result's ``scope``, so the history ends at
``result.best_metric``.

matplotlib (``pip install 'lightning_maggy[plot]'``) is imported only when a figure is drawn,
and figures are rendered with its Agg canvas directly: ``pyplot``, and the backend a notebook or
an application chose, are left alone. scikit-learn is optional (see :func:`~lightning_maggy.importance.importance`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lightning_maggy.exceptions import SearchspaceError
from lightning_maggy.importance import Importance, importance
from lightning_maggy.trial import Trial, trial_value

__all__ = ["BestSoFar", "Report", "best_so_far", "infer_rungs", "plot_result"]

_HINT = "pip install 'lightning_maggy[plot]'"
_STATE_COLORS = {"COMPLETED": "#2e86c1", "STOPPED": "#e67e22", "PAUSED": "#8e44ad", "FAILED": "#c0392b",
                 "RUNNING": "#27ae60", "LOST": "#7f8c8d", "PENDING": "#bdc3c7"}


class Report(NamedTuple):
    """One metric report of the journal: when, which trial, which epoch (0-based), its value."""

    time: float
    trial_id: str
    epoch: int
    value: float


@dataclasses.dataclass(frozen=True)
class BestSoFar:
    """The optimization history: one point per scored trial, in the order the scores were recorded.

    Attributes:
        time: seconds since the study's start at which each trial's score was recorded (NaN
            when no record has a timestamp).
        epochs: epochs trained by then, by all trials together.
        value: the best score so far (monotone in the study's direction; the last one is the
            result's ``best_metric``).
        score: each trial's own score (:func:`~lightning_maggy.trial.trial_value`).
        trial_ids: whose score each point is.
    """

    time: np.ndarray
    epochs: np.ndarray
    value: np.ndarray
    score: np.ndarray
    trial_ids: tuple[str, ...]


def _when(trial: Trial) -> float | None:
    """The latest timestamp a record has (finished, else started, else created)."""
    return next((float(t) for t in (trial.finished, trial.started, trial.created) if t is not None), None)


def _score_time(trial: Trial, score: float, scope: str, reports: Sequence[Report]) -> float | None:
    """When the trial's score was recorded: its report that first reached the score (scope
    "all"), else its last report, else the record's latest timestamp."""
    first = next((r.time for r in reports if r.value == score), None) if scope == "all" else None
    return first if first is not None else reports[-1].time if reports else _when(trial)


def best_so_far(
    trials: Sequence[Trial],
    direction: str,
    scope: str = "last",
    *,
    reports: Sequence[Report] = (),
    start: float | None = None,
) -> BestSoFar:
    """The best score so far, against wall time and against epochs trained.

    Each scored trial (a :func:`~lightning_maggy.trial.trial_value` that is not None: FAILED and
    NaN trials are left out) adds one point when its final score was recorded, and the curve is
    the running best of those scores, so it is monotone and ends at the best trial's score. A
    trial paused at a rung and promoted later counts once, with its final score.

    Args:
        trials: the trial records (``result.trials``, in the order they started).
        direction: "max" or "min".
        scope: "last" or "all" (see :data:`~lightning_maggy.trial.SCOPES`).
        reports: the journal's metric reports. With them, a score is timed by the report that
            recorded it and the epochs axis counts every report up to then; without them, by
            the record's ``finished`` (else ``started``, ``created``; none: the previous
            record's) timestamp, and each trial's epochs count from that time on (so the epochs
            of trials still running then are counted late).
        start: the study's start (UNIX time); default: the earliest timestamp known.
    """
    by_trial: dict[str, list[Report]] = {}
    for r in sorted(reports, key=lambda r: r.time):
        by_trial.setdefault(r.trial_id, []).append(r)
    ends: list[float | None] = []  # when each trial's last epoch was recorded
    points: list[tuple[int, str, float, float | None]] = []  # (index, id, score, when recorded)
    for i, t in enumerate(trials):
        own = by_trial.get(t.trial_id, [])
        ends.append(own[-1].time if own else _when(t))
        score = trial_value(t, direction, scope)
        if score is not None:
            points.append((i, t.trial_id, score, _score_time(t, score, scope, own)))
    known = [x for x in [*ends, *(p[3] for p in points), *(t.created for t in trials)] if x is not None]
    origin = start if start is not None else (min(known) if known else None)
    # A record without a timestamp takes the previous one's (records are in the order they
    # started); sorting by (seconds, index) keeps the list order when nothing is timed.
    end_keys = _keys(ends, origin)
    point_keys = [end_keys[i] if when is None or origin is None else (when - origin, i) for i, _, _, when in points]
    order = sorted(range(len(points)), key=lambda k: point_keys[k])
    timed = origin is not None
    time = np.array([point_keys[k][0] if timed else math.nan for k in order], dtype=float)
    if reports:
        report_times = np.sort(np.array([r.time for r in reports], dtype=float))
        epochs = np.searchsorted(report_times, time + origin, side="right").astype(float)  # type: ignore[operator]
    else:  # a trial's epochs count from its end on
        done = sorted(zip(end_keys, (t.epochs_done for t in trials)))
        epochs, total, j = np.zeros(len(order)), 0, 0
        for n, k in enumerate(order):
            while j < len(done) and done[j][0] <= point_keys[k]:
                total, j = total + done[j][1], j + 1
            epochs[n] = total
    score = np.array([points[k][2] for k in order], dtype=float)
    running = np.maximum.accumulate(score) if direction == "max" else np.minimum.accumulate(score)
    return BestSoFar(time, epochs, running, score, tuple(points[k][1] for k in order))


def _keys(times: Sequence[float | None], origin: float | None) -> list[tuple[float, int]]:
    """(seconds since ``origin``, index) per trial; a missing time takes the previous one's."""
    out, last = [], 0.0
    for i, when in enumerate(times):
        if when is not None and origin is not None:
            last = when - origin
        out.append((last, i))
    return out


def infer_rungs(trials: Sequence[Trial], experiment: Mapping[str, Any] | None = None) -> tuple[list[int], str]:
    """The rung budgets (epochs) of a study that paused trials at rungs, and where they came from.

    First from ``experiment.json``: an optimizer recorded with ``reduction_factor`` and
    ``resource_min`` (ASHA, Hyperband, BOHB; Hyperband's brackets use subsets of the same rungs)
    gives :func:`~lightning_maggy.optimizers.asha.rung_budgets` of its settings, rungs that no
    trial reached included. Otherwise the distinct ``budget`` values of the trials, when there
    are at least two (one budget for every trial means no rungs).

    Returns:
        (rungs, source): the sorted budgets ([] when none) and a short text naming the source.
    """
    experiment = experiment or {}
    settings = experiment.get("optimizer_settings")
    if isinstance(settings, Mapping) and "reduction_factor" in settings and "resource_min" in settings:
        from lightning_maggy.optimizers.asha import rung_budgets

        top = settings.get("resource_max") or experiment.get("max_epochs")
        try:
            rungs = rung_budgets(int(settings["resource_min"]), settings["reduction_factor"], int(top))
            return rungs, f"{experiment.get('optimizer', 'optimizer')} settings in experiment.json"
        except (TypeError, ValueError, ArithmeticError):  # incomplete or odd settings: infer from the trials
            pass
    budgets = sorted({int(t.budget) for t in trials if t.budget})
    return (budgets, "distinct trial budgets") if len(budgets) > 1 else ([], "")


# -- the figures -----------------------------------------------------------------------------


def agg_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure(**kwargs)).figure


def _history_figure(result: Any, bsf: BestSoFar, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig = agg_figure(figsize=(11, 4.2))
    axes, legend = fig.subplots(1, 2, sharey=True), None
    for ax, x, label in ((axes[0], bsf.time, "wall time since the study's start (s)"),
                         (axes[1], bsf.epochs, "epochs trained, all trials together")):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        if not len(x) or np.isnan(x).all():
            ax.text(0.5, 0.5, "no scored trial" if not len(x) else "no timestamps in the records",
                    ha="center", va="center", transform=ax.transAxes, color="#555555")
            continue
        legend = ax
        ax.scatter(x, bsf.score, s=14, color="#95a5a6", label="a trial's score", zorder=2)
        ax.step(x, bsf.value, where="post", color="#2e86c1", linewidth=2, label="best so far", zorder=3)
        first = int(np.argmax(bsf.value == bsf.value[-1]))  # where the best was reached
        ax.scatter(x[first], bsf.value[first], marker="*", s=140, color="#c0392b", zorder=4,
                   label=f"best {bsf.value[-1]:.5g}")
    scope = "" if result.scope == "last" else ", each trial's best epoch"
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(f"{result.metric} ({'higher' if result.direction == 'max' else 'lower'} is better{scope})")
    if legend is not None:
        legend.legend(loc="best", fontsize=8)
    fig.suptitle(f"Optimization history: {len(bsf.score)} scored of {len(result.trials)} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _curves_figure(result: Any, rungs: list[int], source: str, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig = agg_figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    seen: dict[str, int] = {}
    for t in result.trials:
        seen[t.state.value] = seen.get(t.state.value, 0) + 1
    for t in result.trials:
        if not t.history:
            continue
        epochs, values = np.arange(1, len(t.history) + 1), np.asarray(t.history, dtype=float)
        color = _STATE_COLORS.get(t.state.value, "#333333")
        ax.plot(epochs, values, color=color, alpha=0.75, linewidth=1.2)
        ok = np.isfinite(values)  # a value between gaps (NaN) or alone has no line: a dot
        lone = ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]
        ax.plot(epochs[lone], values[lone], ".", color=color, alpha=0.75)
    if result.best_trial is not None and result.best_trial.history:
        best = result.best_trial.history
        ax.plot(np.arange(1, len(best) + 1), best, color="black", linewidth=2.2, label="best trial", zorder=5)
    for rung in rungs:
        ax.axvline(rung, color="#555555", linestyle="--", linewidth=0.9, zorder=1)
    for state, n in seen.items():
        ax.plot([], [], color=_STATE_COLORS.get(state, "#333333"), label=f"{state.lower()} ({n})")
    if rungs:
        ax.plot([], [], color="#555555", linestyle="--", label=f"rungs {rungs} ({source})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(result.metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Learning curves of {len(result.trials)} trials, by final state")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _importance_figure(result: Any, imp: Importance, path: Path) -> None:
    fig = agg_figure(figsize=(7, 0.45 * len(imp.names) + 1.8))
    ax = fig.add_subplot()
    y = np.arange(len(imp.names))
    ax.barh(y, imp.scores, xerr=imp.std if imp.method == "forest" else None, color="#2e86c1", capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(imp.names)
    ax.invert_yaxis()
    what = ("permutation importance (drop in R²) of a random forest" if imp.method == "forest"
            else "variance explained (correlation ratio, bias-corrected)")
    at = "final scores" if imp.budget is None else f"scores at epoch {imp.budget} (the bottom rung)"
    ax.set_xlabel(f"{what}\n{imp.n_trials} trials, {result.metric} {at}")
    ax.set_title("Hyperparameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _read_study(exp_dir: str) -> tuple[dict[str, Any], float | None, list[Report]]:
    """``experiment.json``, the study's start and the metric reports of the journal (each
    empty or None when missing or unreadable: a result built by hand has neither)."""
    from lightning_maggy.driver.journal import JOURNAL_NAME, read_journal

    exp = Path(exp_dir)
    try:
        experiment = json.loads((exp / "experiment.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        experiment = {}
    start, reports = None, []
    try:
        for event in read_journal(exp / JOURNAL_NAME):
            if event["event"] == "experiment_start" and start is None:
                start = event.get("time")
            elif event["event"] == "report" and isinstance(event.get("time"), (int, float)):
                reports.append(Report(float(event["time"]), str(event.get("trial_id")), int(event.get("epoch", 0)),
                                      float(event.get("value", math.nan))))
    except (OSError, ValueError, KeyError, TypeError):  # no journal, or a damaged one: use the records
        start, reports = None, []
    experiment = experiment if isinstance(experiment, dict) else {}
    created = experiment.get("created")
    return experiment, start if start is not None else created if isinstance(created, (int, float)) else None, reports


def plot_result(result: Any, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Writes ``history.png``, ``curves.png`` and ``importance.png`` for a
    :class:`~lightning_maggy.results.SearchResult` into ``path`` (default: its ``exp_dir``);
    see :meth:`~lightning_maggy.results.SearchResult.plot`."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(f"SearchResult.plot() needs matplotlib: {_HINT}") from err
    record = result.record_dir if hasattr(result, "record_dir") else Path(result.exp_dir)
    out = Path(path) if path is not None else record
    out.mkdir(parents=True, exist_ok=True)
    experiment, start, reports = _read_study(str(record))
    files = {"history": out / "history.png", "curves": out / "curves.png"}
    bsf = best_so_far(result.trials, result.direction, result.scope, reports=reports, start=start)
    _history_figure(result, bsf, files["history"])
    rungs, source = infer_rungs(result.trials, experiment)
    _curves_figure(result, rungs, source, files["curves"])
    space = None
    if isinstance(experiment.get("space"), dict):
        from lightning_maggy.searchspace import Searchspace

        try:
            space = Searchspace.from_dict(experiment["space"])
        except (SearchspaceError, KeyError, TypeError, ValueError):  # unreadable: encode plainly
            space = None
    try:
        imp = importance(result.trials, result.direction, result.scope, space=space,
                         budget=rungs[0] if len(rungs) > 1 else None)
    except ValueError as err:
        warnings.warn(f"plot(): no importance plot: {err}", stacklevel=3)
    else:
        files["importance"] = out / "importance.png"
        _importance_figure(result, imp, files["importance"])
    return {k: str(v) for k, v in files.items()}
