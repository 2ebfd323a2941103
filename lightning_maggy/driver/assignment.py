"""How the controller hands out work: the next trial for a worker (re-queued first, then the
optimizer's suggestion, duplicates refused), attempts, parked workers, and lost trials (see
:mod:`lightning_maggy.driver.controller`)."""

from __future__ import annotations

import time
import traceback
from typing import Any

from lightning_maggy.driver.replay import CAUSE_TIMEOUT
from lightning_maggy.driver.workers import Outgoing, _Worker
from lightning_maggy.earlystop.base import NoEarlyStop
from lightning_maggy.exceptions import SearchspaceError
from lightning_maggy.optimizers.base import IDLE
from lightning_maggy.trial import Trial, TrialState

__all__ = ["MAX_DUPLICATES_IN_A_ROW", "AssignmentMixin"]

#: Duplicate suggestions in a row after which the controller stops asking for now.
MAX_DUPLICATES_IN_A_ROW = 50


class AssignmentMixin:
    """Part of :class:`~lightning_maggy.driver.controller.Controller`: handing out work and
    losing trials (it uses the controller's state; see there)."""

    def _lose(self, tid: str, reason: str) -> Outgoing:
        """Re-queues a RUNNING trial whose worker is gone (FAILED past ``max_retries``)."""
        trial = self.trials[tid]
        if trial.state is not TrialState.RUNNING:
            return []
        self._decisions.pop(tid, None)
        if tid in self._nonfinite:  # already stopped by the NaN/inf policy: not resumed
            self._update(trial.evolve(state=TrialState.STOPPED, finished=time.time(), error=self._nonfinite[tid],
                                      final_metric=None))
            return []
        if self.timed_out:
            stopped = trial.evolve(state=TrialState.STOPPED, finished=time.time(), error=reason)
            self._update(stopped, cause=CAUSE_TIMEOUT)
            return []
        if trial.retries >= self.max_retries:
            error = (
                f"lost {trial.retries + 1} times in {trial.attempt} attempts (max_retries={self.max_retries}); "
                f"last: {reason}"
            )
            self._update(trial.evolve(state=TrialState.FAILED, finished=time.time(), error=error, final_metric=None))
            return self._count_failure(f"{tid}, was {error}")
        self._update(trial.evolve(state=TrialState.LOST, retries=trial.retries + 1, worker=None, error=reason))
        self._requeue.append(tid)
        return []

    # -- handing out work ----------------------------------------------------------------------
    def _serve(self, worker: _Worker) -> Outgoing:
        if self.finished:
            return [(worker.peer, {"type": "done"})]
        nxt = self._next_trial(worker)
        if isinstance(nxt, Trial):
            worker.parked = False
            self._stall_note = None
            return [(worker.peer, self._start(worker, nxt))]
        worker.parked = True
        if self.finished:  # _next_trial aborted (an optimizer bug): tell every parked worker
            return self._finish(self.stop_reason)
        return self._finish_if_done()

    def _wake_parked(self, exclude: int | None = None) -> Outgoing:
        out: Outgoing = []
        if self._parked_ids:  # in registration order, as before; nothing to look at if none waits
            for worker in [self.workers[wid] for wid in sorted(self._parked_ids, key=self._registration)]:
                if worker.parked and worker.worker_id != exclude and not self.finished:
                    out += self._serve(worker)
        return out + self._finish_if_done()

    def _next_trial(self, worker: _Worker) -> Trial | object | None:
        if self._held_abort is not None:  # max_failures reached while deaths are recorded
            return None
        if self._requeue:
            return self.trials[self._requeue.popleft()]
        if self.timed_out or self._exhausted:
            return None
        for _ in range(MAX_DUPLICATES_IN_A_ROW):
            try:
                suggestion = self.optimizer.get_suggestion(worker.last_finished)
            except Exception:  # a custom optimizer's bug ends the search with its traceback
                self.abort(f"the optimizer raised in get_suggestion():\n{traceback.format_exc()}")
                return None
            self._submit_job()  # the work it waits for, if it answered IDLE for a model fit
            if suggestion is IDLE:
                self._stalled("the optimizer answered IDLE (no trial to run yet)")
                return IDLE
            if suggestion is None:
                self._exhausted = True
                return None
            if not isinstance(suggestion, Trial):
                self.abort(
                    f"{type(self.optimizer).__name__}.get_suggestion() returned {suggestion!r}; "
                    "expected a Trial, IDLE or None."
                )
                return None
            problem = self._unrunnable(suggestion)
            if problem is not None:
                self.abort(
                    f"{type(self.optimizer).__name__}.get_suggestion() returned a trial that cannot run: "
                    f"{problem.rstrip('.')}. An optimizer must propose configurations of the search space, with a "
                    f"budget from 1 to max_epochs={self.max_epochs}."
                )
                return None
            existing = self.trials.get(suggestion.trial_id)
            if existing is None:
                return suggestion
            if existing.state is TrialState.PAUSED and suggestion.budget > existing.budget:
                return existing.evolve(budget=suggestion.budget)
            self.duplicates += 1
        self._stalled(
            f"the optimizer proposed only trials already run ({MAX_DUPLICATES_IN_A_ROW} duplicates in a row, "
            f"{self.duplicates} in all)"
        )
        return IDLE

    def _unrunnable(self, trial: Trial) -> str | None:
        """Why an optimizer's suggestion cannot run (a custom optimizer's bug), or None: its
        configuration must be one of the search space's and its budget an int in 1..max_epochs."""
        budget = trial.budget
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= self.max_epochs:
            return f"trial {trial.trial_id} has budget={budget!r}"
        if self.searchspace is not None:
            try:
                self.searchspace.validate(trial.config)
            except SearchspaceError as err:
                return f"trial {trial.trial_id}'s configuration {dict(trial.config)!r}: {err}"
        return None

    def _stalled(self, note: str) -> None:
        self._stall_note = note
        self._stall_at = self._version

    def _start(self, worker: _Worker, trial: Trial) -> dict[str, Any]:
        now = time.time()
        resume = trial.trial_id in self.trials and bool(trial.history)
        trial = trial.evolve(
            state=TrialState.RUNNING,
            attempt=trial.attempt + 1,
            worker=worker.worker_id,
            created=trial.created or now,
            started=trial.started or now,
            error=None,
            finished=None,
        )
        self._update(trial)
        worker.trial_id = trial.trial_id
        worker.attempt = trial.attempt
        worker.trial_started = self.clock()
        self._last_epoch.pop(trial.trial_id, None)  # a new run: its epochs count anew
        worker.stale = None
        return {
            "type": "trial",
            "trial": {
                "trial_id": trial.trial_id,
                "config": dict(trial.config),
                "budget": trial.budget,
                "epochs_done": len(trial.history),
                "resume": resume,
                "component": trial.component,
                "seed": trial.seed,
                "retries": trial.retries,
                "attempt": trial.attempt,
                "async_until": self._async_until(trial),
                "rungs": type(self.optimizer).__name__ if self.optimizer.uses_rungs else None,
            },
        }

    def _async_until(self, trial: Trial) -> int:
        """Epochs whose reports the worker need not wait for: those only CONTINUE can answer.
        None with a timeout or an early-stop rule, which may stop a trial at any report."""
        if self.timeout is not None or not isinstance(self.earlystop, NoEarlyStop):
            return 0
        return max(0, int(self.optimizer.continue_until(trial)))
