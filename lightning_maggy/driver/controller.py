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

Attempts and fencing: every assignment of a trial to a worker is a new *attempt* (numbered
from 1, journaled with the trial). Reports, FINALs and heartbeats name the attempt they belong
to; one that does not name the worker's current attempt of a RUNNING trial -- a worker wrongly
declared lost, a trial stopped by ``trial_timeout`` or by an abort, or a hostile message -- changes
nothing, and the worker is told to ``drop`` the trial (it stops training at once). Checkpoints
are fenced on the worker side (see :mod:`lightning_maggy.lightning.fence`).

The study never waits forever: when the optimizer answers IDLE (or only duplicates) while no
trial runs, none is re-queued and no background job is computing, nothing could change its
answer, and the study ends with :attr:`StopReason.STALLED` and a message saying why.

Non-finite metrics (NaN, +-inf): the report is recorded as NaN, the trial is told to STOP and
ends STOPPED with no final metric and an ``error`` that names the value, so it is never promoted
(ASHA ranks NaN last and never promotes a STOPPED trial) and never the best trial.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from lightning_maggy.driver.assignment import AssignmentMixin
from lightning_maggy.driver.jobs import JobRunner
from lightning_maggy.driver.journal import CAUSE_ABORT, CAUSE_END, CAUSE_RESUME, Journal
from lightning_maggy.driver.reports import ReportsMixin, final_metric
from lightning_maggy.driver.serving import ServingMixin
from lightning_maggy.driver.ticking import TickMixin
from lightning_maggy.driver.workers import Outgoing, StopReason, _Worker
from lightning_maggy.earlystop.base import AbstractEarlyStop, NoEarlyStop
from lightning_maggy.optimizers.base import AbstractOptimizer
from lightning_maggy.records import Selection, TrialRecords
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState, best_trial

_ENDED = (TrialState.COMPLETED, TrialState.STOPPED, TrialState.PAUSED)

__all__ = ["Controller", "StopReason"]

log = logging.getLogger(__name__)



class Controller(ReportsMixin, AssignmentMixin, ServingMixin, TickMixin):
    """Drives one experiment.

    Args:
        optimizer: decides what to run (wired here to a read-only view of the trials).
        earlystop: decides which running trials to stop.
        searchspace / direction / max_epochs / num_trials / seed: the experiment's settings.
        timeout: wall-clock budget in seconds; after it no new trial starts and running trials
            are stopped at their next report.
        trial_timeout: seconds one attempt of a trial may run; a trial over it is recorded
            STOPPED (its reports so far kept) and its worker told to drop it.
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
        non_finite: a resumed study's trials stopped by the NaN/inf policy (trial_id -> note,
            :attr:`~lightning_maggy.driver.journal.StudyLog.non_finite`): one that was still
            running is recorded STOPPED instead of being resumed.
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
        trial_timeout: float | None = None,
        max_failures: int = 3,
        max_retries: int = 3,
        heartbeat_timeout: float = 120.0,
        seed: int | None = None,
        on_trial_end: Callable[[Trial], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        trials: Mapping[str, Trial] | None = None,
        elapsed: float = 0.0,
        optimizer_state: Mapping[str, Any] | None = None,
        non_finite: Mapping[str, str] | None = None,
    ) -> None:
        self.trials: TrialRecords = TrialRecords(trials or {})
        self.view = MappingProxyType(self.trials)
        self.optimizer = optimizer
        self.earlystop = earlystop or NoEarlyStop()
        #: The trials an early-stop rule compares a report with (COMPLETED, STOPPED, PAUSED).
        self._ended_trials = Selection(lambda t: t.state in _ENDED)
        self._parked_ids: set[int] = set()  # kept by each _Worker's ``parked``
        self._registered: dict[int, int] = {}  # worker id -> its rank in self.workers
        self.searchspace = searchspace
        self.direction = direction
        self.max_epochs = max_epochs
        self.num_trials = num_trials
        self.timeout = timeout
        self.trial_timeout = trial_timeout
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
        # trial_id -> the latest epoch reported in the trial's current run (epochs_trained)
        self._last_epoch: dict[str, int] = {}
        self._exhausted = False
        self._finalized = False
        # trials in state RUNNING, kept by _update (O(1) end-of-study checks)
        self._n_running = sum(t.state is TrialState.RUNNING for t in self.trials.values())
        # trial_id -> why (the NaN/inf policy); a resumed study's from its journal
        self._nonfinite: dict[str, str] = dict(non_finite or {})
        self.refused = 0  # stale or hostile reports, finals and heartbeats (changed nothing)
        # Why the optimizer's last answer was no trial (IDLE / duplicates), and the state
        # version it was given at: unchanged state + nothing running = a stall.
        self._stall_note: str | None = None
        self._stall_at = -1
        self._version = 0
        self._jobs: JobRunner | None = None  # set while optimizer jobs run in the background
        self._frozen: list[tuple[int, float]] = []  # see take_frozen()
        self._timeout_stops: set[str] = set()  # trials told to STOP because the timeout passed
        optimizer.setup(
            searchspace,
            num_trials=num_trials,
            direction=direction,
            max_epochs=max_epochs,
            trials=self.view,
            seed=seed,
        )
        optimizer.changes = self.trials.changes
        if optimizer_state:
            optimizer.load_state_dict(optimizer_state)
        self._resume_trials()

    def _resume_trials(self) -> None:
        """Takes over the records of a resumed study (see ``trials`` in the class docstring)."""
        for trial in list(self.trials.values()):
            if trial.state is TrialState.FAILED:
                self.failures += 1
            if trial.state in (TrialState.RUNNING, TrialState.LOST, TrialState.PENDING) and (
                trial.trial_id in self._nonfinite
            ):
                # Told to STOP for a NaN/inf before the driver died: the policy, not a resume.
                self._update(
                    trial.evolve(state=TrialState.STOPPED, worker=None, finished=time.time(), final_metric=None,
                                 error=self._nonfinite[trial.trial_id]),
                    cause=CAUSE_RESUME,
                )
            elif trial.state in (TrialState.RUNNING, TrialState.LOST, TrialState.PENDING):
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
        """Applies one validated message; returns the replies to send.

        A report, FINAL or heartbeat that does not belong to the sender's current attempt of a
        RUNNING trial changes nothing (not even the worker's address or liveness); see
        :meth:`_refuse`.
        """
        wid = msg["worker_id"]
        kind = msg["type"]
        worker = self.workers.get(wid)
        if worker is not None:
            worker.silent = False  # alive (even if refused below): not frozen
        if kind in ("report", "final", "heartbeat") and not self._current(worker, msg):
            return self._refuse(worker, peer, msg)
        now = self.clock()
        if worker is None:
            worker = self.workers[wid] = _Worker(wid, peer, now, parked_ids=self._parked_ids)
            self._registered[wid] = len(self._registered)
        if kind == "get" and (worker.trial_id is not None or worker.parked):
            # A worker asks once and waits; it never asks while it holds a trial. Changing
            # nothing here keeps a forged "get" from redirecting a parked worker's next trial.
            self.refused += 1
            return []
        worker.last_seen = now
        if kind == "heartbeat":  # from the worker's own heartbeat socket: only drops go there
            worker.hb_peer = peer
            return []
        worker.peer = peer
        if kind == "register":
            self.journal.append("worker", worker_id=wid, pid=msg["pid"], host=msg["host"])
            out: Outgoing = []
            if worker.trial_id is not None:  # a restarted worker: its old trial was lost
                out += self._lose(worker.trial_id, f"worker {wid} restarted")
                self._take_away(worker)
                out += self._wake_parked(exclude=wid)
            worker.stale = None  # a new process: the old one's stale FINAL is answered "done"
            worker.parked = False
            worker.hb_peer = None
            return [(peer, {"type": "welcome", "worker_id": wid}), *out]
        if kind == "report":
            reply = self._on_report(worker, msg)
            out = [(peer, reply)] if msg.get("sync", True) else []
            return out + self._finish(self.stop_reason) if self.finished else out  # a rule's bug ended it
        if kind == "final":
            out = self._on_final(worker, msg)  # an abort's "done" to the parked workers
            return out + self._serve(worker) + self._wake_parked(exclude=wid)
        if kind == "get":
            return self._serve(worker)
        log.warning("ignoring message of type %r from worker %s", kind, wid)
        return []

    def holds_trial(self, worker_id: int) -> bool:
        """Whether worker ``worker_id`` holds a trial now (its death would be that trial's)."""
        worker = self.workers.get(worker_id)
        return worker is not None and worker.trial_id is not None

    def _registration(self, wid: int) -> int:
        return self._registered[wid]

    def _current(self, worker: _Worker | None, msg: dict[str, Any]) -> bool:
        """Whether a report/final/heartbeat belongs to ``worker``'s current attempt."""
        tid = msg.get("trial_id")
        if msg["type"] == "heartbeat" and tid is None:
            return worker is None or worker.trial_id is None  # an idle worker's heartbeat
        if worker is None or worker.trial_id != tid or worker.attempt != msg.get("attempt"):
            return False
        trial = self.trials.get(tid)  # type: ignore[arg-type]
        return trial is not None and trial.state is TrialState.RUNNING and trial.attempt == worker.attempt

    def _refuse(self, worker: _Worker | None, peer: bytes, msg: dict[str, Any]) -> Outgoing:
        """Answers a message of a stale attempt (or a hostile one) without changing any state.

        A synchronous report or a heartbeat naming a trial is answered ``drop`` (its worker
        stops training that attempt); a FINAL of the attempt last taken away from this worker
        is answered with new work, any other FINAL with ``done`` (a zombie worker whose slot
        a new process took over exits).
        """
        self.refused += 1
        kind, tid, attempt = msg["type"], msg.get("trial_id"), msg.get("attempt")
        drop = {
            "type": "drop",
            "trial_id": tid or "",
            "attempt": attempt or 1,
            "reason": self._stale_reason(worker, tid, attempt),
        }
        if kind == "report":
            return [(peer, drop)] if msg.get("sync", True) else []
        if kind == "heartbeat":  # an idle heartbeat racing an assignment needs no answer
            return [(peer, drop)] if tid is not None else []
        # final
        if worker is not None and worker.stale == (tid, attempt) and worker.trial_id is None:
            worker.stale = None
            worker.peer = peer
            worker.last_seen = self.clock()
            return self._serve(worker) + self._wake_parked(exclude=worker.worker_id)
        return [(peer, {"type": "done"})]

    def _stale_reason(self, worker: _Worker | None, tid: str | None, attempt: int | None) -> str:
        trial = self.trials.get(tid or "")
        if trial is None:
            return f"unknown trial {tid!r}"
        if worker is None or worker.trial_id != tid:
            return f"trial {tid} attempt {attempt} is not this worker's (it is {trial.state.value}, attempt {trial.attempt})"
        return f"trial {tid} attempt {attempt} is stale (current attempt {trial.attempt}, {trial.state.value})"

    def _take_away(self, worker: _Worker) -> None:
        """The worker no longer holds its trial; its stale FINAL will be answered with work."""
        if worker.trial_id is not None and worker.attempt is not None:
            worker.stale = (worker.trial_id, worker.attempt)
        worker.trial_id = None
        worker.attempt = None
        worker.trial_started = None

    def _stopped(self, trial: Trial, note: str) -> Trial:
        """``trial`` STOPPED by the server while it ran or waited (over ``trial_timeout``, or by
        an abort): its result is the last value it reported, as ``scope="last"`` ranks it (a
        trial the NaN/inf policy stopped keeps no result, and its note)."""
        tid = trial.trial_id
        final = None if tid in self._nonfinite else final_metric(None, trial.history)
        return trial.evolve(state=TrialState.STOPPED, finished=time.time(), error=self._nonfinite.get(tid, note),
                            final_metric=final)

    def worker_lost(self, worker_id: int, reason: str) -> Outgoing:
        """Called by a backend that saw a worker die; its trial is re-queued."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.silent = False  # gone, not frozen: the backend replaces it
        if worker is None or worker.trial_id is None:
            return []
        out = self._lose(worker.trial_id, reason)
        self._take_away(worker)
        worker.parked = False
        return out + self._wake_parked() + self._finish_if_done()

    def abort(self, message: str, reason: str = StopReason.ABORTED) -> Outgoing:
        """Ends the experiment now: running trials are recorded as STOPPED, workers told done."""
        if self.finished:
            return []
        self.abort_message = message
        # One line on each trial it stops; the whole message (a traceback, maybe) is the study's.
        note = f"stopped: the study was {reason} ({(message.strip().splitlines() or ['no message'])[0]})"
        for trial in list(self.trials.values()):
            if trial.state in (TrialState.RUNNING, TrialState.LOST, TrialState.PENDING):
                self._update(self._stopped(trial, note), cause=CAUSE_ABORT)
        self._requeue.clear()
        for worker in self.workers.values():
            self._take_away(worker)
        return self._finish(reason)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _update(self, trial: Trial, cause: str | None = None) -> None:
        """Records a trial's new state. ``cause`` marks the snapshots that a resumed study
        undoes (the stops written by an abort or by the end of the study, see
        :meth:`~lightning_maggy.driver.journal.StudyLog.resumable_trials`)."""
        old = self.trials.get(trial.trial_id)
        self._n_running += (trial.state is TrialState.RUNNING) - (old is not None and old.state is TrialState.RUNNING)
        self._version += 1
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
            if self.num_trials is not None and len(self.trials) < self.num_trials:
                self.abort_message = (
                    f"{type(self.optimizer).__name__} proposed no more configurations after {len(self.trials)} "
                    f"trial(s) of num_trials={self.num_trials} (a search space with only that many distinct "
                    "configurations, or the optimizer's own end)."
                )
            return self._finish(StopReason.FINISHED)
        if self._stall_note is not None and self._stall_at == self._version and not self.jobs_busy:
            # Nothing runs, nothing is re-queued, no job computes: the optimizer's answer cannot
            # change, and waiting would be forever.
            self.abort_message = (
                f"{self._stall_note} while no trial was running or re-queued and no optimizer job "
                "was computing, so nothing could change its answer; the study ends here instead "
                "of waiting forever."
            )
            self.journal.append("stalled", message=self.abort_message)
            return self._finish(StopReason.STALLED)
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
        return [(w.peer, {"type": "done"}) for w in self.workers.values() if w.parked]  # registration order

    def counts(self) -> dict[str, int]:
        c = collections.Counter(t.state.value for t in self.trials.values())
        return {s.value: c.get(s.value, 0) for s in TrialState}

    def best(self, scope: str = "last") -> Trial | None:
        return best_trial(self.trials.values(), self.direction, scope)
