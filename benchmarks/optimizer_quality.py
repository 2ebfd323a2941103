"""Search quality of the model-based optimizers, under asynchronous parallel evaluation.

Three test functions (all minimized), as plain function trials:

* Branin (2 continuous dims; minimum 0.397887),
* Hartmann-6 (6 continuous dims in [0, 1]; minimum -3.32237),
* a mixed-type function: ``lr`` log-scaled Double, ``units`` log-scaled Integer, ``depth``
  Integer, ``act`` Categorical (3 values), ``dropout`` Double; minimum 0.

Every method runs with 4 asynchronous workers in a deterministic simulation: a free worker asks
for a configuration, evaluation takes a random duration (exponential, mean 1, from a seeded
generator shared by all methods of one seed), so up to 4 trials are in flight and pending points
matter. lightning_maggy's optimizers are driven exactly as the controller drives them
(``get_suggestion`` -> RUNNING record -> COMPLETED record with ``final_metric``); Optuna's
samplers through ``study.ask()`` / ``study.tell()`` with the same 4 trials in flight.

Methods: "gp" (lm.GP), "tpe" (lm.TPE), Optuna's ``GPSampler(seed)`` and ``TPESampler(seed)``
(Optuna's defaults), and random search (lm.RandomSearch). Reported: median simple regret
(best value found minus the minimum) over seeds and its interquartile range, and whether the
goals hold: "gp" no worse than the better Optuna sampler on each function (median), and every
model-based method clearly ahead of random (median regret at most half of random's).

Run: ``python benchmarks/optimizer_quality.py [--seeds 10] [--evals 50] [--procs 2]``
(needs ``pip install -e .[bo]``).
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

WORKERS = 4
METHODS = ("gp", "tpe", "optuna-gp", "optuna-tpe", "random")
MODEL_BASED = ("gp", "tpe", "optuna-gp", "optuna-tpe")

# -- test functions ------------------------------------------------------------------------------
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                  [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(c: dict[str, Any]) -> float:
    x1, x2 = c["x1"], c["x2"]
    b, cc, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + cc * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def hartmann6(c: dict[str, Any]) -> float:
    x = np.array([c[f"x{i}"] for i in range(6)])
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


_ACT = {"relu": 0.3, "tanh": 0.6, "gelu": 0.0}


def mixed(c: dict[str, Any]) -> float:
    lr_term = (math.log10(c["lr"]) + 3.0) ** 2 / 4.0
    units_term = (math.log2(c["units"]) - 6.0) ** 2 / 8.0
    depth_term = 0.1 * (c["depth"] - 3) ** 2
    drop_term = 2.0 * (c["dropout"] - 0.1) ** 2
    # The best learning rate depends on the depth: the function is not separable.
    coupling = 0.2 * abs(math.log10(c["lr"]) + 3.0) * abs(c["depth"] - 3)
    return lr_term + units_term + depth_term + drop_term + _ACT[c["act"]] + coupling


def problems() -> dict[str, tuple[Any, Callable[[dict[str, Any]], float], float]]:
    import lightning_maggy as lm

    return {
        "branin": (lm.Searchspace(x1=lm.Double(-5.0, 10.0), x2=lm.Double(0.0, 15.0)), branin, 0.397887),
        "hartmann6": (lm.Searchspace(**{f"x{i}": lm.Double(0.0, 1.0) for i in range(6)}), hartmann6, -3.32237),
        "mixed": (
            lm.Searchspace(
                lr=lm.Double(1e-5, 1e-1, log=True),
                units=lm.Integer(4, 256, log=True),
                depth=lm.Integer(1, 8),
                act=lm.Categorical(["relu", "tanh", "gelu"]),
                dropout=lm.Double(0.0, 0.5),
            ),
            mixed,
            0.0,
        ),
    }


# -- the asynchronous simulation ------------------------------------------------------------------
def _durations(seed: int, n: int) -> list[float]:
    return list(np.random.default_rng([seed, 12345]).exponential(1.0, size=n))


def run_maggy(method: str, space: Any, fn: Callable, evals: int, seed: int) -> list[float]:
    """Drives a lightning_maggy optimizer like the controller does; returns values in
    completion order."""
    import lightning_maggy as lm
    from lightning_maggy.optimizers import IDLE
    from lightning_maggy.trial import TrialState

    opt = {"gp": lambda: lm.GP(seed=seed), "tpe": lambda: lm.TPE(seed=seed),
           "random": lambda: lm.RandomSearch(seed=seed)}[method]()
    trials: dict[str, Any] = {}
    opt.setup(space, num_trials=evals, direction="min", max_epochs=1, trials=trials, seed=seed)
    durations = iter(_durations(seed, evals))
    clock, events, values = 0.0, [], []
    free = WORKERS
    last = None
    while True:
        while free and len(trials) < evals:
            suggestion = opt.get_suggestion(last)
            if suggestion is None or suggestion is IDLE:
                break
            trials[suggestion.trial_id] = suggestion.evolve(state=TrialState.RUNNING)
            heapq.heappush(events, (clock + next(durations), len(trials), suggestion.trial_id))
            free -= 1
        if not events:
            return values
        clock, _, tid = heapq.heappop(events)
        value = fn(dict(trials[tid].config))
        last = trials[tid] = trials[tid].evolve(state=TrialState.COMPLETED, history=(value,), final_metric=value)
        values.append(value)
        free += 1


def run_optuna(method: str, space: Any, fn: Callable, evals: int, seed: int) -> list[float]:
    """Optuna's own sampler through ask/tell with the same asynchronous schedule."""
    import optuna

    from lightning_maggy.optimizers.optuna_sampler import optuna_distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GPSampler(seed=seed) if method == "optuna-gp" else optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    dists = optuna_distributions(space)
    durations = iter(_durations(seed, evals))
    clock, events, values, asked = 0.0, [], [], 0
    running: dict[int, Any] = {}
    while True:
        while len(running) < WORKERS and asked < evals:
            trial = study.ask(dists)
            running[trial.number] = trial
            asked += 1
            heapq.heappush(events, (clock + next(durations), asked, trial.number))
        if not events:
            return values
        clock, _, number = heapq.heappop(events)
        trial = running.pop(number)
        value = fn(dict(trial.params))
        study.tell(trial, value)
        values.append(value)


def one_run(args: tuple[str, str, int, int]) -> tuple[str, str, int, float, float]:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    problem, method, evals, seed = args
    space, fn, minimum = problems()[problem]
    t0 = time.perf_counter()
    runner = run_optuna if method.startswith("optuna") else run_maggy
    values = runner(method, space, fn, evals, seed)
    assert len(values) == evals, (problem, method, len(values))
    return problem, method, seed, min(values) - minimum, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--procs", type=int, default=2, help="parallel processes (runs are independent)")
    parser.add_argument("--problems", default="branin,hartmann6,mixed")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", default=None, help="write every run's regret and time to this JSON file")
    args = parser.parse_args()
    names = args.problems.split(",")
    methods = args.methods.split(",")
    jobs = [(p, m, args.evals, s) for p in names for s in range(args.seeds) for m in methods]
    print(f"{args.evals} evaluations, {WORKERS} asynchronous workers, {args.seeds} seeds, "
          f"{len(jobs)} runs on {args.procs} processes; python {sys.version.split()[0]}", flush=True)
    t0 = time.time()
    if args.procs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.procs) as pool:
            results = pool.map(one_run, jobs, chunksize=1)
    else:
        results = [one_run(j) for j in jobs]
    wall = time.time() - t0
    regret: dict[tuple[str, str], list[float]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    for problem, method, _, r, s in results:
        regret.setdefault((problem, method), []).append(r)
        seconds.setdefault((problem, method), []).append(s)

    def med(p: str, m: str) -> float:
        return statistics.median(regret[(p, m)])

    print("\nmedian simple regret [IQR] (lower is better); seconds per run in parentheses")
    print(f"{'method':<12}" + "".join(f"{p:>34}" for p in names))
    for m in methods:
        cells = []
        for p in names:
            q1, q3 = np.percentile(regret[(p, m)], [25, 75])
            cells.append(f"{med(p, m):.2e} [{q1:.1e}, {q3:.1e}] ({statistics.mean(seconds[(p, m)]):.1f}s)")
        print(f"{m:<12}" + "".join(f"{c:>34}" for c in cells))
    print("\ngoals:")
    ok = True
    checked = 0
    optuna_run = [m for m in ("optuna-gp", "optuna-tpe") if m in methods]
    if "gp" in methods and optuna_run:
        which = "better Optuna sampler" if len(optuna_run) == 2 else f"{optuna_run[0]} (the only Optuna sampler run)"
        for p in names:
            best_optuna = min(med(p, m) for m in optuna_run)
            holds = med(p, "gp") <= best_optuna
            ok &= holds
            checked += 1
            print(f"  {p}: gp {med(p, 'gp'):.2e} <= {which} {best_optuna:.2e}: {'yes' if holds else 'NO'}")
    if "random" in methods:
        for p in names:
            for m in (x for x in methods if x in MODEL_BASED):
                holds = med(p, m) <= 0.5 * med(p, "random")
                ok &= holds
                checked += 1
                print(f"  {p}: {m} {med(p, m):.4f} <= half of random's {med(p, 'random'):.4f}: {'yes' if holds else 'NO'}")
    if not checked:
        print("  none checked: the goals compare gp with the Optuna samplers and every model-based method with random")
    print(f"all goals hold: {'yes' if ok and checked else 'NO' if checked else 'not checked'}; wall time {wall:.0f} s")
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"evals": args.evals, "seeds": args.seeds, "wall_s": wall,
                       "runs": [{"problem": p, "method": m, "seed": sd, "regret": r, "seconds": sec}
                                for p, m, sd, r, sec in results]}, fh, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
