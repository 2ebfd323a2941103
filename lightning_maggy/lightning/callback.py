"""``MaggyCallback``: the thin adapter between a Lightning Trainer and the optimization server.

Hook fires -> read the metric -> report it -> act on the reply (``trainer.should_stop``). It
holds no search logic. Under DDP only global rank 0 talks to the server and the decision is
broadcast through ``trainer.strategy``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from lightning_maggy.exceptions import ConfigurationError, MetricNotFoundError, TrialDropped
from lightning_maggy.lightning.context import current_trial
from lightning_maggy.lightning.epochs import promotes_in_place, unvalidated_epochs_error
from lightning_maggy.lightning.namespace import available_namespaces, callback_list
from lightning_maggy.trial import Decision
from lightning_maggy.validation import validation_interval_error

__all__ = ["MaggyCallback", "search_callbacks"]

_DROP = "drop"  # broadcast to every rank when the server refused rank 0's report

# A subclass of both namespaces' Callback, so a Trainer from either accepts it.
_BASES: tuple[type, ...] = tuple(ns.Callback for ns in available_namespaces()) or (object,)


class MaggyCallback(*_BASES):  # type: ignore[misc]
    """Reports ``metric`` to the search once per training epoch and obeys the answer.

    The search counts in epochs: at the end of each training epoch in which a validation ran,
    the callback reports the metric of that epoch's last validation. Validations in the middle
    of an epoch (``val_check_interval`` below one epoch) run as usual, for the user's own logs
    and checkpoints, but are not reported; an epoch without a validation reports nothing.

    Inside a search, the server answers CONTINUE, STOP (early stop) or PAUSE (an ASHA rung is
    reached; the trial may later resume from its checkpoint); STOP and PAUSE set
    ``trainer.should_stop``. When the server answers that this worker's attempt at the trial is
    stale, the callback raises :class:`~lightning_maggy.exceptions.TrialDropped` on every rank,
    which ends ``fit`` before another checkpoint is written. Outside a search the callback does
    nothing but warn once, so the same training script runs standalone.

    Args:
        metric: the name logged with ``self.log(...)`` in validation, e.g. ``"val_acc"``.
    """

    #: Exactly this class (not a subclass) allows promotion in place (epochs.SAFE_MARK).
    _maggy_in_place_safe = True

    def __init__(self, metric: str) -> None:
        super().__init__()
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"MaggyCallback(metric={metric!r}): metric must be a non-empty str, e.g. 'val_acc'.")
        self.metric = metric
        self._warned = False
        self._warned_restart = False
        #: (epoch, value) of the current epoch's latest validation, reported when the epoch ends
        self._pending: tuple[int, float] | None = None

    @property
    def state_key(self) -> str:
        return f"MaggyCallback[metric={self.metric}]"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        ctx = current_trial()
        if ctx is not None and stage == "fit":
            _into_trial_dir(trainer, ctx.trial_dir)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        ctx = current_trial()
        if ctx is not None and ctx.epochs_done and trainer.current_epoch == 0 and not self._warned_restart:
            self._warned_restart = True
            warnings.warn(
                f"trial {ctx.trial_id} had {ctx.epochs_done} epoch(s) trained (promoted, or resumed "
                "after its worker was lost), but this Trainer starts at epoch 0 and trains them "
                "again: use lm.Trainer, or pass ckpt_path=lm.current_trial().ckpt_path to fit().",
                stacklevel=2,
            )
        if ctx is not None and ctx.rungs is not None:
            message = unvalidated_epochs_error(trainer, ctx.rungs)
            if message is not None:  # a ConfigurationError ends the study with this message
                raise ConfigurationError(message)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        ctx = current_trial()
        if ctx is None or ctx.rungs is None:
            return
        message = validation_interval_error(
            getattr(trainer, "check_val_every_n_epoch", 1), ctx.rungs, "the trial's Trainer has"
        )
        if message is not None:  # a ConfigurationError ends the study with this message
            raise ConfigurationError(message)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._pending = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or getattr(trainer.state.fn, "value", trainer.state.fn) != "fit":
            return
        ctx = current_trial()
        if ctx is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "MaggyCallback is not running inside a lightning_maggy search, so it does "
                    "nothing; run the module through lightning_maggy.search(...) to optimize it.",
                    stacklevel=2,
                )
            return
        # Read now (the value of this validation); reported when the training epoch ends.
        self._pending = (trainer.current_epoch, self._read_metric(trainer))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Lightning runs an epoch's last validation before this hook, and this hook before
        # ModelCheckpoint's: the search's checkpoint of this epoch is written after the report.
        pending, self._pending = self._pending, None
        ctx = current_trial()
        if ctx is None or pending is None or pending[0] != trainer.current_epoch:
            return  # no validation in this epoch: nothing to report (check_val_every_n_epoch=2, ...)
        self._report(trainer, ctx, pending[1])

    def _report(self, trainer: Any, ctx: Any, value: float) -> None:
        # Waits for the answer (see TrialContext.report): this epoch's checkpoint, written next,
        # must never be ahead of the journal. About a third of a millisecond per epoch.
        # A Trainer that trains exactly the trial's budget, with callbacks that all allow it
        # (see promotes_in_place), can train on: where the server would pause the trial and
        # promote it next, it raises the budget instead (promotion in place).
        answer: tuple[str, int] | None = None
        if trainer.is_global_zero:
            extend = trainer.fit_loop.max_epochs == ctx.budget and promotes_in_place(trainer)
            try:
                answer = (ctx.report(trainer.current_epoch, value, wait=True, extend=extend).value, ctx.budget)
            except TrialDropped:
                answer = (_DROP, ctx.budget)
        decision, budget = trainer.strategy.broadcast(answer, src=0)
        if decision == _DROP:  # a stale attempt: stop at once, before any further checkpoint
            raise TrialDropped(f"trial {ctx.trial_id} attempt {ctx.attempt} dropped: {ctx.dropped}")
        if decision in (Decision.STOP.value, Decision.PAUSE.value):
            trainer.should_stop = True
        elif budget > trainer.fit_loop.max_epochs:
            trainer.fit_loop.max_epochs = budget

    def _read_metric(self, trainer: Any) -> float:
        metrics = trainer.callback_metrics
        if self.metric not in metrics:
            available = sorted(metrics)
            raise MetricNotFoundError(
                f"MaggyCallback is conditioned on metric {self.metric!r}, which is not available. "
                f"Available metrics are: {available}. Log it in validation_step or "
                f"on_validation_epoch_end with self.log({self.metric!r}, value), or pass one of "
                "the available names as metric=."
            )
        value = metrics[self.metric]
        return float(value.item() if hasattr(value, "item") else value)


def search_callbacks(callbacks: Any, metric: str) -> list[Any]:
    """The search's own callbacks for a trial's Trainer: a MaggyCallback on ``metric``, unless
    ``callbacks`` (the user's: None, one callback or a list) hold one already."""
    mine = any(isinstance(cb, MaggyCallback) for cb in callback_list(callbacks))
    return [] if mine else [MaggyCallback(metric)]


def _into_trial_dir(trainer: Any, trial_dir: str) -> None:
    """A Trainer the search did not build (a train function's own ``pl.Trainer``) writes into
    the current directory by default, where concurrent trials would share
    ``lightning_logs/version_0``: its default root and the loggers rooted there move into the
    trial's folder. Lightning creates the loggers' writers just before this hook, so a writer
    that has written nothing yet is closed and re-created there (its empty directory removed).
    Paths the user chose are kept; a logger that does not fit this pattern is left as it is."""
    cwd = os.path.normpath(os.getcwd())
    if os.path.normpath(str(trainer.default_root_dir)) != cwd:
        return
    trainer._default_root_dir = trial_dir
    for logger in trainer.loggers:
        root = getattr(logger, "_root_dir", None)
        if root is None or os.path.normpath(str(root)) != cwd or not hasattr(logger, "_experiment"):
            continue
        old_dir = None
        if logger._experiment is not None:
            old_dir = getattr(logger, "log_dir", None)
            close = getattr(logger._experiment, "close", None)
            if callable(close):
                close()
            logger._experiment = None
        logger._root_dir = trial_dir
        if hasattr(logger, "_version"):
            logger._version = None
        if old_dir:
            _remove_unused(str(old_dir), stop=cwd)


def _remove_unused(log_dir: str, stop: str) -> None:
    """Removes ``log_dir`` if it holds nothing but empty TensorBoard event files (a writer
    that was opened and closed), then its parents up to ``stop`` while they are empty."""
    import contextlib

    try:
        names = os.listdir(log_dir)
    except OSError:
        return
    for name in names:
        path = os.path.join(log_dir, name)
        if not (name.startswith("events.out.tfevents.") and os.path.getsize(path) < 1024):
            return
    for name in names:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(log_dir, name))
    path = log_dir
    while os.path.normpath(path) != stop and os.path.normpath(path).startswith(stop + os.sep):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)
