"""Backends start and stop workers; they know nothing of search (template method)."""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from lightning_maggy.exceptions import BackendError, ConfigurationError
from lightning_maggy.lightning.worker import WorkerLaunch

__all__ = ["Backend", "check_shippable", "pack_launch"]


@functools.lru_cache(maxsize=1)
def _installed_dirs() -> tuple[str, ...]:
    """The directories installed packages and the standard library live in (site-packages and
    the interpreter's library folders), resolved, each ending with a separator."""
    found = sysconfig.get_paths()
    paths = {found[key] for key in ("purelib", "platlib", "stdlib", "platstdlib") if key in found}
    paths |= set(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        paths.add(user_site)
    return tuple(sorted({os.path.join(os.path.realpath(p), "") for p in paths if p}))


def _is_installed(module: ModuleType) -> bool:
    """Whether ``module`` is part of an installed package or the standard library: its file lies
    in one of :func:`_installed_dirs`. Looking at the file costs microseconds, where asking
    ``importlib.metadata`` which distributions provide which modules reads every installed
    distribution's file list (over a second in a large environment), on the path to the first
    trial. A package installed in editable mode lies outside and travels by value, as the user's
    own code does, which works wherever it is unpickled."""
    name = module.__name__.split(".")[0]
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return True  # built in, or a namespace package: nothing to ship by value
    return os.path.realpath(file).startswith(_installed_dirs())


def _user_modules(*objects: Any) -> Iterator[ModuleType]:
    """The modules defining ``objects`` that are the user's own code (a script, a notebook, a
    file next to it), as opposed to installed packages: those travel by value."""
    for obj in objects:
        if obj is None:
            continue
        cls_or_fn = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__module__") else type(obj)
        name = getattr(cls_or_fn, "__module__", None)
        module = sys.modules.get(name or "")
        if module is None or name == "__main__":
            continue  # __main__ is pickled by value anyway
        if _is_installed(module):
            continue
        yield module


def pack_launch(launch: WorkerLaunch) -> bytes:
    """Serializes what workers need with cloudpickle, the user's own modules by value, so that
    workers need not import them (they may not be on an executor's path)."""
    import cloudpickle

    task = launch.task
    already = set(cloudpickle.list_registry_pickle_by_value())
    modules = list({m.__name__: m for m in _user_modules(task.target, task.datamodule) if m.__name__ not in already}.values())
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return _dumps_keeping_filenames(launch)
    except Exception as err:
        raise BackendError(
            f"could not serialize the search's module/datamodule/function for the workers "
            f"({type(err).__name__}: {err}). Objects holding open files, locks or sockets "
            "cannot be shipped; create them inside your module or datamodule instead."
        ) from err
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _dumps_keeping_filenames(obj: Any) -> bytes:
    """``cloudpickle.dumps``, but the code it ships by value keeps its file name: cloudpickle
    writes ``<dynamic-code>`` there (for deterministic payloads), which leaves a trial's
    traceback without the file, and without the source line a worker on the same machine would
    read from it. Plain ``dumps`` where cloudpickle's internals differ."""
    import io
    import types
    from collections import ChainMap

    import cloudpickle

    reduce_code = getattr(cloudpickle.cloudpickle, "_code_reduce", None)
    if reduce_code is None:
        return cloudpickle.dumps(obj)

    def keep_filename(code: types.CodeType) -> Any:
        make, args = reduce_code(code)
        return make, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)

    class Pickler(cloudpickle.Pickler):
        dispatch_table = ChainMap({types.CodeType: keep_filename}, cloudpickle.Pickler.dispatch_table)

    with io.BytesIO() as fh:
        Pickler(fh).dump(obj)
        return fh.getvalue()


def check_shippable(launch: WorkerLaunch) -> None:
    """Raises ConfigurationError, before anything starts, if workers could not receive it."""
    try:
        pack_launch(launch)
    except BackendError as err:
        raise ConfigurationError(str(err)) from err.__cause__


class Backend(ABC):
    """Starts ``n`` workers running :func:`~lightning_maggy.lightning.worker.run_worker`.

    Public bookkeeping lives here; subclasses implement three small hooks.
    """

    name: str = "backend"

    def __init__(self) -> None:
        self.num_workers = 0
        self.started = False
        self.stopped = False
        #: Set by the driver before :meth:`start`: whether a worker holds a trial now. A backend
        #: that restarts dead workers need not count such a death against a restart budget:
        #: ``max_retries`` and ``max_failures`` bound those.
        self.holds_trial: Callable[[int], bool] = lambda worker_id: False

    def start(self, launch: WorkerLaunch, num_workers: int) -> None:
        self.num_workers = num_workers
        self._start(launch, num_workers)
        self.started = True

    def plan_restarts(self, *, workers: int, max_failures: int, max_retries: int) -> None:
        """Told the study's failure budget before :meth:`start`; a backend that restarts dead
        workers sizes its restart budget from it (default: nothing to do)."""

    def poll_lost(self) -> list[tuple[int, str]]:
        """``(worker_id, reason)`` for each worker found dead since the last call (the backend
        restarts it if it can). Raises BackendError when no worker can run any more."""
        return self._poll_lost() if self.started else []

    def replace(self, worker_id: int, reason: str) -> bool:
        """Ends worker ``worker_id``, which has been silent long after its trial was re-queued
        (frozen: stopped by a signal, stuck in a call that holds the GIL), so that a new worker
        takes its place; ``reason`` says why, for the death :meth:`poll_lost` then reports.
        Returns whether it will be replaced (default: False, the backend cannot)."""
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the workers (and releases what the backend holds, even if never started)."""
        if not self.stopped:
            self.stopped = True
            self.started = False
            self._stop(timeout)

    @abstractmethod
    def _start(self, launch: WorkerLaunch, num_workers: int) -> None: ...

    @abstractmethod
    def _poll_lost(self) -> list[tuple[int, str]]: ...

    @abstractmethod
    def _stop(self, timeout: float) -> None: ...
