"""``check_val_every_n_epoch``: refused with optimizers that rank trials at rungs (the rung's
epoch might not be validated), accepted elsewhere, on both the Trainer the search builds and a
Trainer the user builds in a train function."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from tiny_models import BlobsDataModule, TinyClassifier, fit_with_own_trainer

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow

SPACE = lm.Searchspace(lr=lm.Double(0.01, 0.3, log=True))


@pytest.mark.parametrize("optimizer", ["asha", "hyperband", "bohb", lm.ASHA(resource_max=2)])
def test_rung_optimizers_refuse_sparse_validation_before_anything_starts(tmp_path: Path, optimizer) -> None:
    exp = tmp_path / "exp"
    with pytest.raises(lm.ConfigurationError, match=r"check_val_every_n_epoch=2.*limit_val_batches"):
        lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=4,
                  num_trials=4, optimizer=optimizer, exp_dir=exp, trainer_kwargs={"check_val_every_n_epoch": 2})
    assert not exp.exists() or not os.listdir(exp)


def test_random_search_validates_every_second_epoch_and_records_those(tmp_path: Path) -> None:
    result = lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=4,
                       num_trials=2, workers=1, optimizer="random", seed=0, exp_dir=tmp_path / "exp",
                       trainer_kwargs={"check_val_every_n_epoch": 2}, verbose=False)
    assert [t.state for t in result.trials] == [lm.TrialState.COMPLETED] * 2
    reported = sorted({e["epoch"] for e in read_journal(Path(result.exp_dir) / "journal.jsonl")
                       if e["event"] == "report"})
    assert reported == [1, 3]
    for t in result.trials:
        assert len(t.history) == 4 and math.isnan(t.history[0]) and math.isnan(t.history[2])
        assert t.final_metric == pytest.approx(t.history[3])


def _own_trainer_validating_every_other_epoch(hparams):
    return fit_with_own_trainer(hparams, "val_acc", check_val_every_n_epoch=2)


def test_own_trainer_with_sparse_validation_under_asha_ends_the_study_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(lm.ExperimentError, match=r"check_val_every_n_epoch=2, but ASHA") as info:
        lm.search(_own_trainer_validating_every_other_epoch, SPACE, metric="val_acc", max_epochs=4,
                  num_trials=4, workers=1, optimizer="asha", seed=0, exp_dir=tmp_path / "exp", verbose=False)
    trials = info.value.result.trials
    assert trials and all(not t.history for t in trials)  # refused at fit start, before any epoch
