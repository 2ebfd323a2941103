"""The controller's trial records, with a log of which records changed.

Optimizers read the records through a read-only view and derive their state from them. One that
keeps something derived (ASHA's sorted rungs) can bring it up to date from the records that
changed since it last looked (:class:`ChangeLog`) instead of rebuilding it from every record on
every call, which costs time in proportion to the study's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lightning_maggy.trial import Trial

__all__ = ["ChangeLog", "Selection", "TrialRecords"]


class ChangeLog:
    """Which keys of a :class:`TrialRecords` changed, in the order of their last change.

    ``version`` counts the writes; :meth:`changed_since` lists the keys written after a given
    version (each key once, however often it was written)."""

    def __init__(self) -> None:
        self.version = 0
        self._last: dict[str, int] = {}  # key -> version of its last write, oldest first

    def touch(self, key: str) -> None:
        self.version += 1
        self._last.pop(key, None)
        self._last[key] = self.version

    def changed_since(self, version: int) -> list[str]:
        """The keys written after ``version``, newest first; costs time in proportion to them."""
        out = []
        for key, written in reversed(self._last.items()):
            if written <= version:
                break
            out.append(key)
        return out


class TrialRecords(dict):  # type: ignore[type-arg]
    """trial_id -> :class:`~lightning_maggy.trial.Trial`: a dict whose writes are logged in
    ``changes`` (a :class:`ChangeLog`)."""

    def __init__(self, records: Mapping[str, Trial] | Iterable[tuple[str, Trial]] = ()) -> None:
        super().__init__()
        self.changes = ChangeLog()
        self.update(records)

    def __setitem__(self, key: str, value: Trial) -> None:
        dict.__setitem__(self, key, value)
        self.changes.touch(key)

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        self.changes.touch(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.changes.touch(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Trial]:
        key, value = dict.popitem(self)
        self.changes.touch(key)
        return key, value

    def clear(self) -> None:
        for key in list(self):
            self.changes.touch(key)
        dict.clear(self)


class Selection:
    """The records that satisfy ``keep``, in the records' order, as one tuple that stays the
    same object until a record enters, leaves or changes within the selection.

    With :class:`TrialRecords` only the records written since the last call are looked at, so
    a report of a running trial costs nothing here however large the study; a consumer (the
    median rule) can then keep what it derives from the tuple until the tuple changes. Other
    mappings are filtered in full on every call."""

    def __init__(self, keep: Callable[[Trial], bool]) -> None:
        self.keep = keep
        self._members: dict[str, Trial] = {}
        self._selected: tuple[Trial, ...] = ()
        self._log: Any = None
        self._version = -1

    def of(self, records: Mapping[str, Trial]) -> tuple[Trial, ...]:
        changes = getattr(records, "changes", None)
        if changes is not None and changes is self._log:
            dirty = False
            for key in changes.changed_since(self._version):
                record = records.get(key)
                if record is not None and self.keep(record):
                    dirty |= self._members.get(key) is not record
                    self._members[key] = record
                else:
                    dirty |= self._members.pop(key, None) is not None
        else:
            self._members = {key: record for key, record in records.items() if self.keep(record)}
            dirty = True
        if dirty:
            self._selected = tuple(record for key, record in records.items() if key in self._members)
        self._log = changes
        self._version = -1 if changes is None else changes.version
        return self._selected
