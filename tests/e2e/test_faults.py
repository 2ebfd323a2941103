"""Nothing lost, whatever fails: real worker processes, real sockets, real signals.

- a trial whose process dies every time (SIGKILL, as an OOM kill) is FAILED after
  ``max_retries + 1`` attempts with the cause, and the study finishes;
- a worker frozen long enough to be declared lost (SIGSTOP: a long GIL-holding call, a network
  pause) and then thawed does not train beside the re-queued attempt: it is told to drop it;
  one that never thaws is killed and replaced, and the study goes on without it;
- a Lightning trial over ``trial_timeout`` is stopped, recorded and its worker goes on; one stuck
  in a call that cannot be interrupted ends its worker, which another replaces;
- fatal errors are matched by type: a user's own ``ConfigurationError`` fails its trial only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow


def _kills_itself(hparams: dict[str, Any], reporter: Any) -> float:
    if hparams["x"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # every attempt, like a segfault or an OOM kill
    for step in range(reporter.budget):
        reporter.broadcast(hparams["x"] / 10 + step / 100, step)
    return hparams["x"] / 10


def test_a_trial_that_kills_its_worker_every_time_fails_after_max_retries_and_the_study_finishes(
    tmp_path: Path,
) -> None:
    # One worker and the default max_retries=3: four deaths in a row. (Before, the local
    # backend restarted workers 3 times in all and then ended the study.)
    result = lm.search(
        _kills_itself,
        lm.Searchspace(x=lm.Discrete([1, 2, 3])),
        metric="score",
        optimizer="grid",
        max_epochs=2,
        workers=1,
        max_failures=5,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "finished"
    by_x = {t.config["x"]: t for t in result.trials}
    killed = by_x[1]
    assert killed.state is lm.TrialState.FAILED
    assert killed.attempt == 4 and killed.retries == 3
    assert "SIGKILL" in (killed.error or "") and "lost 4 times in 4 attempts (max_retries=3)" in killed.error
    assert by_x[2].state is lm.TrialState.COMPLETED and by_x[3].state is lm.TrialState.COMPLETED
    events = list(read_journal(Path(result.exp_dir) / "journal.jsonl"))
    assert len({e["pid"] for e in events if e["event"] == "worker"}) == 5  # the first + 4 replacements
    lost = [e["trial"]["attempt"] for e in events if e["event"] == "trial" and e["trial"]["state"] == "LOST"]
    assert lost == [1, 2, 3]


def _slow_steps(hparams: dict[str, Any], reporter: Any) -> float:
    ctx = lm.current_trial()
    value = 0.0
    for step in range(reporter.start_step, reporter.budget):
        with open(os.path.join(ctx.trial_dir, "steps.log"), "a", encoding="utf-8") as fh:
            fh.write(f"{ctx.attempt} {step} {os.getpid()} {time.time()!r}\n")
        time.sleep(0.3)
        value = hparams["x"] + step / 100
        reporter.broadcast(value, step)
    return value


def test_a_worker_wrongly_declared_lost_is_told_to_drop_its_stale_attempt(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    box: dict[str, Any] = {}

    def run() -> None:
        box["result"] = lm.search(
            _slow_steps,
            lm.Searchspace(x=lm.Discrete([1])),
            metric="score",
            optimizer="grid",
            max_epochs=10,
            workers=2,
            heartbeat_timeout=2.0,  # thawed about 3 s into the silence, before the 4 s that replaces it
            exp_dir=exp,
            verbose=False,
        )

    thread = threading.Thread(target=run)
    thread.start()
    journal = exp / "journal.jsonl"

    def events() -> list[dict[str, Any]]:
        return list(read_journal(journal)) if journal.exists() else []

    def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = events()
            if predicate(evs):
                return evs
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {evs[-5:]}")

    evs = wait_for(lambda evs: any(e["event"] == "report" and e["epoch"] >= 1 for e in evs), "epoch 1")
    first = next(e["trial"] for e in evs if e["event"] == "trial" and e["trial"]["state"] == "RUNNING")
    pid = next(e["pid"] for e in evs if e["event"] == "worker" and e["worker_id"] == first["worker"])
    os.kill(pid, signal.SIGSTOP)  # frozen: no heartbeat, no report
    try:
        wait_for(
            lambda evs: any(e["event"] == "trial" and e["trial"]["attempt"] == 2 for e in evs),
            "the re-queued attempt 2",
        )
        time.sleep(0.5)  # attempt 2 trains a step or two
    finally:
        os.kill(pid, signal.SIGCONT)
    thawed = time.time()
    thread.join(60)
    assert not thread.is_alive()
    result = box["result"]
    (trial,) = result.trials
    assert trial.state is lm.TrialState.COMPLETED and trial.attempt == 2 and trial.retries == 1
    assert trial.history == tuple(1 + step / 100 for step in range(10))
    steps = [line.split() for line in (Path(result.exp_dir) / "trials" / trial.trial_id / "steps.log").read_text().splitlines()]
    stale_after_thaw = [s for s in steps if s[0] == "1" and float(s[3]) > thawed]
    assert len(stale_after_thaw) <= 1, stale_after_thaw  # at most the step it was in
    assert {s[2] for s in steps if s[0] == "2"} != {str(pid)}  # attempt 2 ran on the other worker
    evs = events()
    assert len({e["pid"] for e in evs if e["event"] == "worker"}) == 2  # no restart: it was alive


def _freezes_on_first_attempt(hparams: dict[str, Any], reporter: Any) -> float:
    ctx = lm.current_trial()
    for step in range(reporter.start_step, reporter.budget):
        reporter.broadcast(hparams["x"] + step / 10, step)
        if hparams["x"] == 1 and ctx.attempt == 1 and step == 1:
            os.kill(os.getpid(), signal.SIGSTOP)  # frozen for good, heartbeat thread included
        time.sleep(0.05)
    return hparams["x"] + reporter.budget / 10


def test_a_worker_frozen_for_good_is_killed_and_replaced_and_the_study_goes_on(tmp_path: Path) -> None:
    result = lm.search(
        _freezes_on_first_attempt, lm.Searchspace(x=lm.Discrete([1, 2])), metric="score", optimizer="grid",
        max_epochs=4, workers=1, heartbeat_timeout=1.0, timeout=120, exp_dir=tmp_path / "exp", verbose=False,
    )
    # Without the replacement the only worker stays stopped: nothing runs until the timeout.
    assert result.stop_reason == "finished"
    by_x = {t.config["x"]: t for t in result.trials}
    first = by_x[1]
    assert first.state is lm.TrialState.COMPLETED and first.attempt == 2 and first.retries == 1
    assert first.history == (1.0, 1.1, 1.2, 1.3)
    assert by_x[2].state is lm.TrialState.COMPLETED
    events = list(read_journal(Path(result.exp_dir) / "journal.jsonl"))
    (frozen,) = [e for e in events if e["event"] == "worker_frozen"]
    assert frozen["worker_id"] == 0 and frozen["replaced"] is True and frozen["seconds"] > 2.0
    pids = [e["pid"] for e in events if e["event"] == "worker"]
    assert len(set(pids)) == 2
    with pytest.raises(ProcessLookupError):  # the frozen process is gone, not left stopped
        os.kill(pids[0], 0)


def test_a_lightning_trial_over_trial_timeout_is_stopped_and_its_worker_goes_on(tmp_path: Path) -> None:
    result = lm.search(
        TinyClassifier,
        lm.Searchspace(epoch_sleep=lm.Discrete([0.0, 5.0])),
        datamodule=BlobsDataModule,
        metric="val_acc",
        optimizer="grid",
        max_epochs=3,
        workers=1,
        trial_timeout=8.0,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    by_sleep = {t.config["epoch_sleep"]: t for t in result.trials}
    assert result.stop_reason == "finished"
    slow = by_sleep[5.0]  # reports at about 1 s and 6 s, then over the 8 s
    assert slow.state is lm.TrialState.STOPPED and "trial_timeout=8" in (slow.error or "")
    assert 1 <= len(slow.history) < 3
    assert by_sleep[0.0].state is lm.TrialState.COMPLETED and len(by_sleep[0.0].history) == 3


def _sleeps_in_native_code(hparams: dict[str, Any], reporter: Any) -> float:
    reporter.broadcast(float(hparams["x"]), 0)
    if hparams["x"] == 1:
        time.sleep(600)  # a call TrialDropped cannot interrupt (as a hung read or collective)
    reporter.broadcast(float(hparams["x"]), 1)
    return float(hparams["x"])


def test_a_trial_stuck_in_native_code_past_trial_timeout_does_not_hold_the_study(tmp_path: Path) -> None:
    started = time.monotonic()
    result = lm.search(
        _sleeps_in_native_code, lm.Searchspace(x=lm.Discrete([1, 2])), metric="score", optimizer="grid",
        max_epochs=2, workers=1, trial_timeout=2.0, heartbeat_timeout=4.0, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert time.monotonic() - started < 120  # not the 600 s of the call
    by_x = {t.config["x"]: t for t in result.trials}
    assert result.stop_reason == "finished"
    assert by_x[1].state is lm.TrialState.STOPPED and "trial_timeout=2" in (by_x[1].error or "")
    assert by_x[1].history == (1.0,)
    assert by_x[2].state is lm.TrialState.COMPLETED and by_x[2].history == (2.0, 2.0)
    # The stuck worker's process ended itself, said why in the trial's log, and another took over.
    log = (Path(result.exp_dir) / "trials" / by_x[1].trial_id / "output.log").read_text()
    assert "its code has not returned" in log and "This worker process exits" in log
    pids = [e["pid"] for e in read_journal(Path(result.exp_dir) / "journal.jsonl") if e["event"] == "worker"]
    assert len(set(pids)) == 2


class ConfigurationError(Exception):
    """The user's own exception class that happens to share a name with ours."""


def _raises_own_configuration_error(hparams: dict[str, Any], reporter: Any) -> float:
    if hparams["x"] == 1:
        raise ConfigurationError("the user's own configuration check failed")
    reporter.broadcast(float(hparams["x"]), 0)
    return float(hparams["x"])


def test_a_users_exception_named_configuration_error_fails_its_trial_only(tmp_path: Path) -> None:
    result = lm.search(
        _raises_own_configuration_error,
        lm.Searchspace(x=lm.Discrete([1, 2, 3])),
        metric="score",
        optimizer="grid",
        max_epochs=1,
        workers=1,
        max_failures=3,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "finished"
    states = {t.config["x"]: t.state for t in result.trials}
    assert states == {1: lm.TrialState.FAILED, 2: lm.TrialState.COMPLETED, 3: lm.TrialState.COMPLETED}


class KilledOnce(TinyClassifier):
    """SIGKILLs its worker at the start of epoch 3, once (``flag`` marks that it did)."""

    def __init__(self, flag: str, lr: float = 0.1) -> None:
        super().__init__(lr=lr)
        self.flag = flag

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 3 and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # as an OOM kill would


def test_a_killed_runs_reports_stay_in_the_trials_metrics_csv(tmp_path: Path) -> None:
    """The run that died had reported epochs 0-2, which the journal has; the trial's
    metrics.csv must have them too, not only the resumed run's rows."""
    space = lm.Searchspace(flag=lm.Categorical([str(tmp_path / "killed")]))
    result = lm.search(KilledOnce, space, datamodule=BlobsDataModule, metric="val_acc", max_epochs=5, num_trials=1,
                       optimizer="random",
                       workers=1, exp_dir=tmp_path / "exp", seed=0, verbose=False)
    (trial,) = result.trials
    assert trial.state is lm.TrialState.COMPLETED and trial.attempt == 2 and len(trial.history) == 5
    lines = (Path(result.exp_dir) / "trials" / trial.trial_id / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,val_acc,decision"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    assert [float(r[1]) for r in rows] == list(trial.history)
