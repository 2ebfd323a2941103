"""Multi-process trials (DDP on 2 CPU processes, gloo) inside a worker, under ASHA: only rank 0
reports, every rank obeys the decision, promoted trials resume; launchers that would re-run the
user's script are refused with the one to use."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow

SPACE = lm.Searchspace(lr=lm.Double(0.01, 0.5, log=True), hidden=lm.Integer(4, 32))


def test_ddp_fork_trials_pause_resume_and_end_together_under_asha(tmp_path: Path) -> None:
    result = lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc",
                       optimizer=lm.ASHA(reduction_factor=2), num_trials=4, max_epochs=2, workers=1, seed=0,
                       trainer_kwargs={"accelerator": "cpu", "devices": 2, "strategy": "ddp_fork"},
                       exp_dir=tmp_path / "exp", verbose=False, trial_timeout=240)
    assert result.stop_reason == "finished" and len(result.trials) == 4
    assert sorted(t.epochs_done for t in result.trials) == [1, 1, 2, 2]  # two paused, two promoted
    reports: dict[str, list[int]] = {}
    for ev in read_journal(Path(result.exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            reports.setdefault(ev["trial_id"], []).append(ev["epoch"])
    # 144 training samples over 2 ranks in batches of 32: 3 steps per epoch on each rank.
    steps_per_epoch = math.ceil(math.ceil(192 * 0.75 / 2) / 32)
    for t in result.trials:
        assert reports[t.trial_id] == list(range(t.epochs_done))  # one report per epoch: rank 0 only
        ckpt = torch.load(Path(result.exp_dir) / "trials" / t.trial_id / "checkpoints" / "last.ckpt",
                          weights_only=False)
        assert ckpt["global_step"] == steps_per_epoch * t.epochs_done  # resumed, and split over 2 ranks


def test_a_launcher_that_would_rerun_the_script_is_refused_naming_ddp_fork(tmp_path: Path) -> None:
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", optimizer="random",
                  num_trials=3, max_epochs=1, workers=1, exp_dir=tmp_path / "exp", verbose=False,
                  trainer_kwargs={"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    first = str(info.value).splitlines()[0]
    assert "re-running this process's command line" in first and "ddp_fork" in first
    assert len(info.value.result.trials) == 1  # the study stopped at the first trial


def test_a_search_started_inside_a_worker_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LIGHTNING_MAGGY_WORKER", "1")  # as in a DDP rank that re-ran the script
    with pytest.raises(lm.ConfigurationError, match="inside a lightning_maggy worker.*ddp_fork"):
        lm.search(lambda h, r: 1.0, lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1, num_trials=1,
                  exp_dir=tmp_path / "exp")
    assert not (tmp_path / "exp").exists()
