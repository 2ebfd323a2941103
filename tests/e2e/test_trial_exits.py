"""A trial's code that calls ``sys.exit()`` or raises KeyboardInterrupt fails that trial at its
first attempt, with the traceback of where and a line that names the exit; its worker process
lives on and runs the next trial (real worker processes; the worker's own shutdown, which must
still end the process, is in tests/lightning/test_worker_exits.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow


def _exits(hparams: dict[str, Any], reporter: Any) -> float:
    if hparams["x"] == 1:
        sys.exit(5)
    if hparams["x"] == 2:
        raise KeyboardInterrupt
    reporter.broadcast(hparams["x"] / 10, 0)
    return hparams["x"] / 10


class _ExitsInTraining(TinyClassifier):
    def __init__(self, mode: str = "ok", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def training_step(self, batch, batch_idx):
        if self.mode == "exit":
            sys.exit(5)
        if self.mode == "interrupt":  # Lightning's fit() turns this into sys.exit(1)
            raise KeyboardInterrupt
        return super().training_step(batch, batch_idx)


def _worker_pids(result: lm.SearchResult) -> set[int]:
    events = read_journal(Path(result.exp_dir) / "journal.jsonl")
    return {e["pid"] for e in events if e["event"] == "worker"}


def _assert_failed_once(trial: lm.Trial, *lines: str) -> None:
    assert trial.state is lm.TrialState.FAILED, (trial.state, trial.error)
    assert trial.attempt == 1 and trial.retries == 0, trial  # not taken for a lost worker
    for line in lines:
        assert line in (trial.error or ""), (line, trial.error)


def test_a_function_trial_that_exits_or_interrupts_fails_and_its_worker_goes_on(tmp_path: Path) -> None:
    result = lm.search(
        _exits,
        lm.Searchspace(x=lm.Discrete([1, 2, 3])),
        metric="score",
        optimizer="grid",
        max_epochs=1,
        workers=1,
        max_retries=3,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "finished"
    by_x = {t.config["x"]: t for t in result.trials}
    _assert_failed_once(
        by_x[1],
        "in _exits\n",  # the traceback's frame of where
        "SystemExit: 5\n",
        "lightning_maggy: the trial's code called sys.exit(5), which would end its worker process",
    )
    assert by_x[1].error.rstrip().splitlines()[-1].startswith("lightning_maggy: the trial's code called sys.exit(5)")
    _assert_failed_once(by_x[2], "in _exits\n", "lightning_maggy: the trial's code raised KeyboardInterrupt")
    assert by_x[3].state is lm.TrialState.COMPLETED and by_x[3].final_metric == pytest.approx(0.3)
    assert len(_worker_pids(result)) == 1  # one worker process ran all three


def test_a_lightning_trial_that_exits_or_interrupts_in_training_step_fails_and_its_worker_goes_on(
    tmp_path: Path,
) -> None:
    result = lm.search(
        _ExitsInTraining,
        lm.Searchspace(mode=lm.Categorical(["exit", "interrupt", "ok"])),
        datamodule=BlobsDataModule,
        metric="val_acc",
        optimizer="grid",
        max_epochs=1,
        workers=1,
        max_retries=3,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "finished"
    by_mode = {t.config["mode"]: t for t in result.trials}
    _assert_failed_once(
        by_mode["exit"], "in training_step\n", "SystemExit: 5\n", "the trial's code called sys.exit(5)"
    )
    _assert_failed_once(
        by_mode["interrupt"],
        "in training_step\n",
        "KeyboardInterrupt",
        "Lightning's Trainer turned into sys.exit(1) after its graceful shutdown",
    )
    assert by_mode["ok"].state is lm.TrialState.COMPLETED and by_mode["ok"].final_metric is not None
    assert len(_worker_pids(result)) == 1
