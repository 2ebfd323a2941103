"""Any Optuna sampler as an optimizer, and TPE.

Optuna: Akiba, Sano, Yanase, Ohta, Koyama: "Optuna: A Next-generation Hyperparameter
Optimization Framework", KDD 2019. TPE: Bergstra, Bardenet, Bengio, Kegl: "Algorithms for
Hyper-Parameter Optimization", NeurIPS 2011; Watanabe: "Tree-Structured Parzen Estimator:
Understanding Its Algorithm Components and Their Roles for Better Empirical Performance",
arXiv:2304.11127, 2023 (multivariate kernels, the constant liar for parallel runs).

Optuna is imported inside functions only, so this module imports without it; the optimizers
check at construction that it is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Union

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.model_based import ModelBasedOptimizer, Observations, Proposer, require_modules
from lightning_maggy.searchspace import Categorical, Discrete, Double, Integer, Searchspace
from lightning_maggy.trial import trial_id_for

__all__ = ["TPE", "OptunaSampler", "optuna_distributions", "propose_optuna"]

#: An Optuna sampler, or a function ``seed -> sampler`` that builds a fresh one.
SamplerSpec = Union[Any, Callable[[int], Any]]

#: Asks per proposal before giving up on finding a configuration no trial has.
_MAX_ASKS = 8


def optuna_distributions(space: Searchspace) -> dict[str, Any]:
    """The Optuna distribution of every hyperparameter: ``FloatDistribution`` (Double, with
    ``log``), ``IntDistribution`` (Integer, with ``log``), ``CategoricalDistribution``
    (Discrete and Categorical)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict[str, Any] = {}
    for name, hp in space.items():
        if isinstance(hp, Double):
            dists[name] = FloatDistribution(hp.low, hp.high, log=hp.log)
        elif isinstance(hp, Integer):
            dists[name] = IntDistribution(hp.low, hp.high, log=hp.log)
        else:
            assert isinstance(hp, (Discrete, Categorical))
            dists[name] = CategoricalDistribution(list(hp.values))
    return dists


def propose_optuna(obs: Observations, sampler: SamplerSpec) -> list[dict[str, Any]]:
    """Rebuilds an in-memory Optuna study from the snapshot and asks ``sampler`` for a trial.

    Observations become COMPLETE trials, failures FAIL trials and pending configurations
    RUNNING trials (which TPE's constant liar and other samplers take into account), in record
    order. ``study.ask`` is repeated (the asked trials stay RUNNING) until it proposes a
    configuration no trial has, at most 8 times; returns [] if it never does.

    Args:
        obs: the snapshot.
        sampler: an Optuna sampler (used as is), or ``seed -> sampler`` (called with
            ``obs.seed``, so the proposal depends on the snapshot alone).
    """
    import optuna
    from optuna.trial import TrialState as OptunaState
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    instance = sampler if isinstance(sampler, optuna.samplers.BaseSampler) else sampler(obs.seed)
    study = optuna.create_study(
        sampler=instance,
        direction="maximize" if obs.direction == "max" else "minimize",
        storage=optuna.storages.InMemoryStorage(),
    )
    dists = optuna_distributions(obs.space)
    records = [
        create_trial(params=dict(c), distributions=dists, value=v, state=OptunaState.COMPLETE)
        for c, v in obs.observed
    ]
    records += [create_trial(params=dict(c), distributions=dists, state=OptunaState.FAIL) for c in obs.failed]
    records += [create_trial(params=dict(c), distributions=dists, state=OptunaState.RUNNING) for c in obs.pending]
    study.add_trials(records)
    for _ in range(_MAX_ASKS):
        trial = study.ask(dists)
        config = {name: trial.params[name] for name in obs.space.names()}
        if trial_id_for(config) not in obs.known:
            return [config]
    return []


class OptunaSampler(ModelBasedOptimizer):
    """Any Optuna sampler (Akiba et al. 2019) as an optimizer, through ask and tell.

    For each new trial, an in-memory Optuna study is rebuilt from the trial records (finished
    trials as COMPLETE, failed ones as FAIL, running, paused and pending ones as RUNNING) and the
    sampler is asked for the next configuration (:func:`propose_optuna`). The sampler does its
    own initial design (e.g. TPE's ``n_startup_trials``). The search space maps to Optuna's
    ``FloatDistribution``/``IntDistribution`` (with ``log``) and ``CategoricalDistribution``
    (Discrete and Categorical). Every trial trains ``max_epochs``.

    Trial outcomes (see :mod:`~lightning_maggy.optimizers.model_based`): COMPLETED and STOPPED
    trials with a finite value are COMPLETE (a STOPPED trial with the value it was stopped at);
    FAILED trials and NaN values are FAIL (no value; never proposed again).

    Reproducibility: pass ``sampler`` as a function ``seed -> sampler`` (as :class:`TPE` does):
    each proposal then uses a fresh sampler seeded from ``(seed, number of records)`` over a
    study rebuilt from the records, so a fresh optimizer over the same records proposes the
    same configuration. A sampler *instance* is used as it is (its own seed and internal state),
    which is reproducible only for the same sequence of proposals in one process.

    The ask runs in a :class:`~lightning_maggy.optimizers.base.Job` (under a controller on its
    background thread, called directly inline).

    Args:
        sampler: an ``optuna.samplers.BaseSampler``, or a function ``seed -> BaseSampler``.
        seed: the seed passed (derived per proposal) to a sampler function; None takes the
            experiment's seed.

    Raises:
        ConfigurationError: when optuna is not installed (``pip install
            'lightning_maggy[bo]'``) or ``sampler`` is neither a sampler nor callable.

    Example::

        import optuna
        opt = lm.OptunaSampler(lambda seed: optuna.samplers.GPSampler(seed=seed))
    """

    model_name = "optuna"

    def __init__(self, sampler: SamplerSpec, seed: int | None = None) -> None:
        require_modules(type(self).__name__, "optuna")
        import optuna

        if not isinstance(sampler, optuna.samplers.BaseSampler) and not callable(sampler):
            raise ConfigurationError(
                f"{type(self).__name__}(sampler={sampler!r}): expected an optuna sampler (e.g. "
                "optuna.samplers.TPESampler()) or a function seed -> sampler."
            )
        super().__init__(seed=seed, n_initial=0)
        self.sampler = sampler

    def _proposer(self) -> Proposer:
        return functools.partial(propose_optuna, sampler=self.sampler)


def tpe_sampler(seed: int, options: Mapping[str, Any]) -> Any:
    """``optuna.samplers.TPESampler(seed=seed, **options)``."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, **options)


class TPE(OptunaSampler):
    """The tree-structured Parzen estimator (Bergstra et al. 2011) as Optuna implements it
    (Watanabe 2023): ``TPESampler(multivariate=True, constant_liar=True)``.

    TPE splits the observations into the best ``gamma`` fraction and the rest, fits a Parzen
    (kernel density) estimator l(x) to the good and g(x) to the bad ones, and proposes the
    candidate with the largest l(x)/g(x) among ``n_ei_candidates`` drawn from l(x).
    ``multivariate=True`` models the dimensions jointly; ``constant_liar=True`` gives running
    trials the worst value seen, so that parallel workers are not proposed the same region.

    Args:
        seed: seed of the per-proposal samplers (see :class:`OptunaSampler`); None takes the
            experiment's seed.
        **tpe_options: more ``optuna.samplers.TPESampler`` arguments, e.g. ``n_startup_trials``
            (default 10; random proposals before the model), ``n_ei_candidates`` (default 24),
            ``gamma``; they override ``multivariate=True, constant_liar=True``.

    Example::

        lm.search(MyModule, space, metric="val_acc", optimizer=lm.TPE(n_startup_trials=5), ...)
    """

    model_name = "tpe"

    def __init__(self, seed: int | None = None, **tpe_options: Any) -> None:
        require_modules("TPE", "optuna")
        import inspect

        import optuna

        accepted = set(inspect.signature(optuna.samplers.TPESampler).parameters) - {"seed"}
        unknown = sorted(set(tpe_options) - accepted)
        if unknown:
            raise ConfigurationError(
                f"TPE: unknown option(s) {unknown}; TPESampler accepts {sorted(accepted)}."
            )
        options = {"multivariate": True, "constant_liar": True, **tpe_options}
        self.tpe_options = options
        super().__init__(functools.partial(tpe_sampler, options=options), seed=seed)
