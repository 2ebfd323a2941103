"""The one study runner behind ``search()`` and ``ablate()``: it creates the experiment
directory and journal (or reopens them to resume a study), starts the server and the backend's
workers, drives the controller, and writes the result, whatever happens (a finished study, an
abort, Ctrl-C, a driver error).

A new and a resumed study take the same path: the controller is built from the trial records
the journal replays (none for a new study) and continues from them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning_maggy.driver.controller import Controller, StopReason
from lightning_maggy.driver.journal import JOURNAL_NAME, Journal, JournalWriteError, StudyLog, fsync_dir
from lightning_maggy.earlystop import AbstractEarlyStop
from lightning_maggy.exceptions import ConfigurationError, ExperimentError
from lightning_maggy.optimizers import AbstractOptimizer
from lightning_maggy.progress import Progress
from lightning_maggy.results import SearchResult, write_result
from lightning_maggy.resume import check_same_study, open_study, settings_of
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.storage import (
    StudyMirror,
    check_shared_exp_dir,
    is_remote,
    local_copy_of,
    local_path,
    redact,
    study_exists,
)
from lightning_maggy.trial import best_trial
from lightning_maggy.validation import default_exp_dir, versions

__all__ = ["run_study"]


def run_study(
    module_or_fn: Any,
    space: Searchspace | None,
    *,
    task: Any,
    metric: str,
    direction: str,
    max_epochs: int,
    opt: AbstractOptimizer,
    stopper: AbstractEarlyStop,
    num_trials: int | None,
    timeout: float | None,
    backend: Any,
    workers: int | None,
    trial_timeout: float | None = None,
    trainer_kwargs: dict[str, Any],
    exp_dir: str | os.PathLike[str] | None,
    seed: int | None,
    max_failures: int,
    max_retries: int,
    heartbeat_timeout: float,
    spark_master: str | None,
    spark_conf: Mapping[str, str] | None,
    verbose: bool,
    summary: bool = True,
    extra: Mapping[str, Any] | None = None,
    resume: str | os.PathLike[str] | None = None,
    scope: str = "last",
) -> SearchResult:
    """Runs a validated study; ``extra`` is added to ``experiment.json``; ``summary`` prints the
    result's summary when ``verbose``; ``resume`` continues the study in that directory;
    ``scope`` scores trials for the best one (see :data:`~lightning_maggy.trial.SCOPES`).

    Raises:
        ConfigurationError: ``exp_dir`` holds an experiment already, ``resume`` holds none or a
            different study, the task cannot be shipped to workers, or the backend cannot start.
        ExperimentError: the study was aborted; ``err.result`` holds the partial result.
    """
    from lightning_maggy.backends.base import check_shippable
    from lightning_maggy.lightning.worker import WorkerLaunch

    check_shippable(WorkerLaunch(address="", key=b"", exp_dir="", task=task))
    _check_folder_argument("exp_dir", exp_dir)
    _check_folder_argument("resume", resume)
    study = {
        "name": getattr(module_or_fn, "__name__", type(module_or_fn).__name__),
        "kind": task.kind,
        "metric": metric,
        "direction": direction,
        "optimizer": type(opt).__name__,
        "optimizer_settings": settings_of(opt),
        "early_stop": type(stopper).__name__,
        "early_stop_settings": settings_of(stopper),
        "num_trials": num_trials,
        "timeout": timeout,
        "max_epochs": max_epochs,
        "seed": seed,
        "space": None if space is None else space.to_dict(),
        **dict(extra or {}),
    }
    prior: StudyLog | None = None
    where = exp_dir if resume is None else resume
    url = str(where).rstrip("/") if where is not None and is_remote(where) else None
    if backend == "spark" and spark_master and not _spark_session_active():  # before a cluster is contacted
        check_shared_exp_dir(where, spark_master)  # (with a session active, SparkBackend refuses spark_master)
    if resume is not None:
        exp_path, prior = open_study(resume, exp_dir)
        check_same_study(prior.experiment or {}, study, resume)
    else:
        if url is not None:
            exp_path, held = local_copy_of(url), study_exists(url)
        else:
            exp_path = Path(local_path(exp_dir)) if exp_dir is not None else Path(default_exp_dir(module_or_fn))
            blocked = next((p for p in (exp_path, *exp_path.parents) if p.exists() and not p.is_dir()), None)
            if blocked is not None:
                raise ConfigurationError(
                    f"exp_dir={str(exp_dir)!r} cannot be a directory: {str(blocked)!r} is a file. Pass a "
                    "directory (new or empty) for the study's record."
                )
            held = (exp_path / JOURNAL_NAME).exists()
            _check_creatable(exp_path, exp_dir)
        if held:
            shown = url or str(exp_path)
            raise ConfigurationError(
                f"exp_dir={shown!r} already holds an experiment (journal.jsonl); pass "
                f"resume={shown!r} to continue it, choose a new directory, or delete the "
                "old one to start over" + (f" (and the driver's copy in {exp_path})." if url else ".")
            )
    backend_obj = _make_backend(backend, spark_master, spark_conf)
    try:
        if getattr(backend_obj, "name", None) == "spark":  # a session given or already active
            check_shared_exp_dir(where, str(backend_obj.sc.master))
        return _run(
            study, space, task=task, metric=metric, direction=direction, max_epochs=max_epochs,
            opt=opt, stopper=stopper, num_trials=num_trials, timeout=timeout, trial_timeout=trial_timeout,
            backend_obj=backend_obj, workers=workers, trainer_kwargs=trainer_kwargs, exp_path=exp_path,
            url=url, seed=seed, max_failures=max_failures, max_retries=max_retries,
            heartbeat_timeout=heartbeat_timeout, verbose=verbose, summary=summary, prior=prior,
            scope=scope,
        )
    finally:
        backend_obj.stop()


def _run(
    study: dict[str, Any],
    space: Searchspace | None,
    *,
    task: Any,
    metric: str,
    direction: str,
    max_epochs: int,
    opt: AbstractOptimizer,
    stopper: AbstractEarlyStop,
    num_trials: int | None,
    timeout: float | None,
    trial_timeout: float | None,
    backend_obj: Any,
    workers: int | None,
    trainer_kwargs: dict[str, Any],
    exp_path: Path,
    url: str | None,
    seed: int | None,
    max_failures: int,
    max_retries: int,
    heartbeat_timeout: float,
    verbose: bool,
    summary: bool,
    prior: StudyLog | None,
    scope: str,
) -> SearchResult:
    """Runs a validated study on a created backend (which the caller stops): a new one, or the
    one ``prior`` (its journal) describes. With a ``url``, ``exp_path`` is the driver's copy of
    the study, mirrored to the URL, where the workers keep the trial folders."""
    if workers is None:
        workers = backend_obj.default_workers() if hasattr(backend_obj, "default_workers") else 2
    _create(exp_path, exp_path)
    experiment = {
        **study,
        "backend": getattr(backend_obj, "name", type(backend_obj).__name__),
        "workers": workers,
        "trial_timeout": trial_timeout,
        "trainer_kwargs": {k: repr(v) for k, v in trainer_kwargs.items()},
        "versions": versions(),
        "created": time.time() if prior is None else (prior.experiment or {}).get("created", time.time()),
    }
    if prior is not None:
        experiment["resumed"] = [*(prior.experiment or {}).get("resumed", []), time.time()]
    journal = Journal(exp_path / JOURNAL_NAME)  # first: it refuses a study another driver runs
    _write_json_durably(exp_path / "experiment.json", experiment)
    if prior is not None:  # before the controller re-queues the interrupted trials
        journal.append(
            "resume",
            experiment=experiment,
            previous_end=prior.end_reason,
            elapsed=prior.elapsed,
            run=prior.runs + 1,
        )
    progress = Progress(num_trials, metric, direction, enabled=verbose, lines=backend_obj.name == "spark", scope=scope)
    controller = Controller(  # validates the optimizer against the settings
        optimizer=opt,
        earlystop=stopper,
        searchspace=space,
        direction=direction,
        max_epochs=max_epochs,
        num_trials=num_trials,
        timeout=timeout,
        trial_timeout=trial_timeout,
        max_failures=max_failures,
        max_retries=max_retries,
        heartbeat_timeout=heartbeat_timeout,
        journal=journal,
        seed=seed,
        on_trial_end=progress.update,
        trials=None if prior is None else prior.resumable_trials(),
        elapsed=0.0 if prior is None else prior.elapsed,
        optimizer_state=None if prior is None else prior.optimizer_state,
        non_finite=None if prior is None else prior.non_finite,
    )
    planned = getattr(opt, "planned_trials", None) if num_trials is None else None
    if isinstance(planned, int):  # a grid's size: the bar's total when the study gives none
        progress.set_total(planned)
    if prior is None:
        journal.append("experiment_start", experiment=experiment, optimizer_state=_initial_state(opt))
    mirror = None
    if url is not None:
        try:
            mirror = StudyMirror(url, exp_path).start()
        except BaseException:
            journal.close()
            raise

    from lightning_maggy.lightning.worker import WorkerLaunch
    from lightning_maggy.transport.zmq_transport import ZmqServer

    key = os.urandom(32)
    try:
        server = ZmqServer(key, host=getattr(backend_obj, "driver_host", "127.0.0.1"))
    except BaseException:  # (an address that cannot be bound): nothing runs, nothing left open
        if mirror is not None:
            _final_upload(mirror)
        journal.close()
        raise
    launch = WorkerLaunch(
        address=server.address,
        key=key,
        exp_dir=url or str(exp_path.resolve()),
        task=task,
        heartbeat_interval=min(5.0, heartbeat_timeout / 4),
    )
    try:
        try:
            backend_obj.plan_restarts(workers=workers, max_failures=max_failures, max_retries=max_retries)
            backend_obj.holds_trial = controller.holds_trial
            backend_obj.start(launch, workers)
            controller.serve(server, backend_obj)
        except KeyboardInterrupt:
            controller.abort("interrupted by the user (Ctrl-C)", StopReason.INTERRUPTED)
            progress.write("Interrupted: workers stopped; the partial result is saved in " + str(exp_path))
        except JournalWriteError as err:  # a full disk: stop now, the record whole so far
            controller.abort(str(err))
        except BaseException as err:  # the record says why, then the error propagates
            controller.abort(f"the driver failed: {type(err).__name__}: {err}")
            raise
    finally:
        with _ctrl_c_deferred():
            backend_obj.stop()
            server.close()
            progress.close()
            result = SearchResult(
                trials=list(controller.trials.values()),
                metric=metric,
                direction=direction,
                exp_dir=url or str(exp_path),
                local_dir=None if url is None else str(exp_path),
                stop_reason=controller.stop_reason or StopReason.INTERRUPTED,
                best_trial=best_trial(controller.trials.values(), direction, scope),
                message=controller.abort_message,
                scope=scope,
            )
            _save_result(result)
            journal.close()
        if mirror is not None:  # the record is whole in the driver's copy: Ctrl-C may cut this short
            _final_upload(mirror)
    if verbose and summary:
        print(result.summary(), file=sys.stderr, flush=True)
    if result.stop_reason == StopReason.ABORTED:
        err = ExperimentError(f"the search was aborted: {result.message}")
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def _check_folder_argument(name: str, value: Any) -> None:
    """``exp_dir`` / ``resume``: None, or a non-empty path (a str or os.PathLike) or URL."""
    if value is None:
        return
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"{name}={value!r}: expected a directory path (a str or pathlib.Path) or a URL such as "
            f"'s3://bucket/study', got {type(value).__name__}."
        )
    if not str(value).strip():
        raise ConfigurationError(
            f"{name}={value!r} is empty: pass the study's directory (e.g. {name}='maggy_experiments/my_study')"
            + (", or leave exp_dir out for a new folder under ./maggy_experiments." if name == "exp_dir" else ".")
        )


def _check_creatable(exp_path: Path, exp_dir: Any) -> None:
    """Refuses, before anything starts and without creating it, a new study's directory whose
    nearest existing folder this process may not write to (no permission, a read-only disk)."""
    existing = next((p for p in (exp_path, *exp_path.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"exp_dir={str(exp_dir if exp_dir is not None else exp_path)!r} cannot be created: {str(existing)!r} "
            "is not writable by this process. Pass a directory you can write to."
        )


def _create(exp_path: Path, exp_dir: Any) -> None:
    """Creates the study's directory (before any worker starts; after the backend is set up, so
    that a backend's refusal leaves no folder behind): one that cannot be created is refused
    with the fix instead of a bare OSError."""
    try:
        exp_path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigurationError(
            f"exp_dir={str(exp_dir)!r} cannot be created ({err.strerror or err}): pass a directory you can write to."
        ) from err


def _save_result(result: SearchResult) -> None:
    """:func:`write_result`; where the disk is full, a warning instead of an error that would
    hide the study's own result (or error): the journal holds the whole record, from which
    ``SearchResult.load`` rebuilds the same result."""
    try:
        write_result(result)
    except OSError as err:
        warnings.warn(
            f"could not write result.json, trials.csv or the TensorBoard summary in {result.record_dir} ({err}). "
            f"The study's journal holds its whole record: lm.SearchResult.load({result.exp_dir!r}) reads the "
            "result back, and `lightning-maggy show` shows it.",
            RuntimeWarning,
            stacklevel=2,
        )


def _spark_session_active() -> bool:
    from lightning_maggy.backends.spark import active_session

    return active_session() is not None


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """While the study's end is written (the workers stopped, at most ``Backend.stop``'s timeout;
    the result saved), Ctrl-C only says that it is on its way: an interrupt there would lose
    ``result.json`` and ``trials.csv`` and the result itself. Only in the main thread, where
    Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_its_way(signum: int, frame: Any) -> None:
        print("lightning_maggy: stopping the workers and saving the partial result (a few seconds at most)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_its_way)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _final_upload(mirror: StudyMirror) -> None:
    """Uploads the study's record to its URL; a failure is a warning (the record is complete
    in the driver's copy, and the next resume or search there uploads it)."""
    try:
        mirror.close()
    except Exception as err:  # noqa: BLE001 - the study's result stands
        warnings.warn(
            f"the study's record could not be uploaded to {redact(mirror.url)} ({type(err).__name__}: {err}); "
            f"it is complete in the driver's copy, {mirror.local}. Upload that folder to the URL "
            "before resuming the study from another machine.",
            RuntimeWarning,
            stacklevel=3,
        )


def _initial_state(opt: AbstractOptimizer) -> dict[str, Any] | None:
    """The optimizer's ``state_dict()`` right after its setup, if it is plain JSON data: what a
    resumed study loads so that even an unseeded optimizer continues the same sequence."""
    try:
        state = opt.state_dict()
        json.dumps(state, allow_nan=True)
    except Exception:  # a custom optimizer's state that is not JSON: it derives from the records
        return None
    return state if isinstance(state, dict) else None


def _write_json_durably(path: Path, data: Mapping[str, Any]) -> None:
    """Writes ``path`` through a temporary file, fsync'd and renamed (never half written)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2, default=str))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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
