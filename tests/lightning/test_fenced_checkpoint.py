"""Fenced checkpoints on real Trainers: a stale attempt never replaces the trial's checkpoint,
and a stale report ends ``fit`` before the epoch's checkpoint is written."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from tiny_models import BlobsDataModule, TinyClassifier

from lightning_maggy import MaggyCallback
from lightning_maggy.exceptions import TrialDropped
from lightning_maggy.lightning import fence
from lightning_maggy.lightning.context import TrialContext, _set_current
from lightning_maggy.lightning.trainer import build_trainer
from lightning_maggy.transport import InProcessServer

STEPS_PER_EPOCH = 6  # 192 training samples / batch 32


def _ckpt_step(trial_dir: Path) -> int:
    return torch.load(trial_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]


class ClaimedBySuccessor(pl.Callback):
    """Plays the re-queued attempt 2: it claims the folder after ``epoch``'s validation."""

    def __init__(self, trial_dir: Path, epoch: int) -> None:
        self.trial_dir = trial_dir
        self.epoch = epoch

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            assert fence.claim(str(self.trial_dir), 2)


def test_a_stale_attempts_checkpoint_is_discarded_and_ends_its_training(tmp_path: Path) -> None:
    trial_dir = tmp_path / "trial"
    assert fence.claim(str(trial_dir), 1)
    module = TinyClassifier()
    trainer = build_trainer(
        module, trial_dir=str(trial_dir), budget=4, callbacks=[ClaimedBySuccessor(trial_dir, epoch=1)], attempt=1
    )
    with pytest.raises(TrialDropped, match="newer attempt"):
        trainer.fit(module, datamodule=BlobsDataModule())
    assert _ckpt_step(trial_dir) == STEPS_PER_EPOCH  # epoch 0's, committed before the claim
    assert trainer.current_epoch == 1  # it did not go on to train epoch 2
    assert not list((trial_dir / "checkpoints").glob("*.tmp"))
    assert fence.current_attempt(str(trial_dir)) == 2


def test_the_current_attempt_writes_last_ckpt_atomically_each_epoch(tmp_path: Path) -> None:
    trial_dir = tmp_path / "trial"
    assert fence.claim(str(trial_dir), 3)
    module = TinyClassifier()
    trainer = build_trainer(module, trial_dir=str(trial_dir), budget=2, callbacks=[], attempt=3)
    trainer.fit(module, datamodule=BlobsDataModule())
    assert _ckpt_step(trial_dir) == 2 * STEPS_PER_EPOCH
    assert sorted(p.name for p in (trial_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    # A resume from it works as before (the callback's state key is unchanged).
    module2 = TinyClassifier()
    trainer2 = build_trainer(module2, trial_dir=str(trial_dir), budget=3, callbacks=[], attempt=3)
    trainer2.fit(module2, datamodule=BlobsDataModule(), ckpt_path=str(trial_dir / "checkpoints" / "last.ckpt"))
    assert _ckpt_step(trial_dir) == 3 * STEPS_PER_EPOCH


def test_a_drop_answer_to_a_report_ends_fit_before_that_epochs_checkpoint(tmp_path: Path) -> None:
    server = InProcessServer(b"callback-drop-key")
    trial_dir = tmp_path / "trial"
    assert fence.claim(str(trial_dir), 1)
    ctx = TrialContext(
        client=server.connect("w0-rpc"),
        worker_id=0,
        trial={"trial_id": "t", "config": {}, "budget": 4, "attempt": 1},
        trial_dir=str(trial_dir),
        metric="val_acc",
        direction="max",
    )

    def answer() -> None:  # continue at epoch 0, then the attempt is found stale
        for n in range(2):
            item = None
            while item is None:
                item = server.recv(0.05)
            peer, msg = item
            assert msg["type"] == "report" and msg["epoch"] == n and msg["attempt"] == 1
            reply = (
                {"type": "decision", "decision": "continue"}
                if n == 0
                else {"type": "drop", "trial_id": "t", "attempt": 1, "reason": "re-queued as attempt 2"}
            )
            server.send(peer, reply)

    responder = threading.Thread(target=answer, daemon=True)
    responder.start()
    module = TinyClassifier()
    trainer = build_trainer(module, trial_dir=str(trial_dir), budget=4, callbacks=[MaggyCallback("val_acc")], attempt=1)
    _set_current(ctx)
    try:
        with pytest.raises(TrialDropped, match="re-queued as attempt 2"):
            trainer.fit(module, datamodule=BlobsDataModule())
    finally:
        _set_current(None)
    responder.join(5)
    assert _ckpt_step(trial_dir) == STEPS_PER_EPOCH  # epoch 1's checkpoint was never written
    assert ctx.dropped == "re-queued as attempt 2"


def test_resumed_runs_skip_the_sanity_check_unless_the_user_sets_it(tmp_path: Path) -> None:
    def steps(resumed: bool, **kwargs) -> int:
        trainer = build_trainer(TinyClassifier(), trial_dir=str(tmp_path), budget=1, callbacks=[],
                                trainer_kwargs=kwargs, resumed=resumed)
        return trainer.num_sanity_val_steps

    assert steps(False) == 2  # Lightning's default in a trial's first run
    assert steps(True) == 0
    assert steps(True, num_sanity_val_steps=3) == 3
