"""The embedded default backend: long-lived worker processes on this machine.

Workers come from a forkserver that has already imported torch and Lightning (Linux, macOS),
so a worker starts in milliseconds instead of paying the import again; elsewhere they are
spawned. Never a plain fork of the driver, which holds threads and sockets. The user's classes
and functions travel cloudpickled over the process-start channel, so classes defined in a
notebook or in ``__main__`` work; nothing is ever unpickled from the network.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from typing import Any

from lightning_maggy.backends.base import Backend, pack_launch
from lightning_maggy.exceptions import BackendError
from lightning_maggy.lightning.heartbeat import STUCK_EXIT
from lightning_maggy.lightning.worker import WorkerLaunch

__all__ = ["LocalBackend", "assign_devices", "default_max_restarts", "prewarm"]

#: What the forkserver imports before it forks any worker (each name on its own; one that does not
#: import is skipped): torch and Lightning, the worker's own modules, and the TensorBoard writer
#: the trials' default logger opens, so that none of it is on the path to a worker's first trial.
PRELOAD = [
    "torch",
    "pytorch_lightning",
    "lightning_maggy.backends.local",
    "lightning_maggy.lightning.worker",
    "lightning_maggy.lightning.trainer",
    "lightning_maggy.lightning.callback",
    "lightning_maggy.transport.zmq_transport",
    "torch.utils.tensorboard",
]
_ctx: BaseContext | None = None


def _context() -> BaseContext:
    """The multiprocessing context workers start from (created once per driver process)."""
    global _ctx
    if _ctx is None:
        if "forkserver" in mp.get_all_start_methods() and os.environ.get("LIGHTNING_MAGGY_START_METHOD") != "spawn":
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD + (["lightning.pytorch"] if "lightning" in sys.modules else []))
        else:
            ctx = mp.get_context("spawn")
        _ctx = ctx
    return _ctx


def prewarm() -> None:
    """Starts the forkserver now, so that it imports torch and Lightning while the user's script
    does the same; the first trial then starts about one import after the script, not two.

    Does nothing inside a worker: a worker imports the module that defines the trial's classes,
    and a ``prewarm()`` at that module's top level must not start a forkserver of its own there
    (it would import torch and Lightning again, beside the training)."""
    from lightning_maggy.lightning.trainer import WORKER_ENV

    if os.environ.get(WORKER_ENV):
        return
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Hides ``__main__`` while a worker starts, so that multiprocessing does not re-run the
    user's script in the worker: everything the worker needs, classes defined in ``__main__``
    included, travels cloudpickled by value. Scripts therefore need no ``if __name__ ==
    "__main__":`` guard, and notebooks work."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _worker_entry(
    blob: bytes,
    worker_id: int,
    devices: str | None,
    num_threads: int | None,
    driver_pid: int,
    environ: dict[str, str] | None = None,
) -> None:
    """The first code a worker process runs.

    ``environ`` is the driver's environment when the study started: a worker forked from a
    forkserver started earlier (``lm.prewarm()``, an earlier search) would otherwise run with
    the environment of that moment, without credentials or settings set since.

    The worker never outlives the driver (see :mod:`lightning_maggy.lightning.lifeline`): the
    kernel signals it when its parent (the forkserver, which exits with the driver) dies, a
    watchdog thread checks for the driver twice a second, and SIGTERM unwinds the running trial
    and ends the process (exit code 143; the driver, if alive, re-queues the trial).
    """
    from lightning_maggy.lightning.lifeline import (
        Watchdog,
        driver_alive,
        install_sigterm_handler,
        set_parent_death_signal,
    )

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    install_sigterm_handler()
    set_parent_death_signal(signal.SIGTERM)
    watchdog = Watchdog(driver_alive(driver_pid))
    watchdog.start()
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    os.environ["LIGHTNING_MAGGY_WORKER"] = "1"  # see lightning_maggy.lightning.trainer.WORKER_ENV
    # The driver starts workers as daemons (ended with it); inside, a trial may start processes
    # of its own (DDP ranks with strategy="ddp_fork"), which multiprocessing refuses to a daemon.
    import multiprocessing

    multiprocessing.current_process().daemon = False
    import cloudpickle

    # The process-start channel only: these bytes come from our own driver, never a socket.
    launch: WorkerLaunch = cloudpickle.loads(blob)
    if num_threads:
        launch.num_threads = num_threads

    def still_wanted() -> bool:
        try:
            os.kill(driver_pid, 0)
        except OSError:
            return False
        return True

    from lightning_maggy.lightning.worker import run_worker

    run_worker(launch, worker_id, still_wanted=still_wanted, exit_when_stuck=True)
    watchdog.stop()


def assign_devices(num_workers: int, gpus: int, per_worker: float = 1) -> dict[int, str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each worker: ``per_worker`` GPUs each, round-robin, so that
    with more workers than GPUs several workers share one; a fraction 1/n: one GPU each,
    round-robin (n workers per GPU when ``search(gpus_per_trial=)`` sized the workers); None
    everywhere without GPUs (the variable is left as it is); ``per_worker=0``: "" everywhere (no
    worker sees a GPU)."""
    if per_worker == 0:
        return {wid: "" for wid in range(num_workers)}
    if gpus <= 0:
        return {wid: None for wid in range(num_workers)}
    if per_worker < 1:
        return {wid: str(wid % gpus) for wid in range(num_workers)}
    per_worker = int(per_worker)
    per_worker = min(per_worker, gpus)
    return {
        wid: ",".join(str((wid * per_worker + i) % gpus) for i in range(per_worker))
        for wid in range(num_workers)
    }


def _gpu_count() -> int:
    """GPUs to share among the workers. Only asked of torch when the driver has imported it
    already (any LightningModule search has): a plain-function search does not pay the import."""
    if "torch" not in sys.modules:
        return 0
    from lightning_maggy.gpus import visible_gpus

    return visible_gpus()


def exit_cause(code: int | None) -> str:
    """How a worker process ended, in words (a negative code is the signal that killed it)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGKILL": " (killed: out of memory, or by another process)",
            "SIGSEGV": " (a segmentation fault in native code)",
            "SIGABRT": " (aborted by native code)",
            "SIGBUS": " (a bus error in native code)",
        }.get(name, "")
        return f"was killed by {name}{hint}"
    if code == STUCK_EXIT:
        return (
            f"exited (code {code}): the code of a trial it was told to drop (trial_timeout, or a newer "
            "attempt) did not return, stuck in a call Python cannot interrupt; see the trial's output.log"
        )
    return f"exited with code {code}"


def default_max_restarts(workers: int, max_failures: int, max_retries: int) -> int:
    """The restart budget that lets a study whose every trial kills its worker (W = ``workers``,
    F = ``max_failures``, R = ``max_retries``) run until F trials are FAILED:
    ``W + F * (R + 1) + (W - 1) * R``.

    Each death costs one restart. The F trials that fail die R + 1 times each. Meanwhile the
    other W - 1 workers may each hold a trial in the middle of its own retries (a lost trial is
    re-queued first, so at most one per worker), each dead up to R times already when the F-th
    failure ends the study: (W - 1) * R more. The W on top is slack for deaths that cost a
    restart but no attempt (a worker that dies before it takes a trial, or after its trial was
    declared lost by the heartbeat). Deaths seen in the same poll as the one that ends the study
    need no budget: once the budget is spent, they are still handed to the driver first (see
    ``LocalBackend._poll_lost``).

    Under ``search()`` the driver also tells the backend which workers hold a trial
    (``Backend.holds_trial``), and with this default budget the death of such a worker costs no
    restart at all: its trial's ``max_retries`` and the study's ``max_failures`` bound those
    deaths. Otherwise a long study whose trials die now and then and succeed when resumed (an
    occasional OOM kill) would end once the deaths added up to the budget, with its trials
    healthy. The budget then bounds the deaths outside a trial: a worker that cannot start, one
    that dies between trials, one killed because it froze. An explicit ``max_restarts`` counts
    every death, as documented.
    """
    return workers + max_failures * (max_retries + 1) + (workers - 1) * max_retries


class LocalBackend(Backend):
    """``workers`` processes on this machine.

    Args:
        max_restarts: how many times, in all, workers that died are restarted. None (the
            default): enough for the study's failure budget, and the deaths of workers holding a
            trial not counted (see :func:`default_max_restarts`):
            a trial that kills its worker every time (a segfault, an OOM kill) is retried
            ``max_retries`` times and then FAILED, and the study goes on until ``max_failures``
            trials failed, even when the other workers' trials are dying at the same time, while
            a worker that cannot start at all still ends the study after a bounded number of
            tries. Once no worker is left, every death already seen is handed to the driver
            (its trial recorded as lost, or FAILED) before the study ends.
        gpus_per_worker: GPUs each worker sees (via CUDA_VISIBLE_DEVICES); 0 for none; a
            fraction 1/n gives each worker one GPU, round-robin, for n workers per GPU (what
            ``search(gpus_per_trial=0.25)`` asks for). The default gives each worker one GPU,
            round-robin, when GPUs are present (several workers then share a GPU when there
            are more workers than GPUs).
    """

    name = "local"
    #: Workers on this machine reach the server over a Unix socket.
    driver_host = "ipc"

    def __init__(self, max_restarts: int | None = None, gpus_per_worker: float | None = None) -> None:
        super().__init__()
        self.max_restarts = max_restarts
        #: the default budget counts only deaths outside a trial (see default_max_restarts)
        self._default_budget = max_restarts is None
        self.trial_deaths = 0
        self.gpus_per_worker = gpus_per_worker
        self._procs: dict[int, Any] = {}
        self._restarts = 0
        self._blob = b""
        self._devices: dict[int, str | None] = {}
        self._threads: int | None = None
        #: worker id -> why the driver had it killed (frozen; see :meth:`replace`)
        self._killed: dict[int, str] = {}
        #: why the study cannot go on (no worker left), raised by the next poll: the poll that
        #: found the last worker gone returns its death first, so that the driver records it
        self._gone: str | None = None

    def plan_restarts(self, *, workers: int, max_failures: int, max_retries: int) -> None:
        if self.max_restarts is None:
            self.max_restarts = default_max_restarts(workers, max_failures, max_retries)

    def _start(self, launch: WorkerLaunch, num_workers: int) -> None:
        if self.max_restarts is None:
            self.max_restarts = 3 * num_workers
        self._gone = None
        self._blob = pack_launch(launch)
        self._environ = dict(os.environ)
        gpus = _gpu_count() if self.gpus_per_worker != 0 else 0
        per_worker = 1 if self.gpus_per_worker is None else self.gpus_per_worker
        self._devices = assign_devices(num_workers, gpus, per_worker)
        cpus = os.cpu_count() or 1
        self._threads = launch.num_threads or max(1, cpus // max(1, num_workers))
        for wid in range(num_workers):
            self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        proc = _context().Process(
            target=_worker_entry,
            args=(self._blob, wid, self._devices.get(wid), self._threads, os.getpid(), self._environ),
            name=f"maggy-worker-{wid}",
            daemon=True,
        )
        with _without_main_module():
            proc.start()
        self._procs[wid] = proc

    def _poll_lost(self) -> list[tuple[int, str]]:
        if self._gone is not None:
            raise BackendError(self._gone)
        lost = []
        last: tuple[int, int | None] | None = None  # the last worker found dead and not restarted
        for wid, proc in list(self._procs.items()):
            if proc.is_alive():
                continue
            code = proc.exitcode
            if code == 0:  # told done, or left on its own after the driver went away
                continue
            killed = self._killed.pop(wid, None)
            cause = f"was frozen ({killed}) and killed" if killed else exit_cause(code)
            lost.append((wid, f"worker {wid} (pid {proc.pid}) {cause}"))
            if self._default_budget and self.holds_trial(wid):
                self.trial_deaths += 1  # bounded by max_retries and max_failures, not by the budget
                self._spawn(wid)
                continue
            if self._restarts >= (self.max_restarts or 0):
                del self._procs[wid]
                last = (wid, code)
                continue
            self._restarts += 1
            self._spawn(wid)
        if last is not None and not any(p.is_alive() for p in self._procs.values()):
            self._gone = (
                f"all local workers are gone; the last, worker {last[0]}, {exit_cause(last[1])} after "
                f"{self._restarts} restarts (max_restarts={self.max_restarts}). Its output is above or in "
                "its trial's output.log."
            )
        return lost  # with self._gone set, the next poll raises: these deaths are recorded first

    def replace(self, worker_id: int, reason: str) -> bool:
        """Kills the frozen worker (SIGKILL, the one signal a stopped process acts on); the next
        poll finds it dead and starts another, from the restart budget (whose slack covers it)."""
        proc = self._procs.get(worker_id)
        if proc is None or not proc.is_alive():
            return False
        self._killed[worker_id] = reason
        proc.kill()
        return True

    def _stop(self, timeout: float) -> None:
        """Workers told "done" leave within milliseconds; those still in a trial (an abort,
        Ctrl-C, a driver error) get SIGTERM, whose handler unwinds the trial and exits at once;
        whatever still runs at ``timeout`` is killed."""
        deadline = time.monotonic() + timeout
        grace = time.monotonic() + min(0.5, timeout)
        for proc in self._procs.values():
            proc.join(max(0.0, grace - time.monotonic()))
        for proc in self._procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self._procs.clear()
