"""Fault tolerance of the Spark backend on a real standalone cluster (see conftest.py).

A search runs as one Spark job of two long-running tasks, one per one-core cluster worker. In the
middle of a trial, that trial's cluster worker is SIGKILLed with everything it started (Worker JVM,
executor JVM, python daemon and worker). Spark cannot retry the lost task before the surviving
worker's core frees up (at the end of the study), so recovery goes through the server: the
heartbeat timeout declares the trial LOST, it is re-queued and the surviving worker resumes it
from its last checkpoint. At the end the job group is cancelled, the pending retry included.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import pickle
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal, replay

pytestmark = [pytest.mark.spark, pytest.mark.timeout(400)]

MAX_EPOCHS = 6
STEPS_PER_EPOCH = 6  # 192 training samples in batches of 32
HEARTBEAT_TIMEOUT = 8.0


def _events(exp: Path) -> list[dict]:
    path = exp / "journal.jsonl"
    return list(read_journal(path)) if path.exists() else []


def _latest(events: list[dict]) -> dict[str, dict]:
    """trial_id -> its latest state snapshot."""
    return {e["trial"]["trial_id"]: e["trial"] for e in events if e["event"] == "trial"}


def _global_step(ckpt: Path) -> int | None:
    for _ in range(20):  # written through a temporary file; retry a read that races a save
        try:
            return int(torch.load(ckpt, weights_only=False, map_location="cpu")["global_step"])
        except FileNotFoundError:
            return None
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            time.sleep(0.1)
    return None


def test_a_killed_spark_worker_loses_its_trial_which_resumes_from_its_checkpoint(spark_cluster, tmp_path):
    cluster = spark_cluster
    exp = tmp_path / "exp"
    box: dict = {}
    lrs = [0.01, 0.03, 0.1, 0.3]

    def run() -> None:
        try:
            box["result"] = lm.search(
                TinyClassifier,
                lm.Searchspace(epoch_sleep=lm.Discrete([0.5]), lr=lm.Discrete(lrs)),
                datamodule=BlobsDataModule,
                metric="val_acc",
                optimizer="grid",
                num_trials=len(lrs),
                max_epochs=MAX_EPOCHS,
                backend="spark",
                workers=2,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                seed=0,
                exp_dir=exp,
                verbose=False,
                spark_master=cluster.master_url,
                spark_conf=cluster.study_conf(),
            )
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = err

    started = time.monotonic()
    thread = threading.Thread(target=run, name="spark-fault-search", daemon=True)
    thread.start()
    try:
        _kill_mid_trial_and_check(cluster, exp, thread, box, started, lrs)
    finally:
        if thread.is_alive():  # a failed or hung test: end the search and its Spark job
            from pyspark import SparkContext

            sc = SparkContext._active_spark_context
            if sc is not None:
                with contextlib.suppress(Exception):
                    sc.cancelAllJobs()
            thread.join(30)


def _kill_mid_trial_and_check(cluster, exp: Path, thread: threading.Thread, box: dict, started: float,
                              lrs: list[float]) -> None:
    # Wait until some trial has reported epoch >= 2, on a worker whose python pid we know.
    victim_tid = victim_pid = None
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
        events = _events(exp)
        pids = {e["worker_id"]: e["pid"] for e in events if e["event"] == "worker"}
        last_epoch = {e["trial_id"]: e["epoch"] for e in events if e["event"] == "report"}
        for tid, t in _latest(events).items():
            # Mid-trial: epochs 0..2 (or 3) reported, at least two more to go.
            if t["state"] == "RUNNING" and 2 <= last_epoch.get(tid, -1) <= MAX_EPOCHS - 3 and t["worker"] in pids:
                victim_tid, victim_pid = tid, pids[t["worker"]]
                break
        if victim_tid:
            break
    if victim_tid is None:
        thread.join(30)
        pytest.fail(
            f"no trial reached epoch 2 in time (search error: {box.get('error')!r})\n"
            f"{_tail(exp)}\n{cluster.log_tails()}"
        )
    killed_at = time.monotonic() - started
    index = cluster.worker_of(victim_pid)
    assert index is not None, f"python worker {victim_pid} runs under no cluster worker"
    killed = cluster.kill_worker(index)
    assert victim_pid in killed
    for _ in range(50):
        if not any(cluster.pid_alive(p) for p in killed):
            break
        time.sleep(0.1)
    assert not [p for p in killed if cluster.pid_alive(p)], "the killed worker's processes still run"

    # What the trial had checkpointed when its worker died (the file stays until it resumes).
    ckpt_path = exp / "trials" / victim_tid / "checkpoints" / "last.ckpt"
    step_at_kill = _global_step(ckpt_path)
    assert step_at_kill is not None and step_at_kill % STEPS_PER_EPOCH == 0
    ckpt_epochs = step_at_kill // STEPS_PER_EPOCH
    reported_before = [e["epoch"] for e in _events(exp) if e["event"] == "report" and e["trial_id"] == victim_tid]

    thread.join(240)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the search did not end\n{_tail(exp)}\n{cluster.log_tails()}"
    if "error" in box:
        raise box["error"]
    result = box["result"]
    print(f"\n[spark-faults] killed worker {index} (pid {victim_pid}, trial {victim_tid}) at {killed_at:.1f} s, "
          f"checkpointed epochs {ckpt_epochs}, reported {reported_before}; search ended after {elapsed:.1f} s")

    # The study finished, every trial fully trained.
    assert result.stop_reason == "finished", result.message
    assert len(result.trials) == len(lrs)
    assert sorted(t.config["lr"] for t in result.trials) == lrs
    for t in result.trials:
        assert t.state is lm.TrialState.COMPLETED, t
        assert len(t.history) == MAX_EPOCHS and t.epochs_done == MAX_EPOCHS, t
        assert not any(math.isnan(v) for v in t.history), t
        step = _global_step(exp / "trials" / t.trial_id / "checkpoints" / "last.ckpt")
        assert step == MAX_EPOCHS * STEPS_PER_EPOCH, (t.trial_id, step)

    # The interrupted trial was lost once, the others never.
    victim = next(t for t in result.trials if t.trial_id == victim_tid)
    assert victim.retries >= 1
    for t in result.trials:
        if t.trial_id != victim_tid:
            assert t.retries == 0, f"{t.trial_id} was lost without being killed: {t}"

    events = _events(exp)
    states: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "trial":
            states.setdefault(e["trial"]["trial_id"], []).append(e["trial"]["state"])
    assert states[victim_tid].count("LOST") == victim.retries
    assert states[victim_tid][:2] == ["RUNNING", "LOST"] and states[victim_tid][-2:] == ["RUNNING", "COMPLETED"]
    for t in result.trials:
        if t.trial_id != victim_tid:
            assert states[t.trial_id] == ["RUNNING", "COMPLETED"], (t.trial_id, states[t.trial_id])

    # Resumed from its checkpoint, not restarted: after the loss the reports start at the
    # checkpointed epoch (>= 2), and at most the one epoch after the checkpoint ran twice.
    lost_at = next(i for i, e in enumerate(events)
                   if e["event"] == "trial" and e["trial"]["trial_id"] == victim_tid and e["trial"]["state"] == "LOST")
    reports = [(i, e["epoch"]) for i, e in enumerate(events) if e["event"] == "report" and e["trial_id"] == victim_tid]
    before = [ep for i, ep in reports if i < lost_at]
    after = [ep for i, ep in reports if i > lost_at]
    assert before == reported_before == list(range(len(before))) and before[-1] >= 2
    assert 2 <= ckpt_epochs and len(before) - 1 <= ckpt_epochs <= len(before)
    assert after == list(range(ckpt_epochs, MAX_EPOCHS)), (before, after, ckpt_epochs)
    assert sorted(set(before + after)) == list(range(MAX_EPOCHS))
    assert len(before) + len(after) <= MAX_EPOCHS + 1
    # The history holds each epoch once (the re-run epoch's value replaced the first one).
    assert len(victim.history) == MAX_EPOCHS

    # Nothing lost from the journal: result.json and a replay agree with the result.
    (end,) = [e for e in events if e["event"] == "experiment_end"]
    assert end["reason"] == "finished"
    expected = {t.trial_id: (t.state, t.history, t.retries) for t in result.trials}
    replayed = replay(exp / "journal.jsonl")
    assert {k: (v.state, v.history, v.retries) for k, v in replayed.items()} == expected
    saved = json.loads((exp / "result.json").read_text())
    assert saved["stop_reason"] == "finished"
    assert {t["trial_id"]: (t["state"], tuple(t["history"]), t["retries"]) for t in saved["trials"]} == {
        k: (s.value, h, r) for k, (s, h, r) in expected.items()
    }
    # Each of the two tasks registered once; nobody registered in place of the killed task
    # (Spark's retry could only start once the survivor's core freed up, and was cancelled).
    registrations = [e for e in events if e["event"] == "worker"]
    assert sorted(e["worker_id"] for e in registrations) == [0, 1], registrations

    # Nothing lingers: the job thread ended, the session the backend built is stopped, the master
    # lists the application as finished and the surviving executor and its python workers are gone.
    lingering = [
        t.name for t in threading.enumerate()
        if t.name.startswith("maggy-") and t.name != "maggy-journal-sync" and t.is_alive()
    ]
    # The study's journal is closed: the lock a driver holds on it while writing is free again.
    # (Checked on the file: other tests in this process may leave journals of their own open.)
    with open(exp / "journal.jsonl", "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a driver still holds it
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    assert not lingering, f"driver threads still running: {lingering}"  # the Spark job's, the journal's
    from pyspark import SparkContext

    assert SparkContext._active_spark_context is None
    survivor = 1 - index
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = cluster.state() or {}
        leftovers = [p for p in (e["pid"] for e in registrations) if cluster.pid_alive(p)]
        executors = [p for p in cluster.descendants(cluster.worker_pid(survivor)) if cluster.pid_alive(p)]
        if state and not state.get("activeapps") and not leftovers and not executors:
            break
        time.sleep(0.5)
    assert state.get("activeapps") == [], state.get("activeapps")
    assert [a["name"] for a in state.get("completedapps", [])] == ["lightning_maggy"]
    assert not leftovers, f"python workers still alive: {leftovers}"
    assert not executors, f"the surviving worker still runs executors: {executors}"
    assert cluster.alive_workers(state) == 1


def _tail(exp: Path, n: int = 40) -> str:
    lines = [json.dumps(e)[:300] for e in _events(exp)[-n:]]
    return "--- journal tail ---\n" + "\n".join(lines)
