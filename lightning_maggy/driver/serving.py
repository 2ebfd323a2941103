"""The controller's serve loop over a transport, with the optimizer's jobs (model fits) on a
background thread (see :mod:`lightning_maggy.driver.controller`)."""

from __future__ import annotations

import logging
from typing import Any

from lightning_maggy.driver.jobs import JobRunner
from lightning_maggy.driver.workers import Outgoing
from lightning_maggy.exceptions import BackendError

__all__ = ["ServingMixin"]

log = logging.getLogger(__name__)

#: At most this many queued messages are answered in a row before the serve loop looks at the
#: background jobs and the clock (a burst of 64 reports takes a few milliseconds).
BURST = 64


class ServingMixin:
    """Part of :class:`~lightning_maggy.driver.controller.Controller`: the serve loop and the
    background jobs (it uses the controller's state; see there)."""

    _jobs: JobRunner | None

    def start_background_jobs(self) -> None:
        """From now on the optimizer's jobs run on one background thread; call
        :meth:`poll_jobs` regularly to hand their results back (:meth:`serve` does both)."""
        if self._jobs is None:
            self._jobs = JobRunner()
            self.optimizer.enable_background_jobs(True)

    def stop_background_jobs(self) -> None:
        """The optimizer's jobs run inline again; a job in flight is dropped."""
        if self._jobs is not None:
            self.optimizer.enable_background_jobs(False)
            self._jobs.close()
            self._jobs = None

    @property
    def jobs_busy(self) -> bool:
        """Whether an optimizer job is running in the background."""
        return self._jobs is not None and self._jobs.busy

    def poll_jobs(self) -> Outgoing:
        """Hands finished background jobs' results to the optimizer and serves the workers
        parked while they ran."""
        if self._jobs is None:
            return []
        finished = self._jobs.poll()
        for job, result, error in finished:
            self.optimizer.complete_job(job, result, error)
            self._version += 1
        return self._wake_parked() if finished else []

    def _submit_job(self) -> None:
        if self._jobs is not None:
            job = self.optimizer.take_job()
            if job is not None:
                self._jobs.submit(job)

    def serve(self, transport: Any, backend: Any = None, tick_interval: float = 0.25) -> None:
        """Runs the experiment over ``transport`` until it finishes, with the optimizer's jobs
        on a background thread (see the module docstring).

        Args:
            transport: a :class:`~lightning_maggy.transport.base.ServerTransport`.
            backend: optional; its ``poll_lost()`` returns ``(worker_id, reason)`` pairs of
                workers that died, and may raise BackendError when no worker can run.
        """
        self.start_background_jobs()
        try:
            self._serve_loop(transport, backend, tick_interval)
        finally:
            self.stop_background_jobs()

    def _serve_loop(self, transport: Any, backend: Any, tick_interval: float) -> None:
        next_tick = 0.0
        while not self.finished:
            # While a job runs, wake up often enough to hand its result back promptly.
            item = transport.recv(timeout=0.005 if self.jobs_busy else 0.05)
            # Under load messages queue up: answer up to BURST of them, each at once, before
            # the jobs and the clock are looked at again.
            handled = 0
            while item is not None:
                for peer, message in self.handle(*item):
                    transport.send(peer, message)
                handled += 1
                if handled == BURST or self.finished:
                    break
                item = transport.recv(timeout=0)
            out: Outgoing = self.poll_jobs()
            if self.clock() >= next_tick:
                next_tick = self.clock() + tick_interval
                if backend is not None:
                    try:
                        out += self.workers_lost(backend.poll_lost())
                    except BackendError as err:
                        out += self.abort(str(err))
                out += self.tick()
                self._replace_frozen(backend)
            for peer, message in out:
                transport.send(peer, message)
        self.journal.append("transport", dropped_messages=transport.dropped, refused_messages=self.refused)

    def _replace_frozen(self, backend: Any) -> None:
        """Asks the backend to replace each worker :meth:`take_frozen` found (see
        :mod:`lightning_maggy.driver.ticking`), and journals it."""
        for worker_id, silent in self.take_frozen():
            replaced = backend is not None and backend.replace(worker_id, f"silent for {silent:.0f} s")
            self.journal.append("worker_frozen", worker_id=worker_id, seconds=silent, replaced=replaced)
            if not replaced:
                log.warning(
                    "worker %s has been silent for %.0f s, %.0f s after its trial was re-queued; the %s "
                    "backend cannot replace it, so its slot stays taken until it speaks again",
                    worker_id, silent, silent - self.heartbeat_timeout, getattr(backend, "name", "this"),
                )

    def elapsed(self) -> float:
        return self.clock() - self.started_at
