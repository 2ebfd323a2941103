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
- A write that fails (a full disk) raises :class:`JournalWriteError` once, and nothing is
  written after it, so the journal stays whole up to its last complete event.

Reading the journal back is :mod:`lightning_maggy.driver.replay` (its names are re-exported here).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from lightning_maggy.driver.replay import (  # re-exported: the reading side lives there
    CAUSE_ABORT,
    CAUSE_END,
    CAUSE_RESUME,
    CAUSE_TIMEOUT,
    JOURNAL_NAME,
    StudyLog,
    history_with,
    load_study,
    non_finite_note,
    read_journal,
    replay,
)
from lightning_maggy.exceptions import ExperimentError, JournalError
from lightning_maggy.trial import Trial

__all__ = [
    "CAUSE_ABORT",
    "CAUSE_END",
    "CAUSE_RESUME",
    "CAUSE_TIMEOUT",
    "JOURNAL_NAME",
    "Journal",
    "JournalWriteError",
    "StudyLog",
    "history_with",
    "load_study",
    "non_finite_note",
    "read_journal",
    "replay",
]

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
