"""``lm.Trainer`` in a train function, inside a search: attributes used before ``fit`` (for modules
of either Lightning namespace), one callback instead of a list, and what the function returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch  # noqa: F401  (so that workers have both namespaces, as users' do)
import pytest
from tiny_models import BlobsDataModule, TinyClassifier, unified_module_class

import lightning_maggy as lm

pytestmark = pytest.mark.slow


def _loaders() -> dict[str, Any]:
    dm = BlobsDataModule()
    dm.setup("fit")
    return {"train_dataloaders": dm.train_dataloader(), "val_dataloaders": dm.val_dataloader()}


def _train(hparams: dict[str, Any]) -> Any:
    import numpy as np
    import torch

    mode = hparams["mode"]
    if mode == "read_before_fit":  # /tmp/explore3/t12 attr: a lightning.pytorch module
        model = unified_module_class()()
        trainer = lm.Trainer(max_epochs=5)
        trainer.logger.log_hyperparams({"note": 1})
        trainer.fit(model, **_loaders())
    elif mode == "rebuilt_for_pytorch_lightning":  # the guess (L, named here) is wrong: rebuilt at fit
        import lightning.pytorch as L

        trainer = lm.Trainer(max_epochs=5)
        trainer.accumulate_grad_batches = 2
        assert isinstance(trainer._trainer, L.Trainer)
        trainer.fit(TinyClassifier(), datamodule=BlobsDataModule())
        import pytorch_lightning as pl

        assert isinstance(trainer._trainer, pl.Trainer) and trainer.accumulate_grad_batches == 2
    elif mode == "one_callback":  # /tmp/explore3/t17, in a train function
        early = lightning.pytorch.callbacks.EarlyStopping("val_acc", mode="max")
        trainer = lm.Trainer(max_epochs=5, callbacks=early)
        trainer.fit(unified_module_class()(), **_loaders())
        assert any(isinstance(cb, lightning.pytorch.callbacks.EarlyStopping) for cb in trainer.callbacks)
    else:
        trainer = lm.Trainer(max_epochs=5)
        trainer.fit(unified_module_class()(), **_loaders())
        return {"returns_tensor": torch.tensor(0.125), "returns_np": np.float32(0.25), "returns_str": "abc"}[mode]
    return None


MODES = ["read_before_fit", "rebuilt_for_pytorch_lightning", "one_callback",
         "returns_tensor", "returns_np", "returns_str"]


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, lm.Trial]:
    exp_dir = tmp_path_factory.mktemp("wrapper") / "exp"
    result = lm.search(_train, lm.Searchspace(mode=lm.Categorical(MODES)), metric="val_acc", optimizer="grid",
                       max_epochs=1, workers=1, max_failures=len(MODES), exp_dir=exp_dir, seed=0, verbose=False)
    assert result.stop_reason == "finished"
    return {t.config["mode"]: t for t in result.trials}


def test_an_attribute_read_before_fit_builds_the_trainer_of_the_modules_namespace(trials) -> None:
    trial = trials["read_before_fit"]
    assert trial.state is lm.TrialState.COMPLETED, trial.error
    assert len(trial.history) == 1


def test_a_trainer_guessed_wrong_is_rebuilt_for_a_pytorch_lightning_module(trials) -> None:
    trial = trials["rebuilt_for_pytorch_lightning"]
    assert trial.state is lm.TrialState.COMPLETED, trial.error
    assert len(trial.history) == 1


def test_one_callback_is_taken_as_lightning_takes_it(trials) -> None:
    trial = trials["one_callback"]
    assert trial.state is lm.TrialState.COMPLETED, trial.error
    assert len(trial.history) == 1


def test_a_train_function_returning_a_tensor_or_numpy_scalar_sets_the_final_metric(trials) -> None:
    assert trials["returns_tensor"].final_metric == pytest.approx(0.125)
    assert trials["returns_np"].final_metric == pytest.approx(0.25)
    ignored = trials["returns_str"]  # not a number: the last report, as documented
    assert ignored.state is lm.TrialState.COMPLETED and ignored.final_metric == ignored.history[-1]


def test_one_callback_in_trainer_kwargs_of_a_module_search(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    result = lm.search(TinyClassifier, lm.Searchspace(lr=lm.Discrete([0.05, 0.1])), datamodule=BlobsDataModule,
                       metric="val_acc", optimizer="grid", max_epochs=1, workers=1, exp_dir=tmp_path / "exp",
                       seed=0, verbose=False,
                       trainer_kwargs={"callbacks": pl.callbacks.EarlyStopping("val_acc", mode="max")})
    assert result.stop_reason == "finished"
    assert [t.state for t in result.trials] == [lm.TrialState.COMPLETED] * 2, [t.error for t in result.trials]
