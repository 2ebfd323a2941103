"""A module trial's ``trainer_kwargs={"callbacks": <one callback>}`` reaching a worker as it is
(as Lightning's Trainer takes it) trains with that callback, beside the search's own."""

from __future__ import annotations

import threading
from pathlib import Path

import pytorch_lightning as pl
from tiny_models import BlobsDataModule, TinyClassifier

from lightning_maggy.lightning.context import TrialContext, _set_current
from lightning_maggy.lightning.worker import TrialTask, run_trial
from lightning_maggy.transport import InProcessServer

KEY = b"worker-callbacks-key"


class _Seen(pl.Callback):
    """Writes each validated epoch to the trial's folder (the Trainer runs a deep copy)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            with open(f"{trainer.default_root_dir}/seen", "a") as fh:
                fh.write(f"{trainer.current_epoch}\n")


def _serve(server: InProcessServer, stop: threading.Event) -> None:
    while not stop.is_set():
        item = server.recv(timeout=0.02)
        if item is not None and item[1].get("sync", True):
            server.send(item[0], {"type": "decision", "decision": "continue"})


def test_one_callback_in_trainer_kwargs_is_taken_as_a_list_of_one(tmp_path: Path) -> None:
    server, stop = InProcessServer(KEY), threading.Event()
    thread = threading.Thread(target=_serve, args=(server, stop), daemon=True)
    thread.start()
    trial_dir = tmp_path / "t1"
    trial_dir.mkdir()
    task = TrialTask(kind="module", target=TinyClassifier, metric="val_acc", direction="max",
                     datamodule=BlobsDataModule, trainer_kwargs={"callbacks": _Seen()})
    ctx = TrialContext(client=server.connect("w1-rpc"), worker_id=0,
                       trial={"trial_id": "t1", "config": {}, "budget": 2}, trial_dir=str(trial_dir),
                       metric="val_acc", direction="max")
    assert ctx.claim()
    _set_current(ctx)
    try:
        outcome = run_trial(task, ctx)
    finally:
        _set_current(None)
        ctx.close()
        stop.set()
        thread.join(5)
    assert outcome["status"] == "ok", outcome.get("error")
    assert (trial_dir / "seen").read_text().split() == ["0", "1"]  # the user's callback ran
    assert ctx.last_value is not None  # and so did the search's MaggyCallback
