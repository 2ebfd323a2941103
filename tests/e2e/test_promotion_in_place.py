"""Promotion in place: where ASHA or Hyperband would pause a trial at its rung and hand the
same trial straight back to a free worker, the worker trains on in the same run. The decisions
must be those of pausing and resuming: checked against the optimizer driven directly, with
real Lightning trials."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import BlobsDataModule, ScoredClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal
from lightning_maggy.optimizers import IDLE, AbstractOptimizer
from lightning_maggy.trial import Decision, TrialState

pytestmark = pytest.mark.slow

SPACE = lm.Searchspace(score=lm.Double(0.0, 1.0))


def ordered_scores(step: float) -> Callable[..., dict[str, Any]]:
    """A suggester giving trial n the score 0.5 + step * n: each new trial beats (step > 0) or
    trails (step < 0) every earlier one."""
    return lambda space, rng, trials: {"score": round(0.5 + step * len(trials), 6)}


def simulate(opt: AbstractOptimizer, max_epochs: int) -> dict[float, tuple[str, int]]:
    """One worker, the optimizer driven directly, every promotion through a pause: score ->
    (final state, epochs trained). Trials still paused at the end are STOPPED, as a search
    records them."""
    trials: dict[str, Any] = {}
    opt.setup(SPACE, num_trials=9, direction="max", max_epochs=max_epochs, trials=trials, seed=0)
    last = None
    while True:
        suggestion = opt.get_suggestion(last)
        if suggestion is None:
            break
        assert suggestion is not IDLE  # one worker: nothing else is running
        trial = suggestion.evolve(state=TrialState.RUNNING)
        decision = Decision.CONTINUE
        while len(trial.history) < trial.budget and decision is Decision.CONTINUE:
            trial = trial.evolve(history=(*trial.history, trial.config["score"]))
            trials[trial.trial_id] = trial
            decision = opt.on_report(trial)
        paused = decision is Decision.PAUSE or opt.pauses_at_budget(trial)
        last = trials[trial.trial_id] = trial.evolve(state=TrialState.PAUSED if paused else TrialState.COMPLETED)
    opt.finalize_experiment(list(trials.values()))
    final = {TrialState.PAUSED: "STOPPED", TrialState.COMPLETED: "COMPLETED"}
    return {t.config["score"]: (final[t.state], len(t.history)) for t in trials.values()}


def runs(exp_dir: str) -> tuple[int, int]:
    """(promotions in place, promotions that resumed in a new run), from the journal."""
    in_place, resumed, last = 0, 0, {}
    for ev in read_journal(Path(exp_dir) / "journal.jsonl"):
        if ev["event"] != "trial":
            continue
        t = ev["trial"]
        before = last.get(t["trial_id"])
        if before is not None and t["state"] == "RUNNING" and t["budget"] > before["budget"]:
            if before["state"] == "RUNNING":
                in_place += 1
            else:
                resumed += 1
        last[t["trial_id"]] = t
    return in_place, resumed


@pytest.mark.parametrize(
    ("make", "step"),
    [
        (lambda s: lm.ASHA(reduction_factor=3, suggester=ordered_scores(s)), 0.01),
        (lambda s: lm.ASHA(reduction_factor=3, suggester=ordered_scores(s)), -0.01),
        (lambda s: lm.Hyperband(reduction_factor=3, brackets=2, suggester=ordered_scores(s)), 0.01),
    ],
    ids=["asha-rising", "asha-falling", "hyperband-rising"],
)
def test_promotions_in_place_make_the_decisions_of_pause_and_resume(tmp_path: Path, make, step: float) -> None:
    expected = simulate(make(step), max_epochs=9)
    result = lm.search(
        ScoredClassifier, SPACE, datamodule=BlobsDataModule, metric="score", direction="max",
        optimizer=make(step), num_trials=9, max_epochs=9, workers=1, seed=0, exp_dir=tmp_path / "exp",
        verbose=False,
    )
    got = {t.config["score"]: (t.state.name, t.epochs_done) for t in result.trials}
    assert got == expected
    in_place, resumed = runs(result.exp_dir)
    if step > 0:  # each new trial is the best of its rung: promoted in place
        assert in_place >= 2, (in_place, resumed)
    else:  # each new trial is the worst: every promotion resumes a paused trial
        assert in_place == 0 and resumed >= 2, (in_place, resumed)
    # Every epoch trained once, in place or resumed from the checkpoint.
    reports: Counter[tuple[str, int]] = Counter()
    for ev in read_journal(Path(result.exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            reports[(ev["trial_id"], ev["epoch"])] += 1
    assert set(reports.values()) == {1}
    for t in result.trials:
        ckpt = torch.load(Path(result.exp_dir) / "trials" / t.trial_id / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == 6 * t.epochs_done, t  # 192 samples, batches of 32
        assert len(t.history) == t.epochs_done
    # Lightning's sanity check runs in the worker's first run only: the module's validation loop
    # has run before every later run, fresh or resumed.
    checks = [p.read_text() for p in (Path(result.exp_dir) / "trials").glob("*/sanity_checks")]
    assert checks == ["0\n"]
