"""How the controller answers metric reports and records a trial's end (its FINAL): the
early-stop and rung decisions, the NaN/inf policy, failures (see
:mod:`lightning_maggy.driver.controller`)."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Collection, Iterable
from typing import Any

from lightning_maggy.driver.journal import CAUSE_TIMEOUT, history_with, non_finite_note
from lightning_maggy.driver.workers import Outgoing, _Worker
from lightning_maggy.earlystop.base import NoEarlyStop
from lightning_maggy.trial import Decision, Trial, TrialState

__all__ = ["ReportsMixin", "final_metric"]


class ReportsMixin:
    """Part of :class:`~lightning_maggy.driver.controller.Controller`: reports and trial ends
    (it uses the controller's state; see there)."""

    # -- reports ------------------------------------------------------------------------------
    def _on_report(self, worker: _Worker, msg: dict[str, Any]) -> dict[str, Any]:
        tid = msg["trial_id"]  # the worker's current attempt of a RUNNING trial (see handle)
        trial = self.trials[tid]
        epoch, value = msg["epoch"], float(msg["value"])
        if epoch < 0:  # not an epoch: answer as before, record nothing
            return {"type": "decision", "decision": self._decisions.get(tid, Decision.CONTINUE).value}
        if not math.isfinite(value):
            return self._on_non_finite(trial, epoch, value)
        self._version += 1
        trial = self._recorded(trial, epoch, value)
        self.trials[tid] = trial
        decision = self._decide(trial)
        if self.finished:  # the early-stop rule failed and ended the study (its record says so)
            return {"type": "decision", "decision": Decision.STOP.value}
        previous = self._decisions.get(tid)
        if previous in (Decision.STOP, Decision.PAUSE):
            decision = previous
        elif decision is Decision.PAUSE and msg.get("extend") is True:
            promoted = self.optimizer.promote_in_place(trial)
            if promoted is not None and promoted.budget > trial.budget:
                return self._promoted_in_place(worker, trial, promoted, epoch, value)
        if decision is not Decision.CONTINUE:
            self._decisions[tid] = decision
        self.journal.report(tid, epoch, value, decision.value)
        return {"type": "decision", "decision": decision.value}

    def _promoted_in_place(
        self, worker: _Worker, trial: Trial, promoted: Trial, epoch: int, value: float
    ) -> dict[str, Any]:
        """The answer that raises a running trial's budget: the promotion the optimizer would
        make next is this trial, so its worker trains on without pausing (see
        :meth:`~lightning_maggy.optimizers.base.AbstractOptimizer.promote_in_place`). The
        journal gets the report, then the record with its new budget. As any promotion, it
        starts a new ``trial_timeout`` clock."""
        promoted = promoted.evolve(state=trial.state, history=trial.history, epochs_trained=trial.epochs_trained)
        self.journal.report(trial.trial_id, epoch, value, Decision.CONTINUE.value)
        self._update(promoted)
        worker.trial_started = self.clock()
        return {
            "type": "decision",
            "decision": Decision.CONTINUE.value,
            "budget": promoted.budget,
            "async_until": self._async_until(promoted),
        }

    def _recorded(self, trial: Trial, epoch: int, value: float) -> Trial:
        """``trial`` with the report of ``epoch`` in its history; a new epoch of the current run
        (not a re-sent report) also counts in ``epochs_trained``."""
        changes: dict[str, Any] = {"history": history_with(trial.history, epoch, value)}
        if epoch > self._last_epoch.get(trial.trial_id, -1):
            self._last_epoch[trial.trial_id] = epoch
            changes["epochs_trained"] = trial.epochs_trained + 1
        return trial.evolve(**changes)

    def _on_non_finite(self, trial: Trial, epoch: int, value: float) -> dict[str, Any]:
        """The NaN/inf policy: record NaN, stop the trial, never promote it or count it best."""
        tid = trial.trial_id
        if tid not in self._nonfinite:
            self._nonfinite[tid] = non_finite_note(repr(value), epoch)
            self.journal.append("non_finite", trial_id=tid, attempt=trial.attempt, epoch=epoch, value=repr(value))
        self._version += 1
        self.trials[tid] = self._recorded(trial, epoch, math.nan)
        self._decisions[tid] = Decision.STOP
        self.journal.report(tid, epoch, math.nan, Decision.STOP.value)
        return {"type": "decision", "decision": Decision.STOP.value}

    def _decide(self, trial: Trial) -> Decision:
        if self.timed_out and not self.finished:
            self._timeout_stops.add(trial.trial_id)  # its STOPPED record is resumed with the study
        if self.timed_out or self.finished:
            return Decision.STOP
        decision = self.optimizer.on_report(trial)
        if decision is Decision.CONTINUE and not isinstance(self.earlystop, NoEarlyStop):
            # The same tuple until a finished trial changes (see Selection): a rule may keep
            # what it derived from it, as the median rule does.
            if self._rule_stops(trial, self._ended_trials.of(self.trials)):
                decision = Decision.STOP
        return decision

    def _rule_stops(self, trial: Trial, finalized: Any) -> bool:
        """Whether the early-stop rule stops ``trial``; a rule that raises or answers something
        other than a collection of trial ids ends the study with why (a custom rule's bug)."""
        name = type(self.earlystop).__name__
        try:
            stopped = self.earlystop.earlystop_check({trial.trial_id: trial}, finalized, self.direction)
        except Exception:
            self.abort(f"the early-stop rule {name} raised in earlystop_check():\n{traceback.format_exc()}")
            return True
        if isinstance(stopped, (str, bytes)) or not isinstance(stopped, Collection):
            self.abort(
                f"the early-stop rule {name}.earlystop_check() returned {stopped!r}; it must return the "
                "ids of the trials to stop, as a list or set (empty to stop none)."
            )
            return True
        return trial.trial_id in stopped

    # -- trial ends ---------------------------------------------------------------------------
    def _on_final(self, worker: _Worker, msg: dict[str, Any]) -> Outgoing:
        tid = msg["trial_id"]  # the worker's current attempt of a RUNNING trial (see handle)
        trial = self.trials[tid]
        status = msg["status"]
        if status == "dropped":  # the worker gave up an attempt the server still counts: re-queue
            out = self._lose(tid, f"worker {worker.worker_id} dropped attempt {trial.attempt}")
            worker.trial_id = worker.attempt = worker.trial_started = None
            return out
        if status == "failed" and msg.get("storage_failed") is True:  # see lightning.disk: stop, resumable
            return self.abort(_storage_message(tid, msg.get("error") or ""))
        worker.trial_id = worker.attempt = worker.trial_started = None
        worker.stale = None
        decision = self._decisions.pop(tid, None)
        metric = msg.get("metric")
        if (
            status != "failed"
            and isinstance(metric, (int, float))
            and not math.isfinite(metric)
            and tid not in self._nonfinite
        ):
            self._nonfinite[tid] = (
                f"returned a non-finite final metric ({float(metric)!r}); stopped, and not eligible "
                "for promotion or best (NaN/inf policy)"
            )
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
        elif trial.history and len(trial.history) >= trial.budget and self.optimizer.pauses_at_budget(trial):
            state = TrialState.PAUSED
        else:
            state = TrialState.COMPLETED
        # A FAILED trial has no result: its last report stays in its history only (a crashed
        # trial must not sort first in a table of results, nor count as a success anywhere).
        changes["final_metric"] = None if state is TrialState.FAILED else final_metric(metric, trial.history)
        if tid in self._nonfinite and state is not TrialState.FAILED:
            state = TrialState.STOPPED
            changes["final_metric"] = None
            changes["error"] = self._nonfinite[tid]
        # The timeout stopped it (or it ended its run after the timeout, unstopped): resumed with
        # the study, as if the study had had a larger timeout from the start.
        timeout_cause = state is TrialState.STOPPED and tid not in self._nonfinite and self.timed_out and (
            tid in self._timeout_stops or (decision is not Decision.STOP and status != "stopped")
        )
        trial = trial.evolve(state=state, **changes)
        if timeout_cause:
            self._update(trial, cause=CAUSE_TIMEOUT)
        else:
            self._update(trial)
        worker.last_finished = trial
        if state is TrialState.FAILED:
            # fatal: the worker found one of lightning_maggy's misconfiguration errors (isinstance,
            # see lightning.worker.FATAL_ERRORS), which every trial would hit
            if msg.get("fatal") is True:
                self.failures += 1
                return self.abort(_fatal_message(tid, changes["error"], msg.get("error_type")))
            last_line = (changes["error"].strip().splitlines() or ["?"])[-1]
            return self._count_failure(f"{tid}, with: {last_line}")
        return []

    #: While several workers' deaths are recorded together (:meth:`workers_lost`): the abort
    #: that ``max_failures`` calls for waits here until every one of them is recorded.
    _hold_abort = False
    _held_abort: str | None = None

    def _count_failure(self, what: str) -> Outgoing:
        """Counts one FAILED trial; aborts the experiment at ``max_failures``."""
        self.failures += 1
        if self.failures < self.max_failures:
            return []
        message = (
            f"{self.failures} trials failed (max_failures={self.max_failures}); the last one, "
            f"{what}. Each trial's traceback is in its record and its output.log. Fix the "
            "error, or raise max_failures to tolerate more failures."
        )
        if self._hold_abort:
            self._held_abort = message  # the latest: it counts every failure of the batch
            return []
        return self.abort(message)

    def workers_lost(self, losses: Iterable[tuple[int, str]]) -> Outgoing:
        """:meth:`worker_lost` for each ``(worker_id, reason)`` a backend found dead at once.
        Every death is recorded (LOST, or FAILED past ``max_retries``) before ``max_failures``
        may end the study: a death recorded after the abort would be missing from the record
        (the abort stops the trial first)."""
        out: Outgoing = []
        self._hold_abort = True
        try:
            for worker_id, reason in losses:
                out += self.worker_lost(worker_id, reason)
        finally:
            self._hold_abort = False
        held, self._held_abort = self._held_abort, None
        return out + self.abort(held) if held is not None else out


def _fatal_message(tid: str, error: str, error_type: Any) -> str:
    """The abort message of a fatal trial error: the error's own message first (it says what to
    fix), then which trial hit it and its traceback."""
    lines = error.strip().splitlines()
    start = len(lines) - 1
    name = str(error_type or "")
    for k in range(len(lines) - 1, -1, -1):  # where the exception's (maybe multi-line) message begins
        head = lines[k].split(":", 1)[0].strip()
        if name and (head == name or head.endswith("." + name)):
            start = k
            break
    headline = "\n".join(lines[start:]).strip() or "?"
    if ": " in headline.splitlines()[0] and name:
        headline = headline.split(": ", 1)[1]  # drop the exception's module path and class
    return (
        f"{headline}\n\n(trial {tid} failed with this {name or 'error'}, which every trial would hit, "
        f"so the study stopped at once. Its traceback:)\n" + "\n".join(lines[:start]).rstrip()
    )


def _storage_message(tid: str, error: str) -> str:
    """The abort message of a trial whose disk is full or whose store failed: the worker's note
    first (what to do), then the traceback."""
    lines = error.rstrip().splitlines()
    note = next((k for k in range(len(lines) - 1, -1, -1) if lines[k].startswith("lightning_maggy: ")), None)
    if note is None:
        return f"trial {tid}: its storage failed; the study stopped. Its error:\n{error}"
    return (
        f"{lines[note][len('lightning_maggy: '):]}\n\n(trial {tid} hit it; its traceback:)\n"
        + "\n".join(lines[:note]).rstrip()
    )


def final_metric(metric: float | None, history: Iterable[float]) -> float | None:
    if metric is not None and not (isinstance(metric, float) and math.isnan(metric)):
        return float(metric)
    for value in reversed(tuple(history)):
        if not math.isnan(value):
            return float(value)
    return None
