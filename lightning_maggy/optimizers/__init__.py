"""Optimizers: pure decision objects that choose which configuration to train next.

Use one by name (``get_optimizer("asha")``) or pass an instance. Write your own by subclassing
:class:`AbstractOptimizer`.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.asha import ASHA
from lightning_maggy.optimizers.base import IDLE, AbstractOptimizer, Idle, Job
from lightning_maggy.optimizers.grid_search import GridSearch
from lightning_maggy.optimizers.hyperband import Hyperband
from lightning_maggy.optimizers.random_search import RandomSearch

__all__ = [
    "ASHA",
    "BOHB",
    "GP",
    "IDLE",
    "TPE",
    "AbstractOptimizer",
    "GridSearch",
    "Hyperband",
    "Idle",
    "Job",
    "OptunaSampler",
    "RandomSearch",
    "get_optimizer",
]

#: Model-based optimizers, imported on first use (their modules import nothing heavy at import
#: time either; torch, BoTorch and Optuna are imported when a model is fitted).
_LAZY = {
    "GP": "lightning_maggy.optimizers.gp",
    "TPE": "lightning_maggy.optimizers.optuna_sampler",
    "OptunaSampler": "lightning_maggy.optimizers.optuna_sampler",
    "BOHB": "lightning_maggy.optimizers.bohb",
}

#: Names accepted by :func:`get_optimizer` (the original Maggy's names are aliases).
_OPTIMIZERS: dict[str, type[AbstractOptimizer]] = {
    "random": RandomSearch,
    "randomsearch": RandomSearch,
    "grid": GridSearch,
    "gridsearch": GridSearch,
    "asha": ASHA,
    "hyperband": Hyperband,
}
#: Names of the lazily imported optimizers accepted by :func:`get_optimizer`.
_LAZY_NAMES = {"gp": "GP", "tpe": "TPE", "bohb": "BOHB"}
_PRIMARY = ("random", "grid", "asha", "hyperband", "gp", "tpe", "bohb")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_maggy.optimizers' has no attribute {name!r}")


def get_optimizer(name_or_obj: str | AbstractOptimizer | type[AbstractOptimizer], **kwargs: Any) -> AbstractOptimizer:
    """The optimizer that ``name_or_obj`` names.

    Args:
        name_or_obj: "random", "grid", "asha", "hyperband", "gp", "tpe" or "bohb"
            (case-insensitive; "randomsearch" and "gridsearch" also work), an :class:`AbstractOptimizer` instance (returned as is), or
            an :class:`AbstractOptimizer` subclass (instantiated with ``kwargs``).
        **kwargs: constructor arguments, e.g. ``get_optimizer("asha", reduction_factor=2)``.

    Raises:
        ConfigurationError: for an unknown name or object, or arguments the optimizer rejects.
    """
    if isinstance(name_or_obj, AbstractOptimizer):
        if kwargs:
            raise ConfigurationError(
                f"get_optimizer({name_or_obj!r}, {', '.join(kwargs)}=...): keyword arguments are "
                "only used with a name or a class; configure the instance directly instead."
            )
        return name_or_obj
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, AbstractOptimizer):
        return _instantiate(name_or_obj, name_or_obj.__name__, kwargs)
    if isinstance(name_or_obj, str):
        key = name_or_obj.strip().lower()
        if key in _OPTIMIZERS:
            return _instantiate(_OPTIMIZERS[key], repr(name_or_obj), kwargs)
        if key in _LAZY_NAMES:
            return _instantiate(__getattr__(_LAZY_NAMES[key]), repr(name_or_obj), kwargs)
    raise ConfigurationError(
        f"Unknown optimizer {name_or_obj!r}; choose one of {list(_PRIMARY)}, or pass "
        "an AbstractOptimizer instance or subclass."
    )


def _instantiate(cls: type[AbstractOptimizer], label: str, kwargs: dict[str, Any]) -> AbstractOptimizer:
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"Optimizer {label}: cannot create {cls.__name__}(**{kwargs!r}): {exc}") from exc
