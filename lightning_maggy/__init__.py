"""lightning_maggy: asynchronous, distributed hyperparameter search for PyTorch Lightning.

The public surface is ``__all__``. Names that need torch or Lightning (``search``,
``MaggyCallback``, ...) are imported on first use, so that the pure parts -- search spaces,
optimizers, early-stop rules -- import without them.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_maggy.ablation import AblationStudy, ablatable
from lightning_maggy.earlystop import AbstractEarlyStop, CurvePredictionRule, MedianStoppingRule, NoEarlyStop
from lightning_maggy.exceptions import (
    AblationError,
    ConfigurationError,
    EarlyStopException,
    ExperimentError,
    MaggyError,
    MetricNotFoundError,
    SearchspaceError,
)
from lightning_maggy.optimizers import ASHA, IDLE, AbstractOptimizer, GridSearch, Hyperband, RandomSearch
from lightning_maggy.searchspace import Categorical, Discrete, Double, Integer, Searchspace
from lightning_maggy.trial import Decision, Trial, TrialState

__version__ = "0.1.0"

_LAZY = {
    "search": "lightning_maggy.experiment",
    "SearchResult": "lightning_maggy.experiment",
    "ablate": "lightning_maggy.ablation.api",
    "AblationResult": "lightning_maggy.ablation.result",
    "MaggyCallback": "lightning_maggy.lightning.callback",
    "Trainer": "lightning_maggy.lightning.wrapper",
    "Reporter": "lightning_maggy.lightning.context",
    "current_trial": "lightning_maggy.lightning.context",
    "prewarm": "lightning_maggy.backends.local",
    "GP": "lightning_maggy.optimizers.gp",
    "TPE": "lightning_maggy.optimizers.optuna_sampler",
    "OptunaSampler": "lightning_maggy.optimizers.optuna_sampler",
    "BOHB": "lightning_maggy.optimizers.bohb",
    "Curves": "lightning_maggy.simulator",
    "simulate": "lightning_maggy.simulator",
}

__all__ = [
    "ASHA",
    "AblationError",
    "AblationResult",
    "AblationStudy",
    "BOHB",
    "GP",
    "IDLE",
    "AbstractEarlyStop",
    "AbstractOptimizer",
    "Categorical",
    "ConfigurationError",
    "CurvePredictionRule",
    "Curves",
    "Decision",
    "Discrete",
    "Double",
    "EarlyStopException",
    "ExperimentError",
    "GridSearch",
    "Hyperband",
    "Integer",
    "MaggyCallback",
    "MaggyError",
    "MedianStoppingRule",
    "MetricNotFoundError",
    "NoEarlyStop",
    "OptunaSampler",
    "RandomSearch",
    "Reporter",
    "SearchResult",
    "Searchspace",
    "SearchspaceError",
    "TPE",
    "Trainer",
    "Trial",
    "TrialState",
    "__version__",
    "ablatable",
    "ablate",
    "current_trial",
    "prewarm",
    "search",
    "simulate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_maggy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
