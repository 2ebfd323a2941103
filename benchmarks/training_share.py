"""How much of the workers' time goes into training, on a digits ASHA study, and where the rest
goes.

The study: the demo's ``DigitsMLP`` and ``DigitsDataModule`` (``examples/digits_asha.py``) over
its space, ASHA (reduction factor 3, at most 9 epochs), ``--trials`` trials (default 60), 2 local
workers, seed 0. A Lightning callback added to every Trainer stamps, in each worker process, the
start of ``fit``, the start of every training epoch, the end of every validation (the epoch's
end) and the end of ``fit``; the journal gives when each trial run was handed out, and which
worker ran it.

The window is the first run's hand-out to the last run's end (the journal's final snapshot),
times the number of workers. Every second of each worker's window is put in one bucket, by the
stamps that bound it:

* training: a training epoch's start to its validation's end (the epoch's training and
  validation loops: what Optuna's and Ray Tune's workers would also spend);
* building the run: the hand-out to the callbacks' ``setup`` (the trial's folder made, module,
  datamodule and Trainer built, ``prepare_data`` and the datamodule's ``setup``);
* restoring: ``setup`` to ``fit``'s start (the module's ``setup``, ``configure_model``, the
  checkpoint restored);
* fit setup: ``fit``'s start to the first epoch (loaders, sanity check);
* between epochs: an epoch's end to the next epoch's start (the report and its answer, the
  checkpoint written, callbacks);
* end of fit: the last epoch's end to ``fit``'s end;
* between runs: ``fit``'s end to the next hand-out to that worker (metrics written, the final
  message, the next decision), and idle time at the window's edges.

Goal (issue #10): training at least 95% of the window. Prints the table and writes JSON.

Then, in the same run (``--compare``, default ``optuna,ray``, each where installed), the same
number of trials of the same module and datamodule elsewhere, stamped by the same callback:

* Optuna: random sampling with ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``,
  2 processes sharing a journal file;
* Ray Tune: random sampling with ``ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3)``,
  2 concurrent function trainables on a local 2-CPU Ray, ``reuse_actors=True``.

Both build a plain Trainer per trial as the digits race builds Optuna's (no logger, no
checkpoints: less than a Lightning user's default Trainer does), and their pruned trials stop
where ours pause and may resume. Their window is the first trial's start to the last stamp,
times 2 workers; training is the same epoch spans; "beyond training" is the rest per trial run.

Run: ``python benchmarks/training_share.py [--trials 60] [--compare optuna,ray] [--json out.json]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
BUCKETS = (
    "training", "building the run", "restoring", "fit setup", "between epochs", "end of fit", "between runs",
)
_GAP = {  # (earlier stamp, later stamp) -> bucket
    ("epoch_start", "epoch_end"): "training",
    ("run_start", "setup"): "building the run",
    ("setup", "fit_start"): "restoring",
    ("fit_start", "epoch_start"): "fit setup",
    ("epoch_end", "epoch_start"): "between epochs",
    ("epoch_end", "fit_end"): "end of fit",
    ("fit_end", "run_start"): "between runs",
}


def _stamp_class() -> type:
    import pytorch_lightning as pl

    class Stamps(pl.Callback):
        """Appends ``<pid> <kind> <unix time>`` lines to ``path``."""

        def __init__(self, path: str) -> None:
            self.path = path

        def _write(self, kind: str) -> None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()} {kind} {time.time():.6f}\n")

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:  # after the datamodule's
            self._write("setup")

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self._write("fit_start")

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._write("epoch_start")

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self._write("epoch_end")

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._write("fit_end")

    return Stamps


def run_study(trials: int, workdir: str) -> tuple[str, str]:
    """Runs the study; returns (journal path, stamps path)."""
    import lightning_maggy as lm

    sys.path.insert(0, EXAMPLES)
    import digits_asha

    stamps = os.path.join(workdir, "stamps.txt")
    exp = os.path.join(workdir, "exp")
    lm.search(
        digits_asha.DigitsMLP, digits_asha.SPACE, datamodule=digits_asha.DigitsDataModule, metric="val_acc",
        direction="max", optimizer=lm.ASHA(reduction_factor=3), num_trials=trials, max_epochs=9, workers=2,
        seed=0, exp_dir=exp, trainer_kwargs={"callbacks": [_stamp_class()(stamps)]}, verbose=False,
    )
    return os.path.join(exp, "journal.jsonl"), stamps


def _compare_trial(stamps: str, report: Any) -> Any:
    """One trial of the comparison sides: the demo's module and datamodule in a plain Trainer as
    the digits race builds it for Optuna (no logger, no checkpoints: the least work a Trainer
    does), stamped as ours are; ``report(value)`` after every validation epoch."""
    import logging
    import warnings

    import pytorch_lightning as pl
    import torch

    sys.path.insert(0, EXAMPLES)
    import digits_asha

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available", "max_epochs reached", ...
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    stamp = _stamp_class()(stamps)

    class Report(pl.Callback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                report(float(trainer.callback_metrics["val_acc"]))

    def run(hp: dict[str, Any]) -> float:
        stamp._write("run_start")
        trainer = pl.Trainer(max_epochs=9, accelerator="cpu", callbacks=[stamp, Report()], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(digits_asha.DigitsMLP(**hp), datamodule=digits_asha.DigitsDataModule(batch_size=hp["batch_size"]))
        return float(trainer.callback_metrics["val_acc"])

    return run, digits_asha.SPACE


def _optuna_worker(storage_path: str, trials: int, stamps: str, index: int) -> None:
    """One Optuna process: trials from the shared study until it holds ``trials`` in all
    (``MaxTrialsCallback``), so both processes work until the end as ours do."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sys.path.insert(0, HERE)
    from digits_vs_optuna import _suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name="share", storage=JournalStorage(JournalFileBackend(storage_path)),
        sampler=optuna.samplers.RandomSampler(seed=index),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )

    def objective(trial: Any) -> float:
        steps = itertools.count()

        def report(value: float) -> None:
            trial.report(value, next(steps))
            if trial.should_prune():
                raise optuna.TrialPruned()

        run, space = _compare_trial(stamps, report)
        return run(_suggest(trial, space))

    study.optimize(objective, callbacks=[MaxTrialsCallback(trials, states=None)])


def run_optuna(trials: int, workdir: str) -> str:
    """Optuna's side: random sampling with ``SuccessiveHalvingPruner`` (ASHA's settings), 2
    processes sharing a journal file, ``trials`` trials in all; returns the stamps path."""
    import multiprocessing as mp

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path, stamps = os.path.join(workdir, "optuna.log"), os.path.join(workdir, "optuna-stamps.txt")
    optuna.create_study(study_name="share", storage=JournalStorage(JournalFileBackend(path)), direction="maximize")
    procs = [mp.get_context("spawn").Process(target=_optuna_worker, args=(path, trials, stamps, i))
             for i in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return stamps


def _ray_space(space: Any) -> dict[str, Any]:
    from ray import tune

    from lightning_maggy.searchspace import Double, Integer

    out: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Double):
            out[name] = (tune.loguniform if dim.log else tune.uniform)(dim.low, dim.high)
        elif isinstance(dim, Integer):
            out[name] = (tune.lograndint if dim.log else tune.randint)(int(dim.low), int(dim.high) + 1)
        else:
            out[name] = tune.choice(list(dim.values))
    return out


def run_ray(trials: int, workdir: str) -> str:
    """Ray Tune's side, in a process of its own (its banners go to ``ray.log``): random sampling
    with its ``ASHAScheduler`` (grace period 1, reduction factor 3, at most 9 epochs), 2
    concurrent trials on a local 2-CPU Ray, ``reuse_actors=True``; returns the stamps path."""
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=_ray_side, args=(trials, workdir))
    proc.start()
    proc.join()
    return os.path.join(workdir, "ray-stamps.txt")


def _ray_side(trials: int, workdir: str) -> None:
    log = os.open(os.path.join(workdir, "ray.log"), os.O_WRONLY | os.O_CREAT)
    os.dup2(log, 1)
    os.dup2(log, 2)
    import ray
    from ray import cloudpickle, tune
    from ray.tune.schedulers import ASHAScheduler

    sys.path.insert(0, EXAMPLES)
    import digits_asha

    # This module runs as __mp_main__ here, which Ray's workers cannot import: ship it by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    stamps = os.path.join(workdir, "ray-stamps.txt")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)

    def trainable(config: dict[str, Any]) -> None:
        run, _ = _compare_trial(stamps, lambda value: tune.report({"val_acc": value}))
        run(config)

    tuner = tune.Tuner(
        trainable,
        param_space=_ray_space(digits_asha.SPACE),
        tune_config=tune.TuneConfig(num_samples=trials, metric="val_acc", mode="max", max_concurrent_trials=2,
                                    reuse_actors=True,
                                    scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3)),
        run_config=tune.RunConfig(storage_path=os.path.join(workdir, "ray-results"), verbose=0),
    )
    tuner.fit()
    ray.shutdown()


def read_stamps(stamps: str, events: dict[int, list[tuple[float, str]]]) -> dict[int, list[tuple[float, str]]]:
    """Adds the stamps file's ``(time, kind)`` marks to ``events`` (per pid), each timeline in
    time order; returns ``events``."""
    with open(stamps, encoding="utf-8") as fh:
        for line in fh:
            pid, kind, when = line.split()
            events[int(pid)].append((float(when), kind))
    for timeline in events.values():
        timeline.sort()
    return events


def stamp_share(stamps: str, workers: int = 2) -> dict[str, Any]:
    """Training share of a comparison side, from its stamps alone: the window is the first
    run's start to the last stamp, times ``workers``; training is the epochs' spans."""
    events = read_stamps(stamps, defaultdict(list))
    every = [mark for timeline in events.values() for mark in timeline]
    start, end = min(t for t, kind in every if kind == "run_start"), max(t for t, _ in every)
    training = sum(t1 - t0 for tl in events.values() for (t0, k0), (t1, k1) in zip(tl, tl[1:])
                   if (k0, k1) == ("epoch_start", "epoch_end"))
    runs = sum(1 for _, kind in every if kind == "run_start")
    window = (end - start) * workers
    return {"runs": runs, "epochs": sum(1 for _, kind in every if kind == "epoch_end"), "window_s": end - start,
            "training_share": training / window, "beyond_ms": 1000 * (window - training) / runs}


def timelines(journal: str, stamps: str) -> tuple[dict[int, list[tuple[float, str]]], float, float, int]:
    """Per worker pid, its stamps in time order (with the journal's run hand-outs); the window's
    start and end; the number of trial runs."""
    from lightning_maggy.driver.journal import read_journal

    pid_of: dict[int, int] = {}
    events: dict[int, list[tuple[float, str]]] = defaultdict(list)
    state: dict[str, str] = {}
    start = end = None
    runs = 0
    for ev in read_journal(journal):
        if ev["event"] == "worker":
            pid_of[ev["worker_id"]] = ev["pid"]
        elif ev["event"] == "trial":
            t = ev["trial"]
            before, state[t["trial_id"]] = state.get(t["trial_id"]), t["state"]
            if t["state"] == "RUNNING" and before != "RUNNING":  # a new run (not a promotion in place)
                events[pid_of[t["worker"]]].append((ev["time"], "run_start"))
                start = ev["time"] if start is None else min(start, ev["time"])
                runs += 1
            elif t["state"] in ("COMPLETED", "STOPPED", "PAUSED", "FAILED"):
                end = ev["time"] if end is None else max(end, ev["time"])
    read_stamps(stamps, events)
    assert start is not None and end is not None, "the study ran no trial"
    return dict(events), start, end, runs


def buckets(events: dict[int, list[tuple[float, str]]], start: float, end: float) -> dict[str, float]:
    out = dict.fromkeys(BUCKETS, 0.0)
    for timeline in events.values():
        clipped = [(min(max(t, start), end), kind) for t, kind in timeline]
        marks = [(start, "fit_end"), *clipped, (end, "run_start")]  # the edges count as idle
        for (t0, k0), (t1, k1) in zip(marks, marks[1:]):
            out[_GAP.get((k0, k1), "between runs")] += t1 - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--compare", default="optuna,ray",
                        help="sides to run after ours, the same number of trials each: optuna, ray (each where "
                        "installed); '' for none")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.time()
        journal, stamps = run_study(args.trials, workdir)
        wall = time.time() - t0
        events, start, end, runs = timelines(journal, stamps)
        spent = buckets(events, start, end)
    window = (end - start) * len(events)
    epochs = sum(1 for tl in events.values() for _, kind in tl if kind == "epoch_end")
    share = spent["training"] / window
    print(f"digits ASHA study: {args.trials} trials, {runs} runs, {epochs} epochs, {len(events)} workers; "
          f"window {end - start:.1f} s per worker, search() took {wall:.1f} s")
    print(f"{'where the workers time went':<28} {'s':>8} {'share':>7} {'per run':>9}")
    for name in BUCKETS:
        print(f"{name:<28} {spent[name]:8.2f} {spent[name] / window:7.1%} {1000 * spent[name] / runs:7.1f}ms")
    print(f"training share: {share:.1%} (goal: at least 95%); "
          f"per run beyond training: {1000 * (window - spent['training']) / runs:.0f} ms")
    sides = {}
    for side in [c.strip() for c in args.compare.split(",") if c.strip()]:
        import importlib.util

        if importlib.util.find_spec("optuna" if side == "optuna" else "ray") is None:
            print(f"{side}: not installed, left out")
            continue
        with tempfile.TemporaryDirectory() as workdir:
            stamps = (run_optuna if side == "optuna" else run_ray)(args.trials, workdir)
            sides[side] = stamp_share(stamps)
    if sides:
        print("\nthe same study elsewhere, in the same run (a plain Trainer without logger or checkpoints; their "
              "pruned trials stop, ours pause and resume):")
        print(f"{'side':<44} {'runs':>5} {'epochs':>7} {'window':>8} {'training':>9} {'beyond/run':>11}")
        rows = [("lightning_maggy, ASHA", {"runs": runs, "epochs": epochs, "window_s": end - start,
                                            "training_share": share,
                                            "beyond_ms": 1000 * (window - spent["training"]) / runs})]
        names = {"optuna": "Optuna, random + SuccessiveHalvingPruner", "ray": "Ray Tune, random + ASHAScheduler"}
        rows += [(names[side], res) for side, res in sides.items()]
        for name, res in rows:
            print(f"{name:<44} {res['runs']:>5} {res['epochs']:>7} {res['window_s']:>7.1f}s "
                  f"{res['training_share']:>9.1%} {res['beyond_ms']:>9.0f}ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"trials": args.trials, "runs": runs, "epochs": epochs, "workers": len(events),
                       "window_s": end - start, "seconds": spent, "training_share": share, "compared": sides},
                      fh, indent=2)


if __name__ == "__main__":
    main()
