"""The comparison sides of ``training_share.py``, and the stamps they and ours write: the same
digits study on Optuna and on Ray Tune, and our runs replayed in plain Lightning (see
``training_share.py``'s docstring). Not a script of its own."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections import defaultdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")


def stamp_class() -> type:
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

def _compare_trial(stamps: str, report: Any) -> Any:
    """One trial of the comparison sides: the demo's module and datamodule in a plain Trainer as
    the digits race builds it for Optuna (no logger, no checkpoints: the least work a Trainer
    does), stamped as ours are; ``report(value)`` after every validation epoch."""
    import pytorch_lightning as pl

    digits_asha = _plain_process()
    stamp = stamp_class()(stamps)

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


def _plain_process() -> Any:
    """A process that trains the demo's module in plain Lightning: its console quiet, one torch
    thread (as each of our 2 workers has); returns the demo's module."""
    import logging
    import warnings

    import torch

    sys.path.insert(0, EXAMPLES)
    import digits_asha

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available", "max_epochs reached", ...
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    return digits_asha


def _replay_worker(runs: list[tuple[dict[str, Any], int]], stamps: str, root: str, lean: bool) -> None:
    """Our runs again, in order, each in plain Lightning, stamped as ours are,
    with ``max_epochs`` = the epochs that run trained and no progress bar or model summary (as
    ours). Default (``lean=False``), as a user writes it by hand: a new module, a new datamodule
    and a default Trainer (its default logger and checkpoint callback, sanity check included).
    ``lean``: the least work per run a user could ask of Lightning: no logger, no checkpoints,
    the sanity check in the first run only, and the data set up once, its loaders built once per
    batch size and passed to ``fit``."""
    import pytorch_lightning as pl

    digits_asha = _plain_process()
    stamp = stamp_class()(stamps)
    data = digits_asha.DigitsDataModule()
    loaders: dict[int, tuple[Any, Any]] = {}
    for k, (hp, epochs) in enumerate(runs):
        stamp._write("run_start")
        module = digits_asha.DigitsMLP(**hp)
        if not lean:
            trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", default_root_dir=os.path.join(root, f"run-{k}"),
                                 callbacks=[stamp], enable_progress_bar=False, enable_model_summary=False)
            trainer.fit(module, datamodule=digits_asha.DigitsDataModule(batch_size=hp["batch_size"]))
            continue
        if not loaders:
            data.setup("fit")
        if hp["batch_size"] not in loaders:
            data.batch_size = hp["batch_size"]
            loaders[hp["batch_size"]] = (data.train_dataloader(), data.val_dataloader())
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", callbacks=[stamp], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=2 if k == 0 else 0)
        trainer.fit(module, *loaders[hp["batch_size"]])


def run_replay(per_worker: list[list[tuple[dict[str, Any], int]]], workdir: str, lean: bool = False) -> str:
    """Plain Lightning's side: all our workers' runs replayed one after another in one process
    (started as our workers are, from the forkserver our study started, with torch and
    Lightning preloaded); returns the stamps path.

    One process, alone on the machine: its runs do not contend for the cores as our two
    workers' do (two training processes side by side each ran slower than one alone on this
    machine), so what it measures is a lower bound of Lightning's own cost per run, and the
    difference with ours an upper bound of what lightning_maggy adds."""
    import multiprocessing as mp

    stamps = os.path.join(workdir, "plain-stamps.txt")
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    runs = [run for worker in per_worker for run in worker]
    proc = mp.get_context(method).Process(target=_replay_worker, args=(runs, stamps, os.path.join(workdir, "plain"), lean))
    proc.start()
    proc.join()
    return stamps


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


def busy_figures(events: dict[int, list[tuple[float, str]]]) -> tuple[float, float, float]:
    """What a run costs beyond its training, per run in ms, the training share, and training per
    run in ms, over each worker's busy span (its first run's start to its last run's end, so idle time at the
    window's edges is left out)."""
    span = training = runs = 0.0
    for timeline in events.values():
        starts = [t for t, kind in timeline if kind == "run_start"]
        ends = [t for t, kind in timeline if kind == "fit_end"]
        if starts and ends:
            span += max(ends) - min(starts)
        training += sum(t1 - t0 for (t0, k0), (t1, k1) in zip(timeline, timeline[1:])
                        if (k0, k1) == ("epoch_start", "epoch_end"))
        runs += len(starts)
    return 1000 * (span - training) / runs, training / span, 1000 * training / runs