"""``search()``: one call runs a whole hyperparameter study (a thin front door to the study
runner in :mod:`lightning_maggy.runner`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lightning_maggy.earlystop import AbstractEarlyStop, get_earlystop
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import AbstractOptimizer, GridSearch, get_optimizer
from lightning_maggy.results import SearchResult
from lightning_maggy.runner import run_study
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.validation import (
    check_metric,
    check_run_settings,
    check_not_in_a_worker,
    check_scope,
    check_trainer_kwargs,
    check_validates_every_epoch,
    normalize_direction,
    trial_kind,
    validate_module,
)

__all__ = ["SearchResult", "search"]


def search(
    module_or_fn: Any,
    space: Searchspace | Mapping[str, Any],
    *,
    metric: str,
    max_epochs: int,
    datamodule: Any = None,
    direction: str = "max",
    optimizer: str | AbstractOptimizer | type[AbstractOptimizer] = "asha",
    early_stop: str | AbstractEarlyStop | None = None,
    num_trials: int | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    backend: Any = "local",
    workers: int | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    exp_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    max_failures: int | None = None,
    max_retries: int = 3,
    heartbeat_timeout: float = 120.0,
    spark_master: str | None = None,
    spark_conf: Mapping[str, str] | None = None,
    verbose: bool = True,
    resume: str | os.PathLike[str] | None = None,
    scope: str = "last",
    gpus_per_trial: float | None = None,
) -> SearchResult:
    """Runs a hyperparameter search of a LightningModule (or a function) on parallel workers.

    Args:
        module_or_fn: a LightningModule class, built per trial as ``cls(**hparams)`` (or
            ``cls(hparams=...)``); or ``train_fn(hparams)`` that builds its own Trainer with
            :class:`MaggyCallback`; or a function trial ``fn(hparams, reporter)`` that calls
            ``reporter.broadcast(value, step)`` and returns its final metric.
        space: a :class:`Searchspace` (or a dict of name -> hyperparameter).
        metric: the logged metric to optimize, e.g. ``"val_acc"``.
        max_epochs: the full training budget of one trial (ASHA's R).
        datamodule: a LightningDataModule instance or class, or ``callable(hparams)``.
        direction: "max" or "min".
        optimizer: "random" | "grid" | "asha" | "hyperband" | "gp" | "tpe" | "bohb" (the last
            three need ``pip install 'lightning_maggy[bo]'``), or an :class:`AbstractOptimizer`.
        early_stop: None | "median" | "curve" | an :class:`AbstractEarlyStop`.
        num_trials: distinct configurations to try; ``timeout`` may replace it.
        timeout: wall-clock budget in seconds: no new trials after it, running ones are stopped
            at their next report and recorded.
        trial_timeout: seconds one run (attempt) of a trial may take; a trial over it is
            recorded STOPPED (its reports so far kept, so it may still be the best) with an
            error naming the limit, and its worker is told to drop it and goes on with the next
            trial. None: no limit.
        backend: "local" (worker processes on this machine), "spark" (the tasks of one Spark
            job; needs ``pip install lightning_maggy[spark]`` and Java 17+), or a Backend.
        workers: number of parallel workers (default: 2 local workers; on Spark, the task slots
            the cluster offers).
        trainer_kwargs: extra Trainer arguments (accelerator, devices, precision, callbacks...).
        exp_dir: experiment directory (default ``./maggy_experiments/<name>-<time>``).
        seed: seeds the optimizer, so the same seed suggests the same configurations.
        max_failures: the search stops after this many failed trials (default
            ``max(3, num_trials // 4)``).
        max_retries: times a trial whose worker was lost is resumed before it counts as failed.
        heartbeat_timeout: seconds of worker silence after which its trial is lost (re-queued); a
            local worker silent for twice as long is killed and replaced.
        spark_master: the master of the SparkSession built when ``backend="spark"`` and none is
            active (e.g. ``"spark://host:7077"``).
        spark_conf: settings of that SparkSession (e.g. ``{"spark.executor.memory": "4g"}``).
        verbose: show a progress bar (on Spark also one line per trial event) and a summary.
        resume: an experiment directory whose study to continue after its driver died
            (killed, power loss, Ctrl-C, an error): finished trials are kept and never run
            again, paused ones keep their rung, the ones that were running resume from their
            last checkpoint, and the optimizer continues its sequence. The arguments that
            define the study (module, space, metric, direction, max_epochs, optimizer and its
            settings, early_stop, seed) must be those it was started with; ``num_trials`` and
            ``timeout`` (which counts the time already spent) may be raised.
        scope: how trials are ranked for ``result.best_trial``, ``best_metric``, the progress
            bar and the summary: "last" (default), a trial's final metric, the value at the last
            epoch it trained (for a trial that ended at an ASHA rung, the rung's value); "all",
            the best value at any epoch it trained (as Ray Tune's ``scope="all"``). With
            "last" the reported best is a value the trial's last checkpoint actually has.
        gpus_per_trial: GPUs per trial: a fraction 1/n packs n trials on each GPU (0.25: four),
            a whole number gives each trial that many (with ``strategy="ddp_fork"`` in
            ``trainer_kwargs`` for one process per GPU). Local workers see their GPUs through
            ``CUDA_VISIBLE_DEVICES``; ``workers`` defaults to as many trials as fit, and more
            than fit, or more GPUs than are visible, is an error before anything starts. A
            module class's Trainer gets ``accelerator="gpu"`` and ``devices`` unless
            ``trainer_kwargs`` set them. On Spark it becomes ``spark.task.resource.gpu.amount``
            of the session the search builds. None (default): no GPU planning.

    Returns:
        A :class:`SearchResult`. On Ctrl-C the partial result is saved and returned.

    Raises:
        ConfigurationError: bad arguments, before any worker starts (with ``resume``: no
            journal there, or arguments that differ from the study's, each one named).
        ExperimentError: the search was aborted (too many failures, or an error every trial
            would hit); ``err.result`` holds the partial result, saved in ``exp_dir``.
    """
    check_not_in_a_worker("search")
    kind = trial_kind(module_or_fn)
    if isinstance(space, Mapping) and not isinstance(space, Searchspace):
        space = Searchspace(**space)
    if space is Searchspace:
        raise ConfigurationError(
            "space is the Searchspace class itself: pass an instance holding your hyperparameters, "
            "e.g. lm.Searchspace(lr=lm.Double(1e-4, 1e-1, log=True))."
        )
    if not isinstance(space, Searchspace):
        raise ConfigurationError(f"space must be a Searchspace, got {type(space).__name__}.")
    check_metric(metric)
    direction = normalize_direction(direction)
    check_scope(scope)
    check_run_settings(
        max_epochs=max_epochs, num_trials=num_trials, workers=workers, max_failures=max_failures,
        max_retries=max_retries, timeout=timeout, seed=seed, heartbeat_timeout=heartbeat_timeout,
        backend=backend, spark_master=spark_master, spark_conf=spark_conf, trial_timeout=trial_timeout,
    )
    trainer_kwargs = check_trainer_kwargs(trainer_kwargs, kind)
    if gpus_per_trial is not None:
        backend, workers, spark_conf = _gpu_settings(
            gpus_per_trial, backend, workers, spark_conf, trainer_kwargs, kind, spark_master
        )
    if kind == "module":
        validate_module(module_or_fn, space.names(), datamodule, trainer_kwargs)
    opt = get_optimizer(optimizer, seed=seed) if isinstance(optimizer, str) else get_optimizer(optimizer)
    check_validates_every_epoch(trainer_kwargs, opt, max_epochs)
    stopper = get_earlystop(early_stop)
    if num_trials is None and timeout is None and not isinstance(opt, GridSearch):
        raise ConfigurationError(
            "search() needs a budget: pass num_trials= (configurations to try), timeout= "
            "(seconds), or both (a grid search alone ends with its grid)."
        )
    # Validates the optimizer against the settings now; the controller sets it up for real.
    opt.setup(space, num_trials=num_trials, direction=direction, max_epochs=max_epochs, trials={}, seed=seed,
              validate_only=True)
    if max_failures is None:
        max_failures = max(3, (num_trials or 0) // 4)

    from lightning_maggy.lightning.worker import TrialTask

    task = TrialTask(
        kind=kind,
        target=module_or_fn,
        metric=metric,
        direction=direction,
        datamodule=datamodule,
        trainer_kwargs=trainer_kwargs or None,
        seed=seed,
    )
    return run_study(
        module_or_fn, space, task=task, metric=metric, direction=direction, max_epochs=max_epochs,
        opt=opt, stopper=stopper, num_trials=num_trials, timeout=timeout, trial_timeout=trial_timeout,
        backend=backend,
        workers=workers, trainer_kwargs=trainer_kwargs, exp_dir=exp_dir, seed=seed,
        max_failures=max_failures, max_retries=max_retries, heartbeat_timeout=heartbeat_timeout,
        spark_master=spark_master, spark_conf=spark_conf, verbose=verbose, resume=resume, scope=scope,
    )


def _gpu_settings(
    gpus_per_trial: Any, backend: Any, workers: int | None, spark_conf: Any, trainer_kwargs: dict[str, Any], kind: str,
    spark_master: str | None = None,
) -> tuple[Any, int | None, Any]:
    """The backend, workers and Spark settings for ``gpus_per_trial`` (see :func:`search`);
    fills ``trainer_kwargs``' accelerator and devices for a module class."""
    from lightning_maggy.gpus import check_gpus_per_trial, plan_gpus, visible_gpus

    check_gpus_per_trial(gpus_per_trial)
    if kind == "module":
        trainer_kwargs.setdefault("accelerator", "gpu")
        trainer_kwargs.setdefault("devices", int(gpus_per_trial) if gpus_per_trial >= 1 else 1)
    if backend == "local":
        from lightning_maggy.backends.local import LocalBackend

        workers = plan_gpus(gpus_per_trial, workers, visible_gpus())
        return LocalBackend(gpus_per_worker=gpus_per_trial), workers, spark_conf
    if backend == "spark":
        from lightning_maggy.backends.spark import active_session, is_local_master

        session = active_session()
        if session is None and is_local_master(spark_master):
            raise ConfigurationError(
                f"gpus_per_trial with backend='spark' and a local master ({spark_master or 'local[*]'}): "
                "Spark's local mode schedules no GPUs to tasks. Use backend='local', which gives each "
                "worker its GPUs, or a cluster master (spark_master='spark://host:7077') whose workers "
                "announce theirs."
            )
        if session is not None:
            raise ConfigurationError(
                "gpus_per_trial with backend='spark' sets spark.task.resource.gpu.amount of the "
                "session the search builds, but a SparkSession is already active: set "
                f"spark.task.resource.gpu.amount={gpus_per_trial} on it instead (each task then "
                "sees the GPUs Spark assigns it), and leave gpus_per_trial unset."
            )
        return backend, workers, {**(spark_conf or {}), "spark.task.resource.gpu.amount": str(gpus_per_trial)}
    raise ConfigurationError(
        "gpus_per_trial applies to backend='local' or 'spark'; with a Backend instance, give it "
        "its GPUs (LocalBackend(gpus_per_worker=...)) and leave gpus_per_trial unset."
    )
