"""A worker reads the installed packages' callback entry points once, not in every Trainer."""

from __future__ import annotations

import sys

import pytorch_lightning as pl

from lightning_maggy.lightning.trainer import scan_entry_points_once


def test_trainers_in_a_worker_scan_the_callback_entry_points_once(monkeypatch, tmp_path):
    registry = sys.modules["lightning_fabric.utilities.registry"]
    calls: list[str] = []
    real = registry.entry_points

    def counting(*args, **kwargs):
        calls.append(kwargs.get("group"))
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "entry_points", counting)  # restored after the test
    pl.Trainer(default_root_dir=tmp_path, logger=False)
    assert calls == ["pytorch_lightning.callbacks_factory"]  # Lightning scans in every Trainer
    scan_entry_points_once()
    scan_entry_points_once()  # idempotent: one cache, not a cache of a cache
    for _ in range(3):
        trainer = pl.Trainer(default_root_dir=tmp_path, logger=False)
    assert calls == ["pytorch_lightning.callbacks_factory"] * 2, calls
    assert registry.entry_points(group="no.such.group") == ()
    assert any(type(cb).__name__ == "ModelCheckpoint" for cb in trainer.callbacks)
