"""One meaning of "best" everywhere: the progress bar, ``result.best_metric``, the summary, with
``scope="last"`` (the final metric) or ``scope="all"`` (the best epoch)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import lightning_maggy as lm
from lightning_maggy.progress import Progress
from lightning_maggy.results import SearchResult
from lightning_maggy.trial import Trial, TrialState, best_trial, trial_value


def _trial(x: int, history: tuple[float, ...], state: TrialState, final: float | None = None) -> Trial:
    final = history[-1] if final is None and history else final
    return Trial.create({"x": x}, budget=len(history) or 1).evolve(state=state, history=history, final_metric=final)


def test_a_trial_paused_high_then_promoted_lower_is_not_reported_best_by_the_bar(capsys) -> None:
    # a peaks at its rung (0.98) and ends at 0.96 once promoted; b ends at 0.97.
    a_paused = _trial(1, (0.90, 0.98), TrialState.PAUSED)
    a_done = _trial(1, (0.90, 0.98, 0.97, 0.96), TrialState.COMPLETED)
    b_done = _trial(2, (0.91, 0.95, 0.97, 0.97), TrialState.COMPLETED)
    for scope, expected_best, expected_trial in (("last", 0.97, b_done), ("all", 0.98, a_done)):
        bar = Progress(3, "val_acc", "max", enabled=True, scope=scope)
        for record in (a_paused, b_done, a_done):
            bar.update(record)
        shown = bar._bar.postfix  # what the user sees after the last event
        bar.close()
        result = SearchResult(trials=[a_done, b_done], metric="val_acc", direction="max", exp_dir="x",
                              stop_reason="finished", best_trial=best_trial([a_done, b_done], "max", scope),
                              scope=scope)
        assert result.best_trial is expected_trial and result.best_metric == pytest.approx(expected_best)
        assert f"best val_acc={expected_best:.4g}" in shown
        top_line = result.summary().splitlines()[2]
        assert top_line.startswith(expected_trial.trial_id) and f"{expected_best:.5g}" in top_line


def test_trial_value_follows_direction_and_leaves_out_failed_and_non_finite() -> None:
    t = _trial(1, (3.0, 1.0, math.nan, 2.0), TrialState.COMPLETED)
    assert trial_value(t, "min", "last") == 2.0 and trial_value(t, "min", "all") == 1.0
    assert trial_value(t, "max", "all") == 3.0
    assert trial_value(_trial(2, (0.5,), TrialState.FAILED), "max", "all") is None
    assert trial_value(_trial(3, (0.5, math.nan), TrialState.STOPPED, final=None), "max", "all") is None  # NaN policy


def test_a_bad_scope_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(lm.ConfigurationError, match=r"scope='best'.*\['last', 'all'\]"):
        lm.search(lambda h, r: 1.0, lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1, num_trials=1,
                  scope="best", exp_dir=tmp_path / "exp")
    assert not (tmp_path / "exp").exists()
