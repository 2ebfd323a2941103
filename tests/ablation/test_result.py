"""The ablation table's statistics: t quantiles, paired deltas and their intervals, rows."""

from __future__ import annotations

import math

import pytest

from lightning_maggy.ablation.components import Component, ComponentKind
from lightning_maggy.ablation.result import build_rows, paired_delta, t_critical
from lightning_maggy.trial import Trial, TrialState


def test_t_critical_matches_known_quantiles():
    assert t_critical(1) == pytest.approx(12.706, abs=1e-3)
    assert t_critical(2) == pytest.approx(4.303, abs=1e-3)
    assert t_critical(30) == pytest.approx(2.042, abs=1e-3)
    assert t_critical(40) == pytest.approx(2.021, abs=2e-3)
    assert t_critical(120) == pytest.approx(1.980, abs=2e-3)
    assert t_critical(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_critical(0)


def test_paired_delta_by_hand():
    base = {0: 0.80, 1: 0.82, 2: 0.78}
    other = {0: 0.70, 1: 0.74, 2: 0.66, 9: 0.1}  # seed 9 has no pair and is ignored
    delta, low, high, n = paired_delta(base, other)
    diffs = [-0.10, -0.08, -0.12]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert n == 3
    assert delta == pytest.approx(mean)
    assert (low, high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert high < 0


def test_paired_design_removes_the_seed_effect():
    # Seeds differ a lot, the component costs exactly 0.05 on each: a tight interval.
    base = {0: 0.6, 1: 0.9, 2: 0.75}
    other = {s: v - 0.05 for s, v in base.items()}
    delta, low, high, _ = paired_delta(base, other)
    assert delta == pytest.approx(-0.05) and low == pytest.approx(-0.05) and high == pytest.approx(-0.05)


def test_one_pair_has_no_interval():
    assert paired_delta({0: 1.0}, {0: 0.5})[:3] == (-0.5, None, None)
    assert paired_delta({0: 1.0}, {}) == (None, None, None, 0)


def _trial(component, seed, state=TrialState.COMPLETED, metric=None, error=None):
    t = Trial.create({"lr": 0.1}, budget=2, component=component, seed=seed)
    return t.evolve(state=state, final_metric=metric, error=error)


def test_rows_put_the_base_first_and_report_failures():
    comps = [Component("a", ComponentKind.LAYER, layers=("net.a",)), Component("f", ComponentKind.FEATURE, features=("x",))]
    trials = [
        _trial(None, 0, metric=0.9), _trial(None, 1, metric=0.8),
        _trial("a", 0, metric=0.7), _trial("a", 1, metric=0.6),
        _trial("f", 0, TrialState.FAILED, error="Traceback ...\nlightning_maggy.exceptions.AblationError: shapes"),
        _trial("f", 1, TrialState.FAILED, error="x\nValueError: bad"),
    ]
    rows = build_rows(trials, comps)
    assert [r.component for r in rows] == ["base", "a", "f"]
    assert rows[0].mean == pytest.approx(0.85) and rows[0].delta is None
    assert rows[1].delta == pytest.approx(-0.2) and rows[1].n == 2 and rows[1].state == "COMPLETED"
    assert rows[2].n == 0 and rows[2].mean is None and rows[2].state == "FAILED"
    assert rows[2].error == "AblationError: shapes"
