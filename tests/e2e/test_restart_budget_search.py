"""Trials that kill their worker process, with two workers dying side by side: every death the
local backend saw is in the trials' records, and the default restart budget lasts until
``max_failures`` trials are FAILED (real worker processes; the budget's arithmetic is in
tests/backends/test_restart_budget.py)."""

from __future__ import annotations

import collections
import re
import os
import time
from pathlib import Path
from typing import Any

import pytest

import lightning_maggy as lm
from lightning_maggy.backends.local import LocalBackend
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow


def _dies(hparams: dict[str, Any], reporter: Any) -> float:
    """Kills its worker at every attempt, at the next whole ``period`` seconds of the clock, so
    that both workers die together; ``deaths.log`` in the trial's folder counts the deaths."""
    del reporter
    ctx = lm.current_trial()
    period = hparams["period"]
    time.sleep(period - time.time() % period)
    with open(os.path.join(ctx.trial_dir, "deaths.log"), "a", encoding="utf-8") as fh:
        fh.write(f"{ctx.attempt} {os.getpid()}\n")
    os._exit(3)


def _deaths(exp: Path, tid: str) -> int:
    path = exp / "trials" / tid / "deaths.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _records(exp: Path) -> tuple[dict[str, dict[str, Any]], collections.Counter[str]]:
    """Each trial's last snapshot, and how many LOST snapshots each has."""
    last: dict[str, dict[str, Any]] = {}
    lost: collections.Counter[str] = collections.Counter()
    for event in read_journal(exp / "journal.jsonl"):
        if event["event"] == "trial":
            trial = event["trial"]
            last[trial["trial_id"]] = trial
            lost[trial["trial_id"]] += trial["state"] == "LOST"
    return last, lost


def _search(exp: Path, *, trials: int, period: float, **kwargs: Any) -> lm.ExperimentError:
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(
            _dies,
            lm.Searchspace(x=lm.Discrete(list(range(trials))), period=lm.Discrete([period])),
            metric="score",
            optimizer="grid",
            max_epochs=1,
            workers=2,
            exp_dir=exp,
            verbose=False,
            **kwargs,
        )
    return info.value


def test_the_deaths_seen_when_the_last_worker_goes_are_recorded_and_a_resume_counts_them(
    tmp_path: Path,
) -> None:
    exp = tmp_path / "exp"
    # No restart at all: the second worker to die is the last one. Its death must still reach
    # the driver (before, the backend raised "all local workers are gone" instead of returning
    # it, and that trial's record showed no loss).
    err = _search(exp, trials=2, period=0.5, max_retries=1, max_failures=2, backend=LocalBackend(max_restarts=0))
    assert "all local workers are gone" in str(err) and "after 0 restarts" in str(err)
    last, lost = _records(exp)
    assert len(last) == 2
    for tid, trial in last.items():
        assert _deaths(exp, tid) == 1
        assert trial["state"] == "STOPPED" and trial["attempt"] == 1
        assert trial["retries"] == lost[tid] == 1, (tid, trial)  # its one death is recorded
    # The resumed attempts die too: each trial's record counts both deaths, in two attempts.
    err = _search(exp, trials=2, period=0.5, max_retries=1, max_failures=2, resume=exp)
    assert "2 trials failed (max_failures=2)" in str(err)
    last, _ = _records(exp)
    for tid, trial in last.items():
        assert _deaths(exp, tid) == 2
        assert trial["state"] == "FAILED" and trial["attempt"] == 2
        assert trial["error"].startswith("lost 2 times in 2 attempts (max_retries=1); last: worker "), trial["error"]


def test_the_default_restart_budget_lasts_until_max_failures_with_both_workers_dying(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    # Both workers' trials die together at every attempt: when the third trial fails, the
    # other worker's trial has died three times too. Before, the budget (2 + 3 * 4 = 14) ran out
    # first and the study ended with "all local workers are gone" and two trials unrecorded.
    err = _search(exp, trials=6, period=1.0, max_retries=3, max_failures=3)
    # (the two deaths that reach max_failures may come in one poll: both are recorded, so 4)
    assert re.search(r"[34] trials failed \(max_failures=3\)", str(err)), str(err)
    assert "all local workers are gone" not in str(err)
    last, lost = _records(exp)
    states = collections.Counter(t["state"] for t in last.values())
    assert states["FAILED"] in (3, 4) and set(states) <= {"FAILED", "STOPPED"}, states
    for tid, trial in last.items():
        deaths = _deaths(exp, tid)
        if trial["state"] == "FAILED":
            assert trial["attempt"] == deaths == 4 and trial["retries"] == lost[tid] == 3
            assert trial["error"].startswith("lost 4 times in 4 attempts (max_retries=3); last: "), trial["error"]
        else:  # stopped by the abort in its last attempt: every earlier death is recorded
            assert trial["retries"] == lost[tid] == trial["attempt"] - 1, (tid, trial)
            # (its last attempt may die while the workers are stopped, after the study's end)
            assert deaths in (trial["retries"], trial["retries"] + 1), (tid, trial, deaths)


def _dies_once(hparams: dict[str, Any], reporter: Any) -> float:
    """Kills its worker at its first attempt (an occasional OOM kill), then succeeds."""
    ctx = lm.current_trial()
    reporter.broadcast(float(hparams["x"]), 0)
    if ctx.attempt == 1:
        os.kill(os.getpid(), 9)
    return float(hparams["x"])


def test_trials_that_die_once_and_then_succeed_never_end_a_long_study(tmp_path: Path) -> None:
    # 12 deaths against a default budget of 1 + 3 * 2 = 7: each death was its trial's, bounded
    # by max_retries, so none of them counts; before, the study ended after 7 trials with "all
    # local workers are gone" while every trial was healthy.
    result = lm.search(
        _dies_once, lm.Searchspace(x=lm.Discrete(list(range(12)))), metric="score", optimizer="grid",
        max_epochs=1, workers=1, max_retries=1, max_failures=3, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert result.stop_reason == "finished"
    assert len(result.trials) == 12
    assert all(t.state is lm.TrialState.COMPLETED and t.attempt == 2 and t.retries == 1 for t in result.trials)
    pids = {e["pid"] for e in read_journal(tmp_path / "exp" / "journal.jsonl") if e["event"] == "worker"}
    assert len(pids) == 13
