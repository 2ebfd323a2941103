"""Each hyperparameter goes to whichever of the module and the datamodule accepts it; one that
reaches neither is refused before anything starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.validation import validate_module

pytestmark = pytest.mark.slow


def test_a_hyperparameter_only_the_datamodule_takes_reaches_it(tmp_path: Path) -> None:
    space = lm.Searchspace(lr=lm.Discrete([0.05, 0.2]), batch_size=lm.Discrete([16, 64]))
    result = lm.search(TinyClassifier, space, datamodule=BlobsDataModule, metric="val_acc", max_epochs=2,
                       workers=1, optimizer="grid", seed=3, exp_dir=tmp_path / "exp", verbose=False)
    assert result.counts()["COMPLETED"] == 4
    sizes = set()
    for t in result.trials:
        ckpt = torch.load(Path(result.exp_dir) / "trials" / t.trial_id / "checkpoints" / "last.ckpt",
                          weights_only=False)
        assert "batch_size" not in ckpt["hyper_parameters"]  # the module was not given it
        assert ckpt["hyper_parameters"]["lr"] == t.config["lr"]
        # 192 training samples: the datamodule's batches were of the trial's batch_size.
        assert ckpt["global_step"] == 2 * math.ceil(192 / t.config["batch_size"])
        sizes.add(t.config["batch_size"])
    assert sizes == {16, 64}
    # The best trial's trained module comes back in one line.
    best = result.best_trial
    assert result.best_checkpoint == str(Path(result.exp_dir) / "trials" / best.trial_id / "checkpoints" / "last.ckpt")
    model = result.load_best(TinyClassifier)
    assert isinstance(model, TinyClassifier) and model.hparams.lr == best.config["lr"]
    saved = torch.load(result.best_checkpoint, weights_only=False)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_a_hyperparameter_neither_takes_is_refused_naming_both() -> None:
    with pytest.raises(lm.ConfigurationError) as info:
        validate_module(TinyClassifier, ["lr", "batch_size", "momentum"], BlobsDataModule)
    message = str(info.value)
    assert "['momentum']" in message and "neither does the datamodule BlobsDataModule" in message
    assert "'batch_size'" in message  # listed among what the datamodule accepts
    validate_module(TinyClassifier, ["lr", "batch_size"], BlobsDataModule)  # no error
    with pytest.raises(lm.ConfigurationError, match=r"\['batch_size'\]"):
        validate_module(TinyClassifier, ["lr", "batch_size"], BlobsDataModule(batch_size=8))  # an instance takes none
    # A function of the hyperparameters is given all of them.
    validate_module(TinyClassifier, ["lr", "batch_size"], lambda hp: BlobsDataModule(batch_size=hp["batch_size"]))


def test_load_best_without_a_checkpoint_says_why(tmp_path: Path) -> None:
    result = lm.search(lambda h, r: h["x"], lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1,
                       num_trials=2, workers=1, optimizer="random", exp_dir=tmp_path / "exp", verbose=False)
    assert result.best_trial is not None and result.best_checkpoint is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        result.load_best(TinyClassifier)


class Hidden32(TinyClassifier):
    """Fixes an argument of its base, as README suggests for arguments the space does not give."""

    def __init__(self, **hp) -> None:
        super().__init__(hidden=32, **hp)


class DictStyle(TinyClassifier):
    """Takes its hyperparameters as one ``hparams`` dict (not saved under that name)."""

    def __init__(self, hparams: dict) -> None:
        torch.nn.Module.__init__(self)  # not TinyClassifier's __init__: nothing saved
        pl.LightningModule.__init__(self)
        self.lr = hparams["lr"]
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.hparams.update(fail=False, log_metric=True, epoch_sleep=0.0, lr=self.lr)


@pytest.mark.parametrize("module", [Hidden32, DictStyle], ids=["subclass-fixing-an-argument", "hparams-dict"])
def test_load_best_builds_the_module_as_the_search_did(tmp_path: Path, module) -> None:
    """Lightning's load_from_checkpoint passes the saved arguments back to __init__, which both
    of these refuse; load_best builds the module as the trial was built and loads its weights."""
    result = lm.search(module, lm.Searchspace(lr=lm.Discrete([0.05, 0.2])), datamodule=BlobsDataModule,
                       metric="val_acc", max_epochs=1, workers=1, optimizer="grid", exp_dir=tmp_path / "exp",
                       verbose=False)
    model = result.load_best(module)
    assert isinstance(model, module) and model.hparams.lr == result.best_config["lr"]
    saved = torch.load(result.best_checkpoint, weights_only=False)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
