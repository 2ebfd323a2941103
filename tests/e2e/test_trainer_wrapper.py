"""``lm.Trainer`` in a user's own train function: inside a search it trains the trial's budget,
checkpoints and logs into the trial's folder and resumes promoted trials; outside it is a plain
Trainer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow


def _train(hparams):
    trainer = lm.Trainer(max_epochs=100, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyClassifier(**hparams), datamodule=BlobsDataModule())
    return float(trainer.callback_metrics["val_acc"])


def test_asha_over_a_train_function_with_lm_trainer_resumes_promoted_trials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a plain Trainer would put ./lightning_logs
    result = lm.search(_train, lm.Searchspace(lr=lm.Double(0.01, 0.5, log=True), hidden=lm.Integer(4, 32)),
                       metric="val_acc", optimizer=lm.ASHA(reduction_factor=3), num_trials=9, max_epochs=3,
                       workers=2, seed=0, exp_dir=tmp_path / "exp", verbose=False)
    assert result.stop_reason == "finished" and len(result.trials) == 9
    promoted = [t for t in result.trials if t.epochs_done == 3]
    assert promoted  # some trial reached the top rung
    reports: dict[str, list[int]] = {}
    for ev in read_journal(Path(result.exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            reports.setdefault(ev["trial_id"], []).append(ev["epoch"])
    for t in result.trials:
        assert reports[t.trial_id] == list(range(t.epochs_done))  # resumed, never restarted at 0
        trial_dir = Path(result.exp_dir) / "trials" / t.trial_id
        assert (trial_dir / "checkpoints" / "last.ckpt").is_file() and (trial_dir / "tensorboard").is_dir()
    assert not (tmp_path / "lightning_logs").exists()
    assert result.load_best(TinyClassifier) is not None


def test_outside_a_search_it_is_a_plain_trainer(tmp_path: Path) -> None:
    trainer = lm.Trainer(max_epochs=2, default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyClassifier(), datamodule=BlobsDataModule())
    assert isinstance(trainer._trainer, pl.Trainer) and trainer.current_epoch == 2
    assert "val_acc" in trainer.callback_metrics
    assert not any(isinstance(cb, lm.MaggyCallback) for cb in trainer.callbacks)
    assert not os.path.exists(tmp_path / "checkpoints")


def _plain_trainer(hparams):
    """A plain Trainer with its default logger and checkpointing, sized by hand."""
    trainer = pl.Trainer(max_epochs=lm.current_trial().budget, callbacks=[lm.MaggyCallback(metric="val_acc")],
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyClassifier(**hparams), datamodule=BlobsDataModule())
    return float(trainer.callback_metrics["val_acc"])


def test_a_plain_trainer_logs_into_its_trial_folder_not_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = lm.search(_plain_trainer, lm.Searchspace(lr=lm.Double(0.01, 0.5, log=True)), metric="val_acc",
                       optimizer="random", num_trials=2, max_epochs=1, workers=2, seed=0,
                       exp_dir=tmp_path / "exp", verbose=False)
    assert result.counts()["COMPLETED"] == 2
    assert not (tmp_path / "lightning_logs").exists()  # two concurrent trials shared it before
    for t in result.trials:
        trial_dir = Path(result.exp_dir) / "trials" / t.trial_id
        assert list((trial_dir / "lightning_logs").glob("version_0/events.out.tfevents.*"))
        assert list((trial_dir / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))


def _plain_trainer_resuming(hparams):
    """The docs' plain-Trainer example: the trial's budget, and its newest checkpoint to resume."""
    trial = lm.current_trial()
    trainer = pl.Trainer(max_epochs=trial.budget, callbacks=[lm.MaggyCallback(metric="val_acc")],
                         default_root_dir=trial.trial_dir, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyClassifier(**hparams), datamodule=BlobsDataModule(), ckpt_path=trial.ckpt_path)


def test_a_plain_trainer_resumes_promoted_trials_from_current_trial_ckpt_path(tmp_path: Path) -> None:
    # Its default ModelCheckpoint writes lightning_logs/version_*/checkpoints/epoch=*.ckpt, not
    # checkpoints/last.ckpt: ckpt_path is the newest checkpoint wherever it is in the trial folder.
    result = lm.search(_plain_trainer_resuming, lm.Searchspace(lr=lm.Double(0.01, 0.5, log=True)), metric="val_acc",
                       optimizer=lm.ASHA(reduction_factor=3), num_trials=6, max_epochs=3, workers=2, seed=0,
                       exp_dir=tmp_path / "exp", verbose=False)
    assert result.stop_reason == "finished"
    promoted = [t for t in result.trials if t.epochs_done == 3]
    assert promoted
    reports: dict[str, list[int]] = {}
    for ev in read_journal(Path(result.exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            reports.setdefault(ev["trial_id"], []).append(ev["epoch"])
    for t in promoted:
        assert reports[t.trial_id] == [0, 1, 2]  # resumed at epoch 1, never restarted at 0
        assert t.epochs_trained == 3
