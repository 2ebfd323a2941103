"""Spark GPU scheduling without a GPU: a standalone worker on 127.0.0.1 announces fake GPU
addresses through a discovery script; ``gpus_per_trial`` becomes the session's
``spark.task.resource.gpu.amount``, and each task's trials see the addresses Spark gave it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

import lightning_maggy as lm  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.mark.parametrize(("per_trial", "tasks_per_gpu"), [(1, 1), (0.5, 2)])
def test_tasks_see_and_use_the_gpu_addresses_spark_assigned(spark_gpu_cluster, tmp_path: Path, per_trial,
                                                             tasks_per_gpu) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()

    def trial(hparams, reporter):
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        (seen / f"{os.getpid()}-{hparams['x']:.6f}").write_text(devices)
        time.sleep(1.0)  # the two tasks run side by side
        reporter.broadcast(1.0, 0)
        return 1.0

    result = lm.search(
        trial, lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1, num_trials=4, workers=2, seed=0,
        backend="spark", spark_master=spark_gpu_cluster.master_url, gpus_per_trial=per_trial,
        exp_dir=tmp_path / "exp", verbose=False,
        spark_conf={
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false", "spark.executor.memory": "512m", "spark.executor.cores": "2",
            "spark.executor.resource.gpu.amount": "2" if per_trial == 1 else "1",
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
        },
    )
    assert result.counts()["COMPLETED"] == 4
    by_task: dict[str, set[str]] = {}
    for path in seen.iterdir():
        by_task.setdefault(path.name.split("-")[0], set()).add(path.read_text())
    assert len(by_task) == 2  # two Spark tasks (workers) ran the trials
    addresses = [next(iter(devices)) for devices in by_task.values()]
    assert all(len(devices) == 1 for devices in by_task.values())  # a task keeps its GPU
    assert set(addresses) <= {"3", "7"}  # the discovery script's addresses, not a default "0"
    # One GPU per task: two different GPUs; half a GPU per task: both tasks on the one GPU the
    # executor was given.
    assert len(set(addresses)) == (2 if tasks_per_gpu == 1 else 1)
