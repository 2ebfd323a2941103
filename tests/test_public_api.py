"""The public surface is small and explicit: this test pins it."""

from __future__ import annotations

import lightning_maggy as lm

EXPECTED = {
    "ASHA", "BOHB", "GP", "IDLE", "OptunaSampler", "TPE", "AbstractEarlyStop", "AbstractOptimizer", "Categorical",
    "ConfigurationError", "CurvePredictionRule",
    "Decision", "Discrete", "Double", "EarlyStopException", "ExperimentError", "GridSearch", "Hyperband",
    "Integer", "MaggyCallback", "MaggyError", "Trainer", "MedianStoppingRule", "MetricNotFoundError",
    "NoEarlyStop", "RandomSearch", "Reporter", "SearchResult", "Searchspace", "SearchspaceError",
    "Trial", "TrialState", "__version__", "current_trial", "prewarm", "search",
    "AblationError", "AblationResult", "AblationStudy", "ablatable", "ablate", "Curves", "simulate",
}


def test_all_is_pinned_and_every_name_resolves():
    assert set(lm.__all__) == EXPECTED
    for name in lm.__all__:
        assert getattr(lm, name) is not None


def test_errors_share_one_tree_and_the_stdlib_bases():
    for cls in (lm.ConfigurationError, lm.SearchspaceError, lm.ExperimentError, lm.EarlyStopException, lm.AblationError):
        assert issubclass(cls, lm.MaggyError)
    assert issubclass(lm.ConfigurationError, ValueError) and issubclass(lm.SearchspaceError, ValueError)
    assert issubclass(lm.MetricNotFoundError, KeyError)
