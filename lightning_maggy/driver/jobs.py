"""One background thread for an optimizer's jobs (model fitting), so that the controller's serve
thread keeps answering reports while a model is fitted.

The optimizer stays a pure decision object: it only *describes* the work as a
:class:`~lightning_maggy.optimizers.base.Job` (a closure over a snapshot of the records); this
runner executes it and the controller hands the result back on its own thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from lightning_maggy.optimizers.base import Job

__all__ = ["JobRunner"]


class JobRunner:
    """Runs jobs one at a time, in submission order, on one thread (started lazily).

    :meth:`submit` and :meth:`poll` are called from the serve thread only; the job's result, or
    the exception it raised, comes back through :meth:`poll`.

    The thread is not a daemon: a job still running when the study ends (a GP fit in torch's
    C++ code) finishes before the interpreter exits. A daemon thread would be stopped in the
    middle of native code at exit, which aborts the process ("terminate called without an
    active exception", SIGABRT) after the study's result was returned. :meth:`close` does not
    wait, so the study's end is not delayed; only the process's exit waits for that one job.
    """

    def __init__(self, name: str = "lightning-maggy-jobs") -> None:
        self._name = name
        self._todo: queue.Queue[Job | None] = queue.Queue()
        self._done: queue.Queue[tuple[Job, Any, BaseException | None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._in_flight = 0

    @property
    def busy(self) -> bool:
        """Whether a submitted job has not been polled back yet."""
        return self._in_flight > 0

    def submit(self, job: Job) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=False)
            self._thread.start()
        self._in_flight += 1
        self._todo.put(job)

    def poll(self) -> list[tuple[Job, Any, BaseException | None]]:
        """The jobs finished since the last call: ``(job, result, error)``, without waiting."""
        if not self._in_flight:  # the serve loop calls this after every message: no lock, no raise
            return []
        finished = []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._in_flight -= len(finished)
        return finished

    def close(self, timeout: float = 0.0) -> None:
        """Stops the thread after its current job (whose result is dropped); waits at most
        ``timeout`` seconds for it."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            job = self._todo.get()
            if job is None:
                return
            try:
                result, error = job.run(), None
            except BaseException as err:  # noqa: BLE001 - handed to the serve thread
                result, error = None, err
            self._done.put((job, result, error))
