"""The experiment journal: an append-only JSON-lines file, the source of truth of a search.

Every event is written and flushed to the operating system before the controller answers the
worker, so a crash of the driver process loses nothing. Trial state changes are also fsync'd:
by default through group commit (a background thread fsyncs within ``sync_interval`` seconds of
a state change, batching those that arrive together), so the server's hot path never waits on
the disk; ``sync_interval=0`` fsyncs each state change before the answer instead. A power loss
can thus cost at most the last ``sync_interval`` seconds, which a resumed study re-runs from its
checkpoints. Metric reports are flushed, not fsync'd.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning_maggy.trial import Trial

__all__ = ["Journal", "history_with", "read_journal", "replay"]

JOURNAL_NAME = "journal.jsonl"


class Journal:
    """Appends events to ``exp_dir/journal.jsonl``."""

    def __init__(self, path: str | os.PathLike[str], sync_interval: float = 0.02) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.sync_interval = sync_interval
        self.syncs = 0
        self._dirty = threading.Event()
        self._closing = False
        self._syncer: threading.Thread | None = None
        if sync_interval > 0:
            self._syncer = threading.Thread(target=self._sync_loop, name="maggy-journal-sync", daemon=True)
            self._syncer.start()

    def _sync_loop(self) -> None:
        while not self._closing:
            self._dirty.wait()
            if self._closing:
                return
            time.sleep(self.sync_interval)  # let state changes that come together share one fsync
            self._dirty.clear()
            with self._lock:
                if self._file.closed:
                    return
                fd = self._file.fileno()
            os.fsync(fd)
            self.syncs += 1

    def append(self, event: str, durable: bool = True, **fields: Any) -> None:
        record = {"event": event, "time": time.time(), **fields}
        self._write(json.dumps(record, separators=(",", ":"), allow_nan=True, default=str) + "\n", durable)

    def _write(self, line: str, durable: bool) -> None:
        """Writes and flushes one line; a durable one is fsync'd now or by the group commit."""
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line)
            self._file.flush()
            if not durable:
                return
            if self._syncer is None:
                os.fsync(self._file.fileno())
                self.syncs += 1
                return
        self._dirty.set()

    def trial(self, trial: Trial, **extra: Any) -> None:
        """Records a trial's new state (a full snapshot of the record)."""
        self.append("trial", trial=trial.to_dict(), **extra)

    def report(self, trial_id: str, epoch: int, value: float, decision: str) -> None:
        """Records one metric report (flushed, not fsync'd): the hot path, formatted directly."""
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
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yields the journal's events; a torn last line (a crash mid-write) is skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                continue


def replay(path: str | os.PathLike[str]) -> dict[str, Trial]:
    """Rebuilds every trial's latest record from the journal (snapshots plus later reports)."""
    trials: dict[str, Trial] = {}
    for event in read_journal(path):
        if event.get("event") == "trial":
            t = Trial.from_dict(event["trial"])
            trials[t.trial_id] = t
        elif event.get("event") == "report" and event.get("trial_id") in trials:
            t = trials[event["trial_id"]]
            trials[t.trial_id] = t.evolve(history=history_with(t.history, int(event["epoch"]), float(event["value"])))
    return trials


def history_with(history: tuple[float, ...], epoch: int, value: float) -> tuple[float, ...]:
    """``history`` with ``history[epoch] = value``; skipped epochs are filled with NaN."""
    values = list(history)
    if epoch < len(values):
        values[epoch] = value
    else:
        values.extend([float("nan")] * (epoch - len(values)))
        values.append(value)
    return tuple(values)
