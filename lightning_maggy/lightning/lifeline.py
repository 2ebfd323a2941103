"""Workers never outlive their driver, and leave cleanly when told to.

Three mechanisms, from the most to the least immediate:

- :func:`set_parent_death_signal`: on Linux, ``prctl(PR_SET_PDEATHSIG)`` asks the kernel to
  send this process a signal the moment its parent dies (for a local worker the parent is the
  forkserver, which exits when the driver does).
- :class:`Watchdog`: a portable thread that polls whether the driver is still there (the
  parent process unchanged, the driver's pid alive) and, when it is not, sends this process
  SIGTERM, then exits it hard if that did not end it within a grace period.
- :func:`install_sigterm_handler`: SIGTERM raises :class:`WorkerTerminated` in the main thread,
  which unwinds the running trial (the Trainer tears down, the trial's output and
  ``metrics.csv`` are written, sockets are closed) and ends the process with exit code
  128 + SIGTERM, without reporting the trial's end: the driver (if any) sees a lost worker and
  re-queues its trial, to resume from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

__all__ = [
    "Watchdog",
    "WorkerTerminated",
    "driver_alive",
    "install_sigterm_handler",
    "set_parent_death_signal",
]

log = logging.getLogger(__name__)

#: Seconds a worker told to stop may take to unwind before it is ended hard.
HARD_EXIT_AFTER = 5.0


class WorkerTerminated(SystemExit):
    """Raised in a worker's main thread by SIGTERM (a :class:`SystemExit`, so that no
    ``except Exception`` in user code swallows it)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def _hard_exit_later(code: int, after: float) -> None:
    """Ends the process with ``code`` after ``after`` seconds unless it ended before."""
    timer = threading.Timer(after, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


def install_sigterm_handler(hard_exit_after: float = HARD_EXIT_AFTER) -> None:
    """From now on SIGTERM raises :class:`WorkerTerminated` in the main thread and, should the
    unwinding hang (a stuck data loader, a non-daemon thread), ends the process
    ``hard_exit_after`` seconds later. Installed before any Trainer is built, it is kept by
    Lightning (which only adds its own notifier in front of an existing handler)."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        del frame
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        _hard_exit_later(128 + signum, hard_exit_after)
        raise WorkerTerminated(signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Asks the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Returns whether it is in place. If the parent already died before the call (a race at
    start-up), ``sig`` is sent now.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        parent = os.getppid()
        if libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent == 1 or os.getppid() != parent:  # orphaned before the prctl took effect
        os.kill(os.getpid(), sig)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else: not ours, but not gone either
        return True
    return True


def driver_alive(driver_pid: int | None = None) -> Callable[[], bool]:
    """A check for :class:`Watchdog`: False once this process's parent changed (it died and
    the process was re-parented) or, if given, once ``driver_pid`` is gone."""
    parent = os.getppid()

    def alive() -> bool:
        if os.getppid() != parent:
            return False
        return driver_pid is None or _pid_alive(driver_pid)

    return alive


def _signal_main_thread(sig: int) -> None:
    """Sends ``sig`` to the main thread itself, so that a blocking call there (a socket poll)
    is interrupted and the Python handler runs at once."""
    try:
        signal.pthread_kill(threading.main_thread().ident or 0, sig)
    except (AttributeError, OSError, ValueError):  # no pthread_kill here: the whole process
        os.kill(os.getpid(), sig)


class Watchdog(threading.Thread):
    """Polls ``alive()`` every ``interval`` seconds; when it returns False, sends this process
    SIGTERM and, if the process still runs ``grace`` seconds later, ends it with
    ``os._exit(128 + SIGTERM)``.

    Args:
        alive: returns whether the driver is still there (e.g. :func:`driver_alive`).
        interval: seconds between checks.
        grace: seconds the SIGTERM handler gets to unwind before the hard exit.
    """

    def __init__(self, alive: Callable[[], bool], interval: float = 0.5, grace: float = HARD_EXIT_AFTER) -> None:
        super().__init__(name="maggy-watchdog", daemon=True)
        self._alive = alive
        self._interval = interval
        self._grace = grace
        self._stop_event = threading.Event()
        self.fired = False

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                alive = self._alive()
            except Exception:  # a broken check must not end a healthy worker
                log.exception("the watchdog's liveness check raised")
                continue
            if not alive:
                self.fired = True
                print("[maggy] the driver is gone: this worker stops.", file=sys.stderr, flush=True)
                _signal_main_thread(signal.SIGTERM)
                if not self._stop_event.wait(self._grace):
                    os._exit(128 + signal.SIGTERM)
                return

    def stop(self) -> None:
        """Stops watching (the worker is leaving on its own)."""
        self._stop_event.set()
