"""Runs one trial run in this process, as a worker does, against a scripted server: no worker
processes, no controller. For tests of what the callback reports and when, and what the
trial's Trainer writes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiny_models import TinyClassifier

import lightning_maggy as lm
from lightning_maggy.lightning.context import TrialContext, _set_current
from lightning_maggy.lightning.worker import TrialTask, run_trial
from lightning_maggy.transport import InProcessServer

KEY = b"trial-harness-key"


class ScriptedServer:
    """Answers every awaited report with ``decide(message)`` (default CONTINUE) and records
    every report it gets."""

    def __init__(self, decide: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.server = InProcessServer(KEY)
        self.decide = decide or (lambda msg: {"decision": "continue"})
        self.reports: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._clients = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            item = self.server.recv(timeout=0.02)
            if item is None:
                continue
            identity, msg = item
            if msg.get("type") == "report":
                self.reports.append(msg)
            if msg.get("sync", True):
                self.server.send(identity, {"type": "decision", **self.decide(msg)})

    def connect(self) -> Any:
        self._clients += 1
        return self.server.connect(f"w{self._clients}-rpc")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def epochs(self) -> list[int]:
        return [m["epoch"] for m in self.reports]


def run(
    server: ScriptedServer,
    trial_dir: Path,
    *,
    budget: int,
    target: Any = None,
    datamodule: Any = None,
    trainer_kwargs: dict[str, Any] | None = None,
    kind: str = "module",
    **trial: Any,
) -> tuple[dict[str, Any], TrialContext]:
    """One run of trial ``trial_dir.name`` (``trial`` adds fields of the assignment: resume,
    epochs_done, rungs, attempt, ...); returns the run's outcome and its context."""
    from tiny_models import BlobsDataModule

    task = TrialTask(
        kind=kind,
        target=target or RecordingClassifier,
        metric="val_acc",
        direction="max",
        datamodule=BlobsDataModule if datamodule is None and kind == "module" else datamodule,
        trainer_kwargs=trainer_kwargs,
    )
    os.makedirs(trial_dir, exist_ok=True)
    ctx = TrialContext(
        client=server.connect(),
        worker_id=0,
        trial={"trial_id": trial_dir.name, "config": {}, "budget": budget, **trial},
        trial_dir=str(trial_dir),
        metric="val_acc",
        direction="max",
    )
    assert ctx.claim()
    _set_current(ctx)
    try:
        outcome = run_trial(task, ctx)
    finally:
        _set_current(None)
        ctx.close()
    return outcome, ctx


class RecordingClassifier(TinyClassifier):
    """TinyClassifier that logs ``train_loss`` and appends every validation of a fit (epoch,
    global step, val_acc) to ``validations.jsonl`` in its trial's folder."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss

    def on_validation_epoch_end(self) -> None:
        ctx = lm.current_trial()
        if self.trainer.sanity_checking or ctx is None:
            return
        record = {"epoch": self.current_epoch, "step": self.global_step,
                  "val_acc": float(self.trainer.callback_metrics["val_acc"])}
        with open(os.path.join(ctx.trial_dir, "validations.jsonl"), "a") as fh:
            fh.write(json.dumps(record) + "\n")


def validations(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "validations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def last_validation_per_epoch(trial_dir: Path) -> dict[int, float]:
    """epoch -> val_acc of the epoch's last validation."""
    out: dict[int, float] = {}
    for v in validations(trial_dir):
        out[v["epoch"]] = v["val_acc"]
    return out
