"""The controller: the only place where an optimizer, an early-stop rule, the trial records and
the workers' messages meet.

It is a message handler with no I/O of its own besides the journal: :meth:`Controller.handle`
takes one validated message and returns the messages to send (to that worker, or to workers
that were parked waiting for work); :meth:`Controller.tick` handles time (heartbeat and search
timeouts). :meth:`Controller.serve` runs both over a transport.

Model fitting stays off the report path: while serving, the optimizer's jobs
(:class:`~lightning_maggy.optimizers.base.Job`, e.g. a GP fit) run on one background thread
(:class:`~lightning_maggy.driver.jobs.JobRunner`); the optimizer answers IDLE meanwhile (the
asking worker is parked), reports keep being answered, and when the job is done its result is
handed back on the serve thread (:meth:`Controller.poll_jobs`) and parked workers are served.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from lightning_maggy.driver.jobs import JobRunner
from lightning_maggy.driver.journal import CAUSE_ABORT, CAUSE_END, CAUSE_RESUME, Journal, history_with
from lightning_maggy.earlystop.base import AbstractEarlyStop, NoEarlyStop
from lightning_maggy.exceptions import BackendError
from lightning_maggy.optimizers.base import IDLE, AbstractOptimizer
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState

__all__ = ["Controller", "StopReason"]

log = logging.getLogger(__name__)

Outgoing = list[tuple[bytes, dict[str, Any]]]

#: Exceptions raised in a worker that mean the experiment itself is misconfigured: every trial
#: would fail the same way, so the first one ends the search with its message.
FATAL_ERROR_TYPES = frozenset({"MetricNotFoundError", "ConfigurationError", "SearchspaceError"})


class StopReason:
    FINISHED = "finished"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"


@dataclasses.dataclass
class _Worker:
    worker_id: int
    peer: bytes
    last_seen: float
    trial_id: str | None = None
    last_finished: Trial | None = None
    parked: bool = False


class Controller:
    """Drives one experiment.

    Args:
        optimizer: decides what to run (wired here to a read-only view of the trials).
        earlystop: decides which running trials to stop.
        searchspace / direction / max_epochs / num_trials / seed: the experiment's settings.
        timeout: wall-clock budget in seconds; after it no new trial starts and running trials
            are stopped at their next report.
        max_failures: the experiment is aborted when this many trials have failed.
        max_retries: a trial whose worker is lost is re-queued at most this many times.
        heartbeat_timeout: a worker silent for this long while it holds a trial is lost.
        journal: where every state change is recorded.
        on_trial_end: called with each trial that reaches a finished or paused state.
        clock: monotonic clock (tests pass a fake one).
        trials: the records of a study being resumed (from its journal,
            :meth:`~lightning_maggy.driver.journal.StudyLog.resumable_trials`); None for a new
            study. Finished trials stay as they are and are never run again; PAUSED ones keep
            their rung (the optimizer may promote them); RUNNING, LOST and PENDING ones are
            re-queued first, to resume from their last checkpoint. The optimizer derives its
            state from these records, so it continues its sequence.
        elapsed: seconds the resumed study has already run (counted against ``timeout``).
        optimizer_state: the optimizer's ``state_dict()`` from when the study started (loaded
            after its setup, before it sees the resumed records).
    """

    def __init__(
        self,
        *,
        optimizer: AbstractOptimizer,
        searchspace: Searchspace,
        direction: str,
        max_epochs: int,
        num_trials: int | None,
        journal: Journal,
        earlystop: AbstractEarlyStop | None = None,
        timeout: float | None = None,
        max_failures: int = 3,
        max_retries: int = 3,
        heartbeat_timeout: float = 120.0,
        seed: int | None = None,
        on_trial_end: Callable[[Trial], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        trials: Mapping[str, Trial] | None = None,
        elapsed: float = 0.0,
        optimizer_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.trials: dict[str, Trial] = dict(trials or {})
        self.view = MappingProxyType(self.trials)
        self.optimizer = optimizer
        self.earlystop = earlystop or NoEarlyStop()
        self.direction = direction
        self.max_epochs = max_epochs
        self.num_trials = num_trials
        self.timeout = timeout
        self.max_failures = max_failures
        self.max_retries = max_retries
        self.heartbeat_timeout = heartbeat_timeout
        self.journal = journal
        self.on_trial_end = on_trial_end
        self.clock = clock
        self.started_at = clock() - float(elapsed)
        self.workers: dict[int, _Worker] = {}
        self.stop_reason: str | None = None
        self.abort_message: str | None = None
        self.failures = 0
        self.duplicates = 0
        self.timed_out = False
        self._requeue: collections.deque[str] = collections.deque()
        self._decisions: dict[str, Decision] = {}
        self._exhausted = False
        self._finalized = False
        # trials in state RUNNING, kept by _update (O(1) end-of-study checks)
        self._n_running = sum(t.state is TrialState.RUNNING for t in self.trials.values())
        self._jobs: JobRunner | None = None  # set while optimizer jobs run in the background
        optimizer.setup(
            searchspace,
            num_trials=num_trials,
            direction=direction,
            max_epochs=max_epochs,
            trials=self.view,
            seed=seed,
        )
        if optimizer_state:
            optimizer.load_state_dict(optimizer_state)
        self._resume_trials()

    def _resume_trials(self) -> None:
        """Takes over the records of a resumed study (see ``trials`` in the class docstring)."""
        for trial in list(self.trials.values()):
            if trial.state is TrialState.FAILED:
                self.failures += 1
            if trial.state in (TrialState.RUNNING, TrialState.LOST, TrialState.PENDING):
                # The driver died (or was interrupted), not the trial: no retry is counted.
                lost = trial.evolve(state=TrialState.LOST, worker=None)
                self._update(lost, cause=CAUSE_RESUME)
                self._requeue.append(trial.trial_id)
            elif (trial.state.finished or trial.state is TrialState.PAUSED) and self.on_trial_end is not None:
                self.on_trial_end(trial)

    # -- public -------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def handle(self, peer: bytes, msg: dict[str, Any]) -> Outgoing:
        """Applies one validated message; returns the replies to send."""
        wid = msg["worker_id"]
        now = self.clock()
        worker = self.workers.get(wid)
        if worker is None:
            worker = self.workers[wid] = _Worker(wid, peer, now)
        worker.last_seen = now
        kind = msg["type"]
        if kind == "heartbeat":  # sent from the worker's own heartbeat socket: replies never go there
            return []
        worker.peer = peer
        if kind == "register":
            self.journal.append("worker", worker_id=wid, pid=msg["pid"], host=msg["host"])
            out: Outgoing = []
            if worker.trial_id is not None:  # a restarted worker: its old trial was lost
                out += self._lose(worker.trial_id, f"worker {wid} restarted")
                worker.trial_id = None
                out += self._wake_parked(exclude=wid)
            return [(peer, {"type": "welcome", "worker_id": wid}), *out]
        if kind == "report":
            reply = self._on_report(worker, msg)
            return [(peer, reply)] if msg.get("sync", True) else []
        if kind == "final":
            out = self._on_final(worker, msg)  # an abort's "done" to the parked workers
            if worker.trial_id is not None:  # a stale final from a worker that holds another trial
                return out
            return out + self._serve(worker) + self._wake_parked(exclude=wid)
        if kind == "get":
            return self._serve(worker)
        log.warning("ignoring message of type %r from worker %s", kind, wid)
        return []

    def tick(self) -> Outgoing:
        """Applies the passage of time: the search timeout and lost (silent) workers."""
        out: Outgoing = []
        now = self.clock()
        if self.timeout is not None and not self.timed_out and now - self.started_at >= self.timeout:
            self.timed_out = True
            self.journal.append("timeout", seconds=self.timeout)
            while self._requeue:  # lost trials are not resumed after the timeout
                trial = self.trials[self._requeue.popleft()]
                self._update(trial.evolve(state=TrialState.STOPPED, finished=time.time()))
            out += self._wake_parked()
        for worker in self.workers.values():
            if worker.trial_id is not None and now - worker.last_seen > self.heartbeat_timeout:
                out += self._lose(worker.trial_id, f"worker {worker.worker_id} silent for {now - worker.last_seen:.0f} s")
                worker.trial_id = None
                out += self._wake_parked()
        return out + self._finish_if_done()

    def worker_lost(self, worker_id: int, reason: str) -> Outgoing:
        """Called by a backend that saw a worker die; its trial is re-queued."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.trial_id is None:
            return []
        out = self._lose(worker.trial_id, reason)
        worker.trial_id = None
        worker.parked = False
        return out + self._wake_parked() + self._finish_if_done()

    def abort(self, message: str, reason: str = StopReason.ABORTED) -> Outgoing:
        """Ends the experiment now: running trials are recorded as STOPPED, workers told done."""
        if self.finished:
            return []
        self.abort_message = message
        for trial in list(self.trials.values()):
            if trial.state in (TrialState.RUNNING, TrialState.LOST, TrialState.PENDING):
                stopped = trial.evolve(state=TrialState.STOPPED, finished=time.time(), error=message)
                self._update(stopped, cause=CAUSE_ABORT)
        self._requeue.clear()
        for worker in self.workers.values():
            worker.trial_id = None
        return self._finish(reason)

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
            out: Outgoing = []
            if item is not None:
                out += self.handle(*item)
            out += self.poll_jobs()
            if self.clock() >= next_tick:
                next_tick = self.clock() + tick_interval
                if backend is not None:
                    try:
                        for wid, reason in backend.poll_lost():
                            out += self.worker_lost(wid, reason)
                    except BackendError as err:
                        out += self.abort(str(err))
                out += self.tick()
            for peer, message in out:
                transport.send(peer, message)
        self.journal.append("transport", dropped_messages=transport.dropped)

    def elapsed(self) -> float:
        return self.clock() - self.started_at

    # -- reports ------------------------------------------------------------------------------
    def _on_report(self, worker: _Worker, msg: dict[str, Any]) -> dict[str, Any]:
        tid = msg["trial_id"]
        trial = self.trials.get(tid)
        if trial is None or worker.trial_id != tid or trial.state is not TrialState.RUNNING:
            # A stale report (the trial was lost/stopped meanwhile): tell the worker to drop it.
            return {"type": "decision", "decision": Decision.STOP.value}
        epoch, value = msg["epoch"], float(msg["value"])
        if epoch < 0:  # not an epoch: answer as before, record nothing
            return {"type": "decision", "decision": self._decisions.get(tid, Decision.CONTINUE).value}
        trial = trial.evolve(history=history_with(trial.history, epoch, value))
        self.trials[tid] = trial
        decision = self._decide(trial)
        previous = self._decisions.get(tid)
        if previous in (Decision.STOP, Decision.PAUSE):
            decision = previous
        if decision is not Decision.CONTINUE:
            self._decisions[tid] = decision
        self.journal.report(tid, epoch, value, decision.value)
        return {"type": "decision", "decision": decision.value}

    def _decide(self, trial: Trial) -> Decision:
        if self.timed_out or self.finished:
            return Decision.STOP
        decision = self.optimizer.on_report(trial)
        if decision is Decision.CONTINUE and not isinstance(self.earlystop, NoEarlyStop):
            finalized = [
                t for t in self.trials.values()
                if t.state in (TrialState.COMPLETED, TrialState.STOPPED, TrialState.PAUSED)
            ]
            if trial.trial_id in self.earlystop.earlystop_check({trial.trial_id: trial}, finalized, self.direction):
                decision = Decision.STOP
        return decision

    # -- trial ends ---------------------------------------------------------------------------
    def _on_final(self, worker: _Worker, msg: dict[str, Any]) -> Outgoing:
        tid = msg["trial_id"]
        trial = self.trials.get(tid)
        if trial is None or worker.trial_id != tid or trial.state is not TrialState.RUNNING:
            return []  # stale: the trial was already re-queued or ended
        worker.trial_id = None
        decision = self._decisions.pop(tid, None)
        status = msg["status"]
        metric = msg.get("metric")
        changes: dict[str, Any] = {"finished": time.time(), "worker": worker.worker_id}
        if status == "failed":
            state = TrialState.FAILED
            changes["error"] = msg.get("error") or "failed without an error message"
        elif decision is Decision.STOP or self.timed_out:
            state = TrialState.STOPPED
        elif decision is Decision.PAUSE:
            state = TrialState.PAUSED
        elif status == "stopped":
            state = TrialState.STOPPED
        elif trial.history and len(trial.history) >= trial.budget and trial.budget < self.max_epochs:
            state = TrialState.PAUSED
        else:
            state = TrialState.COMPLETED
        changes["final_metric"] = _final_metric(metric, trial.history)
        trial = trial.evolve(state=state, **changes)
        self._update(trial)
        worker.last_finished = trial
        if state is TrialState.FAILED:
            if msg.get("error_type") in FATAL_ERROR_TYPES:
                self.failures += 1
                return self.abort(f"trial {tid} failed with an error every trial would hit: {changes['error'].strip()}")
            last_line = (changes["error"].strip().splitlines() or ["?"])[-1]
            return self._count_failure(f"{tid}, with: {last_line}")
        return []

    def _count_failure(self, what: str) -> Outgoing:
        """Counts one FAILED trial; aborts the experiment at ``max_failures``."""
        self.failures += 1
        if self.failures < self.max_failures:
            return []
        return self.abort(
            f"{self.failures} trials failed (max_failures={self.max_failures}); the last one, "
            f"{what}. Each trial's traceback is in its record and its output.log. Fix the "
            "error, or raise max_failures to tolerate more failures."
        )

    def _lose(self, tid: str, reason: str) -> Outgoing:
        """Re-queues a RUNNING trial whose worker is gone (FAILED past ``max_retries``)."""
        trial = self.trials[tid]
        if trial.state is not TrialState.RUNNING:
            return []
        self._decisions.pop(tid, None)
        if self.timed_out:
            self._update(trial.evolve(state=TrialState.STOPPED, finished=time.time(), error=reason))
            return []
        if trial.retries >= self.max_retries:
            error = f"lost {trial.retries + 1} times (max_retries={self.max_retries}); last: {reason}"
            self._update(trial.evolve(state=TrialState.FAILED, finished=time.time(), error=error))
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
            return [(worker.peer, self._start(worker, nxt))]
        worker.parked = True
        if self.finished:  # _next_trial aborted (an optimizer bug): tell every parked worker
            return self._finish(self.stop_reason)
        return self._finish_if_done()

    def _wake_parked(self, exclude: int | None = None) -> Outgoing:
        out: Outgoing = []
        for worker in self.workers.values():
            if worker.parked and worker.worker_id != exclude and not self.finished:
                out += self._serve(worker)
        return out + self._finish_if_done()

    def _next_trial(self, worker: _Worker) -> Trial | object | None:
        if self._requeue:
            return self.trials[self._requeue.popleft()]
        if self.timed_out or self._exhausted:
            return None
        for _ in range(50):
            try:
                suggestion = self.optimizer.get_suggestion(worker.last_finished)
            except Exception:  # a custom optimizer's bug ends the search with its traceback
                self.abort(f"the optimizer raised in get_suggestion():\n{traceback.format_exc()}")
                return None
            self._submit_job()  # the work it waits for, if it answered IDLE for a model fit
            if suggestion is IDLE:
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
            existing = self.trials.get(suggestion.trial_id)
            if existing is None:
                return suggestion
            if existing.state is TrialState.PAUSED and suggestion.budget > existing.budget:
                return existing.evolve(budget=suggestion.budget)
            self.duplicates += 1
        return IDLE if self._running() else None

    def _start(self, worker: _Worker, trial: Trial) -> dict[str, Any]:
        now = time.time()
        resume = trial.trial_id in self.trials and bool(trial.history)
        trial = trial.evolve(
            state=TrialState.RUNNING,
            worker=worker.worker_id,
            created=trial.created or now,
            started=trial.started or now,
            error=None,
            finished=None,
        )
        self._update(trial)
        worker.trial_id = trial.trial_id
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
                "async_until": self._async_until(trial),
            },
        }

    def _async_until(self, trial: Trial) -> int:
        """Epochs whose reports the worker need not wait for: those only CONTINUE can answer.
        None with a timeout or an early-stop rule, which may stop a trial at any report."""
        if self.timeout is not None or not isinstance(self.earlystop, NoEarlyStop):
            return 0
        return max(0, int(self.optimizer.continue_until(trial)))

    # -- bookkeeping ---------------------------------------------------------------------------
    def _update(self, trial: Trial, cause: str | None = None) -> None:
        """Records a trial's new state. ``cause`` marks the snapshots that a resumed study
        undoes (the stops written by an abort or by the end of the study, see
        :meth:`~lightning_maggy.driver.journal.StudyLog.resumable_trials`)."""
        old = self.trials.get(trial.trial_id)
        self._n_running += (trial.state is TrialState.RUNNING) - (old is not None and old.state is TrialState.RUNNING)
        self.trials[trial.trial_id] = trial
        if cause is None:
            self.journal.trial(trial)
        else:
            self.journal.trial(trial, cause=cause)
        if trial.state.finished or trial.state is TrialState.PAUSED:
            if self.on_trial_end is not None:
                self.on_trial_end(trial)

    def _running(self) -> bool:
        return bool(self._requeue) or self._n_running > 0

    def _finish_if_done(self) -> Outgoing:
        if self.finished or self._running():
            return []
        if self.timed_out:
            return self._finish(StopReason.TIMEOUT)
        if self._exhausted:
            return self._finish(StopReason.FINISHED)
        return []

    def _finish(self, reason: str) -> Outgoing:
        self.stop_reason = reason
        if not self._finalized:
            self._finalized = True
            for trial in list(self.trials.values()):
                if trial.state is TrialState.PAUSED:  # never promoted: ended at its rung
                    self._update(trial.evolve(state=TrialState.STOPPED), cause=CAUSE_END)
            try:
                self.optimizer.finalize_experiment(list(self.trials.values()))
            except Exception:  # the record matters more than a custom hook's bug
                log.exception("finalize_experiment() raised")
            self.journal.append(
                "experiment_end",
                reason=reason,
                message=self.abort_message,
                duplicate_suggestions=self.duplicates,
            )
        return [(w.peer, {"type": "done"}) for w in self.workers.values() if w.parked]

    def counts(self) -> dict[str, int]:
        c = collections.Counter(t.state.value for t in self.trials.values())
        return {s.value: c.get(s.value, 0) for s in TrialState}

    def best(self) -> Trial | None:
        return best_trial(self.trials.values(), self.direction)


def _final_metric(metric: float | None, history: Iterable[float]) -> float | None:
    if metric is not None and not (isinstance(metric, float) and math.isnan(metric)):
        return float(metric)
    for value in reversed(tuple(history)):
        if not math.isnan(value):
            return float(value)
    return None


def best_trial(trials: Iterable[Trial], direction: str) -> Trial | None:
    """The trial with the best final metric (NaN and failed trials excluded)."""
    scored = [
        t for t in trials
        if t.final_metric is not None and not math.isnan(t.final_metric) and t.state is not TrialState.FAILED
    ]
    if not scored:
        return None
    key = (lambda t: t.final_metric) if direction == "max" else (lambda t: -t.final_metric)  # type: ignore[operator]
    return max(scored, key=key)
