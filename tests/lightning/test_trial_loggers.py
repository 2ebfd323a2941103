"""A logger passed in trainer_kwargs: every trial run logs to a copy of its own, in a folder of
its trial (``<save_dir>/<name>/<trial_id>/``), and a resumed run of the trial goes on there."""

from __future__ import annotations

import csv
import threading
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
from tiny_models import TinyClassifier
from trial_harness import ScriptedServer, run

import lightning_maggy as lm
from lightning_maggy.lightning.loggers import check_loggers, trial_loggers
from lightning_maggy.lightning.trainer import build_trainer


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _val_acc(path: Path) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r["val_acc"])) for r in _rows(path) if r.get("val_acc")]


def _run(server, trial_dir, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome, ctx = run(server, trial_dir, **kwargs)
    assert outcome["status"] == "ok", outcome
    return ctx


def test_two_trials_of_one_worker_log_csv_rows_each_to_their_own_folder(server, tmp_path: Path) -> None:
    logger = pl.loggers.CSVLogger(tmp_path / "logs", name="mine")
    kwargs = {"logger": logger, "log_every_n_steps": 1}
    for name, lr in (("trial-a", 0.3), ("trial-b", 0.001)):
        _run(server, tmp_path / "exp" / name, budget=2, trainer_kwargs=kwargs, config={"lr": lr})
    by_trial = {}
    for m in server.reports:
        by_trial.setdefault(m["trial_id"], []).append((m["epoch"], m["value"]))
    assert sorted(p.name for p in (tmp_path / "logs" / "mine").iterdir()) == ["trial-a", "trial-b"]
    for name in ("trial-a", "trial-b"):
        folder = tmp_path / "logs" / "mine" / name
        assert _val_acc(folder / "metrics.csv") == by_trial[name]
        assert any(r.get("train_loss") for r in _rows(folder / "metrics.csv"))  # the training rows too
        assert "lr:" in (folder / "hparams.yaml").read_text()
    assert logger._experiment is None  # the user's own logger was never used


def test_a_resumed_run_keeps_the_rows_of_the_earlier_runs(tmp_path: Path) -> None:
    server = ScriptedServer(lambda msg: {"decision": "pause" if msg["epoch"] == 0 else "continue"})
    kwargs = {"logger": pl.loggers.CSVLogger(tmp_path / "logs", name="mine"), "log_every_n_steps": 1}
    trial_dir = tmp_path / "exp" / "trial-a"
    try:
        _run(server, trial_dir, budget=1, trainer_kwargs=kwargs)
        _run(server, trial_dir, budget=3, trainer_kwargs=kwargs, resume=True, epochs_done=1)
    finally:
        server.close()
    path = tmp_path / "logs" / "mine" / "trial-a" / "metrics.csv"
    assert _val_acc(path) == [(m["epoch"], m["value"]) for m in server.reports]
    assert [e for e, _ in _val_acc(path)] == [0, 1, 2]


def test_tensorboard_logs_of_two_trials_go_to_two_folders(server, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kwargs = {"logger": [pl.loggers.TensorBoardLogger(tmp_path / "tb", name="mine", default_hp_metric=False)]}
    for name, lr in (("trial-a", 0.3), ("trial-b", 0.001)):
        _run(server, tmp_path / "exp" / name, budget=2, trainer_kwargs=kwargs, config={"lr": lr})
    assert sorted(p.name for p in (tmp_path / "tb" / "mine").iterdir()) == ["trial-a", "trial-b"]
    for name in ("trial-a", "trial-b"):
        events = EventAccumulator(str(tmp_path / "tb" / "mine" / name))
        events.Reload()
        logged = [round(e.value, 6) for e in events.Scalars("val_acc")]
        assert logged == [round(m["value"], 6) for m in server.reports if m["trial_id"] == name]


def test_copies_are_per_trial_and_other_values_pass_through(tmp_path: Path) -> None:
    csv_logger = pl.loggers.CSVLogger(tmp_path, name="mine", version=7)
    tb = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    one = trial_loggers([csv_logger, tb], "abc")
    assert one[0] is not csv_logger and one[1] is not tb
    assert Path(one[0].log_dir) == tmp_path / "mine" / "abc" and Path(one[1].log_dir) == tmp_path / "tb" / "abc"
    assert csv_logger.version == 7  # the user's own is untouched
    for value in (True, False, None):
        assert trial_loggers(value, "abc") is value
    L = pytest.importorskip("lightning.pytorch")
    assert Path(trial_loggers(L.loggers.CSVLogger(tmp_path, name="u"), "abc").log_dir) == tmp_path / "u" / "abc"
    # logger=True: Lightning's default logger, in the trial's folder, as before
    trainer = build_trainer(TinyClassifier(), trial_dir=str(tmp_path / "t1"), budget=1, callbacks=[],
                            trainer_kwargs={"logger": True})
    assert Path(trainer.logger.log_dir).parent.parent == tmp_path / "t1"
    assert build_trainer(TinyClassifier(), trial_dir=str(tmp_path / "t1"), budget=1, callbacks=[],
                         trainer_kwargs={"logger": False}).logger is None


class _Locked(pl.loggers.CSVLogger):
    """A logger holding what cannot be deep-copied."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()


def test_a_logger_that_cannot_be_copied_is_a_clear_error(server, tmp_path: Path) -> None:
    logger = _Locked(tmp_path, name="mine")
    with pytest.raises(lm.ConfigurationError, match=r"the logger _Locked in trainer_kwargs cannot be copied .*lock"):
        check_loggers([logger])
    check_loggers(pl.loggers.CSVLogger(tmp_path))
    outcome, _ = run(server, tmp_path / "exp" / "t", budget=1, trainer_kwargs={"logger": logger})
    assert outcome["status"] == "failed" and outcome["fatal"] and outcome["error_type"] == "ConfigurationError"
    assert "every trial logs to a copy of its own" in outcome["error"]
