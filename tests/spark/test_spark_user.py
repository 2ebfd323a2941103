"""The Spark backend as a user with a SparkSession of their own uses it (local[2]).

The session is built the way a user builds one, before the search and without the settings the
search gives a session it builds itself (no lightning_maggy daemon, the JVM's defaults), with an
app name, executor memory and Arrow settings of the user's own. pyspark reuses its Python
workers between tasks (spark.python.worker.reuse, the default), also between jobs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import lightning_maggy as lm  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.slow]


LATER_SESSION = """
import lightning_maggy as lm
from pyspark.sql import SparkSession

def f(hparams, reporter):
    return hparams["x"]

lm.search(f, lm.Searchspace(x=lm.Double(0, 1)), metric="m", num_trials=1, max_epochs=1, workers=1,
          backend="spark", spark_master="local[1]", exp_dir={exp!r}, verbose=False,
          spark_conf={{"spark.executor.memory": "700m", "spark.ui.enabled": False}})  # a bool too
spark = SparkSession.builder.master("local[1]").appName("mine").getOrCreate()
conf = spark.sparkContext.getConf()
print("LATER", [conf.get(k, None) for k in ("spark.executor.memory", "spark.ui.enabled", "spark.python.daemon.module")])
spark.stop()
"""


def test_a_session_the_search_built_leaves_no_settings_to_the_users_next_session(tmp_path):
    # First in this file: no other session is active. pyspark launches its JVM with the first
    # session's settings as system properties, the defaults of every later session.
    proc = subprocess.run([sys.executable, "-c", LATER_SESSION.format(exp=str(tmp_path / "exp"))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "LATER [None, None, None]" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


TWO_CPUS_A_TASK = """
import json, pathlib, warnings
import lightning_maggy as lm
from pyspark.sql import SparkSession

def f(hparams, reporter):
    return hparams["x"]

spark = (SparkSession.builder.master("local[2]").appName("mine").config("spark.task.cpus", "2")
         .config("spark.ui.enabled", "false").getOrCreate())
warnings.simplefilter("error")  # a warning about the workers would end the script
lm.search(f, lm.Searchspace(x=lm.Double(0, 1)), metric="m", num_trials=2, max_epochs=1, backend="spark",
          exp_dir={exp!r}, verbose=False)
print("WORKERS", json.loads(pathlib.Path({exp!r}, "experiment.json").read_text())["workers"])
spark.stop()
"""


def test_workers_default_to_the_tasks_a_local_master_runs_at_once(tmp_path):
    # spark.task.cpus=2 on local[2]: one task at a time (Spark's default parallelism says 2).
    exp = str(tmp_path / "exp")
    proc = subprocess.run([sys.executable, "-c", TWO_CPUS_A_TASK.format(exp=exp)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert "WORKERS 1" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("my-own-analysis")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executor.memory", "1g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


class Squares(pl.LightningDataModule):
    """y = sum(x^2) > 2 on 4 features: 128 samples to train, 64 to validate."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(3)
        x = torch.randn(192, 4, generator=g)
        y = ((x**2).sum(1) > 2).long()
        self.train_set, self.val_set = TensorDataset(x[:128], y[:128]), TensorDataset(x[128:], y[128:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class SquaresNet(pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_trials_output_logs_are_as_quiet_as_on_local_workers(spark, tmp_path):
    # Lightning's start-up banner ("GPU available: ...") is left out of output.log by local
    # workers; a session without lightning_maggy's daemon imported pytorch_lightning after the
    # worker quieted Lightning's loggers, which set them back to INFO.
    result = lm.search(
        SquaresNet, lm.Searchspace(lr=lm.Double(0.01, 0.1)), datamodule=Squares, metric="val_loss",
        direction="min", optimizer="random", num_trials=2, max_epochs=1, workers=1, backend="spark",
        seed=0, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert result.counts()["COMPLETED"] == 2
    for trial in result.trials:
        log = (tmp_path / "exp" / "trials" / trial.trial_id / "output.log").read_text()
        assert "GPU available" not in log and "TPU available" not in log, log
        assert (tmp_path / "exp" / "trials" / trial.trial_id / "metrics.csv").read_text().startswith("epoch,val_loss")


def _setting(hparams, reporter):
    return float(os.environ["MY_STUDY_SETTING"]) + hparams["x"]


def test_the_drivers_environment_reaches_trials_and_leaves_with_them(spark, tmp_path, monkeypatch):
    # Set after the session (and so its executors' JVM) started, as local workers see it.
    monkeypatch.setenv("MY_STUDY_SETTING", "40")
    result = lm.search(
        _setting, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random", num_trials=2,
        max_epochs=1, workers=2, backend="spark", seed=0, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert result.counts()["COMPLETED"] == 2, [t.error for t in result.trials]
    assert 40.0 <= result.best_metric <= 41.0
    # pyspark reuses the tasks' Python workers for the session's later jobs: none of them runs
    # "inside a search" (lm.search refused there, lm.prewarm a no-op) or with the study's settings.
    monkeypatch.delenv("MY_STUDY_SETTING")
    seen = spark.sparkContext.parallelize(range(4), 2).map(
        lambda _: (os.environ.get("LIGHTNING_MAGGY_WORKER"), os.environ.get("MY_STUDY_SETTING"))
    ).collect()
    assert seen == [(None, None)] * 4


def _meet_and_report(marks: str):
    """A trial that waits until both workers are in a trial (so both registered), and says in
    which scheduler pool its task runs."""

    def trial(hparams, reporter):
        import pyspark

        Path(marks, str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(os.listdir(marks)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        print("POOL", pyspark.TaskContext.get().getLocalProperty("spark.scheduler.pool"), flush=True)
        return hparams["x"]

    return trial


def _jobs(sc) -> list:
    """Every job of the session, from its status store (the data of the Spark UI's jobs page)."""
    it = sc._jsc.sc().statusStore().jobsList(None).iterator()
    out = []
    while it.hasNext():
        out.append(it.next())
    return out


def test_the_spark_ui_shows_a_finished_study_as_a_succeeded_job_that_says_what_it_is(spark, tmp_path):
    sc = spark.sparkContext
    marks = tmp_path / "marks"
    marks.mkdir()
    sc.setLocalProperty("spark.scheduler.pool", "research")  # the user's pool, as for their own jobs
    try:
        result = lm.search(
            _meet_and_report(str(marks)), lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random",
            num_trials=2, max_epochs=1, workers=2, backend="spark", seed=0, exp_dir=tmp_path / "exp", verbose=False,
        )
    finally:
        sc.setLocalProperty("spark.scheduler.pool", None)
    assert result.counts()["COMPLETED"] == 2
    for trial in result.trials:
        assert "POOL research" in (tmp_path / "exp" / "trials" / trial.trial_id / "output.log").read_text()
    ours = [job for job in _jobs(sc) if str(tmp_path / "exp") in str(job.description())]
    assert len(ours) == 1
    job = ours[0]
    assert str(job.description()) == (
        f"Some(lightning_maggy search of _meet_and_report.<locals>.trial: 2 worker(s), exp_dir {tmp_path / 'exp'})"
    )
    assert str(job.jobGroup()).startswith("Some(lightning_maggy-")
    # The workers were told "done" and ended their tasks: not cancelled, so not a failed job.
    assert str(job.status()) == "SUCCEEDED"


def _quick(hparams, reporter):
    return hparams["x"]


def test_more_workers_than_the_local_masters_cores_is_said_before_the_study(spark, tmp_path):
    # local[2] runs two tasks at a time: a third worker's task would wait for the study's end.
    with pytest.warns(UserWarning, match=r"workers=3 but the Spark master 'local\[2\]' runs 2 task\(s\) at a time"):
        result = lm.search(
            _quick, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random", num_trials=2,
            max_epochs=1, workers=3, backend="spark", seed=0, exp_dir=tmp_path / "exp", verbose=False,
        )
    assert result.counts()["COMPLETED"] == 2


class _FailsAtTheThirdReport(lm.AbstractEarlyStop):
    """An early-stop rule with a bug: the driver fails while both workers are in a trial."""

    def earlystop_check(self, to_check, finalized_trials, direction):
        if any(len(t.history) >= 3 for t in to_check.values()):
            raise RuntimeError("a bug in my early-stop rule")
        return []


def _long(hparams, reporter):
    for step in range(reporter.start_step, reporter.budget):
        time.sleep(0.3)
        reporter.broadcast(hparams["x"], step)
    return hparams["x"]


def test_a_spark_backend_serves_a_second_search_and_cancels_its_tasks_when_it_fails(spark, tmp_path):
    from lightning_maggy.backends.spark import SparkBackend

    backend = SparkBackend(spark)  # the user's session, one backend for both searches
    first = lm.search(_quick, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random", num_trials=2,
                      max_epochs=1, workers=2, backend=backend, exp_dir=tmp_path / "first", verbose=False)
    assert first.counts()["COMPLETED"] == 2
    with pytest.raises(lm.ExperimentError, match="a bug in my early-stop rule"):
        lm.search(_long, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random",
                  early_stop=_FailsAtTheThirdReport(), num_trials=2, max_epochs=300, workers=2, backend=backend,
                  exp_dir=tmp_path / "second", verbose=False)
    # Its job was cancelled: nothing trains on (300 epochs would take 90 s).
    deadline = time.monotonic() + 30
    while spark.sparkContext.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
