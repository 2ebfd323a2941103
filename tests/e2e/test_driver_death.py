"""Nothing lost, whatever fails: a driver killed with SIGKILL in the middle of a study leaves no
process behind, and ``resume=`` finishes the study as if nothing had happened; a worker told to
stop (SIGTERM) unwinds cleanly and its trial resumes; a resumed call that is not the same study
is refused before anything starts.

The resume contract checked (see ``tests/driver_kill.py`` for the script and why its outcome is
deterministic with two workers): finished trials are never run again, paused ones keep their
rung, the promoted trial that was running resumes from its checkpoint, every epoch is trained
once (but the one whose checkpoint the kill prevented), and the final record (trial ids, states,
epochs) equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from driver_kill import (
    check_resumed_study,
    expected_record,
    record,
    reports_after_resume,
    run,
    start_and_kill,
    wait_gone,
    write_script,
)
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal, replay

pytestmark = pytest.mark.slow


def test_a_sigkilled_driver_leaves_no_process_and_resume_finishes_its_study(tmp_path: Path) -> None:
    script = write_script(tmp_path)
    reference = run(script, tmp_path / "reference", "run", "local")
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "RESULT finished 9" in reference.stdout
    assert record(replay(tmp_path / "reference" / "journal.jsonl")) == expected_record()

    exp = tmp_path / "exp"
    killed = start_and_kill(script, exp, "local")
    tree = killed["tree"]
    print(f"driver killed; its {len(tree)} processes were gone after {killed['cleanup_s']} s: {tree}; "
          f"each after: {killed['gone_after']}")
    assert any("forkserver" in c for c in tree.values()), tree
    workers = {e["pid"] for e in read_journal(exp / "journal.jsonl") if e["event"] == "worker"}
    assert workers and workers <= set(tree), (workers, tree)
    assert killed["cleanup_s"] is not None, f"still alive 30 s after the driver was killed: {killed['left']}"
    assert killed["cleanup_s"] < 10.0, killed  # about 2 s; 30 s and more before the lifeline

    resumed = run(script, exp, "resume", "local")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESULT finished 9" in resumed.stdout
    final = replay(exp / "journal.jsonl")
    check_resumed_study(exp, killed["trials"], final)
    saved = json.loads((exp / "result.json").read_text())
    assert {t["trial_id"]: (t["state"], len(t["history"])) for t in saved["trials"]} == expected_record()
    assert len(json.loads((exp / "experiment.json").read_text())["resumed"]) == 1


def _objective(hparams, reporter):
    value = 0.0
    for step in range(reporter.start_step, reporter.budget):
        value = hparams["x"] * (step + 1)
        reporter.broadcast(value, step)
    return value


def test_resume_refuses_another_study_and_accepts_a_raised_budget(tmp_path: Path) -> None:
    space = lm.Searchspace(x=lm.Double(0.0, 1.0))
    common = dict(metric="m", optimizer="random", max_epochs=2, workers=1, seed=0, verbose=False)
    exp = tmp_path / "exp"
    first = lm.search(_objective, space, num_trials=3, exp_dir=exp, **common)
    assert len(first.trials) == 3
    journal = exp / "journal.jsonl"
    size = journal.stat().st_size

    bad = [
        (dict(common, max_epochs=3), "max_epochs: the study has 2, this call passes 3"),
        (dict(common, metric="loss"), "metric: the study has 'm', this call passes 'loss'"),
        (dict(common, seed=1), "seed: the study has 0, this call passes 1"),
        (dict(common, optimizer="asha"), "optimizer (its type): the study has 'RandomSearch', this call passes 'ASHA'"),
    ]
    for kwargs, named in bad:
        with pytest.raises(lm.ConfigurationError) as info:
            lm.search(_objective, space, num_trials=3, resume=exp, **kwargs)
        assert named in str(info.value)
    with pytest.raises(lm.ConfigurationError, match=r"space, x: the study has"):
        lm.search(_objective, lm.Searchspace(x=lm.Double(0.0, 2.0)), num_trials=3, resume=exp, **common)
    with pytest.raises(lm.ConfigurationError, match=r"num_trials: the study has 3, this call passes 2"):
        lm.search(_objective, space, num_trials=2, resume=exp, **common)
    with pytest.raises(lm.ConfigurationError, match="holds no journal.jsonl"):
        lm.search(_objective, space, num_trials=3, resume=tmp_path, **common)
    with pytest.raises(lm.ConfigurationError, match=r"pass resume="):
        lm.search(_objective, space, num_trials=3, exp_dir=exp, **common)
    assert journal.stat().st_size == size  # refused before anything was written or started

    more = lm.search(_objective, space, num_trials=5, resume=exp, **common)
    assert more.stop_reason == "finished" and len(more.trials) == 5
    assert not set(reports_after_resume(exp)) & {t.trial_id for t in first.trials}  # not re-run
    uninterrupted = lm.search(_objective, space, num_trials=5, exp_dir=tmp_path / "ref", **common)
    assert record(more.trials) == record(uninterrupted.trials)
    assert [t.trial_id for t in more.trials] == [t.trial_id for t in uninterrupted.trials]


def test_sigterm_to_a_worker_unwinds_its_trial_which_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    box: dict = {}

    def search() -> None:
        box["result"] = lm.search(
            TinyClassifier, lm.Searchspace(epoch_sleep=lm.Discrete([0.4])), datamodule=BlobsDataModule,
            metric="val_acc", optimizer="random", num_trials=1, max_epochs=6, workers=1, exp_dir=exp,
            verbose=False,
        )

    thread = threading.Thread(target=search)
    thread.start()
    pid = None
    deadline = time.time() + 120
    while time.time() < deadline and pid is None:
        time.sleep(0.1)
        if (exp / "journal.jsonl").exists():
            events = list(read_journal(exp / "journal.jsonl"))
            pids = [e["pid"] for e in events if e["event"] == "worker"]
            if pids and any(e["event"] == "report" and e["epoch"] >= 2 for e in events):
                pid = pids[0]
    assert pid is not None, "the trial never reached its third epoch"
    os.kill(pid, signal.SIGTERM)
    gone = wait_gone([pid], 10.0)
    thread.join(180)
    assert gone is not None and gone < 3.0, f"the worker took {gone} s to leave after SIGTERM"
    (trial,) = box["result"].trials
    assert trial.state is lm.TrialState.COMPLETED and trial.retries == 1
    assert len(trial.history) == 6 and not any(math.isnan(v) for v in trial.history)
    # Unwound cleanly: the first run wrote its rows of metrics.csv on the way out (the second run
    # resumed from the checkpoint and reported only the later epochs).
    rows = (exp / "trials" / trial.trial_id / "metrics.csv").read_text().splitlines()[1:]
    epochs = [int(r.split(",")[0]) for r in rows]
    assert sorted(set(epochs)) == list(range(6)) and len(epochs) <= 7, epochs
    events = list(read_journal(exp / "journal.jsonl"))
    lost = [e["trial"] for e in events if e["event"] == "trial" and e["trial"]["state"] == "LOST"]
    assert len(lost) == 1 and "exited with code 143" in lost[0]["error"]  # 128 + SIGTERM: a clean exit
    assert len({e["pid"] for e in events if e["event"] == "worker"}) == 2  # a replacement worker



LONG_TRIALS_SCRIPT = """
import sys, time
import torch
import pytorch_lightning as pl
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import lightning_maggy as lm


class Slow(pl.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.lr, self.net = lr, nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        time.sleep(0.2)  # long epochs: 4 steps of 0.2 s
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def data(hparams):
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    ds = TensorDataset(x, (x[:, 0] > 0).long())

    class DM(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(ds, batch_size=16)

        def val_dataloader(self):
            return DataLoader(ds, batch_size=64)

    return DM()


lm.search(Slow, lm.Searchspace(lr=lm.Double(0.01, 0.1)), datamodule=data, metric="val_loss", direction="min",
          optimizer="random", num_trials=2, max_epochs=200, workers=2, exp_dir=sys.argv[1], verbose=False)
"""


def _both_training(trials: dict) -> bool:
    return sum(t.state is lm.TrialState.RUNNING and len(t.history) >= 1 for t in trials.values()) == 2


def test_workers_in_the_middle_of_long_trials_leave_with_their_driver(tmp_path: Path) -> None:
    """Each trial would train for minutes more: the workers must notice the driver is gone and
    stop (before, they trained on for minutes and ignored SIGTERM)."""
    script = tmp_path / "long_trials.py"
    script.write_text(LONG_TRIALS_SCRIPT)
    killed = start_and_kill(script, tmp_path / "exp", condition=_both_training)
    print(f"processes gone after: {killed['gone_after']} ({killed['tree']})")
    assert killed["cleanup_s"] is not None, f"still alive 30 s after the driver was killed: {killed['left']}"
    assert killed["cleanup_s"] < 10.0, killed  # about 2 s; 30 s and more before the lifeline
