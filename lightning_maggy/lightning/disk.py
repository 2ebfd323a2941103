"""A trial's folder, and the storage under it failing: not the trial's fault, nor worth a retry.

When a trial's own files cannot be written for lack of space (its checkpoint, ``metrics.csv``,
``output.log``, a file the user's code writes), or the study's store (an ``exp_dir`` URL) stops
answering while a worker reads or writes a trial's folder there, every other trial would hit the
same wall. The worker tells the server so (a FINAL with ``storage_failed``), and the server stops
the study at once with a message that says what to do; the trial is not recorded FAILED: like
every trial that was running, it is stopped by that abort, so a resumed study
(``resume=exp_dir``) runs it again from its last checkpoint once the storage works again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["disk_full", "exception_chain", "make_trial_dir", "storage_failure", "write_hparams"]

#: No space left on the device, or over the user's disk quota.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, newest first."""
    seen: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and not any(cur is s for s in seen):
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def disk_full(err: BaseException) -> OSError | None:
    """The OSError in ``err``'s chain (itself, its cause or context) that says the disk is full."""
    return next((e for e in exception_chain(err) if isinstance(e, OSError) and e.errno in FULL), None)


def storage_failure(err: BaseException, trial_dir: str) -> str | None:
    """The line a FINAL ends with when ``err`` is the storage failing (see the module
    docstring), or None when it is the trial's own error."""
    from lightning_maggy.storage import StoreUnavailable

    full = disk_full(err)
    if full is not None:
        target = full.filename2 or full.filename  # a copy names its source first
        where = f" writing {target}" if target else ""
        what = f"the disk is full ({full.strerror or full}{where}; this trial's folder is {trial_dir})"
        fix = "Free space there"
    else:
        store = next((e for e in exception_chain(err) if isinstance(e, StoreUnavailable)), None)
        if store is None:
            return None
        what, fix = str(store), "Once the store answers again (check the network, the endpoint and the credentials)"
    return (
        f"{what}: every trial would hit it, so the study stops. {fix}, run the same call with resume= set to "
        "the study's exp_dir: this trial and the others that were running continue from their last checkpoints."
    )


def make_trial_dir(trial_dir: str) -> bool:
    """Creates the trial's folder; False if it existed (a promoted or re-queued trial)."""
    try:
        os.mkdir(trial_dir)
    except FileExistsError:
        return False
    except FileNotFoundError:  # the first trial of this experiment on this machine
        os.makedirs(trial_dir, exist_ok=True)
    return True


def write_hparams(trial_dir: str, trial: Mapping[str, Any]) -> None:
    """``hparams.json``: the trial's id, configuration, component and seed (for people; the
    journal is the record). A full disk leaves no partial file: the trial's own writes say why."""
    record = {
        "trial_id": trial["trial_id"],
        "config": trial["config"],
        "component": trial.get("component"),
        "seed": trial.get("seed"),
    }
    path = os.path.join(trial_dir, "hparams.json")
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(path)
