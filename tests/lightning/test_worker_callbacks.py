"""A module trial's ``trainer_kwargs={"callbacks": <one callback>}`` reaching a worker as it is
(as Lightning's Trainer takes it) trains with that callback, beside the search's own."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from tiny_models import TinyClassifier
from trial_harness import ScriptedServer, run


class _Seen(pl.Callback):
    """Writes each validated epoch to the trial's folder (the Trainer runs a deep copy)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            with open(f"{trainer.default_root_dir}/seen", "a") as fh:
                fh.write(f"{trainer.current_epoch}\n")


def test_one_callback_in_trainer_kwargs_is_taken_as_a_list_of_one(tmp_path: Path) -> None:
    server = ScriptedServer()
    trial_dir = tmp_path / "t1"
    try:
        outcome, ctx = run(server, trial_dir, budget=2, target=TinyClassifier, trainer_kwargs={"callbacks": _Seen()})
    finally:
        server.close()
    assert outcome["status"] == "ok", outcome.get("error")
    assert (trial_dir / "seen").read_text().split() == ["0", "1"]  # the user's callback ran
    assert server.epochs() == [0, 1]  # and so did the search's MaggyCallback
