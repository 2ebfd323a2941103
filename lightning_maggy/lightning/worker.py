"""The worker loop: register, ask for a trial, run it, report the end, repeat.

The same loop runs in a local worker process and in a Spark task. What it runs is described by a
:class:`TrialTask`, shipped to the worker once when it starts (never over the network socket).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lightning_maggy.exceptions import EarlyStopException
from lightning_maggy.lightning.context import Reporter, TrialContext, _set_current
from lightning_maggy.trial import Decision

__all__ = ["TrialTask", "WorkerLaunch", "run_trial", "run_worker"]

MAX_ERROR_CHARS = 64_000


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


class _Heartbeat(threading.Thread):
    """Tells the server this worker is alive, on a socket of its own, while a trial runs."""

    def __init__(self, make_client: Callable[[str], Any], worker_id: int, interval: float) -> None:
        super().__init__(name=f"maggy-heartbeat-{worker_id}", daemon=True)
        self._make_client = make_client
        self._worker_id = worker_id
        self._interval = interval
        self._stop_event = threading.Event()
        self.trial_id: str | None = None

    def run(self) -> None:
        client = self._make_client("hb")
        try:
            while not self._stop_event.wait(self._interval):
                client.send({"type": "heartbeat", "worker_id": self._worker_id, "trial_id": self.trial_id})
        finally:
            client.close()

    def stop(self) -> None:
        self._stop_event.set()


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


def run_trial(task: TrialTask, ctx: TrialContext) -> dict[str, Any]:
    """Runs one trial in this process; returns the FINAL message's fields."""
    try:
        metric = _run(task, ctx)
        status = "ok"
    except EarlyStopException as stop:
        metric, status = stop.metric, "stopped"
    except Exception as err:  # user code failed: the trial fails, the search goes on
        text = traceback.format_exc()
        if len(text) > MAX_ERROR_CHARS:
            text = "...\n" + text[-MAX_ERROR_CHARS:]
        print(text, file=sys.stderr, flush=True)
        return {"status": "failed", "metric": None, "error": text, "error_type": type(err).__name__}
    if metric is not None:
        try:
            metric = float(metric)
        except (TypeError, ValueError):
            metric = None
    return {"status": status, "metric": metric, "error": None, "error_type": None}


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
    if task.kind == "function":
        return task.target(dict(ctx.config), Reporter(ctx))
    if task.kind == "train_fn":
        result = task.target(dict(ctx.config))
        return result if isinstance(result, (int, float)) else None
    from lightning_maggy.lightning.callback import MaggyCallback
    from lightning_maggy.lightning.trainer import build_datamodule, build_module, build_trainer

    module = build_module(task.target, ctx.config)
    datamodule = build_datamodule(task.datamodule, ctx.config)
    if task.ablation is not None and ctx.component is not None:
        from lightning_maggy.ablation.surgery import leave_out

        module = leave_out(module, datamodule, task.ablation[ctx.component])
    user_cbs = list((task.trainer_kwargs or {}).get("callbacks") or [])
    ours = [] if any(isinstance(cb, MaggyCallback) for cb in user_cbs) else [MaggyCallback(task.metric)]
    trainer = build_trainer(
        module, trial_dir=ctx.trial_dir, budget=ctx.budget, callbacks=ours, trainer_kwargs=task.trainer_kwargs
    )
    ckpt = ctx.ckpt_path if ctx.resume or ctx.epochs_done else None
    if datamodule is not None:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    else:
        trainer.fit(module, ckpt_path=ckpt)
    return None  # the controller takes the last reported value


def run_worker(
    launch: WorkerLaunch,
    worker_id: int,
    still_wanted: Callable[[], bool] | None = None,
    make_client: Callable[[str], Any] | None = None,
) -> int:
    """Serves trials until the server says done. Returns the number of trials run.

    Args:
        make_client: builds a client transport for a given identity suffix (default: zmq to
            ``launch.address``); tests pass in-process clients.
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
    client = make_client("rpc")
    heartbeat = _Heartbeat(make_client, worker_id, launch.heartbeat_interval)
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
            trial_dir = trial_dir_for(launch.exp_dir, trial["trial_id"])
            first_run = _make_trial_dir(trial_dir)
            if first_run:
                _write_hparams(trial_dir, trial)
            ctx = TrialContext(
                client=client,
                worker_id=worker_id,
                trial=trial,
                trial_dir=trial_dir,
                metric=launch.task.metric,
                direction=launch.task.direction,
            )
            heartbeat.trial_id = ctx.trial_id
            _set_current(ctx)
            try:
                with _output_to(os.path.join(trial_dir, "output.log")):
                    outcome = run_trial(launch.task, ctx)
            finally:
                _set_current(None)
                ctx.close()
                heartbeat.trial_id = None
            ran += 1
            if outcome["status"] == "ok" and ctx.last_decision is not Decision.CONTINUE:
                outcome["status"] = "stopped" if ctx.last_decision is Decision.STOP else "paused"
            reply = client.request(
                {"type": "final", "worker_id": worker_id, "trial_id": ctx.trial_id, **outcome},
                still_wanted=still_wanted,
            )
    finally:
        heartbeat.stop()
        client.close()
    return ran


def _make_trial_dir(trial_dir: str) -> bool:
    """Creates the trial's folder; False if it existed (a promoted or re-queued trial)."""
    try:
        os.mkdir(trial_dir)
    except FileExistsError:
        return False
    except FileNotFoundError:  # the first trial of this experiment on this machine
        os.makedirs(trial_dir, exist_ok=True)
    return True


def _write_hparams(trial_dir: str, trial: Mapping[str, Any]) -> None:
    record = {
        "trial_id": trial["trial_id"],
        "config": trial["config"],
        "component": trial.get("component"),
        "seed": trial.get("seed"),
    }
    with open(os.path.join(trial_dir, "hparams.json"), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
