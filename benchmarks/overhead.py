"""Per-trial and per-report overhead of lightning_maggy's local backend, against Optuna.

The workload is a trivial function trial: it reports 9 steps (the value ``x * (step + 1)``) and
returns. Both frameworks run it with 2 worker processes, compared like with like:

* **The same stopping rule, every report awaited.** lightning_maggy runs random search with the
  median rule (``MedianStoppingRule(min_trials=5)``: every report waits for its decision);
  Optuna runs 2 processes sharing one ``JournalStorage`` file, each calling ``study.optimize``
  with ``trial.report`` + ``trial.should_prune`` per step under ``MedianPruner(n_startup_trials=5)``.
  The two rules are of the same family, not identical (ours compares a trial's best value with
  the median of finished trials' running averages, Optuna's with the median of their values at
  that step); the share of trials each stopped is printed beside the figures.
* **The same counting.** Every trial that ended counts, completed and stopped (pruned) alike.
* **The same window.** From the first trial's start to the last trial's end, read from each
  side's own trial records (start-up is printed separately).
* **Durability is not the same, and the output says so.** Optuna's journal file fsyncs every
  append (each report and each state change). lightning_maggy's journal group-commits: a
  background thread fsyncs within 20 ms of a write, and a killed driver loses nothing written
  (the file is flushed per line); only a power loss can lose the last 20 ms.

Where Ray Tune is installed (``pip install 'ray[tune]'``; ``--no-ray`` leaves it out), a third
side runs the same trial as a function trainable under Ray Tune's ``MedianStoppingRule``
(``grace_period=1``, ``min_samples_required=5``: Golovin et al.'s rule, as ours), 2 concurrent
trials on a local 2-CPU Ray, ``reuse_actors=True``, counted and timed the same way from
time stamps its trials write (its start-up, ``ray.init`` included, is printed separately). Its
report latency is ``ray.tune.report``'s: a function trainable reports synchronously, so the call
returns when Tune asks the trainable for its next result, after its scheduler has seen this one
(awaited, as on the other two sides).

A separate line shows lightning_maggy as a user runs plain random search: a report that only
CONTINUE can answer is sent without waiting, so it is not a like-for-like figure.

Report latency is the round trip of one report (lightning_maggy's ``reporter.broadcast``,
Optuna's ``report`` + ``should_prune``), measured in the workers. The frameworks run alternately
for ``--rounds`` rounds, so each ratio compares runs seconds apart; figures are ratios from one
run, since the machine is noisy.

Run: ``python benchmarks/overhead.py [--trials 600] [--rounds 3] [--no-ray] [--json out.json]``
(needs ``pip install optuna``).
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

STEPS = 9


def _maggy_objective_factory(lat_dir: str):
    """The trivial trial. Latencies are kept in the worker's memory and written every 20 trials
    (the last <20 trials' samples are not written), so the measurement adds no file I/O per
    trial, just as the Optuna side keeps them in a list."""
    buffer: list[float] = []

    def objective(hparams, reporter):
        value = 0.0
        for step in range(STEPS):
            value = hparams["x"] * (step + 1)
            t0 = time.perf_counter()
            try:
                reporter.broadcast(value, step)  # raises when the median rule stops the trial
            finally:
                buffer.append(time.perf_counter() - t0)
        if len(buffer) >= 20 * STEPS:
            with open(os.path.join(lat_dir, f"lat-{os.getpid()}.txt"), "a") as fh:
                fh.write("\n".join(f"{s:.9f}" for s in buffer) + "\n")
            buffer.clear()
        return value

    return objective


def latency(lat: list[float]) -> dict:
    """p50 and p99 in ms of report round trips (seconds); NaN when none was written (a small
    study: ours writes its samples every 20 trials per worker)."""
    lat = sorted(lat)
    if not lat:
        return {"report_p50_ms": float("nan"), "report_p99_ms": float("nan")}
    return {"report_p50_ms": 1000 * lat[len(lat) // 2], "report_p99_ms": 1000 * lat[int(len(lat) * 0.99)]}


def trial_phase(result, t0: float) -> dict:
    """Throughput of a search's trial phase (first trial's start to last trial's end), every
    ended trial counted."""
    starts = [t.started for t in result.trials if t.started]
    phase = max(t.finished for t in result.trials if t.finished) - min(starts)
    counts = result.counts()
    ended = counts["COMPLETED"] + counts["STOPPED"]
    return {"trials": ended, "stopped": counts["STOPPED"], "trials_per_s": ended / phase, "phase_s": phase,
            "startup_s": min(starts) - t0}


def bench_maggy(trials: int, workdir: str, awaited: bool) -> dict:
    """``awaited``: the median rule decides on every report, so every report waits for its
    decision. Otherwise plain random search, whose reports only CONTINUE can answer, sends them
    without waiting."""
    import lightning_maggy as lm

    workdir = os.path.join(workdir, "awaited" if awaited else "default")
    lat_dir = os.path.join(workdir, "maggy-lat")
    os.makedirs(lat_dir)
    space = lm.Searchspace(x=lm.Double(0.0, 1.0))
    t0 = time.time()
    result = lm.search(
        _maggy_objective_factory(lat_dir),
        space,
        metric="score",
        max_epochs=STEPS,
        optimizer="random",
        early_stop=lm.MedianStoppingRule(min_trials=5) if awaited else None,
        num_trials=trials,
        workers=2,
        seed=0,
        exp_dir=os.path.join(workdir, "maggy-exp"),
        verbose=False,
    )
    wall = time.time() - t0
    lat = []
    for path in glob.glob(os.path.join(lat_dir, "*.txt")):
        lat += [float(x) for x in open(path).read().split()]
    return {**trial_phase(result, t0), "wall_s": wall, **latency(lat), "reports": len(lat)}


def _optuna_worker(storage_path: str, study_name: str, n: int, out: str) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(storage_path))
    study = optuna.load_study(study_name=study_name, storage=storage)
    lat: list[float] = []

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        value = 0.0
        for step in range(STEPS):
            value = x * (step + 1)
            t0 = time.perf_counter()
            trial.report(value, step)
            prune = trial.should_prune()
            lat.append(time.perf_counter() - t0)
            if prune:
                raise optuna.TrialPruned()
        return value

    t0 = time.time()
    study.optimize(objective, n_trials=n)
    with open(out, "w") as fh:
        json.dump({"start": t0, "end": time.time(), "lat": lat}, fh)


def bench_optuna(trials: int, workdir: str) -> dict:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = os.path.join(workdir, "optuna.log")
    storage = JournalStorage(JournalFileBackend(path))
    optuna.create_study(study_name="bench", storage=storage, direction="maximize",
                        pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    ctx = mp.get_context("spawn")
    outs = [os.path.join(workdir, f"optuna-{i}.json") for i in range(2)]
    t0 = time.time()
    procs = [ctx.Process(target=_optuna_worker, args=(path, "bench", trials // 2, o)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.time() - t0
    data = [json.load(open(o)) for o in outs]
    lat = [x for d in data for x in d["lat"]]
    study = optuna.load_study(study_name="bench", storage=storage)
    ended = [t for t in study.trials if t.state.is_finished()]
    phase = (max(t.datetime_complete for t in ended) - min(t.datetime_start for t in ended)).total_seconds()
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in ended)
    return {
        "trials": len(ended),
        "stopped": pruned,
        "trials_per_s": len(ended) / phase,
        "phase_s": phase,
        "startup_s": min(t.datetime_start for t in ended).timestamp() - t0,
        "wall_s": wall,
        **latency(lat),
    }


def _ray_run(trials: int, workdir: str, out: str) -> None:
    """Ray Tune's side, in a process of its own: the same trial as a function trainable under
    ``MedianStoppingRule`` (Golovin et al.'s rule, like ours), 2 concurrent trials on a 2-CPU
    local Ray with ``reuse_actors=True``. Each trial appends its start, end and report latencies
    to a file per worker process, written once per trial, in ``finally`` so that stopped trials
    count too."""
    import ray
    from ray import tune
    from ray.tune.schedulers import MedianStoppingRule

    log = os.open(os.path.join(workdir, "ray.log"), os.O_WRONLY | os.O_CREAT)  # Ray's banners
    os.dup2(log, 1)
    os.dup2(log, 2)
    t0 = time.time()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows_dir = os.path.join(workdir, "ray-rows")
    os.makedirs(rows_dir)

    def trainable(config):
        start, lat = time.time(), []
        try:
            for step in range(STEPS):
                value = config["x"] * (step + 1)
                t = time.perf_counter()
                tune.report({"score": value})
                lat.append(time.perf_counter() - t)
        finally:
            with open(os.path.join(rows_dir, f"{os.getpid()}.txt"), "a") as fh:
                fh.write(" ".join(f"{v:.9f}" for v in (start, time.time(), *lat)) + "\n")

    scheduler = MedianStoppingRule(time_attr="training_iteration", grace_period=1, min_samples_required=5)
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(num_samples=trials, metric="score", mode="max", scheduler=scheduler,
                                    max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=os.path.join(workdir, "ray-results"), verbose=0),
    )
    grid = tuner.fit()
    wall = time.time() - t0
    stopped = sum(1 for r in grid if (r.metrics or {}).get("training_iteration", STEPS) < STEPS)
    ray.shutdown()
    rows = [[float(v) for v in line.split()] for path in glob.glob(os.path.join(rows_dir, "*.txt"))
            for line in open(path)]
    with open(out, "w") as fh:
        json.dump({"t0": t0, "wall": wall, "stopped": stopped, "rows": rows}, fh)


def bench_ray(trials: int, workdir: str) -> dict:
    out = os.path.join(workdir, "ray.json")
    proc = mp.get_context("spawn").Process(target=_ray_run, args=(trials, workdir, out))
    proc.start()
    proc.join()
    data = json.load(open(out))
    rows = data["rows"]
    lat = [x for row in rows for x in row[2:]]
    phase = max(row[1] for row in rows) - min(row[0] for row in rows)
    return {
        "trials": len(rows),
        "stopped": data["stopped"],
        "trials_per_s": len(rows) / phase,
        "phase_s": phase,
        "startup_s": min(row[0] for row in rows) - data["t0"],
        "wall_s": data["wall"],
        **latency(lat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of both frameworks; the ratio is per round")
    parser.add_argument("--json", default=None, help="write every round's figures to this JSON file")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray Tune out even where it is installed")
    args = parser.parse_args()
    import importlib.util

    with_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    if not with_ray and not args.no_ray:
        print("Ray Tune is not installed: its line is left out (pip install 'ray[tune]' to add it)")
    print(f"trivial trials ({STEPS} reports each), 2 workers, {args.trials} trials per round, "
          f"python {sys.version.split()[0]}; every ended trial counts (completed and stopped), from the "
          "first trial's start to the last one's end")
    print("durability: Optuna's journal fsyncs every append; lightning_maggy's group-commits "
          "(fsync within 20 ms of a write; flushed per line, so a killed driver loses nothing)")
    print(f"{'round':<6}{'':<44}{'trials/s':>10}{'stopped':>9}{'report p50 ms':>15}{'report p99 ms':>15}")
    rounds, ratios, unawaited_ratios, ray_ratios = [], [], [], []
    for r in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            for sub in ("m", "o", "r"):
                os.makedirs(os.path.join(tmp, sub))
            awaited = bench_maggy(args.trials, os.path.join(tmp, "m"), awaited=True)
            optuna_ = bench_optuna(args.trials, os.path.join(tmp, "o"))
            ray_ = bench_ray(args.trials, os.path.join(tmp, "r")) if with_ray else None
            plain = bench_maggy(args.trials, os.path.join(tmp, "m"), awaited=False)
        rows = (
            ("lightning_maggy, median rule (awaited)", awaited, True),
            ("Optuna journal, MedianPruner (awaited)", optuna_, True),
            *((("Ray Tune, MedianStoppingRule, reuse_actors", ray_, True),) if ray_ else ()),
            ("lightning_maggy, random search (not awaited)", plain, False),
        )
        for name, res, show_latency in rows:
            lat = (f"{res['report_p50_ms']:>15.3f}{res['report_p99_ms']:>15.3f}" if show_latency
                   else f"{'(not awaited)':>15}{'':>15}")
            share = f"{res['stopped'] / res['trials']:.0%}"
            print(f"{r:<6}{name:<44}{res['trials_per_s']:>10.1f}{share:>9}{lat}")
        ratios.append(awaited["trials_per_s"] / optuna_["trials_per_s"])
        unawaited_ratios.append(plain["trials_per_s"] / optuna_["trials_per_s"])
        rounds.append({"maggy_median_rule": awaited, "optuna_median_pruner": optuna_, "maggy_unawaited": plain,
                       "ray_median_stopping": ray_})
        ray_part = ""
        if ray_:
            ray_ratios.append(awaited["trials_per_s"] / ray_["trials_per_s"])
            ray_part = f", against Ray Tune {ray_ratios[-1]:.2f}x"
        print(f"      like for like {ratios[-1]:.2f}x{ray_part}; start-up before the first trial: lightning_maggy "
              f"{awaited['startup_s']:.2f} s, Optuna {optuna_['startup_s']:.2f} s"
              + (f", Ray Tune {ray_['startup_s']:.2f} s" if ray_ else ""))
    med = statistics.median
    print(f"ratio lightning_maggy/Optuna trials per second, same rule, every report awaited: "
          f"{', '.join(f'{x:.2f}x' for x in ratios)}; median {med(ratios):.2f}x")
    if ray_ratios:
        print(f"ratio lightning_maggy/Ray Tune trials per second, median rule on both sides: "
              f"{', '.join(f'{x:.2f}x' for x in ray_ratios)}; median {med(ray_ratios):.2f}x")
    print(f"  (not like for like: plain random search, reports not awaited: "
          f"{', '.join(f'{x:.2f}x' for x in unawaited_ratios)}; median {med(unawaited_ratios):.2f}x)")
    p50s = [r["maggy_median_rule"]["report_p50_ms"] for r in rounds]
    print(f"lightning_maggy report round trip p50, median over rounds: {med(p50s):.3f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"trials": args.trials, "rounds": rounds, "ratio": ratios,
                       "ratio_unawaited": unawaited_ratios, "ratio_ray": ray_ratios}, fh, indent=2)


if __name__ == "__main__":
    main()
