"""The local backend's restart budget and how it names a worker's death (no processes here;
tests/e2e/test_faults.py kills real ones)."""

from __future__ import annotations

import signal

from lightning_maggy.backends.local import LocalBackend, exit_cause


def test_a_death_by_signal_is_named() -> None:
    assert exit_cause(-signal.SIGKILL) == "was killed by SIGKILL (killed: out of memory, or by another process)"
    assert exit_cause(-signal.SIGSEGV).startswith("was killed by SIGSEGV (a segmentation fault")
    assert exit_cause(3) == "exited with code 3"
    assert exit_cause(-200) == "was killed by signal 200"


def test_the_default_restart_budget_covers_the_studys_failure_budget() -> None:
    backend = LocalBackend()
    backend.plan_restarts(workers=2, max_failures=3, max_retries=3)
    # every failed trial may cost max_retries + 1 deaths, the other worker's trial in the middle
    # of its retries max_retries more, plus one per worker (see default_max_restarts)
    assert backend.max_restarts == 2 + 3 * 4 + 1 * 3


def test_an_explicit_restart_budget_is_kept() -> None:
    backend = LocalBackend(max_restarts=1)
    backend.plan_restarts(workers=2, max_failures=3, max_retries=3)
    assert backend.max_restarts == 1
