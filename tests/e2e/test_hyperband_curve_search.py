"""End-to-end: Hyperband and the curve-prediction rule on real local workers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow


def _saturating_trial(hparams, reporter):
    value = 0.0
    for step in range(reporter.start_step, reporter.budget):
        value = hparams["x"] * (1.0 - math.exp(-0.5 * (step + 1)))
        reporter.broadcast(value, step)
    return value


def test_hyperband_search_runs_its_brackets_and_resumes_promoted_trials(tmp_path):
    result = lm.search(
        _saturating_trial,
        lm.Searchspace(x=lm.Double(0.0, 1.0)),
        metric="score",
        optimizer=lm.Hyperband(reduction_factor=3),
        num_trials=18,
        max_epochs=9,
        workers=2,
        seed=1,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    rungs = [[1, 3, 9], [3, 9], [9]]
    assert len(result.trials) == 18
    assert sorted(t.info["bracket"] for t in result.trials) == sorted(i % 3 for i in range(18))
    promoted = [t for t in result.trials if t.budget > rungs[t.info["bracket"]][0]]
    assert {t.info["bracket"] for t in promoted} >= {0, 1}
    for t in result.trials:
        assert t.budget in rungs[t.info["bracket"]] and len(t.history) == t.budget
    # A promoted trial resumed: each epoch was reported exactly once.
    epochs: dict[str, list[int]] = {}
    for ev in read_journal(Path(result.exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            epochs.setdefault(ev["trial_id"], []).append(ev["epoch"])
    for t in promoted:
        assert epochs[t.trial_id] == list(range(t.budget))


def test_curve_prediction_stops_curves_that_cannot_catch_up(tmp_path):
    result = lm.search(
        _saturating_trial,
        lm.Searchspace(x=lm.Double(0.0, 1.0)),
        metric="score",
        optimizer="random",
        early_stop="curve",
        num_trials=20,
        max_epochs=12,
        workers=2,
        seed=0,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    stopped = [t for t in result.trials if t.state is lm.TrialState.STOPPED]
    completed = [t for t in result.trials if t.state is lm.TrialState.COMPLETED]
    assert stopped and completed
    assert all(len(t.history) >= 4 for t in stopped)  # the default grace period
    assert result.best_config["x"] == max(t.config["x"] for t in result.trials)
