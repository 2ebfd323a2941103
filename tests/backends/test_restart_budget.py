"""The local backend's restart budget covers concurrent losses, and every worker death it saw
reaches the driver before the study ends for want of workers (fake processes here;
tests/e2e/test_restart_budget_search.py runs real ones)."""

from __future__ import annotations

from typing import Any

import pytest

from lightning_maggy.backends.local import LocalBackend, default_max_restarts
from lightning_maggy.exceptions import BackendError


class _Dead:
    """A worker process that exited with ``code``."""

    def __init__(self, pid: int, code: int) -> None:
        self.pid = pid
        self.exitcode = code

    def is_alive(self) -> bool:
        return False


class _Alive(_Dead):
    def __init__(self, pid: int) -> None:
        super().__init__(pid, None)  # type: ignore[arg-type]

    def is_alive(self) -> bool:
        return True


def _backend(procs: dict[int, Any], max_restarts: int, restarts: int) -> LocalBackend:
    backend = LocalBackend(max_restarts=max_restarts)
    backend._procs = dict(procs)
    backend._restarts = restarts
    backend.started = True
    spawned: list[int] = []

    def spawn(wid: int) -> None:
        spawned.append(wid)
        backend._procs[wid] = _Alive(1000 + wid)

    backend._spawn = spawn  # type: ignore[method-assign]
    backend.spawned = spawned  # type: ignore[attr-defined]
    return backend


@pytest.mark.parametrize(("workers", "failures", "retries"), [(1, 3, 3), (2, 3, 3), (4, 2, 1), (3, 5, 0)])
def test_the_default_budget_counts_the_other_workers_trials_mid_retry(
    workers: int, failures: int, retries: int
) -> None:
    backend = LocalBackend()
    backend.plan_restarts(workers=workers, max_failures=failures, max_retries=retries)
    # every failed trial dies retries + 1 times; each other worker's trial up to retries times
    needed = failures * (retries + 1) + (workers - 1) * retries
    assert backend.max_restarts == default_max_restarts(workers, failures, retries) == workers + needed


def test_the_last_deaths_are_returned_before_the_backend_gives_up() -> None:
    # Both workers found dead in one poll with the budget spent: both deaths reach the driver
    # (their trials are recorded), and only the next poll says no worker is left.
    backend = _backend({0: _Dead(11, 3), 1: _Dead(12, 3)}, max_restarts=4, restarts=4)
    lost = backend.poll_lost()
    assert lost == [(0, "worker 0 (pid 11) exited with code 3"), (1, "worker 1 (pid 12) exited with code 3")]
    assert backend.spawned == []  # type: ignore[attr-defined]
    gone = r"all local workers are gone; the last, worker 1, exited with code 3 after 4 restarts \(max_restarts=4\)"
    with pytest.raises(BackendError, match=gone):
        backend.poll_lost()
    with pytest.raises(BackendError):  # and it keeps saying so
        backend.poll_lost()


def test_a_worker_over_budget_is_returned_and_not_restarted_while_another_lives() -> None:
    backend = _backend({0: _Dead(11, -9), 1: _Alive(12)}, max_restarts=2, restarts=2)
    (lost,) = backend.poll_lost()
    assert lost == (0, "worker 0 (pid 11) was killed by SIGKILL (killed: out of memory, or by another process)")
    assert backend.poll_lost() == []  # the other one still runs: no error
    assert list(backend._procs) == [1]


def test_deaths_within_budget_are_restarted() -> None:
    backend = _backend({0: _Dead(11, 3), 1: _Dead(12, 0)}, max_restarts=5, restarts=4)
    assert backend.poll_lost() == [(0, "worker 0 (pid 11) exited with code 3")]
    assert backend.spawned == [0] and backend._restarts == 5  # type: ignore[attr-defined]


def test_under_the_default_budget_a_death_in_a_trial_costs_no_restart() -> None:
    backend = _backend({0: _Dead(11, -9), 1: _Dead(12, -9)}, max_restarts=3, restarts=3)
    backend._default_budget = True  # as LocalBackend() with plan_restarts() has it
    backend.holds_trial = lambda wid: wid == 0  # worker 0 held a trial, worker 1 none
    lost = backend.poll_lost()
    assert [wid for wid, _ in lost] == [0, 1]
    assert backend.spawned == [0]  # type: ignore[attr-defined]  # the budget is spent: 1 is not restarted
    assert backend._restarts == 3 and backend.trial_deaths == 1


def test_an_explicit_budget_counts_deaths_in_a_trial_too() -> None:
    backend = _backend({0: _Dead(11, -9)}, max_restarts=3, restarts=3)
    backend.holds_trial = lambda wid: True
    backend.poll_lost()
    assert backend.spawned == [] and backend.trial_deaths == 0  # type: ignore[attr-defined]


def test_only_the_default_budget_frees_deaths_in_a_trial() -> None:
    assert LocalBackend()._default_budget and not LocalBackend(max_restarts=5)._default_budget
