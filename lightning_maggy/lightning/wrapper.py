"""``lm.Trainer``: the trainer wrapper for users who write their own train function.

Inside a search it is the Trainer the search would build for a module class: it adds
:class:`~lightning_maggy.lightning.callback.MaggyCallback`, trains the trial's epoch budget,
checkpoints (fenced, ``checkpoints/last.ckpt``) and logs into the trial's folder, and its
``fit`` resumes a promoted or re-queued trial from that checkpoint. Outside a search it is a
plain Trainer. It is built at the first ``fit`` / ``validate`` / ``test`` / ``predict``, in the
Lightning namespace of the module it is given (``pytorch_lightning`` or ``lightning.pytorch``),
and then behaves as that Trainer (every attribute is the real Trainer's).
"""

from __future__ import annotations

from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = ["Trainer"]

_BUILDERS = ("fit", "validate", "test", "predict")


class Trainer:
    """A Lightning Trainer that knows the search it runs in (see the module docstring).

    Args:
        metric: the metric to report inside a search; default: the search's ``metric``.
        **trainer_kwargs: the Trainer's arguments, as for ``pl.Trainer``. Inside a search,
            ``max_epochs`` is the trial's budget (a ``max_epochs`` given here is ignored there),
            and the defaults put checkpoints and logs in the trial's folder; ``callbacks`` are
            added to ours.

    Example::

        def train(hparams):
            trainer = lm.Trainer(max_epochs=9, accelerator="auto")
            trainer.fit(MyModule(**hparams), datamodule=MyDataModule())

        lm.search(train, space, metric="val_acc", optimizer="asha", max_epochs=9, num_trials=27)
    """

    def __init__(self, *, metric: str | None = None, **trainer_kwargs: Any) -> None:
        if "ckpt_path" in trainer_kwargs:
            raise ConfigurationError("ckpt_path is an argument of fit(), not of the Trainer.")
        self.__dict__["_metric"] = metric
        self.__dict__["_kwargs"] = trainer_kwargs
        self.__dict__["_trainer"] = None
        self.__dict__["_ctx"] = None

    def _build(self, module: Any) -> Any:
        if self._trainer is not None:
            return self._trainer
        from lightning_maggy.lightning.callback import MaggyCallback
        from lightning_maggy.lightning.context import current_trial
        from lightning_maggy.lightning.namespace import namespace_of
        from lightning_maggy.lightning.trainer import build_trainer

        ctx = current_trial()
        kwargs = dict(self._kwargs)
        if ctx is None:
            trainer = namespace_of(module).Trainer(**kwargs)
        else:
            kwargs.pop("max_epochs", None)  # the trial's budget decides
            user = list(kwargs.get("callbacks") or [])
            ours = [] if any(isinstance(cb, MaggyCallback) for cb in user) else [MaggyCallback(self._metric or ctx.metric)]
            trainer = build_trainer(
                module, trial_dir=ctx.trial_dir, budget=ctx.budget, callbacks=ours, trainer_kwargs=kwargs,
                attempt=ctx.attempt, publish=ctx.publish, resumed=ctx.resuming,
            )
        self.__dict__["_trainer"] = trainer
        self.__dict__["_ctx"] = ctx
        return trainer

    def fit(self, model: Any, *args: Any, ckpt_path: Any = None, **kwargs: Any) -> Any:
        """``Trainer.fit``; inside a search, a promoted or re-queued trial resumes from its
        checkpoint unless ``ckpt_path`` is given."""
        trainer = self._build(model)
        ctx = self._ctx
        if ctx is not None and ckpt_path is None and ctx.resuming:
            ckpt_path = ctx.last_ckpt
        return trainer.fit(model, *args, ckpt_path=ckpt_path, **kwargs)

    def validate(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self._build(model).validate(model, *args, **kwargs)

    def test(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self._build(model).test(model, *args, **kwargs)

    def predict(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self._build(model).predict(model, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only called for what this wrapper lacks: the real Trainer's attributes.
        return getattr(self._build(None), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._build(None), name, value)

    def __repr__(self) -> str:
        state = "not built yet" if self._trainer is None else repr(self._trainer)
        return f"lightning_maggy.Trainer({state})"
