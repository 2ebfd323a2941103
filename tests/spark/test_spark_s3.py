"""Cluster storage on a real standalone Spark cluster (see conftest.py): two workers, each with
a working directory and temporary folder of its own, and no local path shared for ``exp_dir``,
which is a bucket on an S3-compatible server on loopback (moto, see ``tests/conftest.py``).

A killed worker:

An ASHA study whose promotions resume paused trials in new runs (each new configuration scores
below the earlier ones) runs until the best trial trains its last rung; then that trial's
cluster worker is SIGKILLed with everything it started. The server declares the trial lost and
the surviving worker resumes it, from the checkpoint in the bucket that the killed executor
uploaded. Every promoted or resumed trial must continue from its checkpoint there: each epoch is
trained once (but the one the kill interrupted), and each checkpoint holds exactly the epochs
its trial's record says.

A killed driver: the driver of an ASHA study on the cluster (``tests/driver_kill.py``) is
SIGKILLed, and the study is resumed with ``resume="s3://..."`` by a driver with an empty cache,
as on another machine. It continues from the journal as last uploaded; what the trials did after
that upload (their checkpoints and ``metrics.csv`` in the bucket) is caught up, not retrained.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_models import BlobsDataModule, ScoredClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal, replay
from lightning_maggy.storage import local_copy_of, open_url

pytestmark = [pytest.mark.spark, pytest.mark.timeout(400)]

MAX_EPOCHS = 9  # rungs at 1, 3 and 9 epochs
STEPS_PER_EPOCH = 6
HEARTBEAT_TIMEOUT = 8.0


def _descending(space, rng, trials):
    return {"score": round(0.9 - 0.01 * len(trials), 6), "epoch_sleep": 0.3}


def _events(journal: Path) -> list[dict]:
    return list(read_journal(journal)) if journal.exists() else []


def _global_step(fs, path: str) -> int | None:
    for _ in range(20):
        try:
            with fs.open(path, "rb") as fh:
                return int(torch.load(fh, weights_only=False, map_location="cpu")["global_step"])
        except FileNotFoundError:
            return None
        except (RuntimeError, EOFError, OSError):
            time.sleep(0.1)
    return None


def test_an_asha_study_in_a_bucket_survives_a_killed_spark_worker(spark_cluster, s3_bucket, s3_server):
    cluster = spark_cluster
    url = f"s3://{s3_bucket}/studies/spark-asha"
    journal = local_copy_of(url) / "journal.jsonl"
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = lm.search(
                ScoredClassifier,
                lm.Searchspace(score=lm.Double(0.0, 1.0), epoch_sleep=lm.Discrete([0.3])),
                datamodule=BlobsDataModule,
                metric="score",
                optimizer=lm.ASHA(reduction_factor=3, suggester=_descending),
                num_trials=9,
                max_epochs=MAX_EPOCHS,
                backend="spark",
                workers=2,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                seed=0,
                exp_dir=url,
                verbose=False,
                spark_master=cluster.master_url,
                # The executors find the bucket as the driver does (on a real cluster: instance
                # roles or the cluster's environment).
                spark_conf=cluster.study_conf(**{f"spark.executorEnv.{k}": v for k, v in s3_server.items()}),
            )
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = err

    thread = threading.Thread(target=run, name="spark-s3-search", daemon=True)
    thread.start()
    try:
        _kill_and_check(cluster, url, journal, thread, box)
    finally:
        if thread.is_alive():
            from pyspark import SparkContext

            sc = SparkContext._active_spark_context
            if sc is not None:
                with contextlib.suppress(Exception):
                    sc.cancelAllJobs()
            thread.join(30)


def _kill_and_check(cluster, url: str, journal: Path, thread: threading.Thread, box: dict) -> None:
    fs, root = open_url(url)
    # The best trial in its last rung's run, at epoch 4 to 6 of 9, on a python worker we know.
    victim = victim_pid = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and thread.is_alive() and victim is None:
        time.sleep(0.2)
        events = _events(journal)
        pids = {e["worker_id"]: e["pid"] for e in events if e["event"] == "worker"}
        last_epoch = {e["trial_id"]: e["epoch"] for e in events if e["event"] == "report"}
        latest = {e["trial"]["trial_id"]: e["trial"] for e in events if e["event"] == "trial"}
        for tid, t in latest.items():
            if (t["state"] == "RUNNING" and t["budget"] == MAX_EPOCHS and 4 <= last_epoch.get(tid, -1) <= 6
                    and t["worker"] in pids):
                victim, victim_pid = tid, pids[t["worker"]]
    if victim is None:
        thread.join(30)
        pytest.fail(f"no trial reached its last rung in time (search error: {box.get('error')!r})\n{cluster.log_tails()}")
    index = cluster.worker_of(victim_pid)
    assert index is not None
    killed = cluster.kill_worker(index)
    assert victim_pid in killed
    for _ in range(50):
        if not any(cluster.pid_alive(p) for p in killed):
            break
        time.sleep(0.1)
    ckpt = f"{root}/trials/{victim}/checkpoints/last.ckpt"
    step_at_kill = _global_step(fs, ckpt)
    assert step_at_kill is not None and step_at_kill % STEPS_PER_EPOCH == 0
    ckpt_epochs = step_at_kill // STEPS_PER_EPOCH
    assert ckpt_epochs >= 4

    thread.join(240)
    assert not thread.is_alive(), f"the search did not end\n{cluster.log_tails()}"
    if "error" in box:
        raise box["error"]
    result = box["result"]
    assert result.stop_reason == "finished", result.message
    assert result.exp_dir == url and not (Path(result.local_dir) / "trials").exists()
    assert fs.cat_file(f"{root}/journal.jsonl") == journal.read_bytes()

    events = _events(journal)
    lost_at = next(i for i, e in enumerate(events) if e["event"] == "trial" and e["trial"]["trial_id"] == victim
                   and e["trial"]["state"] == "LOST")
    reports: dict[str, list[int]] = {}
    for e in events:
        if e["event"] == "report":
            reports.setdefault(e["trial_id"], []).append(e["epoch"])
    after = [e["epoch"] for i, e in enumerate(events)
             if i > lost_at and e["event"] == "report" and e["trial_id"] == victim]
    # The survivor resumed the lost trial from the checkpoint the killed executor had uploaded.
    assert after == list(range(ckpt_epochs, MAX_EPOCHS)), (after, ckpt_epochs)

    resumed_runs, last = 0, {}
    for e in events:
        if e["event"] == "trial":
            t = e["trial"]
            resumed_runs += t["state"] == "RUNNING" and last.get(t["trial_id"]) in ("PAUSED", "LOST")
            last[t["trial_id"]] = t["state"]
    assert resumed_runs >= 3, resumed_runs  # two promotions (at least) and the lost trial

    for t in result.trials:
        epochs = reports[t.trial_id]
        assert sorted(set(epochs)) == list(range(t.epochs_done)), (t.trial_id, epochs)
        assert len(epochs) - len(set(epochs)) <= (1 if t.trial_id == victim else 0), (t.trial_id, epochs)
        step = _global_step(fs, f"{root}/trials/{t.trial_id}/checkpoints/last.ckpt")
        assert step == STEPS_PER_EPOCH * t.epochs_done, (t.trial_id, step, t.epochs_done)
    final = next(t for t in result.trials if t.trial_id == victim)
    assert final.state is lm.TrialState.COMPLETED and final.epochs_done == MAX_EPOCHS and final.retries >= 1

    # The surviving worker's scratch copies were its own, and none is left.
    survivor = cluster.base / f"work-{1 - index}" / "tmp"
    assert not [p for p in survivor.glob("lightning_maggy-trials-*/trials/*")], os.listdir(survivor)


def test_a_study_whose_driver_was_killed_resumes_from_the_bucket_on_another_machine(
    spark_cluster, s3_bucket, s3_server, tmp_path
):
    from driver_kill import check_resumed_study, expected_record, record, run, start_and_kill, write_script

    url = f"s3://{s3_bucket}/studies/killed"
    machine_a, machine_b = tmp_path / "machine-a", tmp_path / "machine-b"
    script = write_script(tmp_path)
    spark = {
        "MAGGY_TEST_SPARK_MASTER": spark_cluster.master_url,
        "MAGGY_TEST_SPARK_CONF": json.dumps(
            spark_cluster.study_conf(**{f"spark.executorEnv.{k}": v for k, v in s3_server.items()})
        ),
    }
    copy_a = machine_a / "s3" / s3_bucket / "studies" / "killed"
    killed = start_and_kill(script, copy_a, "spark", url=url, timeout=300, LIGHTNING_MAGGY_CACHE_DIR=str(machine_a),
                            **spark)
    assert killed["cleanup_s"] is not None, f"still alive 30 s after the driver was killed: {killed['left']}"

    fs, root = open_url(url)
    resumed = run(script, url, "resume", "spark", timeout=300, LIGHTNING_MAGGY_CACHE_DIR=str(machine_b), **spark)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESULT finished 9" in resumed.stdout

    # The contract of resume=, on the bucket's record: the journal the resumed driver kept (and
    # uploaded) and the trial folders in the bucket.
    check = tmp_path / "from-bucket"
    fs.get(f"{root}/", str(check), recursive=True)
    copy_b = machine_b / "s3" / s3_bucket / "studies" / "killed"
    assert (check / "journal.jsonl").read_bytes() == (copy_b / "journal.jsonl").read_bytes()
    final = replay(check / "journal.jsonl")
    assert record(final) == expected_record()
    # What the bucket held when the study resumed: the resumed journal up to its resume event.
    # (Read from there: the killed driver's last upload may still have been landing in the
    # server when it died.)
    lines = (check / "journal.jsonl").read_bytes().splitlines(keepends=True)
    uploaded = tmp_path / "uploaded.jsonl"
    uploaded.write_bytes(b"".join(lines[: next(i for i, line in enumerate(lines) if b'"event":"resume"' in line)]))
    lag = (copy_a / "journal.jsonl").stat().st_size - uploaded.stat().st_size
    print(f"\n[s3-resume] the bucket's journal was {lag} bytes behind the killed driver's")
    check_resumed_study(check, replay(uploaded), final)
    assert len(json.loads((check / "experiment.json").read_text())["resumed"]) == 1
    caught_up = [p.parent.name for p in check.glob("trials/*/output.log") if "re-sending the reports" in p.read_text()]
    print(f"[s3-resume] trials that re-sent reports their checkpoint held: {caught_up}")
