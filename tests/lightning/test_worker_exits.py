"""Which SystemExit and KeyboardInterrupt a trial run catches (it fails the trial) and which it
lets end the worker (its own shutdown; a Ctrl-C where one can come), in this process against a
scripted server (tests/e2e/test_trial_exits.py runs real workers)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trial_harness import ScriptedServer, run

from lightning_maggy.lightning.lifeline import WorkerTerminated


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def ctrl_c_ignored() -> Iterator[None]:
    """As in a local worker (backends/local.py's _worker_entry)."""
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def _run(server: ScriptedServer, tmp_path: Path, target: Any) -> dict[str, Any]:
    outcome, _ = run(server, tmp_path / "t0", budget=1, target=target, kind="function")
    return outcome


def test_sys_exit_in_the_trials_code_fails_the_trial(server: ScriptedServer, tmp_path: Path) -> None:
    def exits(hparams: dict[str, Any], reporter: Any) -> float:
        sys.exit("bye")

    outcome = _run(server, tmp_path, exits)
    assert outcome["status"] == "failed" and outcome["error_type"] == "SystemExit" and not outcome["fatal"]
    assert outcome["error"].rstrip().endswith(
        "lightning_maggy: the trial's code called sys.exit('bye'), which would end its worker process: raise an "
        "exception to fail a trial, or return to end it; the worker goes on to the next trial."
    )


@pytest.mark.usefixtures("ctrl_c_ignored")
def test_keyboard_interrupt_fails_the_trial_where_ctrl_c_is_ignored(server: ScriptedServer, tmp_path: Path) -> None:
    def interrupts(hparams: dict[str, Any], reporter: Any) -> float:
        raise KeyboardInterrupt

    outcome = _run(server, tmp_path, interrupts)
    assert outcome["status"] == "failed" and outcome["error_type"] == "KeyboardInterrupt"
    assert "the trial's code raised KeyboardInterrupt (workers ignore Ctrl-C" in outcome["error"]


def test_keyboard_interrupt_ends_a_process_that_takes_ctrl_c(server: ScriptedServer, tmp_path: Path) -> None:
    def interrupts(hparams: dict[str, Any], reporter: Any) -> float:
        raise KeyboardInterrupt

    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    with pytest.raises(KeyboardInterrupt):
        _run(server, tmp_path, interrupts)


def _lightning_sigterm() -> type[BaseException]:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return SIGTERMException


def _swallows_then_exits(hparams: dict[str, Any], reporter: Any) -> float:
    try:
        raise WorkerTerminated(signal.SIGTERM)
    except BaseException:
        sys.exit(2)  # the user's cleanup ends with its own exit


@pytest.mark.parametrize(
    "raised",
    [
        lambda: WorkerTerminated(signal.SIGTERM),  # our SIGTERM handler (the driver gone, the backend's stop)
        lambda: _lightning_sigterm()(),  # Lightning's loops, once its handler saw the SIGTERM
        None,  # a SystemExit raised while handling ours
    ],
    ids=["WorkerTerminated", "SIGTERMException", "exit-while-terminating"],
)
@pytest.mark.usefixtures("ctrl_c_ignored")
def test_the_workers_own_shutdown_is_never_taken_for_the_trials_exit(
    server: ScriptedServer, tmp_path: Path, raised: Any
) -> None:
    def terminated(hparams: dict[str, Any], reporter: Any) -> float:
        raise raised()

    with pytest.raises(SystemExit):
        _run(server, tmp_path, _swallows_then_exits if raised is None else terminated)
