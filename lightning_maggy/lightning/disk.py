"""A full disk under a trial: not the trial's fault, and not something to retry.

When a trial's own files cannot be written for lack of space (its checkpoint, ``metrics.csv``,
``output.log``, a file the user's code writes), every other trial would hit the same wall. The
worker tells the server so (a FINAL with ``disk_full``), and the server stops the study at once
with a message that says what to do; the trial is not recorded FAILED: like every trial that was
running, it is stopped by that abort, so a resumed study (``resume=exp_dir``) runs it again from
its last checkpoint once there is space.
"""

from __future__ import annotations

import errno

__all__ = ["disk_full", "disk_full_note"]

#: No space left on the device, or over the user's disk quota.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(err: BaseException) -> OSError | None:
    """The OSError in ``err``'s chain (itself, its cause or context) that says the disk is full."""
    seen: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and not any(cur is s for s in seen):
        if isinstance(cur, OSError) and cur.errno in FULL:
            return cur
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return None


def disk_full_note(full: OSError, trial_dir: str) -> str:
    """The line a disk-full FINAL ends with (the study's abort message quotes it)."""
    target = full.filename2 or full.filename  # a copy names its source first
    where = f" writing {target}" if target else ""
    return (
        f"the disk is full ({full.strerror or full}{where}; this trial's folder is {trial_dir}): every trial "
        "would hit it, so the study stops. Free space there, then run the same call with resume= set to the "
        "study's exp_dir: this trial and the others that were running continue from their last checkpoints."
    )
