"""Builds one trial's module, datamodule and Trainer."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.lightning.epochs import SAFE_MARK
from lightning_maggy.lightning.kept import kept_datamodule
from lightning_maggy.lightning.loggers import trial_loggers
from lightning_maggy.lightning.namespace import callback_list, is_datamodule_class, namespace_of

__all__ = [
    "VALIDATED", "WORKER_ENV", "build_datamodule", "build_module", "build_trainer", "check_launcher",
    "module_call_style", "scan_entry_points_once", "skip_object_storage_imports",
]

#: Module classes that completed a run in this process: their validation loop has run, so a
#: worker's later runs skip Lightning's sanity check (``build_trainer(sanity_checked=True)``).
VALIDATED: weakref.WeakSet[type] = weakref.WeakSet()

#: Trainer arguments a search controls itself; users set them through ``search()``.
RESERVED_TRAINER_KWARGS = ("max_epochs", "min_epochs", "max_steps", "ckpt_path")


def _accepted(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names ``fn`` accepts, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return names, var_kw


def datamodule_accepts(datamodule: Any) -> tuple[set[str], bool]:
    """The hyperparameter names ``datamodule`` is given (see :func:`build_datamodule`), and
    whether it is given all of them: a LightningDataModule class those its ``__init__``
    accepts, a function of the hyperparameters all of them, an instance (or None) none."""
    if datamodule is None:
        return set(), False
    if is_datamodule_class(datamodule):
        accepted, var_kw = _accepted(datamodule.__init__)
        accepted.discard("self")
        return accepted, var_kw
    if isinstance(datamodule, type) or not callable(datamodule):
        return set(), False
    return set(), True


def module_call_style(module_cls: type, names: list[str], datamodule: Any = None) -> str:
    """How to pass hyperparameters to ``module_cls``: "kwargs" (``cls(**those it accepts)``) or
    "hparams" (``cls(hparams=...)``). A hyperparameter the module does not accept is fine when
    the datamodule is given it (e.g. ``batch_size``); only one that reaches neither is refused.

    Raises:
        ConfigurationError: a hyperparameter that neither the module nor the datamodule takes.
    """
    accepted, var_kw = _accepted(module_cls.__init__)
    accepted.discard("self")
    dm_accepted, dm_all = datamodule_accepts(datamodule)
    wanted = set(names)
    if var_kw or wanted <= accepted:
        return "kwargs"
    if "hparams" in accepted:
        return "hparams"
    if dm_all or wanted <= accepted | dm_accepted:
        return "kwargs"
    missing = sorted(wanted - accepted - dm_accepted)
    where = f"{module_cls.__name__}.__init__ does not accept the hyperparameter(s) {missing}"
    if datamodule is not None:
        where += f", and neither does the datamodule {getattr(datamodule, '__name__', type(datamodule).__name__)}"
    raise ConfigurationError(
        f"{where}; the module accepts {sorted(accepted)}"
        + (f" and the datamodule {sorted(dm_accepted)}" if dm_accepted else "")
        + ". Add them as keyword arguments of the module or the datamodule (e.g. def "
        f"__init__(self, {', '.join(f'{m}=...' for m in missing)}, ...)), or take them all as "
        "one `hparams` argument, or rename the search space's entries."
    )


def build_module(module_cls: type, config: Mapping[str, Any], datamodule: Any = None) -> Any:
    """The module, given the hyperparameters its ``__init__`` accepts (all of them with
    ``**kwargs``), or all of them as ``hparams=``; see :func:`module_call_style`."""
    module_call_style(module_cls, list(config), datamodule)  # refuses one that reaches nothing
    return module_cls(**module_arguments(module_cls, config))


def module_arguments(
    module_cls: type, config: Mapping[str, Any], saved: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The keyword arguments :func:`build_module` gives ``module_cls`` for ``config`` (the
    hyperparameters its ``__init__`` accepts, or ``hparams=config``), never raising. With
    ``saved`` (a checkpoint's ``hyper_parameters``, for ``SearchResult.load_best``), also the
    saved values of the arguments ``__init__`` names that ``config`` does not give (a train
    function may have built its module with arguments of its own); not those only ``**kwargs``
    would take (a subclass that fixes an argument of its base passes it itself)."""
    accepted, var_kw = _accepted(module_cls.__init__)
    accepted.discard("self")
    if not var_kw and not set(config) <= accepted and "hparams" in accepted:
        out = {"hparams": dict(config)}
    else:
        out = {k: v for k, v in config.items() if var_kw or k in accepted}
    out.update({k: v for k, v in (saved or {}).items() if k in accepted and k not in out})
    return out


def build_datamodule(datamodule: Any, config: Mapping[str, Any], *, reuse: bool = False, fresh: bool = False) -> Any:
    """An instance is used as is (with ``fresh``, a deep copy of it); a LightningDataModule class
    is built with the hyperparameters its ``__init__`` accepts; any other callable is called with
    the hyperparameters.

    With ``reuse`` (a worker's trial runs), the datamodule a class built for the previous run is
    used again when it is provably the one a new run would build, and its ``prepare_data`` and
    ``setup`` run once per stage (see :func:`~lightning_maggy.lightning.kept.kept_datamodule`).
    ``fresh`` (an ablation's runs, which may leave features out of the datamodule): an instance
    is copied, never the object a previous run used. A function is called as it is: what it
    returns is its own (``ablate()`` wraps it so that each run gets a copy, see
    :class:`~lightning_maggy.ablation.api.FreshDataModules`)."""
    if datamodule is None:
        return None
    if is_datamodule_class(datamodule):
        accepted, var_kw = _accepted(datamodule.__init__)
        kwargs = {k: v for k, v in config.items() if var_kw or k in accepted}
        return kept_datamodule(datamodule, kwargs) if reuse else datamodule(**kwargs)
    if isinstance(datamodule, type) or not callable(datamodule):
        return _copy_of(datamodule) if fresh and not isinstance(datamodule, type) else datamodule
    return datamodule(dict(config))


def _copy_of(datamodule: Any) -> Any:
    """A deep copy of a datamodule instance, so that what one run changes in it (a left-out
    feature) is not in the next run's."""
    try:
        return copy.deepcopy(datamodule)
    except Exception as err:
        raise ConfigurationError(
            f"the datamodule instance {type(datamodule).__name__} cannot be copied ({type(err).__name__}: {err}), "
            "and every run of an ablation study needs one of its own (a run may leave features out of it). "
            "Pass its class, or a function that builds it, as datamodule=."
        ) from None


@functools.lru_cache(maxsize=None)
def fenced_checkpoint_class(checkpoint_cls: type) -> type:
    """A subclass of a namespace's ``ModelCheckpoint`` whose writes are fenced per attempt.

    Each checkpoint is written to a file of its own attempt and renamed over its real name only
    while this attempt still holds the trial folder (:mod:`lightning_maggy.lightning.fence`);
    a stale attempt's write is discarded and raises TrialDropped, which ends its training.
    """

    class FencedModelCheckpoint(checkpoint_cls):  # type: ignore[misc, valid-type]
        def __init__(
            self, *args: Any, trial_dir: str, attempt: int, publish: Callable[[str], bool] | None = None, **kwargs: Any
        ) -> None:
            super().__init__(*args, **kwargs)
            self.trial_dir = trial_dir
            self.attempt = attempt
            self.publish = publish

        def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
            from lightning_maggy.exceptions import TrialDropped
            from lightning_maggy.lightning.fence import commit

            tmp = f"{filepath}.attempt-{self.attempt}.tmp"
            try:
                super()._save_checkpoint(trainer, tmp)
            except BaseException:  # a full disk: no partial file left to hold its space
                if trainer.is_global_zero:
                    with contextlib.suppress(OSError):
                        os.remove(tmp)
                raise
            ok = commit(tmp, filepath, self.trial_dir, self.attempt) if trainer.is_global_zero else True
            if ok and trainer.is_global_zero and self.publish is not None:  # to an exp_dir URL
                ok = self.publish(filepath)
            ok = trainer.strategy.broadcast(ok, src=0)
            self._last_checkpoint_saved = filepath
            if not ok:
                raise TrialDropped(
                    f"a newer attempt holds {self.trial_dir}; attempt {self.attempt}'s checkpoint was discarded"
                )

    setattr(FencedModelCheckpoint, SAFE_MARK, True)  # allows promotion in place (see epochs.py)
    # The same state key as the plain class (it is built from __qualname__), so checkpoints
    # written with and without fencing resume alike.
    FencedModelCheckpoint.__qualname__ = checkpoint_cls.__qualname__
    return FencedModelCheckpoint


#: Set in every worker process (local and Spark): a search started where it is set was started
#: by a trial's own code, most likely by a DDP launcher that re-ran the user's script.
WORKER_ENV = "LIGHTNING_MAGGY_WORKER"

DDP_HINT = (
    "Use strategy='ddp_fork' (or DDPStrategy(start_method='fork')): the ranks are forked from the "
    "worker, only global rank 0 reports to the search, and every rank gets its decision "
    "(continue, stop, pause) through the strategy's broadcast."
)


def check_launcher(trainer: Any) -> None:
    """Refuses a distributed strategy whose launcher cannot start its ranks inside a worker:
    Lightning's subprocess launcher (``strategy="ddp"``) re-runs the process's command line, and
    ``spawn`` re-imports the script that started the search; both would run that script (and
    the search) again instead of the trial. Forked ranks (``ddp_fork``, ``ddp_notebook``) work.

    Raises:
        ConfigurationError: naming the strategy to use instead (the study stops at once).
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    kind = type(launcher).__name__
    if kind == "_SubprocessScriptLauncher":
        how = "starts its other ranks by re-running this process's command line (Lightning's subprocess launcher)"
    elif kind == "_MultiProcessingLauncher" and getattr(launcher, "_start_method", None) == "spawn":
        how = "starts its other ranks in new Python processes that re-import the script that started the search"
    else:
        return
    raise ConfigurationError(
        f"the trial's strategy ({type(trainer.strategy).__name__}) {how}; inside a lightning_maggy "
        f"worker that would run your script and the search again instead of the trial. {DDP_HINT}"
    )


def build_trainer(
    module: Any,
    *,
    trial_dir: str,
    budget: int,
    callbacks: list[Any],
    trainer_kwargs: Mapping[str, Any] | None = None,
    attempt: int = 1,
    publish: Callable[[str], bool] | None = None,
    resumed: bool = False,
    sanity_checked: bool = False,
) -> Any:
    """A Trainer of the module's Lightning namespace: ``budget`` epochs, checkpoints and logs in
    ``trial_dir``, quiet console; ``trainer_kwargs`` override the defaults, and their callbacks
    are added to ours. Checkpoint writes are fenced for ``attempt`` (see
    :func:`fenced_checkpoint_class`), and each committed one is passed to ``publish`` (the
    upload to an ``exp_dir`` URL). A ``resumed`` run (from the trial's checkpoint) skips
    Lightning's sanity check unless ``trainer_kwargs`` sets ``num_sanity_val_steps``: the
    trial's validation has run before, and the check costs about 10 ms per run. So does a run
    whose worker has ``sanity_checked`` the same module class in an earlier run. Loggers in
    ``trainer_kwargs`` are copied for the run and log to a folder named as ``trial_dir`` (the
    trial's id), see :mod:`lightning_maggy.lightning.loggers`."""
    ns = namespace_of(module)
    # Idempotent and cheap; here rather than at the worker's start, since Lightning may only
    # now have been imported (spawned and Spark workers).
    scan_entry_points_once()
    skip_object_storage_imports()
    kwargs = dict(trainer_kwargs or {})
    # A fresh copy per trial: stateful callbacks (EarlyStopping's best score, ...) must not carry
    # one trial's state into the next trial of the same worker.
    user_callbacks = copy.deepcopy(callback_list(kwargs.pop("callbacks", None)))
    if "logger" in kwargs:  # likewise a logger of its own, logging to the trial's own folder
        kwargs["logger"] = trial_loggers(kwargs["logger"], os.path.basename(os.path.normpath(trial_dir)))
    # The newest state after every epoch, always as checkpoints/last.ckpt: what a promoted or
    # re-queued trial resumes from. (save_last=True alone writes only when a top-k save happens.)
    checkpoint = fenced_checkpoint_class(ns.callbacks.ModelCheckpoint)(
        trial_dir=trial_dir,
        attempt=attempt,
        publish=publish,
        dirpath=os.path.join(trial_dir, "checkpoints"),
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        # At the end of each training epoch, after MaggyCallback reported it: never mid-epoch
        # (val_check_interval < 1), never ahead of the reported epoch.
        save_on_train_epoch_end=True,
    )
    defaults: dict[str, Any] = {
        "default_root_dir": trial_dir,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        # Appends event files when a promoted trial resumes; metrics.csv is written by the worker.
        "logger": ns.loggers.TensorBoardLogger(trial_dir, name="", version="tensorboard", default_hp_metric=False),
    }
    if resumed or sanity_checked:
        defaults["num_sanity_val_steps"] = 0
    defaults.update(kwargs)
    defaults["max_epochs"] = budget
    defaults["callbacks"] = [*callbacks, *user_callbacks, checkpoint]
    trainer = ns.Trainer(**defaults)
    check_launcher(trainer)
    return trainer


def scan_entry_points_once() -> None:
    """Every ``Trainer(...)`` looks for callback factories that installed packages register as
    entry points (``_load_external_callbacks``), which reads the metadata of every installed
    distribution: about 20 ms with 200 packages, in each trial run, since a worker builds a
    Trainer per run. The installed packages do not change while a worker runs, so the entry
    points found are kept per group; Lightning still loads and calls each factory for every
    Trainer, as before."""
    for name in ("lightning_fabric.utilities.registry", "lightning.fabric.utilities.registry"):
        module = sys.modules.get(name)
        scan = getattr(module, "entry_points", None)
        if scan is None or getattr(scan, "maggy_cached", False):
            continue
        found = functools.lru_cache(maxsize=None)(lambda group, _scan=scan: tuple(_scan(group=group)))

        def entry_points(*args: Any, _scan: Any = scan, _found: Any = found, **kwargs: Any) -> Any:
            if args or set(kwargs) != {"group"}:
                return _scan(*args, **kwargs)
            return _found(kwargs["group"])

        entry_points.maggy_cached = True  # type: ignore[attr-defined]
        module.entry_points = entry_points  # type: ignore[union-attr]


#: The object-storage filesystems Lightning tells apart: (package, class).
_OBJECT_STORES = (("adlfs", "AzureBlobFileSystem"), ("gcsfs", "GCSFileSystem"), ("s3fs", "S3FileSystem"))


def _is_object_storage(fs: Any) -> bool:
    """Lightning's ``_is_object_storage`` without its imports: a filesystem object of one of
    these classes exists only once its package has been imported, so only imported packages
    are asked."""
    for package, name in _OBJECT_STORES:
        cls = getattr(sys.modules.get(package), name, None)
        if isinstance(cls, type) and isinstance(fs, cls):
            return True
    return False


def skip_object_storage_imports() -> None:
    """Every Trainer's checkpoint callback and TensorBoard logger ask Lightning whether their
    folder is on object storage, and Lightning answers by importing ``s3fs``, ``gcsfs`` and
    ``adlfs`` where they are installed: about 0.5 s for ``s3fs`` in a worker's first trial run,
    on every machine that has it, for folders that are local. The answer is the same without
    the imports (see :func:`_is_object_storage`); folders that are on object storage imported
    their package when their filesystem was made."""
    for name in ("lightning_fabric.utilities.cloud_io", "lightning.fabric.utilities.cloud_io"):
        module = sys.modules.get(name)
        if module is not None and callable(getattr(module, "_is_object_storage", None)):
            module._is_object_storage = _is_object_storage  # type: ignore[attr-defined]
