"""Where the seconds before the first trial go on Spark: the demo's digits study on local[2].

The script is a user's: it imports, builds a SparkSession (``local[2]``, driver on 127.0.0.1),
and calls ``lm.search(DigitsMLP, ..., backend="spark", workers=2)`` with ASHA, as
``examples/digits_asha.py`` does on local workers. Every step is timed from the script's first
line:

* imports (``lightning_maggy``, torch, Lightning, pyspark, the example);
* the SparkSession (the JVM and the SparkContext), with ``--jvm quick`` (the default: the
  setting README gives for a session of one's own) the driver JVM's quick-start options;
* the driver's set-up inside ``search()`` (checks, the journal's first line);
* the Spark job and the executors' Python workers: from the journal's first line to the start
  of each executor Python process that runs a worker (its start time from ``/proc``, read by a
  callback inside the first trial; local mode runs executors on this machine). With
  lightning_maggy's daemon (``--daemon lightning_maggy``, the default: the setting README
  gives for a session of one's own), the daemon imports torch and Lightning here, once, before
  it forks the workers;
* the worker's own start: from its process start to its registration with the server
  (unpickling the task, which with pyspark's daemon imports torch, Lightning and
  lightning_maggy there, in each worker);
* the first trial: from registration to the trial handed out, then to the Trainer's ``fit``
  start, and to the first report (one epoch).

Printed: the timeline and the share of each step; ``--json`` writes it. ``--runs 2`` repeats
the search on the same session (the second search reuses the session and, by Spark's default
``spark.python.worker.reuse``, possibly the Python workers).

Run: ``python benchmarks/spark_startup.py [--runs 2] [--daemon lightning_maggy|pyspark]
[--jvm quick|default] [--json out.json]`` (needs pyspark, Java
17+, scikit-learn); about a minute.
"""

from __future__ import annotations

import time

T0 = time.time()  # the script's first line

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# The example module calls lm.prewarm(), which starts the local backend's forkserver: it would
# import torch and Lightning a second time, beside the JVM's start, for workers a Spark study
# never uses. A Spark script has no prewarm(); this makes the example's a no-op.
os.environ["LIGHTNING_MAGGY_START_METHOD"] = "spawn"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import pytorch_lightning as pl  # noqa: E402

import lightning_maggy as lm  # noqa: E402
from lightning_maggy.backends.spark import QUICK_START_JVM  # noqa: E402
from lightning_maggy.backends.spark_daemon import DAEMON_MODULE  # noqa: E402


#: The executors' Python daemon module (``spark.python.daemon.module``) for each ``--daemon``.
DAEMONS = {"lightning_maggy": DAEMON_MODULE, "pyspark": "pyspark.daemon"}


def _process_start(pid: int) -> float:
    """A process's start (epoch seconds) from /proc: its start in clock ticks since boot."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[19])  # field 22 of the file; the first two precede the split
    btime = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


class Stamp(pl.Callback):
    """Writes, at the first fit of each worker process, its pid, process start and fit start."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_start(self, trainer, pl_module) -> None:
        path = Path(self.folder, f"{os.getpid()}.json")
        if not path.exists():
            path.write_text(json.dumps({"pid": os.getpid(), "process_start": _process_start(os.getpid()),
                                        "fit_start": time.time()}))


def one_search(digits, tmp: str, run: int) -> dict:
    stamps = Path(tmp, f"stamps-{run}")
    stamps.mkdir()
    t_search = time.time()
    result = lm.search(
        digits.DigitsMLP, digits.SPACE, datamodule=digits.DigitsDataModule, metric="val_acc", direction="max",
        optimizer="asha", num_trials=6, max_epochs=3, workers=2, seed=run, backend="spark",
        exp_dir=Path(tmp, f"exp-{run}"), trainer_kwargs={"callbacks": [Stamp(str(stamps))]}, verbose=False,
    )
    t_end = time.time()
    events = [json.loads(line) for line in open(Path(result.exp_dir) / "journal.jsonl")]
    start = next(e["time"] for e in events if e["event"] == "experiment_start")
    registered = sorted(e["time"] for e in events if e["event"] == "worker")
    handed = sorted(e["time"] for e in events if e["event"] == "trial" and e["trial"]["state"] == "RUNNING")
    first_report = min(e["time"] for e in events if e["event"] == "report")
    procs = [json.loads(p.read_text()) for p in stamps.iterdir()]
    return {
        "search_called": t_search, "journal_first_line": start, "worker_process_start": min(p["process_start"] for p in procs),
        "worker_registered": registered[0], "first_trial_handed_out": handed[0],
        "first_fit_start": min(p["fit_start"] for p in procs), "first_report": first_report, "search_returned": t_end,
        "workers_registered": registered, "worker_process_starts": sorted(p["process_start"] for p in procs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="searches on the same session")
    parser.add_argument("--json", default=None, help="write the timeline to this JSON file")
    parser.add_argument("--daemon", choices=sorted(DAEMONS), default="lightning_maggy",
                        help="the executors' Python daemon: lightning_maggy's, which imports torch and Lightning "
                             "before it forks the workers (the setting README gives), or pyspark's own")
    parser.add_argument("--jvm", choices=("quick", "default"), default="quick",
                        help="the driver JVM's options: lightning_maggy's QUICK_START_JVM (the setting README "
                             "gives), or the JVM's defaults")
    args = parser.parse_args()
    import digits_asha
    from pyspark.sql import SparkSession

    t_imports = time.time()
    builder = (SparkSession.builder.master("local[2]").appName("lightning_maggy-spark-startup")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.python.daemon.module", DAEMONS[args.daemon]))
    if args.jvm == "quick":
        builder = builder.config("spark.driver.extraJavaOptions", QUICK_START_JVM)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    t_session = time.time()
    runs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                runs.append(one_search(digits_asha, tmp, run))
    finally:
        spark.stop()
    print(f"digits MLP, ASHA, 2 workers, Spark local[2], {args.daemon}'s daemon, {args.jvm} JVM options; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"  {'imports (lightning_maggy, torch, Lightning, pyspark, the example)':<66}{t_imports - T0:7.2f} s")
    print(f"  {'SparkSession (JVM, SparkContext)':<66}{t_session - t_imports:7.2f} s")
    steps = [
        ("driver set-up in search() (to the journal's first line)", "search_called", "journal_first_line"),
        ("Spark job and executor Python worker start", "journal_first_line", "worker_process_start"),
        ("worker start-up: unpickling the task, imports", "worker_process_start", "worker_registered"),
        ("registration to the first trial handed out", "worker_registered", "first_trial_handed_out"),
        ("first trial: module, datamodule, Trainer, to fit start", "first_trial_handed_out", "first_fit_start"),
        ("first epoch (to the first report)", "first_fit_start", "first_report"),
    ]
    previous = t_session
    for k, r in enumerate(runs):
        print(f"search {k + 1}{' (same session)' if k else ''}: from the session's end to search(): "
              f"{r['search_called'] - previous:.2f} s")
        for label, a, b in steps:
            print(f"  {label:<66}{r[b] - r[a]:7.2f} s")
        total = r["first_report"] - (T0 if k == 0 else r["search_called"])
        origin = "the script's first line" if k == 0 else "search()"
        print(f"  {'first report, counted from ' + origin:<66}{total:7.2f} s")
        previous = r["search_returned"]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"daemon": args.daemon, "jvm": args.jvm, "script_start": T0, "imports_done": t_imports, "session_ready": t_session, "runs": runs}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
