"""Per-trial overhead of lightning_maggy's Spark backend, against Hyperopt's SparkTrials.

Both frameworks run trivial trials on the same SparkSession (``master=local[2]``, driver bound to
127.0.0.1, no UI, log level ERROR), with 2 trials in parallel:

* lightning_maggy: ``search(fn, ..., backend="spark", workers=2, optimizer="random")``, where
  ``fn(hparams, reporter)`` reports 9 steps with ``reporter.broadcast`` and returns. The search
  is ONE Spark job of 2 long-running tasks, each looping over trials against the optimization
  server on the driver.
* Hyperopt: ``fmin(objective, ..., algo=rand.suggest, trials=SparkTrials(parallelism=2,
  spark_session=spark))`` with an objective that returns ``{'loss': x, 'status': STATUS_OK}``.
  SparkTrials runs one Spark job per trial and polls for results; ``rand.suggest`` keeps the
  suggester cheap so that the figure is Spark dispatch, not TPE.

lightning_maggy's throughput counts only the trial phase (the first trial's start to the last
trial's end, from ``result.trials[i].started/finished``); the wall time of ``search()``, which
includes launching the Spark job and the workers, is printed separately. SparkTrials has no
separate start-up phase (every trial is its own job), so its throughput is
``max_evals / wall time of fmin``. lightning_maggy runs first; its Spark Python workers are then
reused by SparkTrials, so the comparison does not charge SparkTrials for the first worker start.
Figures are ratios from one run, since the machine is noisy; SparkTrials manages ~1 trial/s, so it
runs far fewer trials by default.

Compatibility: hyperopt 0.3.0's SparkTrials works with pyspark 4 as is (pinned-thread mode, job
groups via ``setLocalProperty``). Its only wart is that it calls
``pyspark.inheritable_thread_target(function)`` without a session, which under pyspark 4 warns
"Spark session is not provided. Tags will not be inherited." once per trial; that UserWarning is
filtered here (it has no effect on classic, non-Connect Spark). If SparkTrials fails anyway, the
script still prints lightning_maggy's figures and the reason the comparison could not run.

Run: ``python benchmarks/spark_overhead.py [--maggy-trials 2000] [--hyperopt-trials 30]`` (needs
``pip install 'lightning_maggy[spark]' hyperopt`` and Java 17+).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
import tempfile
import time
import traceback
import warnings

from overhead import trial_phase  # the sibling script: the same trial-phase measure

STEPS = 9

# Before the JVM starts: keep Spark from resolving the hostname to a non-loopback address.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
warnings.filterwarnings("ignore", message="Spark session is not provided.*")
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas.*")


def _maggy_trial(hparams, reporter):
    value = 0.0
    for step in range(STEPS):
        value = hparams["x"] * (step + 1)
        reporter.broadcast(value, step)
    return value


def make_spark():
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("lightning_maggy-spark-overhead")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def bench_maggy(spark, trials: int, workdir: str) -> dict:
    from pyspark.sql import SparkSession

    import lightning_maggy as lm

    # backend="spark" picks up the active session: make sure it is ours (no second context).
    active = SparkSession.getActiveSession()
    if active is None or active.sparkContext is not spark.sparkContext:
        raise RuntimeError("the benchmark's SparkSession is not the active one")
    space = lm.Searchspace(x=lm.Double(0.0, 1.0))
    t0 = time.time()
    result = lm.search(
        _maggy_trial,
        space,
        metric="score",
        max_epochs=STEPS,
        optimizer="random",
        num_trials=trials,
        backend="spark",
        workers=2,
        seed=0,
        exp_dir=os.path.join(workdir, "maggy-exp"),
        verbose=False,
    )
    return {**trial_phase(result, t0), "wall_s": time.time() - t0}


def _hyperopt_objective(x):
    from hyperopt import STATUS_OK

    return {"loss": x, "status": STATUS_OK}


def bench_hyperopt(spark, trials: int) -> dict:
    import logging

    from hyperopt import fmin, hp, rand
    from hyperopt.spark import SparkTrials

    logging.getLogger("hyperopt-spark").setLevel(logging.WARNING)
    spark_trials = SparkTrials(parallelism=2, spark_session=spark)
    t0 = time.time()
    fmin(
        _hyperopt_objective,
        hp.uniform("x", 0.0, 1.0),
        algo=rand.suggest,
        max_evals=trials,
        trials=spark_trials,
        show_progressbar=False,
    )
    wall = time.time() - t0
    done = spark_trials.count_successful_trials()
    if done != trials:
        raise RuntimeError(
            f"SparkTrials finished {done} of {trials} trials "
            f"({spark_trials.count_failed_trials()} failed)"
        )
    return {"trials": done, "trials_per_s": done / wall, "phase_s": wall, "wall_s": wall}


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maggy-trials", type=int, default=2000)
    parser.add_argument("--hyperopt-trials", type=int, default=30)
    args = parser.parse_args()

    spark = make_spark()
    hyperopt_error = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            maggy = bench_maggy(spark, args.maggy_trials, tmp)
        try:
            hyper = bench_hyperopt(spark, args.hyperopt_trials)
        except Exception as err:  # report lightning_maggy's figure regardless
            hyper = None
            hyperopt_error = "".join(traceback.format_exception_only(type(err), err)).strip()
        spark_version = spark.version
    finally:
        spark.stop()

    print(
        f"trivial trials, 2 parallel on one SparkSession local[2]; python {sys.version.split()[0]}, "
        f"pyspark {spark_version}, hyperopt {_version('hyperopt')}, "
        f"lightning_maggy {_version('lightning_maggy')}"
    )
    print(f"{'':<30}{'trials':>7}{'trials/s':>10}{'timed s':>9}{'wall s':>9}")
    rows = [(f"lightning_maggy ({STEPS} reports)", maggy)]
    if hyper is not None:
        rows.append(("hyperopt SparkTrials (rand)", hyper))
    for name, r in rows:
        print(f"{name:<30}{r['trials']:>7}{r['trials_per_s']:>10.1f}{r['phase_s']:>9.2f}{r['wall_s']:>9.2f}")
    print(
        f"lightning_maggy timed = trial phase; wall includes {maggy['startup_s']:.2f} s of Spark "
        f"job start before the first trial. SparkTrials timed = wall of fmin."
    )
    if hyper is None:
        print(f"hyperopt SparkTrials could not run, so there is no ratio: {hyperopt_error}")
        return
    ratio = maggy["trials_per_s"] / hyper["trials_per_s"]
    print(f"ratio lightning_maggy/SparkTrials trials per second: {ratio:.1f}x (target >= 50x)")


if __name__ == "__main__":
    main()
