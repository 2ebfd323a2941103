"""Per-trial and per-report overhead of lightning_maggy's local backend, against Optuna.

The workload is a trivial function trial: it reports 9 steps and returns. Both frameworks run it
with 2 worker processes:

* lightning_maggy: ``search(fn, ..., optimizer="random", workers=2)`` (driver server + 2 local
  workers over the signed zmq protocol, journal on disk);
* Optuna: 2 processes sharing one ``JournalStorage`` file, each calling ``study.optimize`` with
  ``trial.report`` + ``trial.should_prune`` per step (the equivalent pruning round trip).

lightning_maggy runs twice per round: as a user would run it (random search: a report that only
CONTINUE can answer is sent without waiting for the answer), and with every report awaited (as
with a timeout, an early-stop rule or ASHA's rung reports), which is what the report round-trip
latency is measured on.

Throughput counts only the trial phase (from the first trial's start to the last trial's end), so
that process start-up is not counted for either side; start-up is printed separately. Report
latency is the round trip of one ``reporter.broadcast`` (report -> server decision), measured in
the workers. Figures are ratios from one run, since the machine is noisy.

The two run alternately for ``--rounds`` rounds (both frameworks in each round, so each ratio
compares runs seconds apart); the median ratio is printed at the end.

Run: ``python benchmarks/overhead.py [--trials 600] [--rounds 3]`` (needs ``pip install optuna``).
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
            reporter.broadcast(value, step)
            buffer.append(time.perf_counter() - t0)
        if len(buffer) >= 20 * STEPS:
            with open(os.path.join(lat_dir, f"lat-{os.getpid()}.txt"), "a") as fh:
                fh.write("\n".join(f"{s:.9f}" for s in buffer) + "\n")
            buffer.clear()
        return value

    return objective


def trial_phase(result, t0: float) -> dict:
    """Throughput of a search's trial phase (first trial's start to last trial's end)."""
    starts = [t.started for t in result.trials if t.started]
    phase = max(t.finished for t in result.trials if t.finished) - min(starts)
    completed = result.counts()["COMPLETED"]
    return {"trials": completed, "trials_per_s": completed / phase, "phase_s": phase,
            "startup_s": min(starts) - t0}


def bench_maggy(trials: int, workdir: str, awaited: bool) -> dict:
    """``awaited``: every report waits for its decision (a wall-clock budget far beyond the run
    makes any report a possible STOP). Otherwise random search's reports, which only CONTINUE
    can answer, are sent without waiting."""
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
        timeout=10**6 if awaited else None,
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
    lat.sort()
    return {
        **trial_phase(result, t0),
        "wall_s": wall,
        "report_p50_ms": 1000 * lat[len(lat) // 2],
        "report_p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "reports": len(lat),
    }


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
            if trial.should_prune():
                raise optuna.TrialPruned()
            lat.append(time.perf_counter() - t0)
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
                        pruner=optuna.pruners.MedianPruner())
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
    phase = max(d["end"] for d in data) - min(d["start"] for d in data)
    lat = sorted(x for d in data for x in d["lat"])
    study = optuna.load_study(study_name="bench", storage=storage)
    n = len(study.trials)
    return {
        "trials": n,
        "trials_per_s": n / phase,
        "wall_s": wall,
        "report_p50_ms": 1000 * lat[len(lat) // 2],
        "report_p99_ms": 1000 * lat[int(len(lat) * 0.99)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of both frameworks; the ratio is per round")
    args = parser.parse_args()
    print(f"trivial trials ({STEPS} reports each), 2 workers, {args.trials} trials per round, "
          f"python {sys.version.split()[0]}")
    print(f"{'round':<6}{'':<34}{'trials/s':>10}{'report p50 ms':>15}{'report p99 ms':>15}")
    ratios, awaited_ratios, p50s = [], [], []
    for r in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            for sub in ("m", "o"):
                os.makedirs(os.path.join(tmp, sub))
            maggy = bench_maggy(args.trials, os.path.join(tmp, "m"), awaited=False)
            awaited = bench_maggy(args.trials, os.path.join(tmp, "m"), awaited=True)
            optuna_ = bench_optuna(args.trials, os.path.join(tmp, "o"))
        rows = (
            ("lightning_maggy (random search)", maggy, False),
            ("lightning_maggy (every report awaited)", awaited, True),
            ("optuna journal (report+should_prune)", optuna_, True),
        )
        for name, res, show_latency in rows:
            lat = (f"{res['report_p50_ms']:>15.3f}{res['report_p99_ms']:>15.3f}" if show_latency
                   else f"{'(not awaited)':>15}{'':>15}")
            print(f"{r:<6}{name:<34}{res['trials_per_s']:>10.1f}{lat}")
        ratios.append(maggy["trials_per_s"] / optuna_["trials_per_s"])
        awaited_ratios.append(awaited["trials_per_s"] / optuna_["trials_per_s"])
        p50s.append(awaited["report_p50_ms"])
        print(f"      ratios {ratios[-1]:.2f}x (random search) and {awaited_ratios[-1]:.2f}x (every report "
              f"awaited); start-up before the first trial {maggy['startup_s']:.2f} s")
    med = statistics.median
    print(f"ratio lightning_maggy/optuna trials per second, per round: "
          f"{', '.join(f'{x:.2f}x' for x in ratios)}; median {med(ratios):.2f}x (target >= 2x)")
    print(f"  with every report awaited: {', '.join(f'{x:.2f}x' for x in awaited_ratios)}; "
          f"median {med(awaited_ratios):.2f}x")
    print(f"lightning_maggy report round trip p50, median over rounds: {med(p50s):.3f} ms (target < 1 ms)")


if __name__ == "__main__":
    main()
