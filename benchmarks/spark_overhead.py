"""Per-trial overhead of lightning_maggy's Spark backend, against Hyperopt's SparkTrials.

Both frameworks run the same number of trials, 2 in parallel, each on a SparkSession of its own
(``master=local[2]``, driver bound to 127.0.0.1, no UI, log level ERROR), started fresh for each
measurement so that neither reuses the other's Spark Python workers:

* lightning_maggy: ``search(fn, ..., backend="spark", workers=2, optimizer="random")``, where
  ``fn(hparams, reporter)`` reports 9 steps with ``reporter.broadcast`` and returns. The search
  is ONE Spark job of 2 long-running tasks, each looping over trials against the optimization
  server on the driver.
* Hyperopt: ``fmin(objective, ..., algo=rand.suggest, trials=SparkTrials(parallelism=2,
  spark_session=spark))``, the objective returning ``{'loss': x, 'status': STATUS_OK}``.
  SparkTrials runs one Spark job per trial and polls for results; ``rand.suggest`` keeps the
  suggester cheap so that the figure is Spark dispatch, not TPE.

The timing window is the same on both sides: the wall time of ``search()`` and of ``fmin()``, so
it includes launching the Spark job(s) and the Python workers (the session itself is started
before the clock). Two workloads: trivial trials (what dispatch costs) and trials that sleep one
second (what a user feels: the ideal is ``trials / 2`` seconds, and the efficiency printed is
that ideal over the wall time). A last line, not like for like, gives lightning_maggy's
throughput over a long study's trial phase alone (``--maggy-scale`` trivial trials).

Compatibility: hyperopt 0.3.0's SparkTrials works with pyspark 4 as is (pinned-thread mode, job
groups via ``setLocalProperty``). Its only wart is that it calls
``pyspark.inheritable_thread_target(function)`` without a session, which under pyspark 4 warns
"Spark session is not provided. Tags will not be inherited." once per trial; that UserWarning is
filtered here (it has no effect on classic, non-Connect Spark). If SparkTrials fails anyway, the
script still prints lightning_maggy's figures and the reason the comparison could not run.

Run: ``python benchmarks/spark_overhead.py [--trials 30] [--slow-trials 20] [--maggy-scale 2000]
[--json out.json]`` (needs ``pip install 'lightning_maggy[spark]' hyperopt`` and Java 17+; about
two minutes).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
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
        if hparams["sleep"]:
            time.sleep(hparams["sleep"] / STEPS)
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


def bench_maggy(spark, trials: int, workdir: str, sleep: float = 0.0) -> dict:
    from pyspark.sql import SparkSession

    import lightning_maggy as lm

    # backend="spark" picks up the active session: make sure it is ours (no second context).
    active = SparkSession.getActiveSession()
    if active is None or active.sparkContext is not spark.sparkContext:
        raise RuntimeError("the benchmark's SparkSession is not the active one")
    space = lm.Searchspace(x=lm.Double(0.0, 1.0), sleep=lm.Discrete([sleep]))
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
        exp_dir=os.path.join(workdir, f"maggy-exp-{trials}-{sleep}"),
        verbose=False,
    )
    wall = time.time() - t0
    phase = trial_phase(result, t0)
    if phase["trials"] != trials:
        raise RuntimeError(f"lightning_maggy ended {phase['trials']} of {trials} trials: {result.counts()}")
    return {**phase, "wall_s": wall, "trials_per_s_wall": trials / wall}


def _hyperopt_objective(args):
    from hyperopt import STATUS_OK

    x, sleep = args
    if sleep:
        time.sleep(sleep)
    return {"loss": x, "status": STATUS_OK}


def bench_hyperopt(spark, trials: int, sleep: float = 0.0) -> dict:
    import logging

    from hyperopt import fmin, hp, rand
    from hyperopt.spark import SparkTrials

    logging.getLogger("hyperopt-spark").setLevel(logging.WARNING)
    spark_trials = SparkTrials(parallelism=2, spark_session=spark)
    t0 = time.time()
    fmin(
        _hyperopt_objective,
        (hp.uniform("x", 0.0, 1.0), sleep),
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
    return {"trials": done, "wall_s": wall, "trials_per_s_wall": done / wall}


def _fresh(measure, *args):
    """``measure(spark, *args)`` on a SparkSession started for it and stopped after."""
    spark = make_spark()
    try:
        return measure(spark, *args), spark.version
    finally:
        spark.stop()


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="trivial trials, on each side")
    parser.add_argument("--slow-trials", type=int, default=20, help="one-second trials, on each side")
    parser.add_argument("--maggy-scale", type=int, default=2000,
                        help="trivial trials of lightning_maggy's trial-phase line (0 leaves it out)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()

    rows, hyperopt_error, spark_version = {}, None, "?"
    with tempfile.TemporaryDirectory() as tmp:
        for name, sleep, n in (("trivial", 0.0, args.trials), ("one_second", 1.0, args.slow_trials)):
            rows[f"maggy_{name}"], spark_version = _fresh(bench_maggy, n, tmp, sleep)
            if hyperopt_error is None:
                try:
                    rows[f"hyperopt_{name}"], _ = _fresh(bench_hyperopt, n, sleep)
                except Exception as err:  # report lightning_maggy's figures regardless
                    hyperopt_error = "".join(traceback.format_exception_only(type(err), err)).strip()
        if args.maggy_scale:
            rows["maggy_scale"], _ = _fresh(bench_maggy, args.maggy_scale, tmp)

    print(
        f"2 trials in parallel, each side on a fresh SparkSession local[2]; python {sys.version.split()[0]}, "
        f"pyspark {spark_version}, hyperopt {_version('hyperopt')}, lightning_maggy {_version('lightning_maggy')}"
    )
    print("window: the wall time of search() / fmin(), Spark job and Python worker start included")
    print(f"{'':<44}{'trials':>7}{'wall s':>9}{'trials/s':>10}{'efficiency':>12}")
    for name, label, sleep in (("trivial", "trivial trials", 0.0), ("one_second", "one-second trials", 1.0)):
        for side, who in (("maggy", "lightning_maggy"), ("hyperopt", "hyperopt SparkTrials")):
            r = rows.get(f"{side}_{name}")
            if r is None:
                continue
            eff = f"{r['trials'] * sleep / 2 / r['wall_s']:.0%}" if sleep else ""
            print(f"{who + ', ' + label:<44}{r['trials']:>7}{r['wall_s']:>9.2f}{r['trials_per_s_wall']:>10.2f}{eff:>12}")
    for name in ("trivial", "one_second"):
        if f"hyperopt_{name}" in rows:
            ratio = rows[f"hyperopt_{name}"]["wall_s"] / rows[f"maggy_{name}"]["wall_s"]
            print(f"{name.replace('_', '-')} trials: SparkTrials took {ratio:.1f}x lightning_maggy's wall time")
    if hyperopt_error:
        print(f"hyperopt SparkTrials could not run, so there is no ratio: {hyperopt_error}")
    if "maggy_scale" in rows:
        r = rows["maggy_scale"]
        print(f"not like for like: lightning_maggy over {r['trials']} trivial trials, trial phase only "
              f"(first trial's start to last one's end): {r['trials_per_s']:.0f} trials/s; "
              f"{r['startup_s']:.2f} s from search() to the first trial")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "hyperopt_error": hyperopt_error}, fh, indent=2)


if __name__ == "__main__":
    main()
