"""``search()``: one call runs a whole hyperparameter study; ``SearchResult`` holds its outcome."""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import inspect
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_maggy.driver.controller import Controller, StopReason, best_trial
from lightning_maggy.driver.journal import JOURNAL_NAME, Journal
from lightning_maggy.earlystop import AbstractEarlyStop, get_earlystop
from lightning_maggy.exceptions import ConfigurationError, ExperimentError
from lightning_maggy.optimizers import AbstractOptimizer, GridSearch, get_optimizer
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Trial, TrialState

__all__ = ["SearchResult", "search"]

_DIRECTIONS = {"max": "max", "maximize": "max", "min": "min", "minimize": "min"}


@dataclasses.dataclass
class SearchResult:
    """The outcome of :func:`search`.

    Attributes:
        trials: every trial record, in the order they started.
        best_trial: the trial with the best final metric (None if none produced one).
        best_config / best_metric: shortcuts into ``best_trial``.
        exp_dir: the experiment directory (journal, result.json, trials.csv, per-trial folders).
        stop_reason: "finished", "timeout", "aborted" or "interrupted".
    """

    trials: list[Trial]
    metric: str
    direction: str
    exp_dir: str
    stop_reason: str
    best_trial: Trial | None = None
    message: str | None = None

    @property
    def best_config(self) -> dict[str, Any] | None:
        return dict(self.best_trial.config) if self.best_trial else None

    @property
    def best_metric(self) -> float | None:
        return self.best_trial.final_metric if self.best_trial else None

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in TrialState}
        for t in self.trials:
            out[t.state.value] += 1
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per trial (config keys prefixed with ``config/``)."""
        rows = []
        for t in self.trials:
            row: dict[str, Any] = {
                "trial_id": t.trial_id,
                "state": t.state.value,
                self.metric: t.final_metric,
                "epochs": t.epochs_done,
                "budget": t.budget,
                "retries": t.retries,
                "duration_s": None if t.duration is None else round(t.duration, 3),
                "component": t.component,
                "error": (t.error or "").strip().splitlines()[-1] if t.error else None,
            }
            row.update({f"config/{k}": v for k, v in t.config.items()})
            rows.append(row)
        return rows

    def to_pandas(self) -> Any:
        """The trials as a :class:`pandas.DataFrame` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from err
        return pd.DataFrame(self.rows())

    def summary(self, top: int = 10) -> str:
        """A table of the best ``top`` trials, as text."""
        scored = [t for t in self.trials if t.final_metric is not None and not math.isnan(t.final_metric)]
        scored.sort(key=lambda t: t.final_metric, reverse=self.direction == "max")  # type: ignore[arg-type,return-value]
        counts = ", ".join(f"{v} {k.lower()}" for k, v in self.counts().items() if v)
        lines = [f"{len(self.trials)} trials ({counts}); stop reason: {self.stop_reason}; exp_dir: {self.exp_dir}"]
        if scored:
            lines.append(f"{'trial':<18}{'state':<11}{'epochs':>6}  {self.metric:>12}  config")
            for t in scored[:top]:
                cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in t.config.items())
                lines.append(f"{t.trial_id:<18}{t.state.value:<11}{t.epochs_done:>6}  {t.final_metric:>12.5g}  {cfg}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"SearchResult(trials={len(self.trials)}, best_metric={self.best_metric!r}, "
            f"best_config={self.best_config!r}, stop_reason={self.stop_reason!r}, exp_dir={self.exp_dir!r})"
        )


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- validation ---------------------------------------------------------------------------------
def _trial_kind(target: Any) -> str:
    from lightning_maggy.lightning.namespace import imported_namespaces, is_lightning_module_class

    if is_lightning_module_class(target):
        return "module"
    if any(isinstance(target, ns.LightningModule) for ns in imported_namespaces()):
        raise ConfigurationError(
            f"search() got a LightningModule instance ({type(target).__name__}(...)); pass the "
            f"class, search({type(target).__name__}, space, ...): each trial builds its own "
            "module from its hyperparameters."
        )
    if not callable(target) or isinstance(target, type):
        raise ConfigurationError(
            f"search() expects a LightningModule class, a train function fn(hparams) or a "
            f"function trial fn(hparams, reporter); got {target!r}."
        )
    try:
        params = [
            p for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return "train_fn"
    if len(params) >= 2:
        return "function"
    if len(params) == 1:
        return "train_fn"
    raise ConfigurationError(
        f"{getattr(target, '__name__', target)!r} takes no positional argument; a train "
        "function is fn(hparams) and a function trial is fn(hparams, reporter)."
    )


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name}={value!r}: expected a positive int.")


def _validate_module(target: type, space: Searchspace, datamodule: Any) -> None:
    from lightning_maggy.lightning.trainer import module_call_style

    module_call_style(target, space.names())
    if datamodule is None:
        from lightning_maggy.lightning.namespace import namespace_of

        ns = namespace_of(target)
        if target.train_dataloader is ns.LightningModule.train_dataloader:
            raise ConfigurationError(
                f"{target.__name__} defines no train_dataloader() and no datamodule= was given; "
                "pass datamodule= (an instance, a LightningDataModule class, or a function of "
                "the hyperparameters) or define train_dataloader/val_dataloader on the module."
            )


def _default_exp_dir(target: Any) -> str:
    name = getattr(target, "__name__", "experiment")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path.cwd() / "maggy_experiments" / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return str(path)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lightning_maggy", "torch", "pytorch-lightning", "lightning", "pyzmq", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


# -- the main entry point -----------------------------------------------------------------------
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
        optimizer: "random" | "grid" | "asha" | "hyperband", or an :class:`AbstractOptimizer`.
        early_stop: None | "median" | "curve" | an :class:`AbstractEarlyStop`.
        num_trials: distinct configurations to try; ``timeout`` may replace it.
        timeout: wall-clock budget in seconds: no new trials after it, running ones are stopped
            at their next report and recorded.
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
        heartbeat_timeout: seconds of worker silence after which its trial is lost.
        spark_master / spark_conf: used to build a SparkSession when ``backend="spark"`` and none
            is active (e.g. ``spark_master="spark://host:7077"``).
        verbose: show a progress bar (on Spark also one line per trial event) and a summary.

    Returns:
        A :class:`SearchResult`. On Ctrl-C the partial result is saved and returned.

    Raises:
        ConfigurationError: bad arguments, before any worker starts.
        ExperimentError: the search was aborted (too many failures, or an error every trial
            would hit); ``err.result`` holds the partial result, saved in ``exp_dir``.
    """
    kind = _trial_kind(module_or_fn)
    if isinstance(space, Mapping) and not isinstance(space, Searchspace):
        space = Searchspace(**space)
    if not isinstance(space, Searchspace):
        raise ConfigurationError(f"space must be a Searchspace, got {type(space).__name__}.")
    if not isinstance(metric, str) or not metric.strip() or metric != metric.strip():
        raise ConfigurationError(
            f"metric={metric!r}: expected the name of a logged metric such as 'val_acc' "
            "(a non-empty str without surrounding spaces)."
        )
    if not isinstance(direction, str) or direction.lower() not in _DIRECTIONS:
        raise ConfigurationError(f"direction={direction!r}: expected 'max' or 'min'.")
    direction = _DIRECTIONS[direction.lower()]
    _check_positive_int("max_epochs", max_epochs)
    _check_positive_int("num_trials", num_trials, allow_none=True)
    _check_positive_int("workers", workers, allow_none=True)
    _check_positive_int("max_failures", max_failures, allow_none=True)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries={max_retries!r}: expected an int >= 0.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ConfigurationError(f"timeout={timeout!r}: expected a positive number of seconds.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigurationError(f"seed={seed!r}: expected an int or None.")
    trainer_kwargs = dict(trainer_kwargs or {})
    from lightning_maggy.lightning.trainer import RESERVED_TRAINER_KWARGS

    reserved = sorted(set(trainer_kwargs) & set(RESERVED_TRAINER_KWARGS))
    if reserved:
        raise ConfigurationError(
            f"trainer_kwargs sets {reserved}, which the search controls: pass max_epochs= to "
            "search() and let the optimizer decide each trial's epochs and checkpoints."
        )
    if trainer_kwargs and kind != "module":
        raise ConfigurationError(
            "trainer_kwargs applies only when searching a LightningModule class; a train "
            "function builds its own Trainer."
        )
    if kind == "module":
        _validate_module(module_or_fn, space, datamodule)
    opt = get_optimizer(optimizer, seed=seed) if isinstance(optimizer, str) else get_optimizer(optimizer)
    stopper = get_earlystop(early_stop)
    if num_trials is None and timeout is None and not isinstance(opt, GridSearch):
        raise ConfigurationError(
            "search() needs a budget: pass num_trials= (configurations to try), timeout= "
            "(seconds), or both (a grid search alone ends with its grid)."
        )
    # Validates the optimizer against the settings now; the controller sets it up for real.
    opt.setup(space, num_trials=num_trials, direction=direction, max_epochs=max_epochs, trials={}, seed=seed)
    if max_failures is None:
        max_failures = max(3, (num_trials or 0) // 4)
    if not (isinstance(heartbeat_timeout, (int, float)) and heartbeat_timeout > 0):
        raise ConfigurationError(f"heartbeat_timeout={heartbeat_timeout!r}: expected a positive number of seconds.")
    if (spark_master is not None or spark_conf is not None) and backend != "spark":
        raise ConfigurationError("spark_master/spark_conf apply only with backend='spark'.")

    from lightning_maggy.backends.base import check_shippable
    from lightning_maggy.lightning.worker import TrialTask, WorkerLaunch

    task = TrialTask(
        kind=kind,
        target=module_or_fn,
        metric=metric,
        direction=direction,
        datamodule=datamodule,
        trainer_kwargs=trainer_kwargs or None,
        seed=seed,
    )
    check_shippable(WorkerLaunch(address="", key=b"", exp_dir="", task=task))

    exp_path = Path(exp_dir) if exp_dir is not None else Path(_default_exp_dir(module_or_fn))
    if (exp_path / JOURNAL_NAME).exists():
        raise ConfigurationError(
            f"exp_dir={str(exp_path)!r} already holds an experiment (journal.jsonl); choose a "
            "new directory, or delete the old one to start over."
        )
    backend_obj = _make_backend(backend, spark_master, spark_conf)
    try:
        return _run(
            module_or_fn, space, task=task, metric=metric, direction=direction, max_epochs=max_epochs,
            opt=opt, stopper=stopper, num_trials=num_trials, timeout=timeout,
            backend_obj=backend_obj, workers=workers, trainer_kwargs=trainer_kwargs, exp_path=exp_path,
            seed=seed, max_failures=max_failures, max_retries=max_retries,
            heartbeat_timeout=heartbeat_timeout, verbose=verbose,
        )
    finally:
        backend_obj.stop()


def _run(
    module_or_fn: Any,
    space: Searchspace,
    *,
    task: Any,
    metric: str,
    direction: str,
    max_epochs: int,
    opt: AbstractOptimizer,
    stopper: AbstractEarlyStop,
    num_trials: int | None,
    timeout: float | None,
    backend_obj: Any,
    workers: int | None,
    trainer_kwargs: dict[str, Any],
    exp_path: Path,
    seed: int | None,
    max_failures: int,
    max_retries: int,
    heartbeat_timeout: float,
    verbose: bool,
) -> SearchResult:
    """Runs a validated search on a created backend (which the caller stops)."""
    if workers is None:
        workers = backend_obj.default_workers() if hasattr(backend_obj, "default_workers") else 2
    exp_path.mkdir(parents=True, exist_ok=True)
    journal = Journal(exp_path / JOURNAL_NAME)
    progress = _Progress(num_trials, metric, direction, enabled=verbose, lines=backend_obj.name == "spark")
    controller = Controller(  # validates the optimizer against the settings
        optimizer=opt,
        earlystop=stopper,
        searchspace=space,
        direction=direction,
        max_epochs=max_epochs,
        num_trials=num_trials,
        timeout=timeout,
        max_failures=max_failures,
        max_retries=max_retries,
        heartbeat_timeout=heartbeat_timeout,
        journal=journal,
        seed=seed,
        on_trial_end=progress.update,
    )
    experiment = {
        "name": getattr(module_or_fn, "__name__", type(module_or_fn).__name__),
        "kind": task.kind,
        "metric": metric,
        "direction": direction,
        "optimizer": type(opt).__name__,
        "early_stop": type(stopper).__name__,
        "num_trials": num_trials,
        "timeout": timeout,
        "max_epochs": max_epochs,
        "backend": getattr(backend_obj, "name", type(backend_obj).__name__),
        "workers": workers,
        "seed": seed,
        "space": space.to_dict(),
        "trainer_kwargs": {k: repr(v) for k, v in trainer_kwargs.items()},
        "versions": _versions(),
        "created": time.time(),
    }
    (exp_path / "experiment.json").write_text(json.dumps(experiment, indent=2, default=str))
    journal.append("experiment_start", experiment=experiment)

    from lightning_maggy.lightning.worker import WorkerLaunch
    from lightning_maggy.transport.zmq_transport import ZmqServer

    key = os.urandom(32)
    server = ZmqServer(key, host=getattr(backend_obj, "driver_host", "127.0.0.1"))
    launch = WorkerLaunch(
        address=server.address,
        key=key,
        exp_dir=str(exp_path.resolve()),
        task=task,
        heartbeat_interval=min(5.0, heartbeat_timeout / 4),
    )
    try:
        try:
            backend_obj.start(launch, workers)
            controller.serve(server, backend_obj)
        except KeyboardInterrupt:
            controller.abort("interrupted by the user (Ctrl-C)", StopReason.INTERRUPTED)
            progress.write("Interrupted: workers stopped; the partial result is saved in " + str(exp_path))
        except BaseException as err:  # the record says why, then the error propagates
            controller.abort(f"the driver failed: {type(err).__name__}: {err}")
            raise
    finally:
        backend_obj.stop()
        server.close()
        progress.close()
        result = SearchResult(
            trials=list(controller.trials.values()),
            metric=metric,
            direction=direction,
            exp_dir=str(exp_path),
            stop_reason=controller.stop_reason or StopReason.INTERRUPTED,
            best_trial=best_trial(controller.trials.values(), direction),
            message=controller.abort_message,
        )
        write_result(result)
        journal.close()
    if verbose:
        print(result.summary(), file=sys.stderr, flush=True)
    if result.stop_reason == StopReason.ABORTED:
        err = ExperimentError(f"the search was aborted: {result.message}")
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def _make_backend(backend: Any, spark_master: str | None, spark_conf: Mapping[str, str] | None) -> Any:
    from lightning_maggy.backends.base import Backend

    if isinstance(backend, Backend):
        return backend
    if backend == "local":
        from lightning_maggy.backends.local import LocalBackend

        return LocalBackend()
    if backend == "spark":
        from lightning_maggy.backends.spark import SparkBackend

        return SparkBackend(master=spark_master, conf=spark_conf)
    raise ConfigurationError(f"backend={backend!r}: expected 'local', 'spark' or a Backend instance.")


def write_result(result: SearchResult) -> None:
    """Writes result.json, trials.csv and the TensorBoard HParams summary into ``exp_dir``."""
    exp = Path(result.exp_dir)
    payload = {
        "metric": result.metric,
        "direction": result.direction,
        "stop_reason": result.stop_reason,
        "message": result.message,
        "best_trial_id": result.best_trial.trial_id if result.best_trial else None,
        "best_config": result.best_config,
        "best_metric": result.best_metric,
        "counts": result.counts(),
        "trials": [t.to_dict() for t in result.trials],
    }
    tmp = exp / "result.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, exp / "result.json")
    rows = result.rows()
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(exp / "trials.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields or ["trial_id"])
        writer.writeheader()
        writer.writerows(rows)
    _write_tensorboard(result, exp / "tensorboard")


def _write_tensorboard(result: SearchResult, logdir: Path) -> None:
    """One HParams run per trial with a metric, for ``tensorboard --logdir exp_dir/tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a core dependency; stay quiet if it was removed
        return
    for t in result.trials:
        if t.final_metric is None:
            continue
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in t.config.items()}
        with SummaryWriter(log_dir=str(logdir / t.trial_id)) as writer:
            writer.add_hparams(
                hparams,
                {f"hparam/{result.metric}": float(t.final_metric), "hparam/epochs": float(t.epochs_done)},
                run_name=".",
            )


class _Progress:
    """A tqdm bar of trials done (stopped, failed) and the best metric so far."""

    def __init__(self, total: int | None, metric: str, direction: str, enabled: bool, lines: bool = False) -> None:
        self._lines = lines and enabled
        self._states: dict[str, TrialState] = {}
        self._metric, self._direction = metric, direction
        self._best: float | None = None
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="maggy", unit="trial", dynamic_ncols=True)

    def update(self, trial: Trial) -> None:
        if self._bar is None:
            return
        if self._lines:
            value = "" if trial.final_metric is None else f" {self._metric}={trial.final_metric:.5g}"
            cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.config.items())
            self._bar.write(f"[maggy] trial {trial.trial_id} {trial.state.value} after {trial.epochs_done} epochs{value} ({cfg})")
        if trial.final_metric is not None and not math.isnan(trial.final_metric):
            m = trial.final_metric
            if self._best is None or (m > self._best if self._direction == "max" else m < self._best):
                self._best = m
        if trial.trial_id not in self._states:
            self._bar.update(1)
        self._states[trial.trial_id] = trial.state
        states = list(self._states.values())
        postfix = {
            "done": sum(s in (TrialState.COMPLETED, TrialState.PAUSED) for s in states),
            "stopped": states.count(TrialState.STOPPED),
            "failed": states.count(TrialState.FAILED),
        }
        if self._best is not None:
            postfix[f"best {self._metric}"] = f"{self._best:.4g}"  # type: ignore[assignment]
        self._bar.set_postfix(postfix, refresh=False)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
