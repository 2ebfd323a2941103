"""The worker's heartbeat thread: liveness, ``drop`` messages, and interrupting a dropped trial
(see :class:`Heartbeat`)."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from lightning_maggy.exceptions import TrialDropped
from lightning_maggy.lightning.context import TrialContext

__all__ = ["STUCK_EXIT", "Heartbeat"]

#: The exit code of a worker process ended by its heartbeat because a dropped trial's code did
#: not return (see :meth:`Heartbeat._exit_stuck`).
STUCK_EXIT = 86


class Heartbeat(threading.Thread):
    """Tells the server this worker is alive, on a socket of its own, and hears ``drop``.

    Each heartbeat names the attempt being run. When the server answers that the attempt is
    stale (re-queued elsewhere, over ``trial_timeout``, the study ended), the trial's context is
    marked dropped, so its next report or checkpoint raises TrialDropped. If the trial's code is
    still running ``grace`` seconds later (it neither reports nor checkpoints), TrialDropped is
    raised asynchronously in the thread running the trial (effective at its next Python
    bytecode; a call stuck inside C code is not interrupted). With ``exit_when_stuck`` (local
    workers, which the backend replaces), a trial's code still running ``give_up`` seconds after
    the drop ends the worker's process, so that the study never waits for such a call.
    """

    def __init__(
        self, make_client: Callable[[str], Any], worker_id: int, interval: float, exit_when_stuck: bool = False
    ) -> None:
        super().__init__(name=f"maggy-heartbeat-{worker_id}", daemon=True)
        self._make_client = make_client
        self._worker_id = worker_id
        self._interval = interval
        self._stop_event = threading.Event()
        self.grace = max(1.0, 2 * interval)
        #: seconds after the drop after which a trial's code that has not returned ends this
        #: worker's process (with ``exit_when_stuck``; see :data:`STUCK_EXIT`)
        self.give_up = max(10.0, 2 * self.grace)
        self.exit_when_stuck = exit_when_stuck
        #: the context of the attempt being run, and the thread running it
        self.ctx: TrialContext | None = None
        self.trial_thread = threading.get_ident()
        self._dropped_at: float | None = None
        self._dropped_since: float | None = None

    def run(self) -> None:
        client = self._make_client("hb")
        try:
            while not self._stop_event.wait(min(self._interval, 0.1)):
                ctx = self.ctx
                client.send(
                    {
                        "type": "heartbeat",
                        "worker_id": self._worker_id,
                        "trial_id": None if ctx is None else ctx.trial_id,
                        "attempt": None if ctx is None else ctx.attempt,
                    }
                )
                self._listen(client, time.monotonic() + max(0.0, self._interval - 0.1))
                self._enforce(ctx)
        finally:
            client.close()

    def _listen(self, client: Any, until: float) -> None:
        """Until the next heartbeat is due, hears ``drop`` messages as they come."""
        while not self._stop_event.is_set():
            left = until - time.monotonic()
            msg = client.poll(min(max(left, 0.0), 0.1))
            if msg is None and left <= 0:
                return
            ctx = self.ctx
            if (
                msg is not None
                and msg.get("type") == "drop"
                and ctx is not None
                and msg["trial_id"] == ctx.trial_id
                and msg["attempt"] == ctx.attempt
            ):
                ctx.drop(msg["reason"])

    def _enforce(self, ctx: TrialContext | None) -> None:
        """Raises TrialDropped in the trial's thread once a dropped trial overstays ``grace``;
        with ``exit_when_stuck``, ends the process once it overstays ``give_up``."""
        if ctx is None or ctx.dropped is None or ctx.finished:
            self._dropped_at = self._dropped_since = None
            return
        now = time.monotonic()
        if self._dropped_at is None:
            self._dropped_at = self._dropped_since = now
            return
        if self.exit_when_stuck and self._dropped_since is not None and now - self._dropped_since >= self.give_up:
            self._exit_stuck(ctx, now - self._dropped_since)
        if now - self._dropped_at < self.grace:
            return
        self._dropped_at = now  # again after another grace period if it did not take
        # The handshake with end_trial() and TrialContext.report(): ``raising`` is set before
        # ``finished``/``in_request`` are read; they set theirs before waiting for ``raising``
        # to clear (TrialContext.absorb_pending_drop).
        ctx.raising = True
        try:
            if not ctx.finished and not ctx.in_request:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.trial_thread), ctypes.py_object(TrialDropped)
                )
        finally:
            ctx.raising = False

    def end_trial(self) -> None:
        """Called by the trial's thread when the trial's code has returned: afterwards no
        TrialDropped can be raised in it any more (a pending one is absorbed here)."""
        ctx = self.ctx
        if ctx is not None:
            ctx.finished = True
            ctx.absorb_pending_drop()
        self.ctx = None

    def _exit_stuck(self, ctx: TrialContext, seconds: float) -> None:
        """Ends this worker's process: its trial was dropped ``seconds`` ago and its code is
        still inside a call that TrialDropped cannot interrupt (native code: a sleep, a blocking
        read, a hung collective). The trial is recorded already; the backend starts a new worker
        in this one's place, and the study does not wait for the call."""
        print(
            f"lightning_maggy: trial {ctx.trial_id} (attempt {ctx.attempt}) was dropped ({ctx.dropped}), "
            f"but its code has not returned {seconds:.0f} s later: it is inside a call Python cannot "
            "interrupt. This worker process exits; a new one takes its place.",
            file=sys.stderr, flush=True,
        )
        os._exit(STUCK_EXIT)

    def stop(self) -> None:
        self._stop_event.set()
