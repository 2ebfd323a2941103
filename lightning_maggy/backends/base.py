"""Backends start and stop workers; they know nothing of search (template method)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from lightning_maggy.lightning.worker import WorkerLaunch

__all__ = ["Backend"]


class Backend(ABC):
    """Starts ``n`` workers running :func:`~lightning_maggy.lightning.worker.run_worker`.

    Public bookkeeping lives here; subclasses implement three small hooks.
    """

    name: str = "backend"

    def __init__(self) -> None:
        self.num_workers = 0
        self.started = False

    def start(self, launch: WorkerLaunch, num_workers: int) -> None:
        self.num_workers = num_workers
        self._start(launch, num_workers)
        self.started = True

    def poll_lost(self) -> list[tuple[int, str]]:
        """``(worker_id, reason)`` for each worker found dead since the last call (the backend
        restarts it if it can). Raises BackendError when no worker can run any more."""
        return self._poll_lost() if self.started else []

    def stop(self, timeout: float = 10.0) -> None:
        if self.started:
            self.started = False
            self._stop(timeout)

    @abstractmethod
    def _start(self, launch: WorkerLaunch, num_workers: int) -> None: ...

    @abstractmethod
    def _poll_lost(self) -> list[tuple[int, str]]: ...

    @abstractmethod
    def _stop(self, timeout: float) -> None: ...
