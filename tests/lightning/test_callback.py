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


def test_in_a_search_every_report_waits_for_its_answer_before_the_checkpoint(tmp_path):
    """Even where only CONTINUE can answer (``async_until``), the callback waits: the epoch's
    checkpoint, written after the report, must never be ahead of the driver's journal."""
    import threading

    from lightning_maggy.lightning.context import TrialContext, _set_current
    from lightning_maggy.transport import InProcessServer

    server = InProcessServer(b"k")
    client = server.connect("w0")
    seen: list[dict] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            item = server.recv(timeout=0.05)
            if item is not None:
                seen.append(item[1])
                if item[1].get("sync", True):
                    server.send(item[0], {"type": "decision", "decision": "continue"})

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ctx = TrialContext(client=client, worker_id=0, trial={"trial_id": "t", "config": {}, "budget": 3,
                       "async_until": 2**31 - 1}, trial_dir=str(tmp_path), metric="val_acc", direction="max")
    _set_current(ctx)
    try:
        trainer = _trainer(pl, callbacks=[MaggyCallback(metric="val_acc")], max_epochs=3)
        trainer.fit(TinyClassifier(), datamodule=BlobsDataModule())
    finally:
        _set_current(None)
        stop.set()
        thread.join(5)
    reports = [m for m in seen if m["type"] == "report"]
    assert [m["epoch"] for m in reports] == [0, 1, 2]
    assert all(m.get("sync", True) for m in reports)
