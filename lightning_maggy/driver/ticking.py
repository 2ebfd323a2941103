"""The passage of time, for :class:`~lightning_maggy.driver.controller.Controller`: the search's
``timeout``, ``trial_timeout``, and silent workers.

A worker silent for ``heartbeat_timeout`` while it holds a trial is declared lost and its trial
re-queued (the worker may only be paused: a long call that holds the GIL, a network pause; if it
speaks again, it is told to drop the stale attempt). One that stays silent for another
``heartbeat_timeout`` after that is *frozen*: it would hold its slot, and on the local backend
its CPU or GPU memory, for ever. :meth:`TickMixin.take_frozen` hands such workers to the serving
loop, which asks the backend to replace them (the local backend kills the process and starts a
new one; a backend that cannot leaves it, and the journal says so).
"""

from __future__ import annotations

import time
from typing import Any

from lightning_maggy.driver.replay import CAUSE_TIMEOUT
from lightning_maggy.driver.workers import Outgoing, _Worker
from lightning_maggy.trial import TrialState

__all__ = ["TickMixin"]


class TickMixin:
    """Part of :class:`~lightning_maggy.driver.controller.Controller` (it uses the controller's
    state; see there)."""

    def tick(self: Any) -> Outgoing:
        """Applies the passage of time: the search timeout, ``trial_timeout``, lost (silent)
        and frozen workers."""
        out: Outgoing = []
        now = self.clock()
        if self.timeout is not None and not self.timed_out and now - self.started_at >= self.timeout:
            self.timed_out = True
            self.journal.append("timeout", seconds=self.timeout)
            while self._requeue:  # lost trials are not resumed after the timeout
                trial = self.trials[self._requeue.popleft()]
                self._update(trial.evolve(state=TrialState.STOPPED, finished=time.time()), cause=CAUSE_TIMEOUT)
            out += self._wake_parked()
        for worker in self.workers.values():
            silence = now - worker.last_seen
            if worker.trial_id is not None and silence > self.heartbeat_timeout:
                out += self._lose(worker.trial_id, f"worker {worker.worker_id} silent for {silence:.0f} s")
                self._take_away(worker)
                worker.silent = True
                out += self._wake_parked()
            elif worker.silent and silence > 2 * self.heartbeat_timeout:
                worker.silent = False  # handed over once
                self._frozen.append((worker.worker_id, silence))
            elif (
                self.trial_timeout is not None
                and worker.trial_id is not None
                and worker.trial_started is not None
                and now - worker.trial_started > self.trial_timeout
            ):
                out += self._over_time(worker, now - worker.trial_started)
        return out + self._finish_if_done()

    def take_frozen(self: Any) -> list[tuple[int, float]]:
        """``(worker_id, seconds silent)`` for each worker found frozen since the last call:
        silent for ``heartbeat_timeout`` after its trial was declared lost (see the module
        docstring). Any message from it before then, even a refused one, clears it."""
        frozen, self._frozen = self._frozen, []
        return frozen

    def _over_time(self: Any, worker: _Worker, ran: float) -> Outgoing:
        """Records a trial that ran over ``trial_timeout`` as STOPPED and tells its worker to
        drop it (on its heartbeat socket now, and in answer to its next report)."""
        tid, attempt = worker.trial_id, worker.attempt
        assert tid is not None and attempt is not None
        trial = self.trials[tid]
        self._decisions.pop(tid, None)
        note = f"ran over trial_timeout={self.trial_timeout:g} s (attempt {attempt}, {ran:.1f} s); stopped"
        self.journal.append("trial_timeout", trial_id=tid, attempt=attempt, seconds=ran)
        self._update(self._stopped(trial, note))
        self._take_away(worker)
        out: Outgoing = []
        if worker.hb_peer is not None:
            out.append((worker.hb_peer, {"type": "drop", "trial_id": tid, "attempt": attempt, "reason": note}))
        return out + self._wake_parked()
