"""Reading an experiment journal back (see :mod:`lightning_maggy.driver.journal`, which writes
it): its events, the trials they describe, and what a resumed study needs from it.

Reading tolerates exactly one kind of damage: a torn last line (a crash in the middle of a
write). A corrupt line anywhere else is a :class:`~lightning_maggy.exceptions.JournalError`
naming its line number, never a silently shorter history.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning_maggy.exceptions import JournalError
from lightning_maggy.trial import Trial, TrialState

__all__ = [
    "CAUSE_ABORT",
    "CAUSE_END",
    "CAUSE_RESUME",
    "CAUSE_TIMEOUT",
    "JOURNAL_NAME",
    "StudyLog",
    "history_with",
    "load_study",
    "non_finite_note",
    "read_journal",
    "replay",
]

JOURNAL_NAME = "journal.jsonl"

#: ``cause`` of a trial snapshot written when a study is aborted or interrupted: the trial was
#: running (or waiting to run) and is resumed when the study is.
CAUSE_ABORT = "abort"
#: ``cause`` of a trial snapshot written when a study ends: a trial paused at a rung that was
#: never promoted is recorded as STOPPED; a resumed study (e.g. with more trials) may promote it.
CAUSE_END = "end"
#: ``cause`` of a trial snapshot written when the study's ``timeout`` stopped a trial that was
#: running (or waiting to run again): resumed, like an aborted one, when the study is (with a
#: larger timeout it trains on as if the study had had that timeout from the start).
CAUSE_TIMEOUT = "timeout"
#: ``cause`` of a trial snapshot written when a resumed study re-queues a trial that was running
#: when the driver died.
CAUSE_RESUME = "resume"


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yields the journal's events.

    A last line that is not valid JSON (a crash in the middle of a write, or a writer still
    busy with it) is skipped; blank lines are skipped.

    Raises:
        JournalError: a line other than the last is not a JSON event; the message names the
            file and the line number.
    """
    bad: tuple[int, str, str] | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            if bad is not None:  # a corrupt line with a non-empty line after it
                _corrupt(path, *bad)
            try:
                event = json.loads(line)
            except ValueError as err:
                bad = (number, line, str(err))
                continue
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                bad = (number, line, 'not an object with an "event" name')
                continue
            yield event


def _corrupt(path: str | os.PathLike[str], number: int, line: str, why: str) -> None:
    shown = line if len(line) <= 120 else line[:120] + "..."
    raise JournalError(
        f"{path}: line {number} is corrupt ({why}): {shown!r}. Only the last line of a journal "
        "may be torn by a crash; damage earlier means the file was changed or the disk failed. "
        "The events after that line cannot be trusted to rebuild the study: restore the file "
        "from a backup, or start a new study in a new exp_dir."
    )


def _apply(trials: dict[str, Trial], event: Mapping[str, Any], last: dict[str, int]) -> str | None:
    """Applies one trial or report event to ``trials``; returns the trial id it touched.
    ``last``: trial_id -> the latest epoch reported since the trial's latest snapshot (a
    snapshot starts each run), kept by the caller across events."""
    kind = event.get("event")
    if kind == "trial":
        t = Trial.from_dict(event["trial"])
        trials[t.trial_id] = t
        last.pop(t.trial_id, None)
        return t.trial_id
    if kind == "report" and event.get("trial_id") in trials:
        t = trials[event["trial_id"]]
        epoch = int(event["epoch"])
        changes: dict[str, Any] = {"history": history_with(t.history, epoch, float(event["value"]))}
        if epoch > last.get(t.trial_id, -1):  # a new epoch of this run, as the controller counts
            changes["epochs_trained"] = t.epochs_trained + 1
            last[t.trial_id] = epoch
        trials[t.trial_id] = t.evolve(**changes)
        return t.trial_id
    return None


def replay(path: str | os.PathLike[str]) -> dict[str, Trial]:
    """Rebuilds every trial's latest record from the journal (snapshots plus later reports)."""
    trials: dict[str, Trial] = {}
    last: dict[str, int] = {}
    for event in read_journal(path):
        _apply(trials, event, last)
    return trials


@dataclasses.dataclass
class StudyLog:
    """What a journal says about a study, for resuming it.

    Attributes:
        path: the journal.
        experiment: the study's settings as last recorded (``experiment_start``, or the latest
            ``resume`` event, which may carry raised budgets).
        trials: every trial's latest record (:func:`replay`).
        causes: trial_id -> the ``cause`` of its latest snapshot, where one was recorded
            (:data:`CAUSE_ABORT`, :data:`CAUSE_END`, :data:`CAUSE_RESUME`).
        end_reason: the reason of the latest ``experiment_end``, or None when the last run
            never ended (the driver died).
        elapsed: seconds the study has run so far, all runs together (each run from its start
            to its last event).
        runs: how many times the study was started (1 + resumes).
        optimizer_state: the optimizer's ``state_dict()`` recorded when the study started (its
            generator's initial state, for a reproducible continuation), or None.
        non_finite: trial_id -> the note of its first ``non_finite`` event (the NaN/inf policy
            stopped it).
        end_message: the ``message`` of the latest ``experiment_end`` (why the study was aborted
            or stalled), or None.
    """

    path: Path
    experiment: dict[str, Any] | None
    trials: dict[str, Trial]
    causes: dict[str, str]
    end_reason: str | None
    elapsed: float
    runs: int
    optimizer_state: dict[str, Any] | None
    non_finite: dict[str, str] = dataclasses.field(default_factory=dict)
    end_message: str | None = None

    def resumable_trials(self) -> dict[str, Trial]:
        """The trials as a resumed study starts from: those the end of the previous run stopped
        are given back their state before it. A trial the abort (or Ctrl-C) or the study's
        timeout stopped while it ran is LOST again (re-queued, resumed from its checkpoint); a
        trial paused at a rung that
        the end of the study recorded as STOPPED is PAUSED again (it may still be promoted).
        RUNNING, LOST and PENDING trials are left as they are: the controller re-queues them."""
        out: dict[str, Trial] = {}
        for tid, trial in self.trials.items():
            cause = self.causes.get(tid)
            if trial.state is TrialState.STOPPED and cause in (CAUSE_ABORT, CAUSE_TIMEOUT):
                trial = trial.evolve(state=TrialState.LOST, finished=None, error=None, worker=None)
            elif trial.state is TrialState.STOPPED and cause == CAUSE_END:
                trial = trial.evolve(state=TrialState.PAUSED)
            out[tid] = trial
        return out


def load_study(path: str | os.PathLike[str]) -> StudyLog:
    """Reads a journal for :class:`StudyLog` (see there).

    Raises:
        JournalError: a corrupt line (see :func:`read_journal`), or no ``experiment_start``.
    """
    trials: dict[str, Trial] = {}
    causes: dict[str, str] = {}
    experiment: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    non_finite: dict[str, str] = {}
    last_epochs: dict[str, int] = {}
    end_reason: str | None = None
    end_message: str | None = None
    elapsed = 0.0
    runs = 0
    run_start: float | None = None
    last_time: float | None = None
    for event in read_journal(path):
        kind = event["event"]
        when = event.get("time")
        if kind in ("experiment_start", "resume"):
            if run_start is not None and last_time is not None:
                elapsed += max(0.0, last_time - run_start)
            runs += 1
            run_start = when if isinstance(when, (int, float)) else None
            end_reason = end_message = None
            if isinstance(event.get("experiment"), dict):
                experiment = event["experiment"]
            if kind == "experiment_start" and isinstance(event.get("optimizer_state"), dict):
                optimizer_state = event["optimizer_state"]
        elif kind == "experiment_end":
            end_reason = str(event.get("reason"))
            end_message = event["message"] if isinstance(event.get("message"), str) else None
        elif kind == "non_finite" and isinstance(event.get("trial_id"), str):
            epoch = event.get("epoch")
            non_finite.setdefault(
                event["trial_id"], non_finite_note(str(event.get("value")), epoch if isinstance(epoch, int) else -1)
            )
        tid = _apply(trials, event, last_epochs)
        if kind == "trial" and tid is not None:
            cause = event.get("cause")
            if isinstance(cause, str):
                causes[tid] = cause
            else:
                causes.pop(tid, None)
        if isinstance(when, (int, float)):
            last_time = when
    if run_start is not None and last_time is not None:
        elapsed += max(0.0, last_time - run_start)
    if runs == 0:
        raise JournalError(
            f"{path} has no experiment_start event: it is not the journal of a lightning_maggy "
            "study (or its first line was lost). Start a new study in a new exp_dir."
        )
    return StudyLog(
        path=Path(path),
        experiment=experiment,
        trials=trials,
        causes=causes,
        end_reason=end_reason,
        elapsed=elapsed,
        runs=runs,
        optimizer_state=optimizer_state,
        non_finite=non_finite,
        end_message=end_message,
    )


def non_finite_note(value: str, epoch: int) -> str:
    """The ``error`` of a trial stopped by the NaN/inf policy."""
    return (
        f"reported a non-finite metric ({value}) at epoch {epoch}; stopped, and not eligible "
        "for promotion or best (NaN/inf policy)"
    )


def history_with(history: tuple[float, ...], epoch: int, value: float) -> tuple[float, ...]:
    """``history`` with ``history[epoch] = value``; skipped epochs are filled with NaN."""
    values = list(history)
    if epoch < len(values):
        values[epoch] = value
    else:
        values.extend([float("nan")] * (epoch - len(values)))
        values.append(value)
    return tuple(values)
