"""Checks shared by every study (``search()`` and ``ablate()``), run before any worker starts.

Each check raises :class:`~lightning_maggy.exceptions.ConfigurationError` with what was wrong,
what was expected and how to fix it.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = [
    "check_metric",
    "check_positive_int",
    "check_run_settings",
    "check_not_in_a_worker",
    "check_scope",
    "check_seed",
    "check_trainer_kwargs",
    "check_validates_every_epoch",
    "validation_interval_error",
    "default_exp_dir",
    "normalize_direction",
    "trial_kind",
    "validate_module",
    "versions",
]

_DIRECTIONS = {"max": "max", "maximize": "max", "min": "min", "minimize": "min"}


def trial_kind(target: Any) -> str:
    from lightning_maggy.lightning.namespace import imported_namespaces, is_lightning_module_class

    if is_lightning_module_class(target):
        return "module"
    if any(isinstance(target, ns.LightningModule) for ns in imported_namespaces()):
        raise ConfigurationError(
            f"search() got a LightningModule instance ({type(target).__name__}(...)); pass the "
            f"class, search({type(target).__name__}, space, ...): each trial builds its own "
            "module from its hyperparameters."
        )
    if not callable(target) or isinstance(target, type):
        raise ConfigurationError(
            f"search() expects a LightningModule class, a train function fn(hparams) or a "
            f"function trial fn(hparams, reporter); got {target!r}."
        )
    try:
        params = [
            p for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return "train_fn"
    if len(params) >= 2:
        return "function"
    if len(params) == 1:
        return "train_fn"
    raise ConfigurationError(
        f"{getattr(target, '__name__', target)!r} takes no positional argument; a train "
        "function is fn(hparams) and a function trial is fn(hparams, reporter)."
    )


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        import numpy as np  # imported already: the search space needs it

        whole = isinstance(value, (float, np.integer, np.floating)) and float(value).is_integer() and value >= 1
        fix = f" Pass {name}={int(value)}." if whole else ""
        raise ConfigurationError(f"{name}={value!r}: expected a positive int (1, 2, ...).{fix}")


def check_metric(metric: Any) -> None:
    if not isinstance(metric, str) or not metric.strip() or metric != metric.strip():
        raise ConfigurationError(
            f"metric={metric!r}: expected the name of a logged metric such as 'val_acc' "
            "(a non-empty str without surrounding spaces)."
        )


def check_not_in_a_worker(what: str) -> None:
    """Refuses a study started inside a lightning_maggy worker (see
    :data:`~lightning_maggy.lightning.trainer.WORKER_ENV`): a trial's DDP launcher re-ran the
    script that started the search, to start its other ranks."""
    import os

    if os.environ.get("LIGHTNING_MAGGY_WORKER") == "1":
        from lightning_maggy.lightning.trainer import DDP_HINT

        raise ConfigurationError(
            f"{what}() was called inside a lightning_maggy worker process: most likely a trial's "
            "DDP strategy started its other ranks by re-running your script (Lightning's "
            f"subprocess launcher, strategy='ddp', or spawn). {DDP_HINT}"
        )


def check_scope(scope: Any) -> None:
    from lightning_maggy.trial import SCOPES

    if scope not in SCOPES:
        raise ConfigurationError(
            f"scope={scope!r} must be one of {list(SCOPES)}: \"last\" ranks trials by their final "
            "metric (the value at the last epoch they trained), \"all\" by their best value at any epoch."
        )


def normalize_direction(direction: Any) -> str:
    """"max" or "min" (also accepts "maximize"/"minimize", any case)."""
    if not isinstance(direction, str) or direction.lower() not in _DIRECTIONS:
        import difflib

        near = difflib.get_close_matches(direction.lower(), list(_DIRECTIONS), n=1) if isinstance(direction, str) else []
        hint = f" Did you mean {_DIRECTIONS[near[0]]!r}?" if near else ""
        raise ConfigurationError(
            f"direction={direction!r}: expected 'max' or 'min' (or 'maximize' / 'minimize', in any case): "
            f"whether a larger or a smaller metric is better.{hint}"
        )
    return _DIRECTIONS[direction.lower()]


def check_run_settings(
    *,
    max_epochs: Any,
    num_trials: Any,
    workers: Any,
    max_failures: Any,
    max_retries: Any,
    timeout: Any,
    seed: Any,
    heartbeat_timeout: Any,
    backend: Any,
    spark_master: Any,
    spark_conf: Any,
    trial_timeout: Any = None,
) -> None:
    """The settings every study shares: budgets, parallelism, failure handling, seed."""
    check_positive_int("max_epochs", max_epochs)
    check_positive_int("num_trials", num_trials, allow_none=True)
    check_positive_int("workers", workers, allow_none=True)
    check_positive_int("max_failures", max_failures, allow_none=True)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries={max_retries!r}: expected an int >= 0.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ConfigurationError(
            f"timeout={timeout!r}: expected a positive number of seconds for the whole search (e.g. "
            f"timeout=3600), or None for no limit.{_seconds_hint('timeout', timeout)}"
        )
    if trial_timeout is not None and (
        isinstance(trial_timeout, bool)
        or not isinstance(trial_timeout, (int, float))
        or not math.isfinite(trial_timeout)
        or not trial_timeout > 0
    ):
        raise ConfigurationError(
            f"trial_timeout={trial_timeout!r}: expected a positive number of seconds one run of a "
            f"trial may take (e.g. trial_timeout=600), or None for no limit.{_seconds_hint('trial_timeout', trial_timeout)}"
        )
    check_seed(seed)
    if backend == "local":
        _check_local_workers(workers)
    if not (isinstance(heartbeat_timeout, (int, float)) and heartbeat_timeout > 0):
        raise ConfigurationError(f"heartbeat_timeout={heartbeat_timeout!r}: expected a positive number of seconds.")
    if (spark_master is not None or spark_conf is not None) and backend != "spark":
        raise ConfigurationError("spark_master/spark_conf apply only with backend='spark'.")


def _seconds_hint(name: str, value: Any) -> str:
    """How to pass a duration given as a timedelta ("" for anything else)."""
    if isinstance(value, _dt.timedelta) and value.total_seconds() > 0:
        return f" Pass {name}={value.total_seconds():g} (the timedelta in seconds)."
    return ""


def check_seed(seed: Any, owner: str = "") -> None:
    """An int >= 0 (numpy's generators refuse negative seeds) or None; ``owner`` names where it
    was given (e.g. ``"RandomSearch"``), the search itself when empty."""
    if seed is None:
        return
    where = f"{owner}(seed={seed!r})" if owner else f"seed={seed!r}"
    if isinstance(seed, bool) or not isinstance(seed, int):
        import numpy as np  # imported already: the search space needs it

        hint = f" Pass int(seed) ({int(seed)})." if isinstance(seed, np.integer) else ""
        raise ConfigurationError(f"{where}: expected a Python int >= 0, or None for no seed.{hint}")
    if seed < 0:
        raise ConfigurationError(
            f"{where}: expected an int >= 0 (numpy's random generators, which the optimizers "
            f"draw from, take no negative seed), or None. Pass e.g. seed={abs(seed)}."
        )


#: Local worker processes allowed per CPU core: each one is a Python process holding torch and
#: Lightning (hundreds of MB), so many more than the cores exhaust the memory, not the work.
_WORKERS_PER_CPU = 4


def _check_local_workers(workers: int | None) -> None:
    """Refuses more local workers than this machine can hold before any is started."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = max(8, _WORKERS_PER_CPU * cpus)
    if workers is not None and workers > limit:
        raise ConfigurationError(
            f"workers={workers}: too many local worker processes for this machine ({cpus} CPU "
            f"core(s)); each one is a Python process with torch and Lightning loaded (hundreds of MB), "
            f"so {workers} of them would exhaust its memory before a trial runs. Pass workers <= {limit} "
            "(at most a few per core, or one per GPU share with gpus_per_trial=), run on a cluster "
            "with backend='spark', or pass backend=LocalBackend() "
            "(lightning_maggy.backends.local) to start this many anyway."
        )


def check_trainer_kwargs(trainer_kwargs: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    """A copy of ``trainer_kwargs``, refused when it sets what the study controls."""
    from lightning_maggy.lightning.trainer import RESERVED_TRAINER_KWARGS

    out = dict(trainer_kwargs or {})
    reserved = sorted(set(out) & set(RESERVED_TRAINER_KWARGS))
    if reserved:
        raise ConfigurationError(
            f"trainer_kwargs sets {reserved}, which the search controls: pass max_epochs= to "
            "search() and let the optimizer decide each trial's epochs and checkpoints."
        )
    if out and kind != "module":
        raise ConfigurationError(
            "trainer_kwargs applies only when searching a LightningModule class; a train "
            "function builds its own Trainer."
        )
    if "callbacks" in out:  # one callback, as Lightning's Trainer takes it, or a list
        from lightning_maggy.lightning.namespace import callback_list

        out["callbacks"] = callback_list(out["callbacks"])
        _check_user_callbacks(out["callbacks"])
    if out.get("logger") not in (None, True, False):
        from lightning_maggy.lightning.loggers import check_loggers

        check_loggers(out["logger"])  # each trial run logs to a copy of its own
    if out.get("enable_checkpointing") is False:
        raise ConfigurationError(
            "trainer_kwargs sets enable_checkpointing=False, but the search checkpoints every trial's "
            "epochs into its folder (checkpoints/last.ckpt): promotions and re-queued trials resume "
            "from it, and load_best() reads it. Remove enable_checkpointing; add no ModelCheckpoint "
            "of your own to keep only that one file per trial."
        )
    if "limit_val_batches" in out and out["limit_val_batches"] == 0:
        raise ConfigurationError(
            f"trainer_kwargs sets limit_val_batches={out['limit_val_batches']!r}: no validation epoch "
            "would run, and the search reads each trial's metric when a validation epoch ends. "
            "To validate on less, pass a fraction (limit_val_batches=0.25) or a number of batches."
        )
    return out


def _check_user_callbacks(callbacks: list[Any]) -> None:
    from lightning_maggy.lightning.callback import MaggyCallback

    if any(isinstance(cb, MaggyCallback) for cb in callbacks):
        raise ConfigurationError(
            "trainer_kwargs' callbacks hold a MaggyCallback, but each trial's Trainer gets the "
            "search's own (on the search's metric=); a second one would report another metric "
            "under the search's name. Remove it from callbacks, and pass metric= to search()."
        )


def validation_interval_error(every: Any, optimizer_name: str, where: str) -> str | None:
    """The error message when ``check_val_every_n_epoch=every`` cannot work with an optimizer
    that pauses trials at rungs (None when ``every`` is 1 or unset)."""
    if every is None or (isinstance(every, int) and not isinstance(every, bool) and every == 1):
        return None
    return (
        f"{where} check_val_every_n_epoch={every!r}, but {optimizer_name} pauses and promotes "
        "trials at rungs counted in epochs and ranks them by the validation metric of each "
        "rung's last epoch, so every epoch must be validated: remove check_val_every_n_epoch "
        "(or set it to 1). To spend less time validating, validate on part of the validation "
        "set (limit_val_batches=0.25), or use an optimizer without rungs (e.g. 'random', "
        "'tpe', 'gp')."
    )


def check_validates_every_epoch(trainer_kwargs: Mapping[str, Any], optimizer: Any, max_epochs: int | None = None) -> None:
    """Refuses ``check_val_every_n_epoch`` other than 1 with an optimizer that uses rungs, and
    one that leaves a trial's last epochs unvalidated (``max_epochs`` not a multiple of it)."""
    every = trainer_kwargs.get("check_val_every_n_epoch")
    if isinstance(every, int) and not isinstance(every, bool) and every > 1 and max_epochs and max_epochs % every:
        raise ConfigurationError(
            f"trainer_kwargs sets check_val_every_n_epoch={every} with max_epochs={max_epochs}: a trial's "
            f"last {max_epochs % every} epoch(s) would train without a validation, so their result would "
            f"never be reported. Pass a max_epochs that is a multiple of {every}, or validate every epoch."
        )
    if not getattr(optimizer, "uses_rungs", False):
        return
    interval = trainer_kwargs.get("val_check_interval")
    if isinstance(interval, (str, dict, _dt.timedelta)):
        raise ConfigurationError(
            f"trainer_kwargs sets val_check_interval={interval!r}, a duration: validation then runs when "
            f"the time is up, not at the end of each epoch, but {type(optimizer).__name__} ranks trials "
            "at rungs counted in epochs by each rung's last epoch, so every epoch must be validated. "
            "Pass a fraction of an epoch (0.5) or a number of batches, or use an optimizer without rungs."
        )
    if "check_val_every_n_epoch" in trainer_kwargs and every is None:
        raise ConfigurationError(
            "trainer_kwargs sets check_val_every_n_epoch=None (validation by training steps, across "
            f"epochs), but {type(optimizer).__name__} pauses and promotes trials at rungs counted in "
            "epochs, so every epoch must end with a validation: remove check_val_every_n_epoch and "
            "val_check_interval's step count, or use an optimizer without rungs (e.g. 'random', 'tpe')."
        )
    message = validation_interval_error(
        trainer_kwargs.get("check_val_every_n_epoch"), type(optimizer).__name__, "trainer_kwargs sets"
    )
    if message is not None:
        raise ConfigurationError(message)


def check_datamodule(datamodule: Any) -> None:
    """``datamodule`` is None, a LightningDataModule (instance or class) or a function."""
    from lightning_maggy.lightning.namespace import imported_namespaces, is_datamodule_class

    if datamodule is None or is_datamodule_class(datamodule):
        return
    if any(isinstance(datamodule, ns.LightningDataModule) for ns in imported_namespaces()):
        return
    if callable(datamodule) and not isinstance(datamodule, type):
        return
    raise ConfigurationError(
        f"datamodule={datamodule!r} ({'a class' if isinstance(datamodule, type) else type(datamodule).__name__}) "
        "is not a LightningDataModule; pass a LightningDataModule instance, a LightningDataModule "
        "class (built with the hyperparameters its __init__ accepts), a function of the hyperparameters "
        "that returns one, or None when the module defines its own dataloaders."
    )


def check_trainer_arguments(target: type, trainer_kwargs: Mapping[str, Any]) -> None:
    """Every key of ``trainer_kwargs`` is an argument of the Trainer of ``target``'s Lightning."""
    import difflib

    from lightning_maggy.lightning.namespace import namespace_of

    ns = namespace_of(target)
    _check_callback_and_logger_types(ns, trainer_kwargs)
    params = inspect.signature(ns.Trainer.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [name for name in params if name != "self"]
    unknown = sorted(set(trainer_kwargs) - set(known))
    if unknown:
        hints = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
        near = "; ".join(f"{u!r}: did you mean {h[0]!r}?" for u, h in hints.items() if h)
        raise ConfigurationError(
            f"trainer_kwargs sets {unknown}, which {ns.__name__}.Trainer does not take"
            + (f" ({near})" if near else "") + ". Pass only arguments of the Trainer."
        )


def _check_callback_and_logger_types(ns: Any, trainer_kwargs: Mapping[str, Any]) -> None:
    """``callbacks`` are Lightning Callbacks and ``logger`` a bool or Lightning Loggers (of
    either package: a Trainer takes both; a logger of its own kind too, a Trainer only calls
    its methods): anything else would fail every trial's Trainer."""
    from lightning_maggy.lightning.namespace import callback_list, imported_namespaces

    callbacks = tuple(one.Callback for one in imported_namespaces())
    loggers = tuple(one.loggers.Logger for one in imported_namespaces())
    logger = trainer_kwargs.get("logger")
    bad = [("callbacks", "Callback", "", cb) for cb in callback_list(trainer_kwargs.get("callbacks"))
           if not isinstance(cb, callbacks)]
    bad += [("logger", "loggers.Logger", " (e.g. CSVLogger(save_dir=...)), or True/False", one)
            for one in ([] if isinstance(logger, bool) else callback_list(logger))
            if not isinstance(one, loggers) and not hasattr(one, "log_metrics")]
    if bad:
        key, base, example, obj = bad[0]
        raise ConfigurationError(
            f"trainer_kwargs' {key} holds {obj!r} ({type(obj).__name__}), which is not a {ns.__name__}.{base}, "
            f"so every trial's Trainer would fail with it. Pass {ns.__name__}.{base} instances{example}."
        )


def validate_module(
    target: type, names: list[str], datamodule: Any, trainer_kwargs: Mapping[str, Any] | None = None
) -> None:
    """The module accepts the hyperparameter ``names``, has data (its own loaders or
    ``datamodule``), and its Lightning's Trainer takes ``trainer_kwargs``."""
    from lightning_maggy.lightning.trainer import module_call_style

    check_datamodule(datamodule)
    check_trainer_arguments(target, trainer_kwargs or {})
    style = module_call_style(target, names, datamodule)
    _check_required_arguments(target, set(names) if style == "kwargs" else {"hparams"})
    if datamodule is None:
        from lightning_maggy.lightning.namespace import namespace_of

        ns = namespace_of(target)
        if target.train_dataloader is ns.LightningModule.train_dataloader:
            raise ConfigurationError(
                f"{target.__name__} defines no train_dataloader() and no datamodule= was given; "
                "pass datamodule= (an instance, a LightningDataModule class, or a function of "
                "the hyperparameters) or define train_dataloader/val_dataloader on the module."
            )


def _check_required_arguments(target: type, given: set[str]) -> None:
    """Every argument ``target.__init__`` requires is among the ``given`` names."""
    try:
        params = list(inspect.signature(target.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    missing = [p.name for p in params if p.kind in kinds and p.default is p.empty and p.name not in given]
    if missing:
        name, first = target.__name__, missing[0]
        raise ConfigurationError(
            f"{name}.__init__ requires {missing}, which the search does not give it (the space has "
            f"{sorted(given)}), so every trial would fail to build the module. Give "
            f"{'them defaults' if len(missing) > 1 else 'it a default'} (def __init__(self, {first}=..., ...)), "
            f"add {'them' if len(missing) > 1 else 'it'} to the space, or search a subclass that fixes "
            f"{'them' if len(missing) > 1 else 'it'}: class Fixed({name}): def __init__(self, **hp): "
            f"super().__init__({first}=..., **hp)."
        )


def default_exp_dir(target: Any) -> str:
    name = getattr(target, "__name__", "experiment")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path.cwd() / "maggy_experiments" / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return str(path)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lightning_maggy", "torch", "pytorch-lightning", "lightning", "pyzmq", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out
