"""A worker's trial runs share one datamodule while it is provably the one a new run would build.

Under ASHA most runs train one to three epochs, and a datamodule's ``setup`` (reading,
splitting, normalising the data) can cost as much as one of them. A kept datamodule runs
``prepare_data`` once and ``setup`` once per stage; Lightning still asks it for fresh
dataloaders in every run. Only the last one is kept, so memory stays that of one run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from lightning_maggy.lightning.namespace import namespace_of

__all__ = ["kept_datamodule", "same_value"]

#: The last datamodule built with ``reuse``: (class, arguments, instance).
_KEPT: list[tuple[type, dict[str, Any], Any]] = []

#: Attributes Lightning itself sets on a datamodule during a run (not by its ``__init__``).
_RUN_STATE = frozenset({"trainer"})

_MAX_DEPTH = 32


def kept_datamodule(cls: type, kwargs: dict[str, Any]) -> Any:
    """The previous run's datamodule if ``cls`` built it from equal arguments, or from
    arguments that differ only in ``batch_size`` when it is provably the same as a new one
    once its batch size is set (see :func:`_batch_size_only`); else a new one (kept for the
    next run).

    A class that overrides ``teardown`` (which may free what ``setup`` made) is never kept;
    pass a function that builds the datamodule to have a new one in every run."""
    fresh = None
    if _KEPT:
        kept_cls, kept_kwargs, kept = _KEPT[0]
        if kept_cls is cls and same_value(kept_kwargs, kwargs):
            return kept
        if kept_cls is cls and _only_batch_size_differs(kept_kwargs, kwargs):
            fresh = cls(**kwargs)
            if _batch_size_only(cls, kept_kwargs, kwargs, fresh) and _set_batch_size(
                kept, kwargs["batch_size"]
            ):
                kept_kwargs["batch_size"] = kwargs["batch_size"]
                return kept
    _KEPT.clear()
    instance = fresh if fresh is not None else cls(**kwargs)
    if getattr(cls, "teardown", None) is not namespace_of(cls).LightningDataModule.teardown:
        return instance
    _once_per_stage(instance)
    _KEPT.append((cls, dict(kwargs), instance))
    return instance


def same_value(a: Any, b: Any, _depth: int = 0) -> bool:
    """Whether ``a`` equals ``b``, safely: the same object; arrays and tensors equal in shape
    and values (``numpy.array_equal``, ``torch.equal``); dicts, lists and tuples item by item;
    else ``==`` when it gives a plain bool. A comparison that raises or is ambiguous (an
    elementwise ``==``) counts as different."""
    if a is b:
        return True
    if _depth > _MAX_DEPTH:
        return False
    try:
        if _is_array(a) or _is_array(b):
            return _arrays_equal(a, b)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            return type(a) is type(b) and a.keys() == b.keys() and all(
                same_value(a[k], b[k], _depth + 1) for k in a
            )
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(
                same_value(x, y, _depth + 1) for x, y in zip(a, b)
            )
        result = a == b
    except Exception:
        return False
    if isinstance(result, bool):
        return result
    return type(result).__name__ == "bool_" and bool(result)  # numpy.bool_


def _is_array(value: Any) -> bool:
    module = type(value).__module__ or ""
    return (module == "numpy" and type(value).__name__ == "ndarray") or (
        module.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter")
    )


def _arrays_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a).__module__ == "numpy":
        import numpy as np

        return a.dtype == b.dtype and bool(np.array_equal(a, b))
    import torch

    return a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))


def _only_batch_size_differs(kept_kwargs: dict[str, Any], kwargs: dict[str, Any]) -> bool:
    if "batch_size" not in kwargs or kwargs.keys() != kept_kwargs.keys():
        return False
    others = [k for k in kwargs if k != "batch_size"]
    return same_value([kwargs[k] for k in others], [kept_kwargs[k] for k in others])


def _batch_size_only(cls: type, kept_kwargs: dict[str, Any], kwargs: dict[str, Any], fresh: Any) -> bool:
    """Whether the batch size is all that tells the kept datamodule from ``fresh`` (a new one,
    not set up): an instance built like the kept one (its arguments, its ``__init__`` only),
    with ``batch_size`` set where it holds it (see :func:`_set_batch_size`), has every
    attribute that ``fresh``'s ``__init__`` set, equal (Lightning's own run state aside).

    The reference is built anew rather than compared with the kept one itself, whose
    ``setup`` has since filled in what ``__init__`` left empty (``self.train = None``). A
    datamodule that derives anything else from its batch size in ``__init__``
    (``self.loader_kw = {"batch_size": ...}``, a doubled size) is not kept: its loaders would
    use the old size. A number, string, time or id that differs even between two instances
    built from the same arguments (an instance counter, a creation time) tells nothing about
    the batch size and is not compared; as with equal arguments, the kept one's value stays.
    Objects compared by identity (a transform built in ``__init__``) always differ, so such a
    datamodule gets a new one."""
    reference = cls(**kept_kwargs)
    if not _set_batch_size(reference, kwargs["batch_size"]):
        return False
    differ = _differing(reference, fresh)
    if not differ:
        return True
    if None in differ or not all(_scalar(vars(fresh)[name]) for name in differ):
        return False
    return differ <= _differing(cls(**kwargs), fresh)  # they differ between equal builds too


def _scalar(value: Any) -> bool:
    import datetime
    import uuid

    return isinstance(value, (int, float, complex, str, bytes, datetime.date, datetime.time,
                              datetime.timedelta, uuid.UUID))


def _differing(a: Any, b: Any) -> set[str | None]:
    """The attributes (in the instances' own ``__dict__``) that differ between ``a`` and
    ``b``, Lightning's run state aside; None stands for one that only one of them has."""
    theirs, mine = vars(b), vars(a)
    out: set[str | None] = set()
    for name in (theirs.keys() | mine.keys()) - _RUN_STATE:
        if name not in theirs or name not in mine:
            out.add(None)
        elif not same_value(mine[name], theirs[name]):
            out.add(name)
    return out


def _batch_size_holders(datamodule: Any) -> dict[str, Any]:
    """Where the datamodule holds ``batch_size``: ``{"attribute" | "hparams": value}``."""
    held = {}
    if hasattr(datamodule, "batch_size"):
        held["attribute"] = datamodule.batch_size
    # Saved hyperparameters, read where save_hyperparameters() puts them: Lightning's
    # ``hparams`` property would add an empty ``_hparams`` to a datamodule that has none.
    hparams = vars(datamodule).get("_hparams", {})
    if "batch_size" in hparams:
        held["hparams"] = hparams["batch_size"]
    return held


def _set_batch_size(datamodule: Any, value: Any) -> bool:
    """Sets the batch size where the datamodule holds it (the attribute ``batch_size``, its
    saved ``hparams`` and their initial copy, as Lightning's batch-size finder does); False if
    it cannot be set (a read-only property): then the datamodule is built anew."""
    held = _batch_size_holders(datamodule)
    try:
        if "attribute" in held:
            datamodule.batch_size = value
    except AttributeError:
        return False
    if "hparams" in held:
        datamodule.hparams["batch_size"] = value
        initial = getattr(datamodule, "_hparams_initial", None)
        if isinstance(initial, dict) and "batch_size" in initial:  # what loggers record
            initial["batch_size"] = value
    return True


def _once_per_stage(datamodule: Any) -> None:
    """Makes the instance's ``prepare_data`` run once and its ``setup`` once per stage: a call
    that raises does not count, so the next run tries again."""
    prepare, setup = datamodule.prepare_data, datamodule.setup
    prepared: list[bool] = []
    stages: set[Any] = set()

    @functools.wraps(prepare)
    def prepare_data_once(*args: Any, **kwargs: Any) -> Any:
        if not prepared:
            prepare(*args, **kwargs)
            prepared.append(True)

    @functools.wraps(setup)
    def setup_once(stage: Any = None, *args: Any, **kwargs: Any) -> Any:
        if stage not in stages:
            setup(stage, *args, **kwargs)
            stages.add(stage)

    datamodule.prepare_data = prepare_data_once
    datamodule.setup = setup_once
