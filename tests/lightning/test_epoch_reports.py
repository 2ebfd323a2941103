"""The search counts in epochs: MaggyCallback reports once per training epoch (the metric of
the epoch's last validation) when the epoch ends, the search's checkpoint is written after that
report, and promotion in place happens only on Trainers whose callbacks allow it. Trial runs in
this process against a scripted server (see trial_harness)."""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tiny_models import BlobsDataModule, TinyClassifier
from trial_harness import RecordingClassifier, ScriptedServer, last_validation_per_epoch, run, validations

import lightning_maggy as lm
from lightning_maggy.lightning.epochs import promotes_in_place
from lightning_maggy.lightning.trainer import build_trainer

BATCHES = 6  # BlobsDataModule: 192 training samples in batches of 32


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def _step_of(trial_dir: Path) -> tuple[int, int]:
    ckpt = torch.load(trial_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["epoch"], ckpt["global_step"]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    "trainer_kwargs",
    [{"val_check_interval": 0.5}, {"val_check_interval": 2}, {"val_check_interval": "00:00:00:00"}],
    ids=["half-epoch", "every-2-batches", "time-based"],
)
def test_one_report_per_epoch_with_the_epochs_last_validation(server, tmp_path: Path, trainer_kwargs) -> None:
    trial_dir = tmp_path / "t1"
    outcome, ctx = _quiet(run, server, trial_dir, budget=3, trainer_kwargs=trainer_kwargs)
    assert outcome["status"] == "ok", outcome
    seen = validations(trial_dir)
    assert len(seen) > 3  # several validations in each epoch, all of them run
    assert server.epochs() == [0, 1, 2]
    last = last_validation_per_epoch(trial_dir)
    assert [m["value"] for m in server.reports] == [last[0], last[1], last[2]]
    assert _step_of(trial_dir) == (2, 3 * BATCHES)


def test_a_pause_at_the_first_report_ends_the_run_at_the_epochs_end_and_resumes_from_there(tmp_path: Path) -> None:
    """val_check_interval=0.5: the rung of one epoch is decided on the epoch's second
    validation, and the checkpoint a promoted trial resumes from is that of the whole epoch."""
    server = ScriptedServer(lambda msg: {"decision": "pause" if msg["epoch"] == 0 else "continue"})
    trial_dir = tmp_path / "t2"
    try:
        outcome, ctx = _quiet(run, server, trial_dir, budget=1, trainer_kwargs={"val_check_interval": 0.5})
        assert outcome["status"] == "ok" and ctx.last_decision is lm.Decision.PAUSE
        assert [(v["epoch"], v["step"]) for v in validations(trial_dir)] == [(0, 3), (0, 6)]
        assert server.epochs() == [0] and server.reports[0]["value"] == last_validation_per_epoch(trial_dir)[0]
        assert _step_of(trial_dir) == (0, BATCHES)  # the whole epoch, never half of it
        # Promoted: the next run resumes after epoch 0 and trains epochs 1 and 2 only.
        outcome, ctx = _quiet(run, server, trial_dir, budget=3, trainer_kwargs={"val_check_interval": 0.5},
                              resume=True, epochs_done=1)
        assert outcome["status"] == "ok"
        assert server.epochs() == [0, 1, 2]
        assert [v["step"] for v in validations(trial_dir)] == [3, 6, 9, 12, 15, 18]
        assert _step_of(trial_dir) == (2, 3 * BATCHES)
    finally:
        server.close()


def test_step_based_validation_across_epochs_reports_the_epochs_that_validated(server, tmp_path: Path) -> None:
    """check_val_every_n_epoch=None, val_check_interval=8 batches (an epoch has 6): validations
    at steps 8 and 16 (epochs 1 and 2); epoch 0 reports nothing."""
    trial_dir = tmp_path / "t3"
    outcome, _ = _quiet(run, server, trial_dir, budget=3,
                        trainer_kwargs={"val_check_interval": 8, "check_val_every_n_epoch": None})
    assert outcome["status"] == "ok", outcome
    assert [(v["epoch"], v["step"]) for v in validations(trial_dir)] == [(1, 8), (2, 16)]
    assert server.epochs() == [1, 2]
    assert _step_of(trial_dir) == (2, 3 * BATCHES)  # saved at the epoch's end, not at its validation


def test_time_based_validation_that_never_comes_is_the_never_validated_error(server, tmp_path: Path) -> None:
    outcome, _ = _quiet(run, server, tmp_path / "t4", budget=2,
                        trainer_kwargs={"val_check_interval": datetime.timedelta(hours=1)})
    assert outcome["status"] == "failed" and outcome["fatal"]
    assert "trained 2 epoch(s) but no validation epoch ran" in outcome["error"]
    assert server.reports == []


@pytest.mark.parametrize(
    ("trainer_kwargs", "message"),
    [
        ({"val_check_interval": datetime.timedelta(seconds=5)}, "validates by time"),
        ({"val_check_interval": 10, "check_val_every_n_epoch": None}, "every 10 training batches across epochs"),
    ],
    ids=["time-based", "steps-longer-than-an-epoch"],
)
def test_rung_optimizers_refuse_validation_schedules_that_skip_epochs(server, tmp_path, trainer_kwargs, message):
    outcome, _ = _quiet(run, server, tmp_path / "t5", budget=2, trainer_kwargs=trainer_kwargs, rungs="ASHA")
    assert outcome["status"] == "failed" and outcome["fatal"] and outcome["error_type"] == "ConfigurationError"
    assert message in outcome["error"] and "every epoch must be validated" in outcome["error"]
    assert server.reports == []


def test_rung_optimizers_take_step_based_validation_that_hits_every_epoch(server, tmp_path: Path) -> None:
    trial_dir = tmp_path / "t6"
    outcome, _ = _quiet(run, server, trial_dir, budget=3, rungs="ASHA",
                        trainer_kwargs={"val_check_interval": 4, "check_val_every_n_epoch": None})
    assert outcome["status"] == "ok", outcome
    assert server.epochs() == [0, 1, 2]  # validations at steps 4, 8, 12, 16


def test_own_plain_trainer_with_maggy_callback_reports_per_epoch(server, tmp_path: Path) -> None:
    """A train function's own pl.Trainer + MaggyCallback, validating twice per epoch."""

    def train(hparams):
        trainer = pl.Trainer(max_epochs=lm.current_trial().budget, callbacks=[lm.MaggyCallback("val_acc")],
                             val_check_interval=0.5, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(RecordingClassifier(), datamodule=BlobsDataModule())

    trial_dir = tmp_path / "t7"
    outcome, _ = _quiet(run, server, trial_dir, budget=2, target=train, kind="train_fn")
    assert outcome["status"] == "ok", outcome
    assert len(validations(trial_dir)) == 4 and server.epochs() == [0, 1]
    last = last_validation_per_epoch(trial_dir)
    assert [m["value"] for m in server.reports] == [last[0], last[1]]


# -- promotion in place ---------------------------------------------------------------------------


class _OwnCallback(pl.Callback):
    pass


class _OwnCheckpoint(pl.callbacks.ModelCheckpoint):
    pass


@pytest.mark.parametrize(
    ("callbacks", "expected"),
    [
        ([], True),
        ([pl.callbacks.EarlyStopping("val_acc", mode="max"), pl.callbacks.LearningRateMonitor(),
          pl.callbacks.ModelCheckpoint(monitor="val_acc", mode="max"), pl.callbacks.Timer()], True),
        ([pl.callbacks.StochasticWeightAveraging(swa_lrs=0.01)], False),
        ([pl.callbacks.BatchSizeFinder()], False),
        ([_OwnCallback()], False),
        ([_OwnCheckpoint()], False),  # a subclass may do what its base does not
    ],
    ids=["search's-own", "allow-listed", "swa", "batch-size-finder", "own-callback", "checkpoint-subclass"],
)
def test_promotion_in_place_only_with_callbacks_known_not_to_size_themselves(tmp_path, callbacks, expected) -> None:
    trainer = build_trainer(TinyClassifier(), trial_dir=str(tmp_path), budget=2,
                            callbacks=[lm.MaggyCallback("val_acc")],
                            trainer_kwargs={"callbacks": callbacks, "enable_progress_bar": True})
    assert promotes_in_place(trainer) is expected


def test_a_maggy_callback_subclass_or_the_other_namespace(tmp_path: Path) -> None:
    class Mine(lm.MaggyCallback):
        pass

    mine = build_trainer(TinyClassifier(), trial_dir=str(tmp_path), budget=2, callbacks=[Mine("v")])
    assert not promotes_in_place(mine)
    L = pytest.importorskip("lightning.pytorch")
    from tiny_models import unified_module_class

    trainer = build_trainer(unified_module_class()(), trial_dir=str(tmp_path), budget=2,
                            callbacks=[lm.MaggyCallback("val_acc")],
                            trainer_kwargs={"callbacks": [L.callbacks.EarlyStopping("val_acc")]})
    assert isinstance(trainer, L.Trainer) and promotes_in_place(trainer)
    trainer = build_trainer(unified_module_class()(), trial_dir=str(tmp_path), budget=2,
                            callbacks=[lm.MaggyCallback("val_acc")],
                            trainer_kwargs={"callbacks": [L.callbacks.StochasticWeightAveraging(swa_lrs=0.1)]})
    assert not promotes_in_place(trainer)


def test_reports_ask_for_promotion_in_place_only_where_it_is_allowed(tmp_path: Path) -> None:
    """A server that promotes in place whenever asked: the allow-listed Trainer trains on in the
    same run; with SWA the report does not ask, the trial pauses and resumes (SWA would have
    scheduled its averaging from the old max_epochs)."""

    def decide(msg):
        if msg.get("extend"):
            return {"decision": "continue", "budget": 2}
        return {"decision": "pause" if msg["epoch"] == 0 else "continue"}

    server = ScriptedServer(decide)
    try:
        outcome, ctx = _quiet(run, server, tmp_path / "plain", budget=1)
        assert outcome["status"] == "ok" and ctx.budget == 2 and server.epochs() == [0, 1]
        assert [m.get("extend", False) for m in server.reports] == [True, True]
        swa = {"callbacks": [pl.callbacks.StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=5)]}
        outcome, ctx = _quiet(run, server, tmp_path / "swa", budget=1, trainer_kwargs=swa)
        assert ctx.budget == 1 and ctx.last_decision is lm.Decision.PAUSE
        assert server.epochs()[2:] == [0] and "extend" not in server.reports[2]
    finally:
        server.close()


def test_a_resumed_trial_whose_checkpoint_is_gone_says_why_it_trains_from_epoch_0(tmp_path: Path, capfd) -> None:
    server = ScriptedServer()
    trial_dir = tmp_path / "t9"
    try:
        outcome, _ = _quiet(run, server, trial_dir, budget=2, resume=True, epochs_done=1)
    finally:
        server.close()
    assert outcome["status"] == "ok" and server.epochs() == [0, 1]  # trained from epoch 0
    assert "trained 1 epoch(s) before, but its checkpoints/last.ckpt is gone" in capfd.readouterr().err
