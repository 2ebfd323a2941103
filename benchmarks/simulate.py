"""Optimizer comparisons on recorded learning curves, and the seed's table reproduced.

Replays the curves of ``benchmarks/data/`` (recorded by ``benchmarks/record_curves.py``: the
demo's digits MLP and a small CNN on generated images, 300 configurations x 27 epochs each)
through the real controller with :func:`lightning_maggy.simulator.simulate`: no training, a
simulated clock. For every task, worker count and method, ``--seeds`` seeded studies, each
given the same simulated wall-time budget: ``--rounds`` times the time one full trial takes (its
run overhead plus its 27 epochs, median over the recorded configurations), so that random search
without early stopping runs about ``rounds x workers`` trials. Reported per method: the median
(and interquartile range) over seeds of the best validation accuracy any trial reported within
the budget, and the median number of trials started and epochs trained.

Methods: random, random + the median stopping rule, ASHA (reduction factor 3, 1 epoch at the
bottom rung), Hyperband, BOHB, GP and TPE (``--methods``); also ``asha+early`` (ASHA with
``early_promotion=True``) and ``bohb-paper`` (BOHB with ``early_promotion=False``, the paper's
promotion rule). The model-based ones (BOHB, GP, TPE)
run at 8 workers only by default (``--model-workers``): a study of 64 workers proposes hundreds
to thousands of configurations, and each model proposal costs real time (a GP's about a second;
the simulated clock does not count it).

The seed's table (the original Maggy's: ASHA, random search with early stopping and without, in
the same wall time) is printed beside ours: best accuracy and trials, on the simulator at 8 and
64 workers, and with ``--real SECONDS`` for real on the digits task with 2 local workers
(``SECONDS`` of wall time per method, counted by ``lm.search``'s ``timeout``). Trials are
counted twice: ours (a promoted trial stays one trial, resumed from its checkpoint), and as the
original Maggy counts them: its ASHA starts every promotion as a new trial, so the seed's 442
ASHA trials include its promotions.

Writes ``<out>/simulate.json`` and one PNG per task and worker count (median best accuracy
against simulated time, with the interquartile range), and prints the tables.

Run: ``python benchmarks/simulate.py [--seeds 20] [--workers 8,64] [--real 60] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
METHODS = ("random", "random+median", "asha", "hyperband", "bohb", "gp", "tpe")
MODEL_BASED = ("bohb", "bohb-paper", "gp", "tpe")
SEED_TABLE = {"asha": (0.8136, 442), "random+median": (0.7958, 120), "random": (0.7747, 36)}
GRID = 60  # points of the best-so-far curve kept per study


def _method(name: str) -> tuple[Any, Any]:
    import lightning_maggy as lm

    return {
        "random": ("random", None),
        "random+median": ("random", "median"),
        "asha": (lm.ASHA(reduction_factor=3, resource_min=1), None),
        "asha+early": (lm.ASHA(reduction_factor=3, resource_min=1, early_promotion=True), None),
        "hyperband": (lm.Hyperband(reduction_factor=3), None),
        "bohb": ("bohb", None),
        "bohb-paper": (lm.BOHB(early_promotion=False), None),
        "gp": ("gp", None),
        "tpe": ("tpe", None),
    }[name]


def budget_of(curves: Any, rounds: float) -> float:
    return rounds * (curves.run_overhead + float(np.median(curves.seconds.sum(axis=1))))


def maggy_count(trials: list[Any]) -> int:
    """Trials as the original Maggy counts them: its ASHA starts every promotion as a new trial
    (trained from scratch with the larger budget), where ours resumes the same trial. So each
    trial counts once plus once per rung it was promoted to; the rungs are the distinct budgets
    the study's trials were given (one bracket: ASHA, or no promotions at all)."""
    rungs = sorted({int(t.budget) for t in trials})
    return sum(1 + rungs.index(int(t.budget)) for t in trials)


def one_study(job: tuple[str, str, int, int, float, str]) -> dict[str, Any]:
    import torch

    from lightning_maggy.simulator import Curves, simulate

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    task, method, workers, seed, rounds, data = job
    curves = Curves.load(os.path.join(data, f"{task}.json.gz"))
    budget = budget_of(curves, rounds)
    optimizer, early_stop = _method(method)
    sim = simulate(curves, optimizer=optimizer, early_stop=early_stop, workers=workers, timeout=budget, seed=seed)
    grid = np.linspace(0.0, budget, GRID + 1)[1:]
    return {
        "task": task, "method": method, "workers": workers, "seed": seed, "budget_s": budget,
        "best": float(sim.best_at([budget])[0]), "trials": len(sim.trials), "runs": sim.runs, "epochs": sim.epochs,
        "maggy_trials": maggy_count(sim.trials),
        "curve": [None if np.isnan(v) else float(v) for v in sim.best_at(grid)], "wall_s": sim.wall_s,
    }


def real_digits(method: str, seconds: float, seed: int) -> dict[str, Any]:
    """The seed's comparison for real: the digits MLP, 2 local workers, ``seconds`` of wall time."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
    import tempfile

    import digits_asha

    import lightning_maggy as lm

    optimizer, early_stop = _method(method)
    with tempfile.TemporaryDirectory() as tmp:
        result = lm.search(
            digits_asha.DigitsMLP, digits_asha.SPACE, datamodule=digits_asha.DigitsDataModule, metric="val_acc",
            direction="max", optimizer=optimizer, early_stop=early_stop, max_epochs=27, workers=2,
            timeout=seconds, seed=seed, exp_dir=os.path.join(tmp, "study"), verbose=False, scope="all",
        )
    return {"method": method, "seconds": seconds, "best": float(result.best_metric), "trials": len(result.trials),
            "epochs": sum(len(t.history) for t in result.trials), "maggy_trials": maggy_count(result.trials)}


def _median_iqr(values: list[float]) -> str:
    q1, q3 = np.percentile(values, [25, 75])
    return f"{statistics.median(values):.4f} [{q1:.4f}, {q3:.4f}]"


def plot(rows: list[dict[str, Any]], task: str, workers: int, out: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    mine = [r for r in rows if r["task"] == task and r["workers"] == workers]
    budget = mine[0]["budget_s"]
    grid = np.linspace(0.0, budget, GRID + 1)[1:]
    for method in dict.fromkeys(r["method"] for r in mine):
        curves = np.array([[np.nan if v is None else v for v in r["curve"]] for r in mine if r["method"] == method])
        with warnings.catch_warnings():  # grid points before a study's first report are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(curves, axis=0)
            q1, q3 = np.nanpercentile(curves, [25, 75], axis=0)
        (line,) = ax.plot(grid, med, label=method)
        ax.fill_between(grid, q1, q3, color=line.get_color(), alpha=0.15)
    values = [v for r in mine for v in r["curve"] if v is not None]
    ax.set_ylim(np.percentile(values, 5), max(values) + 0.005)
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"{task}: {workers} simulated workers, median and IQR over {len(mine) // len(set(r['method'] for r in mine))} seeds")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, f"simulate-{task}-{workers}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def target_of(task: str, data: str) -> float:
    """The accuracy that counts as a good model for ``task``: what the best 2% of the recorded
    configurations reach (the 98th percentile of their best epochs)."""
    from lightning_maggy.simulator import Curves

    return float(np.percentile(Curves.load(os.path.join(data, f"{task}.json.gz")).values.max(axis=1), 98))


def time_to(row: dict[str, Any], target: float) -> float:
    """Simulated seconds until the study's best reached ``target`` (its budget's grid; inf: never)."""
    grid = np.linspace(0.0, row["budget_s"], GRID + 1)[1:]
    hits = [t for t, v in zip(grid, row["curve"]) if v is not None and v >= target - 1e-9]
    return hits[0] if hits else math.inf


def _time_cell(times: list[float]) -> str:
    reached = [t for t in times if math.isfinite(t)]
    if len(reached) * 2 <= len(times):
        return f"{len(reached)}/{len(times)}"
    return f"{statistics.median(times):.1f} s ({len(reached)}/{len(times)})"


def report(rows: list[dict[str, Any]], real: list[dict[str, Any]], args: argparse.Namespace) -> None:
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    for task in tasks:
        target = target_of(task, args.data)
        for w in workers:
            mine = [r for r in rows if r["task"] == task and r["workers"] == w]
            print(f"{task}, {w} workers, budget {mine[0]['budget_s']:.1f} simulated s ({args.rounds} full trials); "
                  f"time to {target:.4f} (the best 2% of recorded configurations) is the median over seeds:")
            print(f"  {'method':<15}{'best val_acc, median [IQR]':>30}{'time to target':>18}{'trials':>8}{'epochs':>8}"
                  f"{'real s/study':>14}")
            for m in methods:
                sel = [r for r in mine if r["method"] == m]
                if not sel:
                    print(f"  {m:<15}{'not run (--model-workers)':>30}")
                    continue
                print(f"  {m:<15}{_median_iqr([r['best'] for r in sel]):>30}"
                      f"{_time_cell([time_to(r, target) for r in sel]):>18}"
                      f"{statistics.median(r['trials'] for r in sel):>8.0f}{statistics.median(r['epochs'] for r in sel):>8.0f}"
                      f"{statistics.mean(r['wall_s'] for r in sel):>14.2f}")
            path = plot(rows, task, w, args.out)
            if path:
                print(f"  plot: {path}")
            print()
    print("The seed's table beside ours: best accuracy (trials; trials relative to random search without "
          "early stopping), in the same wall time; then trials counted as the original Maggy counts them "
          "(every ASHA promotion a new trial)")
    header = ["seed (original Maggy)"] + [f"simulated digits, {w} workers" for w in workers if "digits" in tasks]
    if real:
        header.append(f"real digits, 2 workers, {real[0]['seconds']:.0f} s")
    print("  " + f"{'method':<15}" + "".join(f"{h:>58}" for h in header))
    for m in ("asha", "random+median", "random"):
        cells = [f"{SEED_TABLE[m][0]:.4f} ({SEED_TABLE[m][1]}; {SEED_TABLE[m][1] / SEED_TABLE['random'][1]:.1f}x)"]
        for w in workers:
            sel = [r for r in rows if r["task"] == "digits" and r["workers"] == w and r["method"] == m]
            base = [r for r in rows if r["task"] == "digits" and r["workers"] == w and r["method"] == "random"]
            if sel and base:
                n, n0 = statistics.median(r["trials"] for r in sel), statistics.median(r["trials"] for r in base)
                cells.append(f"{statistics.median(r['best'] for r in sel):.4f} ({n:.0f}; {n / n0:.1f}x"
                             + _as_maggy(statistics.median(r.get("maggy_trials", math.nan) for r in sel), n0) + ")")
        if real:
            r, r0 = next(x for x in real if x["method"] == m), next(x for x in real if x["method"] == "random")
            cells.append(f"{r['best']:.4f} ({r['trials']}; {r['trials'] / r0['trials']:.1f}x"
                         + _as_maggy(r.get("maggy_trials", math.nan), r0["trials"]) + ")")
        print("  " + f"{m:<15}" + "".join(f"{c:>58}" for c in cells))


def _as_maggy(count: float, random_trials: float) -> str:
    """", as Maggy counts: N, Rx" when the record has the count (older JSON files do not)."""
    return "" if math.isnan(count) else f"; as Maggy counts: {count:.0f}, {count / random_trials:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,shapes")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", default="8,64")
    parser.add_argument("--model-workers", default="8", help="worker counts at which bohb, gp and tpe run (see above)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rounds", type=float, default=4.5, help="the budget, in full-trial durations")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--real", type=float, default=0.0, help="seconds per method of the real digits runs (0: none)")
    parser.add_argument("--out", default="simulate-results")
    parser.add_argument("--data", default=DATA, help="folder of <task>.json.gz curves files")
    parser.add_argument("--tables-from", default=None, metavar="JSON",
                        help="print the tables and plots of an earlier run's simulate.json instead of running")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.tables_from:
        with open(args.tables_from) as fh:
            saved = json.load(fh)
        report(saved["studies"], saved["real"], args)
        return
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    model_workers = {int(w) for w in args.model_workers.split(",") if w}
    jobs = [(t, m, w, s, args.rounds, args.data) for t in tasks for w in workers for m in methods for s in range(args.seeds)
            if m not in MODEL_BASED or w in model_workers]
    t0 = time.time()
    if args.procs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.procs) as pool:
            rows = pool.map(one_study, jobs, chunksize=1)
    else:
        rows = [one_study(j) for j in jobs]
    wall = time.time() - t0
    print(f"{len(jobs)} simulated studies in {wall:.0f} s on {args.procs} processes ({args.seeds} seeds each)\n")
    real = [real_digits(m, args.real, 0) for m in ("asha", "random+median", "random")] if args.real else []
    path = os.path.join(args.out, "simulate.json")
    with open(path, "w") as fh:
        json.dump({"seeds": args.seeds, "rounds": args.rounds, "wall_s": wall, "studies": rows, "real": real,
                   "seed_table": SEED_TABLE}, fh)
    report(rows, real, args)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
