"""Lightning comes as ``pytorch_lightning`` and as ``lightning.pytorch``; a Trainer of one rejects
modules and callbacks of the other. These helpers pick the namespace a user's class belongs to."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

__all__ = ["available_namespaces", "callback_list", "guess_namespace", "imported_namespaces", "namespace_of"]

_NAMES = ("pytorch_lightning", "lightning.pytorch")


def available_namespaces() -> list[ModuleType]:
    found = []
    for name in _NAMES:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


def imported_namespaces() -> list[ModuleType]:
    """The namespaces this process has imported already. A class or instance that derives from
    one of them implies it is imported, so type checks need not import Lightning (which costs
    seconds, e.g. in a driver that only searches plain functions)."""
    return [sys.modules[name] for name in _NAMES if name in sys.modules]


def _name_of(module_name: str) -> str | None:
    """The namespace a module of this name belongs to, or None."""
    if module_name == "lightning.pytorch" or module_name.startswith("lightning.pytorch."):
        return "lightning.pytorch"
    if module_name == "pytorch_lightning" or module_name.startswith("pytorch_lightning."):
        return "pytorch_lightning"
    return None


def _derives_from(obj: Any) -> str | None:
    """The name of the namespace ``obj`` (a class or instance) derives from, or None."""
    cls = obj if isinstance(obj, type) else type(obj)
    for base in cls.__mro__:
        name = _name_of(base.__module__ or "")
        if name is not None:
            return name
    return None


def namespace_of(obj: Any) -> ModuleType:
    """The Lightning namespace ``obj`` (a class or instance) derives from; ``pytorch_lightning``
    when it derives from neither (e.g. a plain callable)."""
    name = _derives_from(obj)
    if name is not None:
        return importlib.import_module(name)
    try:
        return importlib.import_module("pytorch_lightning")
    except ImportError:
        return importlib.import_module("lightning.pytorch")


def is_lightning_module_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    return any(issubclass(obj, ns.LightningModule) for ns in imported_namespaces())


def is_datamodule_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    return any(issubclass(obj, ns.LightningDataModule) for ns in imported_namespaces())


def _hint(value: Any) -> str | None:
    """The namespace a value in a user's scope points to: a namespace module itself (``import
    lightning as L`` counts for ``lightning.pytorch``), or a class or instance deriving from one."""
    if isinstance(value, ModuleType):
        name = getattr(value, "__name__", "")
        return "lightning.pytorch" if name == "lightning" else _name_of(name)
    return _derives_from(value)


def guess_namespace(*scopes: Mapping[str, Any]) -> ModuleType:
    """The namespace a Trainer needs before it has seen the module it will train: the only one
    imported, if only one is; else the one the user's code refers to, read from ``scopes`` in
    order (the caller's locals, then its globals: its LightningModule, its ``L`` or ``pl``), the
    first scope that names exactly one deciding; else ``pytorch_lightning``."""
    imported = imported_namespaces()
    if len(imported) == 1:
        return imported[0]
    if imported:
        for scope in scopes:
            found = {_hint(value) for value in list(scope.values())} - {None}
            if len(found) == 1:
                return importlib.import_module(found.pop())  # type: ignore[arg-type]
            if found:  # both: no scope further out can tell better
                break
    return namespace_of(None)


def callback_list(callbacks: Any) -> list[Any]:
    """``callbacks=`` as the Trainer takes it (None, one callback, or a list) as a new list."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return list(callbacks)
    return [callbacks]
