"""``lm.Trainer`` outside a search: an attribute read or set before ``fit`` builds the Trainer for
the namespace the caller's code uses, and ``fit`` with a module of the other namespace rebuilds it
there, keeping what was set through the wrapper; ``callbacks=`` takes one callback or a list."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning.pytorch as L
import pytest
import pytorch_lightning as pl
from tiny_models import BlobsDataModule, TinyClassifier, unified_module_class

import lightning_maggy as lm
from lightning_maggy.lightning.namespace import callback_list, guess_namespace

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def _loaders() -> dict:
    dm = BlobsDataModule()
    dm.setup("fit")
    return {"train_dataloaders": dm.train_dataloader(), "val_dataloaders": dm.val_dataloader()}


def test_guess_namespace_reads_the_callers_locals_then_its_globals() -> None:
    assert guess_namespace({"model": unified_module_class()()}, {"pl": pl}) is L  # locals decide first
    assert guess_namespace({"x": 1}, {"pl": pl, "np": object()}) is pl
    assert guess_namespace({}, {"L": sys.modules["lightning"]}) is L  # import lightning as L
    assert guess_namespace({}, {"cls": TinyClassifier}) is pl
    # Both, or neither: pytorch_lightning (this package's dependency).
    assert guess_namespace({"a": L, "b": pl}, {"L": L}) is pl
    assert guess_namespace({}, {}) is pl


def test_callback_list_takes_one_callback_or_a_list() -> None:
    early = L.callbacks.EarlyStopping("val_acc")
    assert callback_list(None) == [] and callback_list(early) == [early]
    assert callback_list([early]) == [early] and callback_list((early,)) == [early]


def test_an_attribute_read_before_fit_builds_the_trainer_of_the_callers_module(tmp_path: Path) -> None:
    model = unified_module_class()()  # a lightning.pytorch module in this frame
    trainer = lm.Trainer(max_epochs=1, default_root_dir=str(tmp_path), **QUIET)
    assert trainer.max_epochs == 1
    trainer.fit(model, **_loaders())
    assert isinstance(trainer._trainer, L.Trainer) and trainer.current_epoch == 1


def _touch(trainer: lm.Trainer) -> None:
    """Reads and sets attributes where nothing tells the namespace (this module imports both)."""
    trainer.accumulate_grad_batches = 2
    assert trainer.max_epochs == 1


def test_fit_with_a_module_of_the_other_namespace_rebuilds_the_trainer_keeping_what_was_set(tmp_path: Path) -> None:
    trainer = lm.Trainer(max_epochs=1, default_root_dir=str(tmp_path), **QUIET)
    _touch(trainer)
    assert isinstance(trainer._trainer, pl.Trainer)  # the guess: pytorch_lightning
    read = r"attributes \(max_epochs\) were read before fit from a pytorch_lightning Trainer.*built again"
    with pytest.warns(UserWarning, match=read):
        trainer.fit(unified_module_class()(), **_loaders())
    assert isinstance(trainer._trainer, L.Trainer) and trainer.current_epoch == 1
    assert trainer.accumulate_grad_batches == 2  # set through the wrapper before the rebuild


def test_a_trainer_built_on_a_right_guess_is_kept_without_a_warning(tmp_path: Path) -> None:
    trainer = lm.Trainer(max_epochs=1, default_root_dir=str(tmp_path), **QUIET)
    _touch(trainer)
    first = trainer._trainer
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="lm.Trainer")
        trainer.fit(TinyClassifier(), datamodule=BlobsDataModule())
    assert trainer._trainer is first and trainer.current_epoch == 1


def test_special_names_do_not_build_a_trainer() -> None:
    trainer = lm.Trainer(max_epochs=1)
    assert not hasattr(trainer, "_repr_html_") and not hasattr(trainer, "__deepcopy__")
    assert trainer._trainer is None


def test_with_only_lightning_pytorch_imported_an_attribute_read_before_fit_works(tmp_path: Path) -> None:
    # /tmp/explore3/t11: reading max_epochs built a pytorch_lightning Trainer, then fit refused
    # the lightning.pytorch module ("`model` must be a `LightningModule`").
    script = textwrap.dedent(
        """
        import sys
        import lightning.pytorch as L
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
        import lightning_maggy as lm

        class Net(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(4, 2)
            def training_step(self, batch, batch_idx):
                x, y = batch
                return nn.functional.cross_entropy(self.net(x), y)
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
        trainer = lm.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        print("max_epochs", trainer.max_epochs)
        trainer.fit(Net(), train_dataloaders=data)
        assert "pytorch_lightning" not in sys.modules, "imported pytorch_lightning"
        print("fitted", type(trainer._trainer).__module__, trainer.current_epoch)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fitted lightning.pytorch.trainer.trainer 1" in done.stdout
