"""Lightning comes as ``pytorch_lightning`` and as ``lightning.pytorch``; a Trainer of one rejects
modules and callbacks of the other. These helpers pick the namespace a user's class belongs to."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["available_namespaces", "imported_namespaces", "namespace_of"]

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


def namespace_of(obj: Any) -> ModuleType:
    """The Lightning namespace ``obj`` (a class or instance) derives from; ``pytorch_lightning``
    when it derives from neither (e.g. a plain callable)."""
    cls = obj if isinstance(obj, type) else type(obj)
    for base in cls.__mro__:
        mod = base.__module__ or ""
        if mod == "lightning.pytorch" or mod.startswith("lightning.pytorch."):
            return importlib.import_module("lightning.pytorch")
        if mod == "pytorch_lightning" or mod.startswith("pytorch_lightning."):
            return importlib.import_module("pytorch_lightning")
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
