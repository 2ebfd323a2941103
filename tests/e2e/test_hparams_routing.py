"""Each hyperparameter goes to whichever of the module and the datamodule accepts it; one that
reaches neither is refused before anything starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
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
