"""Trials on a real GPU: packed trials train on the GPU and promotions resume there.

Skipped without CUDA (CI has no GPU); run on a GPU machine with ``pytest tests/e2e/test_gpu_trials.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.exceptions import ConfigurationError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class DeviceRecorder(TinyClassifier):
    """Writes, at each run's start, where it trains and from which epoch and step."""

    def __init__(self, lr: float = 0.05, hidden: int = 16, log: str = "") -> None:
        super().__init__(lr=lr, hidden=hidden)
        self.log_dir = log

    def on_train_start(self) -> None:
        record = {"device": str(self.device), "params": str(next(self.parameters()).device),
                  "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "epoch": self.trainer.current_epoch,
                  "step": self.trainer.global_step, "batches": self.trainer.num_training_batches}
        Path(self.log_dir, f"{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(record))


def _space(log: Path) -> lm.Searchspace:
    return lm.Searchspace(lr=lm.Double(0.01, 0.3, log=True), hidden=lm.Integer(8, 64), log=lm.Categorical([str(log)]))


def test_packed_asha_trials_train_and_resume_on_the_gpu(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    log.mkdir()
    result = lm.search(
        DeviceRecorder, _space(log), metric="val_acc", direction="max", optimizer="asha", num_trials=12,
        max_epochs=9, gpus_per_trial=0.5, seed=3, exp_dir=tmp_path / "exp", datamodule=BlobsDataModule(),
        verbose=False,
    )
    runs = [json.loads(p.read_text()) for p in log.iterdir()]
    assert result.counts()["FAILED"] == 0 and result.counts()["LOST"] == 0
    assert {r["device"] for r in runs} == {"cuda:0"} and {r["params"] for r in runs} == {"cuda:0"}
    assert {r["visible"] for r in runs} <= {str(i) for i in range(torch.cuda.device_count())}
    resumed = [r for r in runs if r["epoch"] > 0]
    assert resumed, "no promotion resumed from its checkpoint"
    assert all(r["step"] == r["epoch"] * r["batches"] for r in resumed)


def test_more_gpus_than_exist_are_refused_before_anything_starts(tmp_path: Path) -> None:
    visible = torch.cuda.device_count()
    for kwargs, words in (({"gpus_per_trial": visible + 1}, "more GPUs per trial"),
                          ({"gpus_per_trial": 1, "workers": visible + 1}, "at most")):
        with pytest.raises(ConfigurationError, match=words):
            lm.search(DeviceRecorder, _space(tmp_path), metric="val_acc", num_trials=2, max_epochs=1,
                      exp_dir=tmp_path / "exp", datamodule=BlobsDataModule(), verbose=False, **kwargs)
        assert not (tmp_path / "exp").exists()
