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
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from lightning_maggy.exceptions import ConfigurationError, SearchspaceError
from lightning_maggy.optimizers.model_based import (
    ModelBasedOptimizer,
    Observations,
    Proposal,
    Proposer,
    require_modules,
)
from lightning_maggy.searchspace import Categorical, Discrete, Double, Integer, Searchspace
from lightning_maggy.trial import trial_id_for

__all__ = ["STATE_KEY", "TPE", "OptunaSampler", "optuna_distributions", "optuna_proposal", "propose_optuna"]

#: An Optuna sampler, or a function ``seed -> sampler`` that builds a fresh one.
SamplerSpec = Union[Any, Callable[[int], Any]]

#: Asks per proposal before giving up on finding a configuration no trial has.
_MAX_ASKS = 8

#: The ``trial.info`` key of the sampler state an ask left in the Optuna study.
STATE_KEY = "optuna"

#: Trial system attributes that only copy the trial's parameters (for other processes).
_REDUNDANT = re.compile(r"(tpe|gp):relative_params:\d+$")


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
    """The candidates of :func:`optuna_proposal` over ``obs`` alone (no replayed sampler state):
    ``[config]``, or [] if the sampler proposed no configuration that no trial has."""
    return [dict(c) for c in optuna_proposal(obs, sampler).candidates]


def optuna_proposal(
    obs: Observations,
    sampler: SamplerSpec,
    history: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
    sequence_seed: int | None = None,
) -> Proposal:
    """Rebuilds an in-memory Optuna study from the snapshot and asks ``sampler`` for a trial.

    Observations become COMPLETE trials, failures FAIL trials and pending configurations
    RUNNING trials (which TPE's constant liar and other samplers take into account): in the
    order of ``history``, else observed, failed, pending, each in record order. The sampler
    state an earlier ask left (``history``) is replayed: a trial's system attributes (e.g.
    GridSampler's ``grid_id``, NSGA-II's generation) with its record, the study's (e.g.
    QMCSampler's sample counter) on the study. ``study.ask`` is repeated (the asked trials stay
    RUNNING) until it proposes a configuration no trial has, at most 8 times; for a sampler
    whose proposals are restricted by design (GridSampler, BruteForceSampler) until it repeats
    one it proposed in this call (it has nothing new left), and then the proposal forbids the
    random fallback.

    Args:
        obs: the snapshot.
        sampler: an Optuna sampler (used as is), or ``seed -> sampler``, called with
            ``obs.seed`` (so the proposal depends on the snapshot alone), or with
            ``sequence_seed`` for a sampler that walks one fixed sequence (QMCSampler,
            GridSampler), so that every proposal continues the same sequence.
        history: ``(trial_id, state)`` of every record in record order, ``state`` being
            ``trial.info["optuna"]`` (None when it has none).
        sequence_seed: see ``sampler``; None: ``obs.seed``.

    Returns:
        A :class:`~lightning_maggy.optimizers.model_based.Proposal` with at most one candidate;
        its ``infos`` and ``fallback_info`` hold the state to keep under ``trial.info["optuna"]``.

    Raises:
        ConfigurationError: a restricted sampler proposed a configuration outside the search
            space.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    instance = _sampler_instance(sampler, obs.seed, sequence_seed)
    restricted = isinstance(instance, _restricted_samplers())
    study, storage, study_id = _rebuilt_study(obs, instance, history)
    before = dict(storage.get_study_system_attrs(study_id))
    if restricted:  # its "grid exhausted, re-evaluating" warnings are how it says it is done
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = optuna_distributions(obs.space)
    try:
        asked: set[str] = set()
        for _ in range(len(obs.known) + 1 if restricted else _MAX_ASKS):
            trial = study.ask(dists)
            config = {name: trial.params[name] for name in obs.space.names()}
            tid = trial_id_for(config)
            if restricted and tid in asked:
                break
            asked.add(tid)
            if tid in obs.known:
                continue
            if restricted:
                _check_inside(instance, config, obs.space)
            study_state = _changed(before, storage.get_study_system_attrs(study_id))
            key = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            return Proposal(
                candidates=(config,),
                infos=(_state(storage.get_trial_system_attrs(key), study_state),),
                fallback_info=_state({}, study_state),
                random_fallback=not restricted,
            )
        study_state = _changed(before, storage.get_study_system_attrs(study_id))
        return Proposal(fallback_info=_state({}, study_state), random_fallback=not restricted)
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _rebuilt_study(
    obs: Observations, instance: Any, history: Sequence[tuple[str, Mapping[str, Any] | None]]
) -> tuple[Any, Any, int]:
    """The in-memory study of :func:`optuna_proposal`, its storage and study id."""
    import optuna
    from optuna.trial import TrialState as OptunaState
    from optuna.trial import create_trial

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        sampler=instance, direction="maximize" if obs.direction == "max" else "minimize", storage=storage
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    saved = {tid: state for tid, state in history if isinstance(state, Mapping)}
    for state in saved.values():  # in record order: a later record's value wins
        for key, value in _part(state, "study").items():
            storage.set_study_system_attr(study_id, key, value)
    dists = optuna_distributions(obs.space)

    def frozen(config: Mapping[str, Any], state: OptunaState, value: float | None = None) -> tuple[str, Any]:
        tid = trial_id_for(config)
        attrs = _part(saved.get(tid, {}), "trial")
        return tid, create_trial(params=dict(config), distributions=dists, value=value, state=state, system_attrs=attrs)

    records = dict(frozen(c, OptunaState.COMPLETE, v) for c, v in obs.observed)
    records.update(frozen(c, OptunaState.FAIL) for c in obs.failed)
    records.update(frozen(c, OptunaState.RUNNING) for c in obs.pending)
    order = dict.fromkeys(tid for tid, _ in history if tid in records)
    order.update(dict.fromkeys(records))
    study.add_trials([records[tid] for tid in order])
    return study, storage, study_id


def _sampler_instance(sampler: SamplerSpec, seed: int, sequence_seed: int | None) -> Any:
    import optuna

    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    instance = sampler(seed)
    if sequence_seed is not None and sequence_seed != seed and isinstance(instance, _sequence_samplers()):
        instance = sampler(sequence_seed)
    return instance


def _sequence_samplers() -> tuple[type, ...]:
    """Samplers whose seed fixes one sequence of proposals that the study state walks along."""
    import optuna

    return (optuna.samplers.QMCSampler, optuna.samplers.GridSampler)


def _restricted_samplers() -> tuple[type, ...]:
    """Samplers that propose only from a set the user gave and never at random beyond it."""
    import optuna

    return (optuna.samplers.GridSampler, optuna.samplers.BruteForceSampler)


def _check_inside(instance: Any, config: Mapping[str, Any], space: Searchspace) -> None:
    try:
        space.validate(config)
    except SearchspaceError as err:
        raise ConfigurationError(
            f"OptunaSampler: {type(instance).__name__} proposed {dict(config)!r}, which is outside "
            f"the search space ({err}); give the sampler only values the search space holds."
        ) from err


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able entries of ``attrs`` as they come back from the journal (tuples become
    lists), so that a rebuilt optimizer replays exactly what the running one does."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        try:
            out[str(key)] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return out


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The study system attributes the asks set (new or changed values)."""
    return {k: v for k, v in after.items() if k not in before or before[k] != v}


def _state(trial_attrs: Mapping[str, Any], study_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optuna": {"trial": ..., "study": ...}}`` without empty parts ({} when both are),
    leaving out the copies of the parameters Optuna keeps for other processes."""
    trial = _plain({k: v for k, v in trial_attrs.items() if not _REDUNDANT.match(k)})
    study = _plain(study_attrs)
    state = {name: part for name, part in (("trial", trial), ("study", study)) if part}
    return {STATE_KEY: state} if state else {}


def _part(state: Mapping[str, Any], part: str) -> dict[str, Any]:
    value = state.get(part)
    return dict(value) if isinstance(value, Mapping) else {}


class OptunaSampler(ModelBasedOptimizer):
    """Any Optuna sampler (Akiba et al. 2019) as an optimizer, through ask and tell.

    For each new trial, an in-memory Optuna study is rebuilt from the trial records (finished
    trials as COMPLETE, failed ones as FAIL, running, paused and pending ones as RUNNING, in
    record order) and the sampler is asked for the next configuration (:func:`optuna_proposal`).
    The sampler does its own initial design (e.g. TPE's ``n_startup_trials``). The search space
    maps to Optuna's ``FloatDistribution``/``IntDistribution`` (with ``log``) and
    ``CategoricalDistribution`` (Discrete and Categorical). Every trial trains ``max_epochs``.

    Trial outcomes (see :mod:`~lightning_maggy.optimizers.model_based`): COMPLETED and STOPPED
    trials with a finite value are COMPLETE (a STOPPED trial with the value it was stopped at);
    FAILED trials and NaN values are FAIL (no value; never proposed again).

    Samplers with state: what an ask stores in the Optuna study (QMCSampler's position in its
    sequence, GridSampler's grid point, NSGA-II's generation and parents) is kept with the trial
    it proposed, in ``trial.info["optuna"]``, and replayed into every rebuilt study; it is in
    the journal, so a resumed study continues the same sequence. A sampler that walks one fixed
    sequence (QMCSampler, GridSampler) built by a function gets the same seed for every proposal
    (this optimizer's seed) instead of a derived one, so its proposals are the sequence a
    single Optuna study with that seed gives. GridSampler and BruteForceSampler propose only
    from their grid or the space they enumerate: once they have nothing new, this optimizer is
    done (no random configurations beyond them). Other samplers that repeat known
    configurations 8 asks in a row get a random unknown configuration instead.

    Reproducibility: pass ``sampler`` as a function ``seed -> sampler`` (as :class:`TPE` does):
    each proposal then uses a fresh sampler seeded from ``(seed, number of records)`` over a
    study rebuilt from the records, so a fresh optimizer over the same records proposes the
    same configuration. The function must pass the seed on (``QMCSampler()`` without a seed
    draws a new sequence for every proposal). A sampler *instance* is used as it is (its own
    seed and internal state), which is reproducible only for the same sequence of proposals in
    one process (for QMCSampler and GridSampler, whose state is in the study: whenever the
    instance has the same seed).

    The ask runs in a :class:`~lightning_maggy.optimizers.base.Job` (under a controller on its
    background thread, called directly inline).

    Args:
        sampler: an ``optuna.samplers.BaseSampler``, or a function ``seed -> BaseSampler``.
        seed: the seed passed (derived per proposal, or as it is to QMCSampler and
            GridSampler) to a sampler function; None takes the experiment's seed.

    Raises:
        ConfigurationError: when optuna is not installed (``pip install
            'lightning_maggy[bo]'``) or ``sampler`` is neither a sampler nor callable; from a
            suggestion, when GridSampler or BruteForceSampler proposes a configuration outside
            the search space.

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
        history = tuple((tid, _saved_state(trial.info)) for tid, trial in self.trials.items())
        return functools.partial(
            optuna_proposal, sampler=self.sampler, history=history, sequence_seed=self._base_seed
        )


def _saved_state(info: Any) -> Mapping[str, Any] | None:
    state = info.get(STATE_KEY) if isinstance(info, Mapping) else None
    return state if isinstance(state, Mapping) else None


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
