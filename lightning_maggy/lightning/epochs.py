"""How a trial's Trainer counts in the search's unit, the epoch.

The search decides per training epoch: :class:`~lightning_maggy.lightning.callback.MaggyCallback`
reports once per epoch (the metric of its last validation) and the server answers. Two things
follow for the Trainer:

- An optimizer with rungs (ASHA, Hyperband) needs a validation in every epoch; a Trainer whose
  validation schedule may leave epochs out is refused (:func:`unvalidated_epochs_error`).
- Promotion in place (raising ``max_epochs`` during ``fit``) is right only when nothing on the
  Trainer sized itself from ``max_epochs`` when ``fit`` began (:func:`promotes_in_place`).
"""

from __future__ import annotations

from typing import Any

from lightning_maggy.lightning.namespace import imported_namespaces

__all__ = ["IN_PLACE_SAFE", "promotes_in_place", "unvalidated_epochs_error"]

#: Lightning's callbacks that read nothing from ``max_epochs`` or ``estimated_stepping_batches``
#: when ``fit`` begins (checked against their source in Lightning 2.6): a Trainer that has only
#: these (and the search's own) may train on past its budget in the same ``fit``. Exact classes:
#: a subclass may add what its base does not do.
IN_PLACE_SAFE = (
    "ModelCheckpoint",
    "EarlyStopping",
    "LearningRateMonitor",
    "TQDMProgressBar",
    "RichProgressBar",
    "ModelSummary",
    "RichModelSummary",
    "Timer",
    "DeviceStatsMonitor",
    "GradientAccumulationScheduler",
    "OnExceptionCheckpoint",
    "ThroughputMonitor",
)

#: A class attribute (in the class's own ``__dict__``, not inherited) of the search's callbacks
#: that allow promotion in place: MaggyCallback and the fenced ModelCheckpoint.
SAFE_MARK = "_maggy_in_place_safe"


def _safe_classes() -> set[type]:
    found: set[type] = set()
    for ns in imported_namespaces():
        for name in IN_PLACE_SAFE:
            cls = getattr(ns.callbacks, name, None)
            if isinstance(cls, type):
                found.add(cls)
    return found


def promotes_in_place(trainer: Any) -> bool:
    """Whether the trial may be promoted in place: every callback on ``trainer`` is one of
    :data:`IN_PLACE_SAFE` or the search's own. Any other (``StochasticWeightAveraging``, which
    schedules its averaging from ``max_epochs`` at fit start; ``BatchSizeFinder``; a user's
    own callback) makes the trial pause at its rung and resume from its checkpoint with a new
    Trainer of the larger budget, which is right for every callback."""
    safe = _safe_classes()
    return all(type(cb) in safe or vars(type(cb)).get(SAFE_MARK, False) for cb in trainer.callbacks)


def unvalidated_epochs_error(trainer: Any, optimizer_name: str) -> str | None:
    """The error message when ``trainer``'s validation schedule may leave a training epoch
    without a validation, which an optimizer with rungs cannot rank (None when every epoch is
    validated). Call it once the training data is set up (``on_train_start``).

    Time-based validation (``val_check_interval`` a timedelta, "DD:HH:MM:SS" or a dict) runs
    when the time is up, not per epoch; step-based validation across epochs
    (``check_val_every_n_epoch=None``) skips epochs when its interval is longer than one."""
    every_n_epochs = getattr(trainer, "check_val_every_n_epoch", 1)
    batch = getattr(trainer, "val_check_batch", 1)
    if batch is None:
        what = "validates by time (val_check_interval is a duration)"
    elif every_n_epochs is None and isinstance(batch, int) and batch > trainer.num_training_batches:
        what = (
            f"validates every {batch} training batches across epochs (check_val_every_n_epoch=None), "
            f"but an epoch has {trainer.num_training_batches}"
        )
    else:
        return None
    return (
        f"the trial's Trainer {what}, so some epochs end without a validation; {optimizer_name} "
        "pauses and promotes trials at rungs counted in epochs and ranks them by the metric of "
        "each rung's last epoch, so every epoch must be validated. Use val_check_interval=1.0 "
        "(the default), a fraction of an epoch, or a number of batches no larger than an epoch; "
        "to spend less time validating, validate on part of the validation set "
        "(limit_val_batches=0.25); or use an optimizer without rungs (e.g. 'random', 'tpe', 'gp')."
    )
