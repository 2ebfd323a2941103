"""End-to-end searches on the local backend: real worker processes, real sockets, real Lightning."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from tiny_models import BlobsDataModule, TinyClassifier, fit_with_own_trainer, unified_module_class

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal, replay
from lightning_maggy.optimizers.asha import promotable

pytestmark = pytest.mark.slow


def _reports(exp_dir: str) -> dict[str, list[int]]:
    """trial_id -> the epochs its workers reported, in order, from the journal."""
    out: dict[str, list[int]] = {}
    for ev in read_journal(Path(exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            out.setdefault(ev["trial_id"], []).append(ev["epoch"])
    return out


def _promotions_follow_the_rule(exp_dir: str, budgets: list[int], eta: float) -> dict[int, set[str]]:
    """Walks the journal of a maximizing ASHA study in order and asserts that each promotion out
    of a rung was among the top floor(n / eta) of that rung's results recorded so far, and that
    nothing is left promotable at the end; returns rung budget -> the ids promoted out of it."""
    rungs: dict[int, dict[str, float]] = {b: {} for b in budgets}
    promoted: dict[int, set[str]] = {b: set() for b in budgets}
    budget_of: dict[str, int] = {}
    for ev in read_journal(Path(exp_dir) / "journal.jsonl"):
        if ev["event"] == "report" and ev["epoch"] + 1 in rungs:
            rungs[ev["epoch"] + 1][ev["trial_id"]] = float(ev["value"])
        elif ev["event"] == "trial":
            tid, budget = ev["trial"]["trial_id"], ev["trial"]["budget"]
            old = budget_of.setdefault(tid, budget)
            if budget > old:
                allowed = promotable(rungs[old], promoted[old], eta, "max")
                assert tid in allowed, (tid, old, rungs[old], promoted[old])
                promoted[old].add(tid)
                budget_of[tid] = budget
    for b in budgets[:-1]:
        assert promotable(rungs[b], promoted[b], eta, "max") == [], (b, rungs[b], promoted[b])
    return promoted


def test_two_worker_asha_search_resumes_promoted_trials_from_checkpoints(tmp_path):
    space = lm.Searchspace(lr=lm.Double(1e-3, 0.5, log=True), hidden=lm.Integer(4, 32))
    result = lm.search(
        TinyClassifier,
        space,
        datamodule=BlobsDataModule,
        metric="val_acc",
        direction="max",
        optimizer=lm.ASHA(reduction_factor=3, resource_min=1),
        num_trials=9,
        max_epochs=9,
        workers=2,
        seed=1,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "finished"
    assert len(result.trials) == 9
    assert all(t.state in (lm.TrialState.COMPLETED, lm.TrialState.STOPPED) for t in result.trials)
    space.validate(result.best_config)
    assert 0.0 <= result.best_metric <= 1.0

    # ASHA rungs 1, 3, 9. How many trials pass a rung depends on the order in which the two
    # workers' results arrive (asynchronous ASHA never takes a promotion back), so the journal
    # is checked against the rule instead: every promotion was in the top third of its rung
    # when it was made, and at the end nothing promotable was left behind.
    epochs = [t.epochs_done for t in result.trials]
    assert set(epochs) <= {1, 3, 9} and epochs.count(9) >= 1
    promoted = _promotions_follow_the_rule(result.exp_dir, budgets=[1, 3, 9], eta=3)
    assert len(promoted[1]) >= 3 and len(promoted[3]) >= 1
    assert all(t.state is lm.TrialState.COMPLETED for t in result.trials if t.epochs_done == 9)

    # Promoted trials resumed from their rung checkpoint: every epoch was trained (and reported)
    # exactly once, and the history has one value per epoch.
    reports = _reports(result.exp_dir)
    for t in result.trials:
        assert reports[t.trial_id] == list(range(t.epochs_done)), t
        assert len(t.history) == t.epochs_done
        ckpt = torch.load(Path(result.exp_dir) / "trials" / t.trial_id / "checkpoints" / "last.ckpt",
                          weights_only=False)
        # 192 training samples in batches of 32: 6 optimizer steps per epoch, none repeated.
        assert ckpt["global_step"] == 6 * t.epochs_done

    # The experiment directory is laid out as documented, and the journal rebuilds the record.
    exp = Path(result.exp_dir)
    for name in ("experiment.json", "journal.jsonl", "result.json", "trials.csv", "tensorboard"):
        assert (exp / name).exists(), name
    for t in result.trials:
        d = exp / "trials" / t.trial_id
        assert json.loads((d / "hparams.json").read_text())["config"] == dict(t.config)
        assert (d / "output.log").exists() and (d / "metrics.csv").exists()
        assert "exists and is not empty" not in (d / "output.log").read_text()  # a resume's own folder: no warning
        assert any((d / "tensorboard").iterdir())
    saved = json.loads((exp / "result.json").read_text())
    assert saved["best_trial_id"] == result.best_trial.trial_id
    replayed = replay(exp / "journal.jsonl")
    assert {k: (v.state, v.history) for k, v in replayed.items()} == {
        t.trial_id: (t.state, t.history) for t in result.trials
    }
    df = result.to_pandas()
    assert len(df) == 9 and "config/lr" in df.columns


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path):
    space = lm.Searchspace(lr=lm.Double(0.01, 0.1), fail=lm.Categorical([False, True]))
    result = lm.search(
        TinyClassifier,
        space,
        datamodule=BlobsDataModule,
        metric="val_acc",
        optimizer="grid",
        num_trials=4,
        max_epochs=1,
        workers=2,
        max_failures=3,
        exp_dir=tmp_path / "exp",
        verbose=False,
        seed=0,
    )
    states = Counter(t.state for t in result.trials)
    assert states[lm.TrialState.FAILED] == 2 and states[lm.TrialState.COMPLETED] == 2
    for t in result.trials:
        if t.state is lm.TrialState.FAILED:
            assert t.config["fail"] is True
            assert "this configuration always fails" in t.error and "Traceback" in t.error
            log = (Path(result.exp_dir) / "trials" / t.trial_id / "output.log").read_text()
            assert "this configuration always fails" in log
    assert result.best_config["fail"] is False


def test_missing_metric_stops_the_search_with_the_available_metrics(tmp_path):
    space = lm.Searchspace(lr=lm.Double(0.01, 0.1))
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(
            TinyClassifier,
            space,
            datamodule=BlobsDataModule,
            metric="val_f1",
            optimizer="random",
            num_trials=6,
            max_epochs=2,
            workers=2,
            exp_dir=tmp_path / "exp",
            verbose=False,
        )
    message = str(info.value)
    first = message.splitlines()[0]  # the fix comes first, the traceback after it
    assert "'val_f1'" in first and "not available" in first
    assert "val_acc" in first and "val_loss" in first
    assert "Traceback" in message and "Traceback" not in first
    result = info.value.result
    assert result.stop_reason == "aborted"
    assert sum(t.state is lm.TrialState.FAILED for t in result.trials) >= 1
    assert len(result.trials) < 6  # it did not try every configuration


def _function_trial(hparams, reporter):
    value = 0.0
    for step in range(reporter.start_step, reporter.budget):
        value = hparams["x"] * (step + 1)
        reporter.broadcast(value, step)
    return value


def test_function_trials_with_median_early_stopping(tmp_path):
    space = lm.Searchspace(x=lm.Double(0.0, 1.0))
    result = lm.search(
        _function_trial,
        space,
        metric="score",
        optimizer="random",
        early_stop=lm.MedianStoppingRule(min_trials=3),
        num_trials=30,
        max_epochs=5,
        workers=2,
        seed=3,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert len(result.trials) == 30
    stopped = [t for t in result.trials if t.state is lm.TrialState.STOPPED]
    completed = [t for t in result.trials if t.state is lm.TrialState.COMPLETED]
    assert stopped and completed
    for t in completed:
        assert t.final_metric == pytest.approx(5 * t.config["x"])
    # A stopped trial was worse than the median of the finished trials when it stopped.
    assert max(t.config["x"] for t in stopped) < max(t.config["x"] for t in completed)
    assert result.best_config["x"] == max(t.config["x"] for t in completed)


def _slow_trial(hparams, reporter):
    import time

    for step in range(100):
        time.sleep(0.1)
        reporter.broadcast(hparams["x"], step)
    return hparams["x"]


def test_timeout_stops_running_trials_and_records_them(tmp_path):
    result = lm.search(
        _slow_trial,
        lm.Searchspace(x=lm.Double(0.0, 1.0)),
        metric="score",
        optimizer="random",
        timeout=3,
        max_epochs=100,
        workers=2,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "timeout"
    assert result.trials and all(t.state is lm.TrialState.STOPPED for t in result.trials)
    assert all(0 < len(t.history) < 100 for t in result.trials)
    assert not any(math.isnan(v) for t in result.trials for v in t.history)


def test_bad_input_is_rejected_before_any_worker_starts(tmp_path):
    space = lm.Searchspace(lr=lm.Double(0.01, 0.1), depth=lm.Integer(1, 3))
    exp = tmp_path / "exp"
    with pytest.raises(lm.ConfigurationError, match=r"does not accept the hyperparameter\(s\) \['depth'\]"):
        lm.search(TinyClassifier, space, datamodule=BlobsDataModule, metric="val_acc",
                  max_epochs=1, num_trials=1, exp_dir=exp)
    with pytest.raises(lm.ConfigurationError, match="needs a budget"):
        lm.search(TinyClassifier, lm.Searchspace(lr=lm.Double(0.01, 0.1)), datamodule=BlobsDataModule,
                  metric="val_acc", max_epochs=1, exp_dir=exp)
    with pytest.raises(lm.ConfigurationError, match="pass the class"):
        lm.search(TinyClassifier(), lm.Searchspace(lr=lm.Double(0.01, 0.1)), metric="val_acc",
                  max_epochs=1, num_trials=1, exp_dir=exp)
    with pytest.raises(lm.ConfigurationError, match="max_epochs"):
        lm.search(TinyClassifier, lm.Searchspace(lr=lm.Double(0.01, 0.1)), datamodule=BlobsDataModule,
                  metric="val_acc", max_epochs=1, num_trials=1, exp_dir=exp,
                  trainer_kwargs={"max_epochs": 5})
    with pytest.raises(lm.ConfigurationError, match="direction"):
        lm.search(TinyClassifier, lm.Searchspace(lr=lm.Double(0.01, 0.1)), datamodule=BlobsDataModule,
                  metric="val_acc", max_epochs=1, num_trials=1, exp_dir=exp, direction="up")
    assert not exp.exists() or not os.listdir(exp)


def test_a_killed_worker_is_replaced_and_its_trial_resumes_from_its_checkpoint(tmp_path):
    import signal
    import threading
    import time

    exp = tmp_path / "exp"
    box: dict = {}

    def run():
        box["result"] = lm.search(
            TinyClassifier,
            lm.Searchspace(epoch_sleep=lm.Discrete([0.4])),
            datamodule=BlobsDataModule,
            metric="val_acc",
            optimizer="random",
            num_trials=1,
            max_epochs=6,
            workers=1,
            exp_dir=exp,
            verbose=False,
        )

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    pid = None
    while time.time() < deadline:
        time.sleep(0.1)
        if not (exp / "journal.jsonl").exists():
            continue
        events = list(read_journal(exp / "journal.jsonl"))
        pids = [e["pid"] for e in events if e["event"] == "worker"]
        if pids and any(e["event"] == "report" and e["epoch"] >= 2 for e in events):
            pid = pids[0]
            break
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    thread.join(180)
    result = box["result"]
    (trial,) = result.trials
    assert trial.state is lm.TrialState.COMPLETED and trial.retries == 1
    assert len(trial.history) == 6 and not any(math.isnan(v) for v in trial.history)
    events = list(read_journal(exp / "journal.jsonl"))
    assert "LOST" in [e["trial"]["state"] for e in events if e["event"] == "trial"]
    assert len({e["pid"] for e in events if e["event"] == "worker"}) == 2  # a replacement worker
    # Resumed, not restarted: at most the one epoch after the last checkpoint ran twice.
    epochs = [e["epoch"] for e in events if e["event"] == "report"]
    assert len(epochs) <= 7 and epochs[0] == 0 and sorted(set(epochs)) == list(range(6))
    ckpt = torch.load(exp / "trials" / trial.trial_id / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6 * 6


def _train_fn(hparams):
    """The advanced path: the user's own Trainer, with MaggyCallback, sized by current_trial()."""
    return fit_with_own_trainer(hparams, "val_loss")


def test_a_train_function_with_its_own_trainer_and_callback(tmp_path):
    result = lm.search(
        _train_fn,
        lm.Searchspace(lr=lm.Double(0.001, 0.5, log=True)),
        metric="val_loss",
        direction="min",
        optimizer="random",
        early_stop=lm.MedianStoppingRule(min_trials=2),
        num_trials=5,
        max_epochs=3,
        workers=2,
        seed=0,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert len(result.trials) == 5
    reports = _reports(result.exp_dir)
    for t in result.trials:
        assert t.state in (lm.TrialState.COMPLETED, lm.TrialState.STOPPED)
        assert reports[t.trial_id] == list(range(len(t.history)))
        if t.state is lm.TrialState.COMPLETED:
            assert len(t.history) == 3
            assert t.final_metric == pytest.approx(t.history[-1], rel=1e-5)
    assert result.best_metric == min(t.final_metric for t in result.trials)


def test_a_module_from_the_unified_lightning_package(tmp_path):
    """`import lightning as L` users: their module gets an L.Trainer, L callbacks and loggers."""
    L = pytest.importorskip("lightning.pytorch")
    UnifiedModule = unified_module_class()

    def data(hparams):
        dm = BlobsDataModule()
        dm.setup()

        class UnifiedData(L.LightningDataModule):
            def train_dataloader(self):
                return dm.train_dataloader()

            def val_dataloader(self):
                return dm.val_dataloader()

        return UnifiedData()

    result = lm.search(
        UnifiedModule, lm.Searchspace(lr=lm.Double(0.01, 0.5)), datamodule=data, metric="val_acc",
        optimizer="asha", num_trials=3, max_epochs=3, workers=2, seed=0, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert result.counts()["FAILED"] == 0 and len(result.trials) == 3
    assert max(t.epochs_done for t in result.trials) == 3  # the promoted trial resumed to 3 epochs
    reports = _reports(result.exp_dir)
    assert all(reports[t.trial_id] == list(range(t.epochs_done)) for t in result.trials)


def test_unshippable_objects_are_refused_before_anything_starts(tmp_path):
    import threading

    lock = threading.Lock()  # cannot be pickled for the workers

    def objective(hparams, reporter):
        with lock:
            return hparams["x"]

    exp = tmp_path / "exp"
    with pytest.raises(lm.ConfigurationError, match="could not serialize"):
        lm.search(objective, lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1,
                  num_trials=2, exp_dir=exp, verbose=False)
    assert not exp.exists()  # refused before anything was created


def test_user_callbacks_start_fresh_in_every_trial(tmp_path):
    """An EarlyStopping in trainer_kwargs must not carry one trial's best score into the next."""
    import pytorch_lightning as pl

    stopper = pl.callbacks.EarlyStopping(monitor="val_acc", mode="max", patience=0)
    result = lm.search(
        TinyClassifier,
        lm.Searchspace(lr=lm.Categorical([0.5, 0.0001])),  # in this order; the second barely learns
        datamodule=BlobsDataModule,
        metric="val_acc",
        optimizer="grid",
        max_epochs=3,
        workers=1,  # both trials on the same worker, one after the other
        trainer_kwargs={"callbacks": [stopper]},
        seed=0,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert len(result.trials) == 2 and result.counts()["FAILED"] == 0
    # With a shared EarlyStopping, the weak second trial would stop after its first epoch,
    # being worse than the first trial's best; fresh, it trains on while it improves.
    weak = next(t for t in result.trials if t.config["lr"] == 0.0001)
    assert len(weak.history) >= 2


def _steps(hparams, reporter):
    import time

    for step in range(reporter.start_step, reporter.budget):
        time.sleep(0.25)
        reporter.broadcast(hparams["x"] + step, step)
    return hparams["x"] + reporter.budget


def test_trials_the_timeout_stopped_train_on_when_the_study_is_resumed_with_more_time(tmp_path):
    call = dict(metric="score", optimizer="grid", max_epochs=60, workers=2, exp_dir=tmp_path / "exp", verbose=False)
    space = lm.Searchspace(x=lm.Discrete([0, 100]))
    first = lm.search(_steps, space, timeout=12, **call)  # 15 s of steps: stopped part way
    assert first.stop_reason == "timeout" and len(first.trials) == 2, "the workers took over 12 s to start"
    assert all(t.state is lm.TrialState.STOPPED and 0 < len(t.history) < 60 for t in first.trials)
    resumed = lm.search(_steps, space, timeout=120, resume=tmp_path / "exp", **call)
    assert resumed.stop_reason == "finished" and len(resumed.trials) == 2
    for trial in resumed.trials:  # as if the study had had 120 s from the start
        x = trial.config["x"]
        assert trial.state is lm.TrialState.COMPLETED and trial.history == tuple(x + s for s in range(60))
        assert trial.final_metric == x + 60


def test_a_server_address_that_cannot_be_bound_leaves_the_journal_closed(tmp_path):
    import threading

    from lightning_maggy.backends.local import LocalBackend
    from lightning_maggy.driver.journal import Journal

    class Unbindable(LocalBackend):
        driver_host = "192.0.2.1"  # TEST-NET-1: no interface of this machine has it

    def syncers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "maggy-journal-sync"}

    before = syncers()  # (other tests' journals may still be open)
    with pytest.raises(Exception) as info:
        lm.search(_steps, lm.Searchspace(x=lm.Discrete([0])), metric="score", max_epochs=1, num_trials=1,
                  backend=Unbindable(), exp_dir=tmp_path / "exp", verbose=False)
    assert not isinstance(info.value, AssertionError)
    assert not syncers() - before
    Journal(tmp_path / "exp" / "journal.jsonl").close()  # its lock is free: another driver may open it
