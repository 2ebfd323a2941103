"""Each trial run logs to loggers of its own.

A logger in ``trainer_kwargs`` (``logger=CSVLogger("logs", name="mine")``, or a list of them) is
one object, and a worker runs many trials: passed as it is, every trial would log into the same
``version_0`` (rows of several trials in one ``metrics.csv``, one trial's ``hparams.yaml``), and
two workers could race for the same version. So every run gets a deep copy of each logger; a
copy of Lightning's ``CSVLogger`` or ``TensorBoardLogger`` (either namespace, or a subclass) is
given the trial id as its version, so a trial logs to ``<save_dir>/<name>/<trial_id>/``, and a
promoted or resumed run of the trial goes on in the same folder.
"""

from __future__ import annotations

import copy
import csv
import io
import os
import warnings
from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = ["check_loggers", "trial_loggers"]

#: Lightning's loggers whose folder is ``<root_dir>/<name>/<version>``, with the version in
#: ``_version`` (the classes of this name in these packages, and their subclasses). Other
#: loggers (W&B, MLflow, Comet, Neptune) name their runs themselves: each copy starts its own.
_VERSIONED = ("CSVLogger", "TensorBoardLogger")
_LIGHTNING_MODULES = ("lightning_fabric.", "lightning.fabric.", "pytorch_lightning.", "lightning.pytorch.")


def trial_loggers(logger: Any, trial_id: str) -> Any:
    """``logger`` as the Trainer takes it (one logger, a list of them, ``True``, ``False`` or
    None), with each logger replaced by a copy of its own for ``trial_id``.

    Raises:
        ConfigurationError: a logger cannot be copied (see :func:`check_loggers`).
    """
    if logger is None or isinstance(logger, bool):
        return logger
    if isinstance(logger, (list, tuple)):
        return [_copy_for(one, trial_id) for one in logger]
    return _copy_for(logger, trial_id)


def check_loggers(logger: Any) -> None:
    """Raises :class:`ConfigurationError` if a logger in ``logger`` (what ``trainer_kwargs``
    passes as ``logger=``) cannot be copied for each trial; nothing is written. Cheap enough
    to call before a study starts."""
    if logger is None or isinstance(logger, bool):
        return
    for one in logger if isinstance(logger, (list, tuple)) else [logger]:
        _copy(one)


def _is_versioned(logger: Any) -> bool:
    return any(
        cls.__name__ in _VERSIONED and (cls.__module__ or "").startswith(_LIGHTNING_MODULES)
        for cls in type(logger).__mro__
    ) and hasattr(logger, "_version")


def _copy(logger: Any) -> Any:
    # A writer the logger has opened already (a SummaryWriter, a CSV writer; anything in
    # ``_experiment``) is not copied: the copy opens its own, in its own folder.
    memo: dict[int, Any] = {}
    opened = getattr(logger, "_experiment", None)
    if opened is not None:
        memo[id(opened)] = None
    try:
        return copy.deepcopy(logger, memo)
    except Exception as err:
        raise ConfigurationError(
            f"the logger {type(logger).__name__} in trainer_kwargs cannot be copied ({type(err).__name__}: "
            f"{err}); every trial logs to a copy of its own (one object shared by all trials would mix "
            "their logs in one folder). Pass a logger that can be deep-copied (Lightning's CSVLogger and "
            "TensorBoardLogger can, when created before the study starts and not used yet), or log from a "
            "train function, search(train_fn, ...), that creates the trial's logger itself."
        ) from None


def _copy_for(logger: Any, trial_id: str) -> Any:
    mine = _copy(logger)
    if _is_versioned(mine):
        mine._version = trial_id
        if hasattr(mine, "_experiment"):
            mine._experiment = None
        if any(cls.__name__ == "CSVLogger" for cls in type(mine).__mro__):
            _open_keeping_rows(mine)
    return mine


def _open_keeping_rows(logger: Any) -> None:
    """Lightning's CSV writer deletes the ``metrics.csv`` it finds in its folder (and warns):
    for a promoted or resumed run of the trial that file holds the earlier runs' rows. So the
    writer is opened here, with its warning silenced, and the rows are put back; the writer
    then appends to them (and rewrites the file when new columns come)."""
    fs = getattr(logger, "_fs", None)
    log_dir = str(logger.log_dir)
    path = os.path.join(log_dir, "metrics.csv")
    exists = fs.exists if fs is not None else os.path.exists
    if not exists(log_dir):
        return  # the trial's first run: the writer is made as usual
    rows = ""
    if (fs.isfile if fs is not None else os.path.isfile)(path):
        with (fs.open if fs is not None else open)(path, "r", newline="") as fh:
            rows = fh.read()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*exists and is not empty")
        writer = logger.experiment  # the writer, in the worker: rank 0
    if not rows.strip():
        return
    with (fs.open if fs is not None else open)(path, "w", newline="") as fh:
        fh.write(rows)
    header = next(csv.reader(io.StringIO(rows)), [])
    if hasattr(writer, "metrics_keys"):
        writer.metrics_keys = list(header)
