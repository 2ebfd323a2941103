"""MaggyCallback on real Trainers, outside a search (standalone) and in both Lightning namespaces."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
from tiny_models import BlobsDataModule, TinyClassifier, unified_module_class

from lightning_maggy import MaggyCallback


def _trainer(ns, **kw):
    return ns.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_outside_a_search_it_warns_once_and_training_runs_to_the_end():
    cb = MaggyCallback(metric="val_acc")
    trainer = _trainer(pl, callbacks=[cb], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyClassifier(), datamodule=BlobsDataModule())
    ours = [w for w in caught if "not running inside a lightning_maggy search" in str(w.message)]
    assert len(ours) == 1
    assert trainer.current_epoch == 3 and not trainer.should_stop


def test_lightning_pytorch_namespace_accepts_the_callback():
    L = pytest.importorskip("lightning.pytorch")
    dm = BlobsDataModule()
    dm.setup()
    cb = MaggyCallback(metric="val_acc")
    assert isinstance(cb, L.Callback) and isinstance(cb, pl.Callback)
    trainer = _trainer(L, callbacks=[cb], max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(unified_module_class()(), train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader())
    assert trainer.current_epoch == 1


def test_bad_metric_argument_is_rejected():
    with pytest.raises(ValueError, match="metric must be a non-empty str"):
        MaggyCallback(metric="")
