"""The outcome of an ablation study: one row per component with mean, std, the paired delta
against the base and its 95% confidence interval, plus the files written from it."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_maggy.ablation.components import Component, ComponentKind
from lightning_maggy.results import SearchResult
from lightning_maggy.trial import Trial, TrialState

__all__ = ["AblationResult", "ComponentRow", "paired_delta", "t_critical"]

BASE = "base"

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_critical(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (for a two-sided 95%
    interval): a table up to 30, the Cornish-Fisher expansion beyond (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"t_critical: df={df} must be >= 1.")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def paired_delta(
    base: Mapping[int, float], other: Mapping[int, float]
) -> tuple[float | None, float | None, float | None, int]:
    """The mean paired difference ``other - base`` over the seeds both have, and its 95% t
    interval: ``(delta, low, high, pairs)``; the interval is None with fewer than 2 pairs."""
    seeds = sorted(set(base) & set(other))
    diffs = [other[s] - base[s] for s in seeds]
    mean, std = _mean_std(diffs)
    if mean is None or std is None:
        return mean, None, None, len(diffs)
    half = t_critical(len(diffs) - 1) * std / math.sqrt(len(diffs))
    return mean, mean - half, mean + half, len(diffs)


@dataclasses.dataclass(frozen=True)
class ComponentRow:
    """One line of the ablation table.

    Attributes:
        component: the component's name ("base" for the full model).
        kind: "base", "layer", "group", "feature", "feature_group" or "custom".
        left_out: what the component leaves out (layer names, features, the generator).
        n: seeds whose trial completed.
        mean / std: of the metric over those seeds.
        delta: mean of (component - base) over the seeds both completed (None for the base).
        ci_low / ci_high: the 95% confidence interval of that paired delta (t interval; None
            with fewer than two pairs).
        state: the trials' states ("COMPLETED", "FAILED", or e.g. "2 COMPLETED, 1 FAILED").
        error: the last line of the first failed trial's error, if any.
    """

    component: str
    kind: str
    left_out: str
    n: int
    mean: float | None
    std: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    state: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _state_text(trials: Sequence[Trial]) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _error_line(trials: Sequence[Trial]) -> str | None:
    for t in trials:
        if t.state is TrialState.FAILED and t.error:
            lines = [ln for ln in t.error.strip().splitlines() if ln.strip()]
            if not lines:
                return None
            kind, sep, message = lines[-1].partition(": ")
            return f"{kind.rsplit('.', 1)[-1]}{sep}{message}"
    return None


def build_rows(trials: Sequence[Trial], components: Sequence[Component]) -> list[ComponentRow]:
    """The table: the base first, then each component in study order."""
    by_component: dict[str | None, list[Trial]] = {}
    for t in trials:
        by_component.setdefault(t.component, []).append(t)

    def values(name: str | None) -> dict[int, float]:
        return {
            int(t.seed if t.seed is not None else 0): float(t.final_metric)
            for t in by_component.get(name, [])
            if t.state is TrialState.COMPLETED and t.final_metric is not None and not math.isnan(t.final_metric)
        }

    base_values = values(None)
    rows = []
    entries: list[tuple[str | None, str, str]] = [(None, BASE, "nothing")]
    entries += [(c.name, c.kind.value, c.describe()) for c in components]
    for name, kind, left_out in entries:
        ts = by_component.get(name, [])
        vals = values(name)
        mean, std = _mean_std([vals[s] for s in sorted(vals)])
        if name is None:
            delta = low = high = None
        else:
            delta, low, high, _ = paired_delta(base_values, vals)
        rows.append(
            ComponentRow(
                component=BASE if name is None else name,
                kind=kind,
                left_out=left_out,
                n=len(vals),
                mean=mean,
                std=std,
                delta=delta,
                ci_low=low,
                ci_high=high,
                state=_state_text(ts) if ts else "NOT RUN",
                error=_error_line(ts),
            )
        )
    return rows


def _recorded_generator(qualname: str) -> Any:
    """A stand-in for a custom component's generator that ``experiment.json`` records by name."""

    def generator(module: Any) -> Any:
        raise TypeError(f"the custom generator {qualname!r} of a loaded ablation result is only its name")

    generator.__qualname__ = qualname
    generator.__name__ = qualname.rsplit(".", 1)[-1]
    return generator


def _num(v: float | None, width: int = 9) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.4f}"


@dataclasses.dataclass
class AblationResult:
    """The outcome of :func:`lightning_maggy.ablate`.

    Attributes:
        rows: one :class:`ComponentRow` per component, the base first.
        search: the underlying :class:`~lightning_maggy.SearchResult` (every trial, the stop
            reason, ``exp_dir``).
        seeds: the training seeds every component ran with.
        plot_path: the bar chart of the deltas (None without matplotlib).
    """

    rows: list[ComponentRow]
    search: SearchResult
    seeds: list[int]
    plot_path: str | None = None

    @property
    def base(self) -> ComponentRow:
        return self.rows[0]

    @property
    def trials(self) -> list[Trial]:
        return self.search.trials

    @property
    def exp_dir(self) -> str:
        return self.search.exp_dir

    @property
    def metric(self) -> str:
        return self.search.metric

    @property
    def direction(self) -> str:
        return self.search.direction

    @property
    def stop_reason(self) -> str:
        return self.search.stop_reason

    @classmethod
    def load(cls, exp_dir: str | os.PathLike[str]) -> AblationResult:
        """The result of the ablation study in ``exp_dir`` (a folder, or a cluster-storage URL),
        rebuilt from its journal and ``experiment.json``: also while the study runs (its rows
        then count the trials finished so far; ``stop_reason`` is ``"running"``) and after its
        driver died.

        Raises:
            ConfigurationError: ``exp_dir`` holds no study journal, or holds a search (load
                that with :meth:`lightning_maggy.SearchResult.load`).
        """
        from lightning_maggy.exceptions import ConfigurationError

        search = SearchResult.load(exp_dir)
        path = search.record_dir / "experiment.json"
        experiment = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        study = experiment.get("ablation")
        if not isinstance(study, Mapping):
            raise ConfigurationError(
                f"{exp_dir} holds a search, not an ablation study (its experiment.json has no "
                "'ablation'); load it with lm.SearchResult.load()."
            )
        components = [
            Component(
                c["name"],
                ComponentKind(c["kind"]),
                layers=tuple(c.get("layers") or ()),
                prefix=c.get("prefix"),
                features=tuple(c.get("features") or ()),
                fn=_recorded_generator(c["custom"]) if c.get("custom") else None,
                source="experiment.json",
            )
            for c in study.get("components", [])
        ]
        seeds = [int(s) for s in study.get("seeds", [])]
        png = search.record_dir / "ablation.png"
        return cls(build_rows(search.trials, components), search, seeds, str(png) if png.exists() else None)

    def row(self, component: str) -> ComponentRow:
        for r in self.rows:
            if r.component == component:
                return r
        raise KeyError(f"no component {component!r}; the study has {[r.component for r in self.rows]}")

    def to_pandas(self) -> Any:
        """The table as a :class:`pandas.DataFrame` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from err
        return pd.DataFrame([r.to_dict() for r in self.rows])

    def summary(self) -> str:
        """The table as text: one row per component, with mean ± std over the seeds, the paired
        delta against the base and its 95% interval, and the trials' state."""
        k = len(self.seeds)
        width = max([len(r.component) for r in self.rows] + [9])
        head = (
            f"Ablation of {self.metric} ({'higher' if self.direction == 'max' else 'lower'} is better), "
            f"{k} seed{'s' if k != 1 else ''} per component; stop reason: {self.stop_reason}; exp_dir: {self.exp_dir}"
        )
        lines = [
            head,
            f"{'component':<{width}}  {'kind':<13}  {'mean':>9} ± {'std':<7}  {'delta':>9}  {'95% CI':^21}  state",
        ]
        for r in self.rows:
            std = "-" if r.std is None else f"{r.std:.4f}"
            ci = "" if r.ci_low is None else f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
            delta = f"{'':>9}" if r.component == BASE else (f"{'-':>9}" if r.delta is None else f"{r.delta:>+9.4f}")
            lines.append(f"{r.component:<{width}}  {r.kind:<13}  {_num(r.mean)} ± {std:<7}  {delta}  {ci:^21}  {r.state}")
        failed = [r for r in self.rows if r.error]
        if failed:
            lines.append("Failures (each trial's traceback is in its record and trials/<id>/output.log):")
            lines += [f"  {r.component}: {r.error}" for r in failed]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"AblationResult(components={len(self.rows) - 1}, seeds={self.seeds}, exp_dir={self.exp_dir!r})"


def write_ablation(result: AblationResult) -> None:
    """Adds the table to ``result.json`` and writes ``ablation.csv`` and, with matplotlib,
    ``ablation.png`` (the deltas with their 95% intervals)."""
    exp = result.search.record_dir
    rows = [r.to_dict() for r in result.rows]
    path = exp / "result.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload["ablation"] = {"seeds": result.seeds, "rows": rows}
    tmp = exp / "result.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)
    with open(exp / "ablation.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result.plot_path = plot_deltas(result, exp / "ablation.png")
    if result.search.local_dir is not None:  # the study's record at its URL gets the table too
        from lightning_maggy.storage import StudyMirror

        StudyMirror(result.exp_dir, exp).push(["result.json", "ablation.csv", "ablation.png"])


def plot_deltas(result: AblationResult, path: str | os.PathLike[str]) -> str | None:
    """A horizontal bar chart of each component's delta against the base, with its 95% interval;
    None (and nothing written) when matplotlib is not installed (``pip install
    'lightning_maggy[plot]'``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from lightning_maggy.plots import agg_figure  # an Agg canvas: the user's backend stays as it is

    rows = [r for r in result.rows[1:]]
    labels = [f"{r.component} ({r.kind})" for r in rows]
    deltas = [r.delta if r.delta is not None else 0.0 for r in rows]
    lower = [(r.delta - r.ci_low) if r.ci_low is not None and r.delta is not None else 0.0 for r in rows]
    upper = [(r.ci_high - r.delta) if r.ci_high is not None and r.delta is not None else 0.0 for r in rows]
    colors = ["#bbbbbb" if r.delta is None else ("#c0392b" if (r.delta < 0) == (result.direction == "max") else "#2e86c1") for r in rows]
    fig = agg_figure(figsize=(7.5, 0.45 * len(rows) + 1.6))
    ax = fig.subplots()
    y = list(range(len(rows)))
    ax.barh(y, deltas, xerr=[lower, upper], color=colors, capsize=3, ecolor="#333333")
    for yi, r in zip(y, rows):
        if r.delta is None:
            ax.text(0, yi, f"  {r.state}", va="center", fontsize=8, color="#555555")
    ax.axvline(0.0, color="#333333", linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    base = result.base
    base_text = "" if base.mean is None else f" {base.mean:.4f}" + ("" if base.std is None else f" ± {base.std:.4f}")
    better = "higher" if result.direction == "max" else "lower"
    ax.set_xlabel(
        f"change in {result.metric} without the component ({better} is better; red: worse)\n"
        f"base{base_text}; whiskers: 95% CI over {len(result.seeds)} paired seed(s)"
    )
    ax.set_title("Leave-one-component-out ablation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)
