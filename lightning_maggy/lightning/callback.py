"""``MaggyCallback``: the thin adapter between a Lightning Trainer and the optimization server.

Hook fires -> read the metric -> report it -> act on the reply (``trainer.should_stop``). It
holds no search logic. Under DDP only global rank 0 talks to the server and the decision is
broadcast through ``trainer.strategy``.
"""

from __future__ import annotations

import warnings
from typing import Any

from lightning_maggy.exceptions import ConfigurationError, MetricNotFoundError, TrialDropped
from lightning_maggy.lightning.context import current_trial
from lightning_maggy.lightning.namespace import available_namespaces
from lightning_maggy.trial import Decision
from lightning_maggy.validation import validation_interval_error

__all__ = ["MaggyCallback"]

_DROP = "drop"  # broadcast to every rank when the server refused rank 0's report

# A subclass of both namespaces' Callback, so a Trainer from either accepts it.
_BASES: tuple[type, ...] = tuple(ns.Callback for ns in available_namespaces()) or (object,)


class MaggyCallback(*_BASES):  # type: ignore[misc]
    """Reports ``metric`` to the search after every validation epoch and obeys the answer.

    Inside a search, the server answers CONTINUE, STOP (early stop) or PAUSE (an ASHA rung is
    reached; the trial may later resume from its checkpoint); STOP and PAUSE set
    ``trainer.should_stop``. When the server answers that this worker's attempt at the trial is
    stale, the callback raises :class:`~lightning_maggy.exceptions.TrialDropped` on every rank,
    which ends ``fit`` before another checkpoint is written. Outside a search the callback does nothing but warn once, so the
    same training script runs standalone.

    Args:
        metric: the name logged with ``self.log(...)`` in validation, e.g. ``"val_acc"``.
    """

    def __init__(self, metric: str) -> None:
        super().__init__()
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"MaggyCallback(metric={metric!r}): metric must be a non-empty str, e.g. 'val_acc'.")
        self.metric = metric
        self._warned = False

    @property
    def state_key(self) -> str:
        return f"MaggyCallback[metric={self.metric}]"

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        ctx = current_trial()
        if ctx is None or ctx.rungs is None:
            return
        message = validation_interval_error(
            getattr(trainer, "check_val_every_n_epoch", 1), ctx.rungs, "the trial's Trainer has"
        )
        if message is not None:  # a ConfigurationError ends the study with this message
            raise ConfigurationError(message)

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
        value = self._read_metric(trainer)
        # Waits for the answer (see TrialContext.report): this epoch's checkpoint, written next,
        # must never be ahead of the journal. About a third of a millisecond per epoch.
        decision = None
        if trainer.is_global_zero:
            try:
                decision = ctx.report(trainer.current_epoch, value, wait=True).value
            except TrialDropped:
                decision = _DROP
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision == _DROP:  # a stale attempt: stop at once, before any further checkpoint
            raise TrialDropped(f"trial {ctx.trial_id} attempt {ctx.attempt} dropped: {ctx.dropped}")
        if decision in (Decision.STOP.value, Decision.PAUSE.value):
            trainer.should_stop = True

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
