"""The experiment journal: an append-only JSON-lines file, the source of truth of a search.

Durability, precisely:

- Every event (trial state changes and metric reports alike) is written and flushed to the
  operating system before the controller answers the worker. A crash of the driver *process*
  (SIGKILL, an out-of-memory kill, Ctrl-C, an exception) therefore loses nothing: the kernel
  holds every line.
- Against a crash of the *machine* (power loss, kernel panic), the file is fsync'd by group
  commit: a background thread fsyncs within ``sync_interval`` seconds (20 ms by default) of any
  write, batching the events that arrive together, so the server's hot path never waits on the
  disk. ``sync_interval=0`` fsyncs each trial state change before the answer instead (reports
  then reach the disk with the next state change). The directory is fsync'd when the journal
  is created, so the file itself survives too.
- Reading tolerates exactly one kind of damage: a torn last line (a crash in the middle of a
  write). A corrupt line anywhere else is a :class:`~lightning_maggy.exceptions.JournalError`
  naming its line number, never a silently shorter history. Opening an existing journal to
  append (a resumed study) first cuts such a torn tail off, so that the next event starts on a
  line of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning_maggy.exceptions import ExperimentError, JournalError
from lightning_maggy.trial import Trial, TrialState

__all__ = ["Journal", "StudyLog", "history_with", "load_study", "non_finite_note", "read_journal", "replay"]

JOURNAL_NAME = "journal.jsonl"

#: ``cause`` of a trial snapshot written when a study is aborted or interrupted: the trial was
#: running (or waiting to run) and is resumed when the study is.
CAUSE_ABORT = "abort"
#: ``cause`` of a trial snapshot written when a study ends: a trial paused at a rung that was
#: never promoted is recorded as STOPPED; a resumed study (e.g. with more trials) may promote it.
CAUSE_END = "end"
#: ``cause`` of a trial snapshot written when a resumed study re-queues a trial that was running
#: when the driver died.
CAUSE_RESUME = "resume"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsyncs a directory, so that the files created in it survive a power loss (a no-op where
    directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_event(line: bytes) -> bool:
    try:
        event = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(event, dict) and isinstance(event.get("event"), str)


def _cut_torn_tail(path: Path) -> None:
    """Makes the file end with its last complete event and a newline, as :func:`read_journal`
    reads it: trailing blank lines go, and so does a last line that is not a whole event (a torn
    write, or the zeros a power loss can leave); a whole last event that only lost its newline
    gets it back. Appending then starts on a line of its own."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            tail = fh.read()
            end = len(tail.rstrip(b" \t\r\n"))
            line_start = tail.rfind(b"\n", 0, end) + 1
            if start == 0 or (end > 0 and line_start > 0):
                break
            chunk *= 2
        if end == 0:  # only blank lines (or nothing)
            cut, newline = start, False
        elif _is_event(tail[line_start:end]):
            cut, newline = start + end, True
            if tail[end:] == b"\n":
                return  # the usual case: a whole last event and its newline
        else:  # torn: the line before it ends with its newline
            cut, newline = start + line_start, False
        fh.truncate(cut)
        if newline:
            fh.seek(cut)
            fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())


#: One encoder for every event (``json.dumps`` with options builds a new one per call).
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=True, default=str).encode


class JournalWriteError(ExperimentError):
    """The journal could not be written (a full disk, a folder that became unwritable): the
    study must stop, since no answer may be ahead of its record. Nothing is written after the
    first failure, so the journal stays whole up to its last complete event."""

    def __init__(self, path: Path, err: OSError) -> None:
        why = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
        super().__init__(
            f"could not write the study's journal {path} ({why}: {err}); the study stopped there. Its record is "
            f"whole up to the last event written. Free space on that disk (or fix the folder), then run the same "
            f"call with resume={str(path.parent)!r} to continue it."
        )


class Journal:
    """Appends events to ``exp_dir/journal.jsonl`` (see the module docstring for durability).

    Args:
        path: the journal file; created (with its directory) if missing, appended to if not.
        sync_interval: seconds within which the group commit fsyncs what was written; 0 fsyncs
            every trial state change before returning.
    """

    def __init__(self, path: str | os.PathLike[str], sync_interval: float = 0.02) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock_against_other_drivers()
        if existed:
            _cut_torn_tail(self.path)
        else:
            os.fsync(self._file.fileno())
            fsync_dir(self.path.parent)
        self._lock = threading.Lock()
        self.sync_interval = sync_interval
        self.syncs = 0
        #: the error of the first write that failed; nothing is written after it
        self.failed: OSError | None = None
        self._dirty = threading.Event()
        self._closing = False
        self._syncer: threading.Thread | None = None
        if sync_interval > 0:
            self._syncer = threading.Thread(target=self._sync_loop, name="maggy-journal-sync", daemon=True)
            self._syncer.start()

    def _lock_against_other_drivers(self) -> None:
        """Takes an exclusive lock on the file for as long as it is open (the kernel drops it
        when the process dies, so a killed driver's study can be resumed at once), so that two
        drivers never append to one journal. Where ``fcntl`` is missing (Windows) or the file
        system does not support locks, nothing is locked."""
        try:
            import fcntl
        except ImportError:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise JournalError(
                f"{self.path} is in use by another running driver (a study has one driver at a "
                "time). Wait for that search to end, or stop it (it can be resumed later), then "
                "resume; or start a new study in a new exp_dir."
            ) from None
        except OSError:  # no locks on this file system
            return

    def _sync_loop(self) -> None:
        while not self._closing:
            self._dirty.wait()
            if self._closing:
                return
            time.sleep(self.sync_interval)  # let events that come together share one fsync
            self._dirty.clear()
            with self._lock:
                if self._file.closed:
                    return
                fd = self._file.fileno()
            try:
                os.fsync(fd)
            except OSError:  # closed meanwhile by close(), which fsyncs itself
                return
            self.syncs += 1

    def append(self, event: str, durable: bool = True, **fields: Any) -> None:
        """Writes one event. ``durable=False`` never waits for an fsync, even with
        ``sync_interval=0`` (the group commit, when on, still covers it)."""
        record = {"event": event, "time": time.time(), **fields}
        self._write(_ENCODE(record) + "\n", durable)

    def _write(self, line: str, durable: bool) -> None:
        """Writes and flushes one line; the group commit fsyncs it within ``sync_interval``
        (without one, a durable line is fsync'd now)."""
        with self._lock:
            if self._file.closed or self.failed is not None:
                return  # after a failed write nothing more: no event may follow a lost one
            try:
                self._file.write(line)
                self._file.flush()
                if self._syncer is None:
                    if durable:
                        os.fsync(self._file.fileno())
                        self.syncs += 1
                    return
            except OSError as err:
                self.failed = err
                raise JournalWriteError(self.path, err) from err
        # Set already: the syncer clears it before its next fsync, which then covers this line
        # (one Event.set per burst of lines instead of one per report).
        if not self._dirty.is_set():
            self._dirty.set()

    def trial(self, trial: Trial, **extra: Any) -> None:
        """Records a trial's new state (a full snapshot of the record)."""
        self.append("trial", trial=trial.to_dict(), **extra)

    def report(self, trial_id: str, epoch: int, value: float, decision: str) -> None:
        """Records one metric report: the hot path, formatted directly."""
        number = repr(float(value)) if math.isfinite(value) else json.dumps(float(value))
        line = (
            f'{{"event":"report","time":{time.time()!r},"trial_id":{json.dumps(trial_id)},'
            f'"epoch":{int(epoch)},"value":{number},"decision":"{decision}"}}\n'
        )
        self._write(line, durable=False)

    def close(self) -> None:
        self._closing = True
        self._dirty.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            if not self._file.closed:
                try:
                    self._file.flush()
                    os.fsync(self._file.fileno())
                except OSError as err:  # still full: what did not fit is a torn tail, cut on resume
                    self.failed = self.failed or err
                finally:
                    with contextlib.suppress(OSError):
                        self._file.close()


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
        are given back their state before it. A trial the abort (or Ctrl-C) stopped while it ran
        is LOST again (re-queued, resumed from its checkpoint); a trial paused at a rung that
        the end of the study recorded as STOPPED is PAUSED again (it may still be promoted).
        RUNNING, LOST and PENDING trials are left as they are: the controller re-queues them."""
        out: dict[str, Trial] = {}
        for tid, trial in self.trials.items():
            cause = self.causes.get(tid)
            if trial.state is TrialState.STOPPED and cause == CAUSE_ABORT:
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
