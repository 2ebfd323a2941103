"""Lightning features inside real searches (worker processes): validation more often than once
per epoch under ASHA, callbacks that size themselves from max_epochs under promotion, a logger
in trainer_kwargs, and a datamodule that derives more than one attribute from its batch size."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow

BATCHES = 6  # BlobsDataModule: 192 training samples in batches of 32


class Validations(TinyClassifier):
    """Appends every validation of a fit (epoch, global step, attempt) to its trial's folder."""

    def on_validation_epoch_end(self) -> None:
        ctx = lm.current_trial()
        if self.trainer.sanity_checking or ctx is None:
            return
        record = {"epoch": self.current_epoch, "step": self.global_step, "attempt": ctx.attempt,
                  "val_acc": float(self.trainer.callback_metrics["val_acc"])}
        with open(os.path.join(ctx.trial_dir, "validations.jsonl"), "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _journal(exp_dir: str) -> list[dict]:
    return list(read_journal(Path(exp_dir) / "journal.jsonl"))


def test_asha_decides_rungs_on_whole_epochs_when_validating_twice_per_epoch(tmp_path: Path) -> None:
    space = lm.Searchspace(lr=lm.Double(0.001, 0.5, log=True))
    result = lm.search(Validations, space, datamodule=BlobsDataModule, metric="val_acc", direction="max",
                       optimizer=lm.ASHA(reduction_factor=2), num_trials=4, max_epochs=3, workers=2, seed=0,
                       exp_dir=tmp_path / "exp", verbose=False, trainer_kwargs={"val_check_interval": 0.5})
    reports = Counter((e["trial_id"], e["epoch"]) for e in _journal(result.exp_dir) if e["event"] == "report")
    assert set(reports.values()) == {1}  # one report per trial and epoch
    assert any(t.epochs_done > 1 for t in result.trials)  # someone was promoted
    for t in result.trials:
        trial_dir = Path(result.exp_dir) / "trials" / t.trial_id
        seen = [json.loads(line) for line in (trial_dir / "validations.jsonl").read_text().splitlines()]
        assert [v["step"] for v in seen] == [3 * (i + 1) for i in range(2 * t.epochs_done)], seen  # no step twice
        last = {v["epoch"]: v["val_acc"] for v in seen}
        assert list(t.history) == [last[e] for e in range(t.epochs_done)]  # each epoch's last validation
        assert t.epochs_trained == t.epochs_done == len(t.history)
        ckpt = torch.load(trial_dir / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == BATCHES * t.epochs_done  # whole epochs only


class _NoOp(pl.Callback):
    """A user's callback: the search cannot know it does not size itself from max_epochs."""


def _swa_study(tmp_path: Path, name: str, callbacks: list) -> lm.SearchResult:
    space = lm.Searchspace(lr=lm.Categorical([0.3]))
    return lm.search(TinyClassifier, space, datamodule=BlobsDataModule, metric="val_acc", direction="max",
                     optimizer=lm.ASHA(reduction_factor=2, early_promotion=True), num_trials=1, max_epochs=2,
                     workers=1, seed=0, exp_dir=tmp_path / name, verbose=False,
                     trainer_kwargs={"callbacks": callbacks})


def _promotions(exp_dir: str) -> tuple[int, int]:
    """(promotions in place, promotions that resumed in a new run), from the journal."""
    in_place, resumed, last = 0, 0, {}
    for ev in _journal(exp_dir):
        if ev["event"] != "trial":
            continue
        t = ev["trial"]
        before = last.get(t["trial_id"])
        if before is not None and t["state"] == "RUNNING" and t["budget"] > before["budget"]:
            in_place += before["state"] == "RUNNING"
            resumed += before["state"] != "RUNNING"
        last[t["trial_id"]] = t
    return in_place, resumed


def test_swa_under_asha_trains_as_pause_and_resume_does(tmp_path: Path) -> None:
    """StochasticWeightAveraging schedules its averaging from max_epochs at fit start (here:
    never, swa_epoch_start=5); raised mid-fit, it reset the model to its initial weights."""
    swa = _swa_study(tmp_path, "swa", [pl.callbacks.StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=5)])
    resumed = _swa_study(tmp_path, "resumed", [_NoOp()])
    [a], [b] = swa.trials, resumed.trials
    assert len(a.history) == 2 and a.history == b.history
    assert _promotions(swa.exp_dir) == (0, 1) and _promotions(resumed.exp_dir) == (0, 1)


def test_a_logger_in_trainer_kwargs_logs_each_trial_to_its_own_folder(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    space = lm.Searchspace(lr=lm.Double(0.001, 0.5, log=True))
    result = lm.search(TinyClassifier, space, datamodule=BlobsDataModule, metric="val_acc", direction="max",
                       optimizer="random", num_trials=3, max_epochs=2, workers=2, seed=0, exp_dir=tmp_path / "exp",
                       verbose=False, trainer_kwargs={"logger": pl.loggers.CSVLogger(logs, name="mine")})
    assert sorted(p.name for p in (logs / "mine").iterdir()) == sorted(t.trial_id for t in result.trials)
    for t in result.trials:
        with open(logs / "mine" / t.trial_id / "metrics.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("val_acc")]
        assert [float(r["val_acc"]) for r in rows] == pytest.approx(t.history)
        hparams = yaml.safe_load((logs / "mine" / t.trial_id / "hparams.yaml").read_text())
        assert hparams["lr"] == pytest.approx(t.config["lr"])


class LoaderKwData(pl.LightningDataModule):
    """Saves its hyperparameters and derives its loaders' arguments from the batch size."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.loader_kw = {"batch_size": batch_size, "shuffle": True}

    def setup(self, stage: str | None = None) -> None:
        inner = BlobsDataModule()
        inner.setup(stage)
        self.train, self.val = inner.train, inner.val

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, **self.loader_kw)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=128)


class BatchSizes(TinyClassifier):
    """Writes the size of its first training batch to its trial's folder."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__(lr=lr)

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            with open(os.path.join(lm.current_trial().trial_dir, "batch_size"), "w") as fh:
                fh.write(str(len(batch[0])))
        return super().training_step(batch, batch_idx)


def test_every_trial_trains_with_its_own_batch_size_when_the_datamodule_derives_more_from_it(tmp_path: Path) -> None:
    space = lm.Searchspace(batch_size=lm.Categorical([8, 64, 16]), lr=lm.Categorical([0.05, 0.1]))
    result = lm.search(BatchSizes, space, datamodule=LoaderKwData, metric="val_acc", direction="max",
                       optimizer="grid", max_epochs=1, workers=1, seed=0, exp_dir=tmp_path / "exp", verbose=False)
    assert len(result.trials) == 6
    for t in result.trials:
        used = (Path(result.exp_dir) / "trials" / t.trial_id / "batch_size").read_text()
        assert int(used) == t.config["batch_size"], t
