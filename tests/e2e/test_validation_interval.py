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
    import pytorch_lightning as pl

    # One callback, not a list, as Lightning's Trainer takes it.
    patient = pl.callbacks.EarlyStopping(monitor="val_acc", mode="max", patience=10)
    result = lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=4,
                       num_trials=2, workers=1, optimizer="random", seed=0, exp_dir=tmp_path / "exp",
                       trainer_kwargs={"check_val_every_n_epoch": 2, "callbacks": patient}, verbose=False)
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


class _TrainOnlyData(BlobsDataModule):
    """A datamodule with no val_dataloader (Lightning then skips validation, with a warning)."""

    val_dataloader = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("datamodule", "trainer_kwargs"),
    [(_TrainOnlyData, None)],
    ids=["no-val-dataloader"],
)
def test_trials_that_never_validate_end_the_study_with_the_reason(tmp_path: Path, datamodule, trainer_kwargs) -> None:
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(TinyClassifier, SPACE, datamodule=datamodule, metric="val_acc", max_epochs=2, num_trials=4,
                  workers=1, optimizer="random", seed=0, exp_dir=tmp_path / "exp", trainer_kwargs=trainer_kwargs,
                  verbose=False)
    first = str(info.value).splitlines()[0]
    assert "trained 2 epoch(s) but no validation epoch ran" in first and "'val_acc' was never reported" in first
    result = info.value.result
    assert result.stop_reason == "aborted"
    assert [t.state for t in result.trials] == [lm.TrialState.FAILED]  # the first trial, not every one


def _locked_logger(root: Path):  # noqa: ANN202
    """A CSVLogger holding a lock: it cannot be copied for each trial."""
    import threading

    import pytorch_lightning as pl

    class LockedLogger(pl.loggers.CSVLogger):
        pass

    logger = LockedLogger(str(root), name="mine")
    logger.lock = threading.Lock()
    return logger


def test_limit_val_batches_zero_an_unknown_trainer_argument_and_a_datamodule_of_another_type_are_refused(
    tmp_path: Path,
) -> None:
    exp = tmp_path / "exp"
    with pytest.raises(lm.ConfigurationError, match=r"limit_val_batches=0.*no validation epoch would run"):
        lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=2, num_trials=2,
                  optimizer="random", exp_dir=exp, trainer_kwargs={"limit_val_batches": 0})
    with pytest.raises(lm.ConfigurationError, match=r"\['max_epoch_s'\], which pytorch_lightning.Trainer does not "
                                                    r"take \('max_epoch_s': did you mean 'max_epochs'\?\)"):
        lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=2, num_trials=2,
                  optimizer="random", exp_dir=exp, trainer_kwargs={"max_epoch_s": 3})
    for wrong, what in ((42, "int"), ("data/", "str"), (dict, "a class")):
        with pytest.raises(lm.ConfigurationError, match=rf"\({what}\) is not a LightningDataModule"):
            lm.search(TinyClassifier, SPACE, datamodule=wrong, metric="val_acc", max_epochs=2, num_trials=2,
                      optimizer="random", exp_dir=exp)
    refused = [
        ({"check_val_every_n_epoch": 3}, "random", r"check_val_every_n_epoch=3 with max_epochs=2: a trial's last 2"),
        ({"check_val_every_n_epoch": None}, "asha", r"check_val_every_n_epoch=None \(validation by training steps"),
        ({"enable_checkpointing": False}, "random", r"enable_checkpointing=False, but the search checkpoints"),
        ({"callbacks": lm.MaggyCallback("val_loss")}, "random", r"callbacks hold a MaggyCallback"),
        ({"val_check_interval": "00:00:00:05"}, "asha", r"val_check_interval='00:00:00:05', a duration"),
        ({"logger": _locked_logger(tmp_path)}, "random", r"the logger LockedLogger in trainer_kwargs cannot be copied"),
    ]
    for kwargs, optimizer, message in refused:
        with pytest.raises(lm.ConfigurationError, match=message):
            lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=2,
                      num_trials=2, optimizer=optimizer, exp_dir=exp, trainer_kwargs=kwargs)

    class NeedsWidth(TinyClassifier):
        def __init__(self, width: int, lr: float = 0.1) -> None:
            super().__init__(lr=lr)

    with pytest.raises(lm.ConfigurationError, match=r"NeedsWidth.__init__ requires \['width'\], which the search "
                                                    r"does not give it.*class Fixed\(NeedsWidth\)"):
        lm.search(NeedsWidth, SPACE, datamodule=BlobsDataModule, metric="val_acc", max_epochs=2, num_trials=2,
                  optimizer="random", exp_dir=exp)
    assert not exp.exists() or not os.listdir(exp)
