"""The controller's trial records, with a log of which records changed.

Optimizers read the records through a read-only view and derive their state from them. One that
keeps something derived (ASHA's sorted rungs) can bring it up to date from the records that
changed since it last looked (:class:`ChangeLog`) instead of rebuilding it from every record on
every call, which costs time in proportion to the study's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning_maggy.trial import Trial

__all__ = ["ChangeLog", "TrialRecords"]


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
