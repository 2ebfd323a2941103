"""``ablate()``: a leave-one-component-out study in one call (a thin front door to the same study
runner as ``search()``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_maggy.ablation.components import AblationStudy
from lightning_maggy.ablation.planner import LOCO
from lightning_maggy.ablation.resolve import collect_components, is_plain_function, resolve_components, study_description
from lightning_maggy.ablation.result import AblationResult, build_rows, write_ablation
from lightning_maggy.earlystop import NoEarlyStop
from lightning_maggy.exceptions import ConfigurationError, ExperimentError
from lightning_maggy.runner import run_study
from lightning_maggy.validation import (
    check_metric,
    check_not_in_a_worker,
    check_run_settings,
    check_trainer_kwargs,
    normalize_direction,
    validate_module,
)

__all__ = ["FreshDataModules", "ablate"]


def _seeds(seeds: Any, seed: Any) -> list[int]:
    if isinstance(seeds, bool):
        raise ConfigurationError(f"seeds={seeds!r}: expected an int >= 1 or a list of distinct ints.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigurationError(
                f"seeds={seeds!r}: expected an int >= 1 (how many times every component runs, with "
                "the same seeds for all); e.g. seeds=3 for a confidence interval of each delta."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigurationError(f"seed={seed!r}: expected an int or None.")
        start = 0 if seed is None else int(seed)
        return [start + i for i in range(seeds)]
    if isinstance(seeds, Sequence) and not isinstance(seeds, str):
        if seed is not None:
            raise ConfigurationError(
                f"seed={seed!r} with seeds={seeds!r}: seed= is the first of seeds=k's k seeds; a "
                "list of seeds names every seed itself. Pass one or the other."
            )
        out = list(seeds)
        if not out or any(isinstance(s, bool) or not isinstance(s, int) for s in out) or len(set(out)) != len(out):
            raise ConfigurationError(f"seeds={seeds!r}: expected a non-empty list of distinct ints, e.g. [0, 1, 2].")
        return [int(s) for s in out]
    raise ConfigurationError(f"seeds={seeds!r}: expected an int >= 1 or a list of distinct ints.")


def _check_hparams(hparams: Any) -> dict[str, Any]:
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping) or not all(isinstance(k, str) for k in hparams):
        raise ConfigurationError(f"hparams={hparams!r}: expected a dict of keyword arguments for the module.")
    try:
        json.dumps(dict(hparams), allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(
            f"hparams={hparams!r}: every value must be plain JSON data (numbers, strings, bools, "
            f"lists, dicts), since it travels to the workers as JSON: {err}."
        ) from err
    return dict(hparams)


def _instance(datamodule: Any, hparams: Mapping[str, Any]) -> Any:
    from lightning_maggy.lightning.trainer import build_datamodule

    try:
        return build_datamodule(datamodule, hparams)
    except Exception as err:
        raise ConfigurationError(
            f"datamodule={datamodule!r} could not be built with hparams={dict(hparams)!r} to check "
            f"the study: {type(err).__name__}: {err}"
        ) from err


class FreshDataModules:
    """``datamodule=fn`` of an ablation study as the workers call it: ``fn(hparams)``, deep-copied.

    Every run of a study needs a DataModule no other run used, since a run that leaves features
    out changes its own (``drop_features``, the batch hook). A function may return one shared
    instance (``lambda hp: dm``, to load the data once); a copy of it keeps what one run changes
    out of the runs after it (the base trial's of the next seed among them). A DataModule that
    cannot be copied is used as the function returns it."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        # The user's module, not this one: the backends ship the module defining the
        # datamodule by value to workers that cannot import it.
        self.__module__ = getattr(fn, "__module__", None)

    def __call__(self, hparams: Mapping[str, Any]) -> Any:
        import copy

        built = self.fn(hparams)
        try:
            return copy.deepcopy(built)
        except Exception:
            return built

    def __repr__(self) -> str:
        return repr(self.fn)


def ablate(
    module_cls: type,
    study: AblationStudy | None = None,
    *,
    datamodule: Any = None,
    metric: str,
    max_epochs: int,
    hparams: Mapping[str, Any] | None = None,
    seeds: int | Sequence[int] = 1,
    direction: str = "max",
    backend: Any = "local",
    workers: int | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    exp_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    max_failures: int | None = None,
    max_retries: int = 3,
    heartbeat_timeout: float = 120.0,
    spark_master: str | None = None,
    spark_conf: Mapping[str, str] | None = None,
    verbose: bool = True,
    resume: str | os.PathLike[str] | None = None,
) -> AblationResult:
    """Runs a leave-one-component-out (LOCO) ablation study of a LightningModule.

    One base trial trains the full model; every component (declared with
    :func:`lightning_maggy.ablatable` on the module and DataModule, and/or included in ``study``)
    gets a trial of its own with that component left out. With ``seeds=k`` each of them runs k
    times with the same k seeds, so the difference to the base is a paired sample per seed; the
    result reports, per component, mean ± std, the mean paired delta and its 95% t interval.

    ``backend``, ``workers``, ``trainer_kwargs``, ``exp_dir``, ``timeout``, ``trial_timeout``,
    ``max_retries``, ``heartbeat_timeout``, ``spark_master``, ``spark_conf`` and ``verbose`` are
    as in :func:`lightning_maggy.search`.

    Args:
        module_cls: the LightningModule class, built per trial as ``module_cls(**hparams)`` (or
            ``module_cls(hparams=...)``).
        study: an :class:`AblationStudy` with more components (merged with the decorator's).
        datamodule: a LightningDataModule instance or class, or ``callable(hparams)``.
        metric: the logged metric compared across components.
        direction: "max" or "min": which way ``metric`` is better.
        max_epochs: epochs every trial trains.
        hparams: the fixed hyperparameters of every trial (plain JSON data).
        seeds: k (seeds ``seed, seed+1, ..., seed+k-1``; ``seed`` defaults to 0) or an explicit
            list of seeds. Each trial seeds Python, NumPy and torch with its seed.
        max_failures: the study stops after this many failed trials (default: never; a
            component that breaks the model fails its own trials only).
        resume: an experiment directory whose ablation study to continue after its driver
            died, as in :func:`lightning_maggy.search`: the components, seeds, hparams, metric,
            direction and max_epochs must be those it was started with.

    Returns:
        An :class:`~lightning_maggy.ablation.result.AblationResult`; ``exp_dir`` also holds
        ``ablation.csv`` and, with matplotlib installed, ``ablation.png``.

    Raises:
        ConfigurationError: before any worker starts, for a layer or prefix that matches no
            submodule, a feature the data does not declare, an empty study, ``seeds < 1``, a
            custom generator that does not return a LightningModule, or any bad argument.
        ExperimentError: the study was aborted; ``err.result`` holds the partial
            :class:`AblationResult`.
    """
    from lightning_maggy.lightning.namespace import is_lightning_module_class

    if not is_lightning_module_class(module_cls):
        raise ConfigurationError(
            f"ablate() expects a LightningModule class (it rewrites the instantiated module per "
            f"trial); got {module_cls!r}."
        )
    check_not_in_a_worker("ablate")
    check_metric(metric)
    direction = normalize_direction(direction)
    seed_list = _seeds(seeds, seed)
    hp = _check_hparams(hparams)
    check_run_settings(
        max_epochs=max_epochs, num_trials=None, workers=workers, max_failures=max_failures,
        max_retries=max_retries, timeout=timeout, seed=seed, heartbeat_timeout=heartbeat_timeout,
        backend=backend, spark_master=spark_master, spark_conf=spark_conf, trial_timeout=trial_timeout,
    )
    trainer_kwargs = check_trainer_kwargs(trainer_kwargs, "module")
    from lightning_maggy.lightning.trainer import build_module

    validate_module(module_cls, list(hp), datamodule, trainer_kwargs)
    built = _instance(datamodule, hp)
    declared = collect_components(module_cls, datamodule, study, built)
    try:
        module = build_module(module_cls, hp, datamodule)
    except Exception as err:
        raise ConfigurationError(
            f"{module_cls.__name__}(**{hp!r}) raised {type(err).__name__}: {err}; ablate() builds "
            "the module once before the study to check the components' names."
        ) from err
    components = resolve_components(declared, module, built)
    del module
    opt = LOCO(hp, [c.name for c in components], seed_list)
    total = len(opt.plan)

    from lightning_maggy.lightning.worker import TrialTask

    task = TrialTask(
        kind="module",
        target=module_cls,
        metric=metric,
        direction=direction,
        datamodule=FreshDataModules(datamodule) if is_plain_function(datamodule) else datamodule,
        trainer_kwargs=trainer_kwargs or None,
        seed=seed_list[0],
        ablation={c.name: c for c in components},
    )

    def finish(search_result: Any) -> AblationResult:
        result = AblationResult(build_rows(search_result.trials, components), search_result, seed_list)
        write_ablation(result)
        return result

    try:
        search_result = run_study(
            module_cls, None, task=task, metric=metric, direction=direction,  # type: ignore[arg-type]
            max_epochs=max_epochs, opt=opt, stopper=NoEarlyStop(), num_trials=total, timeout=timeout,
            trial_timeout=trial_timeout,
            backend=backend, workers=workers, trainer_kwargs=trainer_kwargs, exp_dir=exp_dir,
            seed=seed_list[0], max_failures=max_failures if max_failures is not None else total + 1,
            max_retries=max_retries, heartbeat_timeout=heartbeat_timeout, spark_master=spark_master,
            spark_conf=spark_conf, verbose=verbose, summary=False, resume=resume,
            extra={"study": "ablation", "ablation": study_description(components, hp, seed_list)},
        )
    except ExperimentError as err:
        partial = getattr(err, "result", None)
        if partial is not None:
            err.result = finish(partial)  # type: ignore[attr-defined]
        raise
    result = finish(search_result)
    if verbose:
        import sys

        print(result.summary(), file=sys.stderr, flush=True)
    return result
