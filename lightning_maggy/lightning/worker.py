"""The worker loop: register, ask for a trial, run it, report the end, repeat.

The same loop runs in a local worker process and in a Spark task. What it runs is described by a
:class:`TrialTask`, shipped to the worker once when it starts (never over the network socket).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lightning_maggy.exceptions import (
    ConfigurationError,
    EarlyStopException,
    MetricNotFoundError,
    SearchspaceError,
    TrialDropped,
)
from lightning_maggy.lightning.context import Reporter, TrialContext, _set_current
from lightning_maggy.lightning.disk import (
    exception_chain,
    make_trial_dir,
    storage_failure,
    write_hparams,
)
from lightning_maggy.lightning.heartbeat import Heartbeat
from lightning_maggy.lightning.returns import as_number, returned_metric
from lightning_maggy.trial import Decision

__all__ = ["FATAL_ERRORS", "TrialTask", "WorkerLaunch", "run_trial", "run_worker"]

MAX_ERROR_CHARS = 64_000

#: lightning_maggy's own errors that mean the study is misconfigured (every trial would fail the
#: same way): a trial failing with one of these (isinstance, subclasses included) is sent with
#: ``fatal=True`` and the server ends the study with its message. A user's exception that merely
#: shares a name (``class ConfigurationError(Exception)`` in the user's code) fails its trial only.
FATAL_ERRORS: tuple[type[BaseException], ...] = (MetricNotFoundError, ConfigurationError, SearchspaceError)


@dataclasses.dataclass
class TrialTask:
    """What every trial of a search runs.

    Attributes:
        kind: "module" (a LightningModule class), "train_fn" (``fn(hparams)`` that builds its own
            Trainer with MaggyCallback) or "function" (``fn(hparams, reporter)``).
        target: the class or function.
        datamodule: instance, class or callable(hparams), or None.
        metric / direction: what is optimized.
        trainer_kwargs: extra Trainer arguments for "module" trials.
        seed: the search's seed; each trial is seeded from it and its id, so a trial trains the
            same way wherever it runs.
        ablation: for an ablation study, component name -> the
            :class:`~lightning_maggy.ablation.components.Component` that trials with that
            ``component`` leave out.
    """

    kind: str
    target: Any
    metric: str
    direction: str
    datamodule: Any = None
    trainer_kwargs: Mapping[str, Any] | None = None
    seed: int | None = None
    ablation: Mapping[str, Any] | None = None


@dataclasses.dataclass
class WorkerLaunch:
    """Everything a worker needs, shipped once at start (cloudpickled over the process-start
    channel for local workers, inside the Spark closure for Spark tasks)."""

    address: str
    key: bytes
    exp_dir: str
    task: TrialTask
    heartbeat_interval: float = 5.0
    num_threads: int | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"WorkerLaunch(address={self.address!r}, exp_dir={self.exp_dir!r}, task={self.task.kind})"


def trial_dir_for(exp_dir: str, trial_id: str) -> str:
    return os.path.join(exp_dir, "trials", trial_id)


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
    """Sends this process's stdout and stderr (Python and C level) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A resumed or promoted trial's checkpoint folder holds its earlier checkpoints by design.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def run_trial(task: TrialTask, ctx: TrialContext) -> dict[str, Any]:
    """Runs one trial in this process; returns the FINAL message's fields.

    A ``sys.exit()`` in the trial's code fails the trial (its worker goes on to the next one),
    and so does a KeyboardInterrupt in a process that ignores Ctrl-C (every local worker), which
    only the trial's code can have raised. The worker's own shutdown (SIGTERM, which the driver's
    departure also sends) and a real Ctrl-C elsewhere still end the process."""
    ctrl_c_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    try:
        metric = _run(task, ctx)
        status = "ok"
    except EarlyStopException as stop:
        metric, status = as_number(stop.metric), "stopped"  # the last report (or the user's number)
    except TrialDropped as dropped:
        return _dropped(str(dropped))
    except Exception as err:  # user code failed: the trial fails, the search goes on
        if ctx.dropped is not None:  # the user's code turned our TrialDropped into its own error
            return _dropped(ctx.dropped)
        return _failed(err, trial_dir=ctx.trial_dir)
    except (SystemExit, KeyboardInterrupt) as err:
        chain = exception_chain(err)
        if any(isinstance(e, _shutdown_types()) for e in chain):
            raise  # the worker's own shutdown: SIGTERM, or the driver gone (lifeline.WorkerTerminated)
        interrupted = any(isinstance(e, KeyboardInterrupt) for e in chain)
        if interrupted and not ctrl_c_ignored:
            raise  # this process takes Ctrl-C (not a local worker): it may be a real one
        if ctx.dropped is not None:
            return _dropped(ctx.dropped)
        return _failed(err, _ended_by(err, interrupted))
    return {"status": status, "metric": metric, "error": None, "error_type": None, "fatal": False}


def _failed(err: BaseException, note: str | None = None, trial_dir: str = "") -> dict[str, Any]:
    """The FINAL fields of a trial whose code raised ``err`` (being handled): its traceback, and
    ``note`` after it (the line a study's abort message quotes). A full disk or a failed store
    is fatal and said so (see :mod:`lightning_maggy.lightning.disk`)."""
    storage = storage_failure(err, trial_dir)
    if storage is not None and note is None:
        note = storage
    text = traceback.format_exc()
    if note is not None:
        text = f"{text}lightning_maggy: {note}\n"
    if len(text) > MAX_ERROR_CHARS:
        text = "...\n" + text[-MAX_ERROR_CHARS:]
    with contextlib.suppress(OSError):  # stderr is output.log, maybe on that full disk
        print(text, file=sys.stderr, flush=True)
    fields = {
        "status": "failed",
        "metric": None,
        "error": text,
        "error_type": type(err).__name__,
        "fatal": isinstance(err, FATAL_ERRORS) or storage is not None,
    }
    return {**fields, "storage_failed": True} if storage is not None else fields


def _shutdown_types() -> tuple[type[BaseException], ...]:
    """The SystemExits of a worker's own shutdown: ours on SIGTERM, and Lightning's (its loops
    raise SIGTERMException once its own handler saw the SIGTERM; the trial's code may have
    swallowed ours)."""
    from lightning_maggy.lightning.lifeline import WorkerTerminated

    found: list[type[BaseException]] = [WorkerTerminated]
    for name in ("lightning.pytorch.utilities.exceptions", "pytorch_lightning.utilities.exceptions"):
        cls = getattr(sys.modules.get(name), "SIGTERMException", None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _ended_by(err: BaseException, interrupted: bool) -> str:
    """Why a trial whose code raised SystemExit or KeyboardInterrupt is FAILED, in words."""
    fix = "raise an exception to fail a trial, or return to end it; the worker goes on to the next trial"
    if isinstance(err, KeyboardInterrupt):
        return f"the trial's code raised KeyboardInterrupt (workers ignore Ctrl-C, so no user pressed it): {fix}."
    code = getattr(err, "code", None)
    if interrupted:  # Lightning's Trainer: "Detected KeyboardInterrupt, attempting graceful shutdown", sys.exit(1)
        return (
            "the trial's code raised KeyboardInterrupt (workers ignore Ctrl-C, so no user pressed it), which "
            f"Lightning's Trainer turned into sys.exit({code!r}) after its graceful shutdown: {fix}."
        )
    called = "sys.exit()" if code is None else f"sys.exit({code!r})"
    return f"the trial's code called {called}, which would end its worker process: {fix}."


def _dropped(reason: str) -> dict[str, Any]:
    print(f"lightning_maggy: {reason}", file=sys.stderr, flush=True)
    return {"status": "dropped", "metric": None, "error": reason, "error_type": None, "fatal": False}


def trial_seed(seed: int, trial_id: str) -> int:
    """The seed of one trial: stable across runs, backends and resumes."""
    return (seed * 1_000_003 + int(trial_id[:8], 16)) % (2**31 - 1)


def _seed(task: TrialTask, ctx: TrialContext) -> None:
    if task.seed is None and ctx.seed is None:
        return
    import random

    value = int(ctx.seed) if ctx.seed is not None else trial_seed(task.seed, ctx.trial_id)  # type: ignore[arg-type]
    random.seed(value)
    try:
        import numpy as np

        np.random.seed(value)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if task.kind != "function" or torch.cuda.is_initialized():
        torch.manual_seed(value)  # CPU and every CUDA device
    else:
        # A function trial that has not touched CUDA: seed the CPU generator only. (Seeding CUDA
        # before it is initialized queues the call with a formatted stack trace: milliseconds
        # per trial.)
        torch.random.default_generator.manual_seed(value)


def _run(task: TrialTask, ctx: TrialContext) -> Any:
    _seed(task, ctx)
    if task.kind == "function":  # returns its final metric, or None for its last report
        name = getattr(task.target, "__qualname__", None)
        who = f"{name}(hparams, reporter)" if name else "the trial function"
        return returned_metric(task.target(dict(ctx.config), Reporter(ctx)), task.metric, strict=True, who=who)
    if not ctx.catch_up():  # stopped or paused at a report its checkpoint had, unrecorded
        return None
    if task.kind == "train_fn":  # a number it returns is its final metric; anything else, ignored
        return returned_metric(task.target(dict(ctx.config)), task.metric, strict=False)
    from lightning_maggy.lightning.callback import search_callbacks
    from lightning_maggy.lightning.trainer import VALIDATED, build_datamodule, build_module, build_trainer

    module = build_module(task.target, ctx.config, task.datamodule)
    # An ablation may rewrite the datamodule for its component: a new one (or a copy) every run.
    ablation = task.ablation is not None
    datamodule = build_datamodule(task.datamodule, ctx.config, reuse=not ablation, fresh=ablation)
    if task.ablation is not None and ctx.component is not None:
        from lightning_maggy.ablation.surgery import leave_out

        module = leave_out(module, datamodule, task.ablation[ctx.component])
    ours = search_callbacks((task.trainer_kwargs or {}).get("callbacks"), task.metric)
    ckpt = ctx.last_ckpt if ctx.resuming else None
    if ctx.resuming and ckpt is None and ctx.epochs_done:  # in output.log: why it trains from epoch 0
        print(f"lightning_maggy: trial {ctx.trial_id} trained {ctx.epochs_done} epoch(s) before, but its "
              "checkpoints/last.ckpt is gone: this run trains it from epoch 0.", file=sys.stderr, flush=True)
    trainer = build_trainer(
        module,
        trial_dir=ctx.trial_dir,
        budget=ctx.budget,
        callbacks=ours,
        trainer_kwargs=task.trainer_kwargs,
        attempt=ctx.attempt,
        publish=ctx.publish,
        resumed=ckpt is not None,
        sanity_checked=task.target in VALIDATED and not ablation,  # same runs in every paired trial
    )
    first_epoch = ctx.epochs_done if ckpt is not None else 0
    if datamodule is not None:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    else:
        trainer.fit(module, ckpt_path=ckpt)
    if ctx.last_value is None and trainer.current_epoch > first_epoch:
        raise _never_validated(ctx, trainer.current_epoch - first_epoch)
    VALIDATED.add(task.target)  # its validation loop has run: later runs skip the sanity check
    return None  # the controller takes the last reported value


def _never_validated(ctx: TrialContext, epochs: int) -> MetricNotFoundError:
    """The error of a run that trained epochs without one validation epoch: its metric was
    never reported, and every trial would end the same way (a fatal error)."""
    return MetricNotFoundError(
        f"trial {ctx.trial_id} trained {epochs} epoch(s) but no validation epoch ran, so its metric "
        f"{ctx.metric!r} was never reported (lightning_maggy reads it when a validation epoch ends). "
        "Give the module or datamodule a val_dataloader, and do not pass limit_val_batches=0, "
        "check_val_every_n_epoch larger than the epochs trained, or a val_check_interval (a number "
        "of batches, or a duration) that no epoch reached."
    )


def run_worker(
    launch: WorkerLaunch,
    worker_id: int,
    still_wanted: Callable[[], bool] | None = None,
    make_client: Callable[[str], Any] | None = None,
    exit_when_stuck: bool = False,
) -> int:
    """Serves trials until the server says done. Returns the number of trials run.

    Args:
        make_client: builds a client transport for a given identity suffix (default: zmq to
            ``launch.address``); tests pass in-process clients.
        exit_when_stuck: end the process when a dropped trial's code does not return (see
            :class:`~lightning_maggy.lightning.heartbeat.Heartbeat`); for a backend that starts
            a new worker in its place.
    """
    if make_client is None:
        from lightning_maggy.transport.zmq_transport import ZmqClient

        base = f"w{worker_id}-{os.getpid()}-{os.urandom(3).hex()}"

        def make_client(suffix: str) -> Any:
            return ZmqClient(launch.address, launch.key, identity=f"{base}-{suffix}")

    if launch.num_threads:
        try:
            import torch

            torch.set_num_threads(launch.num_threads)
        except ImportError:
            pass
    _quiet_lightning()
    from lightning_maggy.storage import RemoteTrials, is_remote

    remote = RemoteTrials(launch.exp_dir) if is_remote(launch.exp_dir) else None
    client = make_client("rpc")
    heartbeat = Heartbeat(make_client, worker_id, launch.heartbeat_interval, exit_when_stuck=exit_when_stuck)
    heartbeat.start()
    ran = 0
    try:
        client.request(
            {"type": "register", "worker_id": worker_id, "pid": os.getpid(), "host": socket.gethostname()},
            still_wanted=still_wanted,
        )
        reply = client.request({"type": "get", "worker_id": worker_id}, still_wanted=still_wanted)
        while reply["type"] == "trial":
            trial = reply["trial"]
            try:
                ctx, outcome = _run_one(launch, worker_id, client, heartbeat, remote, trial)
            except Exception as err:  # the storage under the trial's folder, outside its code
                if storage_failure(err, "") is None:
                    raise
                heartbeat.end_trial()  # (a claim that failed never reached it)
                final = {"type": "final", "trial_id": trial["trial_id"], "attempt": int(trial.get("attempt", 1))}
                reply = client.request({"worker_id": worker_id, **final, **_failed(err)}, still_wanted=still_wanted)
                continue
            ran += 1
            if outcome["status"] == "ok" and ctx.last_decision is not Decision.CONTINUE:
                outcome["status"] = "stopped" if ctx.last_decision is Decision.STOP else "paused"
            reply = client.request(
                {"type": "final", "worker_id": worker_id, "trial_id": ctx.trial_id, "attempt": ctx.attempt, **outcome},
                still_wanted=still_wanted,
            )
    finally:
        heartbeat.stop()
        client.close()
        if remote is not None:
            remote.close()
    return ran


def _run_one(launch: WorkerLaunch, worker_id: int, client: Any, heartbeat: Heartbeat, remote: Any,
             trial: dict[str, Any]) -> tuple[TrialContext, dict[str, Any]]:
    """Runs one attempt of ``trial`` in its folder (a scratch copy of the one at an ``exp_dir``
    URL, uploaded after); returns its context and the FINAL's fields."""
    if remote is not None:
        trial_dir, first_run = remote.checkout(trial["trial_id"])
    else:
        trial_dir = trial_dir_for(launch.exp_dir, trial["trial_id"])
        first_run = make_trial_dir(trial_dir)
    if first_run:
        write_hparams(trial_dir, trial)
    ctx = TrialContext(
        client=client,
        worker_id=worker_id,
        trial=trial,
        trial_dir=trial_dir,
        metric=launch.task.metric,
        direction=launch.task.direction,
        remote=remote,
    )
    heartbeat.trial_thread = threading.get_ident()
    heartbeat.ctx = ctx
    _set_current(ctx)
    outcome = None
    try:
        with _output_to(os.path.join(trial_dir, "output.log")):
            outcome = _run_attempt(launch.task, ctx, heartbeat)
    finally:
        _set_current(None)
        if outcome is None:  # unwinding (SIGTERM, the driver gone): keep this run's rows
            ctx.close()
    if outcome["status"] == "dropped":
        ctx.drop(outcome["error"] or "dropped")  # its rows are not the trial's record
    ctx.close()
    if remote is not None and not remote.checkin(ctx.trial_id, ctx.attempt):
        outcome = _dropped(f"a newer attempt than {ctx.attempt} holds {remote.remote_dir(ctx.trial_id)}")
    return ctx, outcome


def _run_attempt(task: TrialTask, ctx: TrialContext, heartbeat: Heartbeat) -> dict[str, Any]:
    """Claims the trial folder for this attempt (fencing out older attempts' checkpoints), runs
    the trial, and ends it with the heartbeat thread (after which no asynchronous TrialDropped
    can come); one raised outside ``run_trial``'s own handlers is caught here."""
    outcome: dict[str, Any] | None = None
    while True:
        try:
            if outcome is None:
                # Our Trainer's checkpoints are fenced (a module's, and lm.Trainer's in a train
                # function; function trials write none): claim the folder for those.
                if task.kind == "function" or ctx.claim():
                    with ctx.relay():  # for DDP ranks forked from this worker (ddp_fork)
                        outcome = run_trial(task, ctx)
                else:
                    outcome = _dropped(f"a newer attempt than {ctx.attempt} holds {ctx.trial_dir}")
            heartbeat.end_trial()
            return outcome
        except TrialDropped as dropped:
            if outcome is None:
                outcome = _dropped(ctx.dropped or str(dropped))
