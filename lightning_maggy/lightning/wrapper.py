"""``lm.Trainer``: the trainer wrapper for users who write their own train function.

Inside a search it is the Trainer the search would build for a module class: it adds
:class:`~lightning_maggy.lightning.callback.MaggyCallback`, trains the trial's epoch budget,
checkpoints (fenced, ``checkpoints/last.ckpt``) and logs into the trial's folder, and its
``fit`` resumes a promoted or re-queued trial from that checkpoint. Outside a search it is a
plain Trainer. It is built at the first ``fit`` / ``validate`` / ``test`` / ``predict``, in the
Lightning namespace of the module it is given (``pytorch_lightning`` or ``lightning.pytorch``),
and then behaves as that Trainer (every attribute is the real Trainer's).

An attribute read or set before that needs a Trainer already: it is built for the namespace the
caller's code uses (:func:`~lightning_maggy.lightning.namespace.guess_namespace`: the only one
imported, else the one of the LightningModule or ``L``/``pl`` in the caller's scope). When the
first module given is of the other namespace after all, the Trainer is built again for it from
the same arguments, and the attributes set through the wrapper are set on it again.
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType
from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = ["Trainer"]


class Trainer:
    """A Lightning Trainer that knows the search it runs in (see the module docstring).

    Args:
        metric: the metric to report inside a search; default: the search's ``metric``.
        **trainer_kwargs: the Trainer's arguments, as for ``pl.Trainer``. Inside a search,
            ``max_epochs`` is the trial's budget (a ``max_epochs`` given here is ignored there),
            and the defaults put checkpoints and logs in the trial's folder; ``callbacks`` (one
            callback or a list, as Lightning takes them) are added to ours.

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
        self.__dict__["_settled"] = False  # built for a module: never rebuilt
        self.__dict__["_assigned"] = {}  # set through the wrapper before that: kept on a rebuild
        self.__dict__["_read"] = []  # read through the wrapper before that

    def _build(self, module: Any, depth: int = 2) -> Any:
        """The real Trainer: built for ``module``'s namespace, or, with no module (an attribute
        used before ``fit``, ``validate(None)``), for :func:`guess_namespace`'s from the frame
        ``depth`` levels up (the user's code). A Trainer built on a guess is rebuilt, from the
        same arguments and with the attributes set since re-applied, when the first module
        given is of the other namespace."""
        from lightning_maggy.lightning.namespace import guess_namespace, namespace_of

        trainer = self._trainer
        if trainer is not None and (self._settled or module is None):
            return trainer
        if module is not None:
            ns = namespace_of(module)
        else:
            frame = sys._getframe(depth)
            ns = guess_namespace(frame.f_locals, frame.f_globals)
        if trainer is None or namespace_of(trainer) is not ns:
            if trainer is not None:
                _warn_rebuilt(trainer, ns, self._read, self._assigned)
            trainer = self._make(ns, module)
            for name, value in self._assigned.items():
                setattr(trainer, name, value)
            self.__dict__["_trainer"] = trainer
        if module is not None:  # never rebuilt from now on
            self.__dict__.update(_settled=True, _assigned={}, _read=[])
        return trainer

    def _make(self, ns: ModuleType, module: Any) -> Any:
        from lightning_maggy.lightning.context import current_trial

        ctx = current_trial()
        self.__dict__["_ctx"] = ctx
        kwargs = dict(self._kwargs)
        if ctx is None:
            return ns.Trainer(**kwargs)
        # Imports both namespaces (MaggyCallback fits either): only inside a search.
        from lightning_maggy.lightning.callback import search_callbacks
        from lightning_maggy.lightning.trainer import build_trainer

        kwargs.pop("max_epochs", None)  # the trial's budget decides
        ours = search_callbacks(kwargs.get("callbacks"), self._metric or ctx.metric)
        return build_trainer(
            # build_trainer picks the namespace the module derives from; before one is given, the
            # guessed namespace's LightningModule class stands for it.
            module if module is not None else ns.LightningModule,
            trial_dir=ctx.trial_dir, budget=ctx.budget, callbacks=ours, trainer_kwargs=kwargs,
            attempt=ctx.attempt, publish=ctx.publish, resumed=ctx.resuming,
        )

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
        # Only called for what this wrapper lacks: the real Trainer's attributes. Special names
        # (copy's __deepcopy__, IPython's _repr_html_) are not the Trainer's: no build for them.
        if name.startswith(("__", "_repr_", "_ipython_")):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        trainer = self._build(None)
        if not self._settled:
            self._read.append(name)
        return getattr(trainer, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._build(None), name, value)
        if not self._settled:
            self._assigned[name] = value

    def __repr__(self) -> str:
        state = "not built yet" if self._trainer is None else repr(self._trainer)
        return f"lightning_maggy.Trainer({state})"


def _warn_rebuilt(old: Any, ns: ModuleType, read: list[str], assigned: dict[str, Any]) -> None:
    """Says what a rebuild in the module's namespace keeps, when the user had read attributes of
    the Trainer built on a guess (what they did with the objects read, it cannot carry over)."""
    if not read:
        return
    from lightning_maggy.lightning.namespace import namespace_of

    names = ", ".join(dict.fromkeys(read))
    warnings.warn(
        f"lm.Trainer: attributes ({names}) were read before fit from a {namespace_of(old).__name__} "
        f"Trainer, and the module given is a {ns.__name__} one, so the Trainer was built again for it "
        f"from the same arguments{' and the attributes set since' if assigned else ''}; what was done "
        "to objects read from the first one (a logger's log_hyperparams, callbacks.append) is lost. "
        "Create the module before reading them, in the same function, or read them after fit.",
        UserWarning,
        stacklevel=4,
    )
