"""Checkpoint fencing: two attempts at one trial never write its checkpoint at once.

A worker wrongly declared lost (a long GIL-holding call, a network pause) may still be training
its attempt when the server has re-queued the trial and another worker resumes it from the same
``checkpoints/last.ckpt``. The server refuses the stale attempt's next report and tells it to
drop the trial, but it may reach a checkpoint write first. So every write is fenced:

- When an attempt starts, it *claims* the trial folder: under an exclusive lock on
  ``<trial_dir>/.attempt.lock`` it raises the number in ``<trial_dir>/.attempt`` to its own
  attempt (an attempt that finds a higher number there is stale and does not start).
- A checkpoint is written to a file of its own (``last.ckpt.attempt-<n>.tmp``) and *committed*
  under the same lock: renamed over ``last.ckpt`` with :func:`os.replace` (atomic) only if the
  fence still holds this attempt; otherwise it is deleted and the writer raises
  :class:`~lightning_maggy.exceptions.TrialDropped`.

Readers therefore only ever see a complete checkpoint, and once a newer attempt has claimed the
folder (before it reads the checkpoint to resume) no older attempt can replace it. The lock is
``fcntl.flock`` (local disks; NFS through its lock manager); where there is none (Windows, some
object-store mounts) the commit still checks the fence and renames atomically, leaving only the
instant between the check and the rename unguarded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["FENCE_NAME", "claim", "commit", "current_attempt"]

FENCE_NAME = ".attempt"
_LOCK_NAME = ".attempt.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def _locked(trial_dir: str) -> Iterator[None]:
    os.makedirs(trial_dir, exist_ok=True)
    fd = os.open(os.path.join(trial_dir, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def current_attempt(trial_dir: str) -> int:
    """The attempt that holds ``trial_dir`` (0 if none claimed it yet)."""
    try:
        with open(os.path.join(trial_dir, FENCE_NAME), encoding="utf-8") as fh:
            return int(fh.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_fence(trial_dir: str, attempt: int) -> None:
    path = os.path.join(trial_dir, FENCE_NAME)
    tmp = f"{path}.{attempt}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(str(attempt))
    os.replace(tmp, path)


def claim(trial_dir: str, attempt: int) -> bool:
    """Makes ``attempt`` the holder of ``trial_dir``; False if a newer attempt holds it."""
    with _locked(trial_dir):
        held = current_attempt(trial_dir)
        if held > attempt:
            return False
        if held != attempt:
            _write_fence(trial_dir, attempt)
        return True


def commit(tmp_path: str, final_path: str, trial_dir: str, attempt: int) -> bool:
    """Moves ``tmp_path`` over ``final_path`` if ``attempt`` still holds ``trial_dir``.

    Returns:
        True if committed; False if a newer attempt holds the folder (``tmp_path`` is deleted).
    """
    with _locked(trial_dir):
        if current_attempt(trial_dir) == attempt:
            os.replace(tmp_path, final_path)
            return True
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp_path)
    return False
