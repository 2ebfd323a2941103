"""The worker-side view of the trial being run: who to report to, and what the server said.

A worker sets the current :class:`TrialContext` while it runs a trial; :class:`MaggyCallback`
and :class:`Reporter` read it. Outside a search there is none, and both do nothing.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from lightning_maggy.exceptions import ConfigurationError, EarlyStopException, TrialDropped
from lightning_maggy.lightning.returns import as_number, describe
from lightning_maggy.trial import Decision

__all__ = ["Reporter", "TrialContext", "current_trial"]

_current: TrialContext | None = None
_lock = threading.Lock()


class TrialContext:
    """What a worker knows about the trial it runs.

    Attributes:
        trial_id, config, budget: the assignment (train until ``budget`` epochs in total).
        attempt: which run of the trial this is (every report names it; the server refuses
            those of a stale attempt and this worker is then told to drop the trial).
        epochs_done: epochs already recorded by the server (a resumed trial starts there).
        resume: whether the trial continues from a checkpoint.
        trial_dir: this trial's folder in the experiment directory.
        ckpt_path: the checkpoint to resume from, or None.
        last_decision: the server's answer to the latest report.
    """

    def __init__(
        self,
        *,
        client: Any,
        worker_id: int,
        trial: Mapping[str, Any],
        trial_dir: str,
        metric: str,
        direction: str,
        remote: Any = None,
    ) -> None:
        self._client = client
        self.worker_id = worker_id
        self.trial_id: str = trial["trial_id"]
        self.config: dict[str, Any] = dict(trial["config"])
        self.budget: int = int(trial["budget"])
        self.attempt: int = int(trial.get("attempt", 1))
        self.epochs_done: int = int(trial.get("epochs_done", 0))
        self.resume: bool = bool(trial.get("resume", False))
        self.component: str | None = trial.get("component")
        #: the trial's own training seed (ablation trials), or None
        self.seed: int | None = trial.get("seed")
        #: reports at epochs below this are sent without waiting: only CONTINUE can answer them
        self.async_until: int = int(trial.get("async_until", 0))
        #: the name of the optimizer when it pauses trials at rungs (every epoch must then be
        #: validated), else None
        self.rungs: str | None = trial.get("rungs")
        self.trial_dir = trial_dir
        #: the trial folders at an ``exp_dir`` URL (:class:`~lightning_maggy.storage.RemoteTrials`),
        #: of which ``trial_dir`` is a local copy; None when ``exp_dir`` is a path
        self.remote = remote
        self.metric = metric
        self.direction = direction
        self.last_decision = Decision.CONTINUE
        self.last_value: float | None = None
        #: why the server told this worker to drop the attempt, once it did (None before)
        self.dropped: str | None = None
        # The handshake with the heartbeat thread, which may raise TrialDropped asynchronously
        # in the trial's thread (see heartbeat.Heartbeat): it never does once ``finished`` is set
        # or while ``in_request`` is (a reply must never be left unread on the socket).
        self.finished = False
        self.in_request = False
        # A process forked from this one (a DDP rank, strategy="ddp_fork") must not use the
        # sockets it inherited: it reports through this process (see relay()).
        self._pid = os.getpid()
        self._relay_conn: Any = None
        self.raising = False
        self._metrics: Any = None  # this run's metrics.csv, opened at its first report

    def absorb_pending_drop(self) -> None:
        """Waits until the heartbeat thread is not raising, and absorbs an asynchronous
        TrialDropped that is pending in this thread (``dropped`` is set whenever one was raised,
        so the caller still learns of it)."""
        while True:
            try:
                while self.raising:
                    time.sleep(0.001)
                for _ in range(64):  # backward jumps: a pending asynchronous exception fires here
                    pass
                return
            except TrialDropped:
                continue

    def drop(self, reason: str) -> None:
        """Marks the attempt stale: the next report (or checkpoint) raises TrialDropped."""
        if self.dropped is None:
            self.dropped = reason

    def check_dropped(self) -> None:
        """Raises :class:`TrialDropped` if the server has told this worker to drop the attempt."""
        if self.dropped is not None:
            raise TrialDropped(f"trial {self.trial_id} attempt {self.attempt} dropped: {self.dropped}")

    def claim(self) -> bool:
        """Makes this attempt the holder of the trial's folder (and of its copy at the URL)
        before it trains; False if a newer attempt holds it (see
        :mod:`~lightning_maggy.lightning.fence`)."""
        from lightning_maggy.lightning import fence

        if not fence.claim(self.trial_dir, self.attempt):
            return False
        return self.remote is None or self.remote.claim(self.trial_id, self.attempt)

    def publish(self, path: str) -> bool:
        """Uploads a committed checkpoint to the trial's folder at the ``exp_dir`` URL, with
        ``metrics.csv`` holding the reports so far (nothing to do for a path); False if a newer
        attempt holds the trial."""
        if self.remote is None:
            return True
        files = [path, os.path.join(self.trial_dir, "metrics.csv")]
        return self.remote.publish(self.trial_id, files, self.attempt)

    def catch_up(self) -> bool:
        """Before a resumed run trains: re-sends the reports that the trial's folder at the URL
        holds (``metrics.csv``, uploaded with each checkpoint) beyond the server's record, which
        lags when the driver died before its last journal upload. False when the server stops
        or pauses the trial at one of them (the run then ends without training)."""
        if self.remote is None or not self.resuming or self.last_ckpt is None:
            return True
        missing = self.remote.unrecorded(self.epochs_done)
        if missing:
            print(
                f"lightning_maggy: the server's record of trial {self.trial_id} ends at epoch {self.epochs_done}, "
                f"its checkpoint goes on; re-sending the reports of epochs {missing[0][0]}-{missing[-1][0]} "
                "from metrics.csv",
                file=sys.stderr, flush=True,
            )
        for epoch, value in missing:
            self.report(epoch, value, wait=True, record=False)
            self.epochs_done = epoch + 1
            if self.last_decision is not Decision.CONTINUE:
                return False
        return True

    @property
    def resuming(self) -> bool:
        """Whether this run continues the trial (a promotion, a re-queued attempt) rather than
        starting it: it then resumes from :attr:`ckpt_path` when there is one."""
        return bool(self.resume or self.epochs_done)

    @property
    def last_ckpt(self) -> str | None:
        """``checkpoints/last.ckpt`` in the trial's folder, the checkpoint the search's own
        Trainers write each epoch (fenced against stale attempts), or None if there is none."""
        last = os.path.join(self.trial_dir, "checkpoints", "last.ckpt")
        return last if os.path.exists(last) else None

    @property
    def ckpt_path(self) -> str | None:
        """This trial's newest checkpoint: ``checkpoints/last.ckpt``, else the most recently
        written ``*.ckpt`` anywhere in the trial's folder (where a plain Trainer with
        ``default_root_dir=trial_dir`` and its default ``ModelCheckpoint`` puts them, e.g.
        ``checkpoints/epoch=0-step=10.ckpt``), or None if it has none."""
        last = self.last_ckpt
        if last is not None:
            return last
        found = glob.glob(os.path.join(glob.escape(self.trial_dir), "**", "*.ckpt"), recursive=True)
        return max(found, key=os.path.getmtime) if found else None

    def report(self, epoch: int, value: float, wait: bool = False, extend: bool = False, record: bool = True) -> Decision:
        """Sends one metric report and returns the server's decision.

        Args:
            wait: wait for the answer even where only CONTINUE can answer (``async_until``):
                the report is then in the driver's journal before this returns. The Lightning
                callback waits, so that the checkpoint written after an epoch's report is never
                ahead of the record: a driver that dies cannot leave a checkpoint whose epochs a
                resumed study has no values for.
            extend: the caller can train on past ``budget`` in this run (a Trainer whose
                ``max_epochs`` it raises): where the server would pause the trial and promote
                it next, it answers CONTINUE with a larger ``budget`` instead, which this
                context then holds. The report is awaited.
            record: add it to this run's rows of ``metrics.csv`` (not for a report re-sent from
                there, see :meth:`catch_up`).

        Raises:
            TrialDropped: the server refused the report: this attempt is stale.
        """
        if self.finished:  # the trial's code has returned: a thread it left running reports late
            raise TrialDropped(
                f"trial {self.trial_id} (attempt {self.attempt}) has ended: a report made after its code "
                "returned (from a thread it left running?) is not sent"
            )
        if os.getpid() != self._pid:
            return self._report_through_parent(epoch, value, wait, extend)
        self.in_request = True
        try:
            self.absorb_pending_drop()
            self.check_dropped()
            decision = self._send_report(epoch, value, wait, extend)
        finally:
            self.in_request = False
        self.last_value = float(value)
        self.last_decision = Decision(decision)
        if record:  # (not a report re-sent from metrics.csv)
            self._append_metrics(epoch, value)
        return self.last_decision

    @contextlib.contextmanager
    def relay(self) -> Iterator[None]:
        """While open, reports made in a process forked from this one (global rank 0 of a trial
        run with ``strategy="ddp_fork"``, whose ranks are all forked from the worker) go through
        a pipe to a thread here, which sends them on this process's connection and hands the
        decision back. A forked process must not use the inherited ZeroMQ sockets."""
        import multiprocessing

        here, there = multiprocessing.Pipe()
        self._relay_conn = there

        def serve() -> None:
            while True:
                try:
                    message = here.recv()  # blocks until a report, or None when the run ends
                except (EOFError, OSError):
                    return
                if message is None:
                    return
                epoch, value, wait, extend = message
                try:
                    answer = ("ok", self.report(epoch, value, wait=wait, extend=extend).value, self.budget)
                except TrialDropped as err:
                    answer = ("drop", self.dropped or str(err))
                except Exception as err:  # noqa: BLE001 - raised in the forked rank instead
                    answer = ("error", f"{type(err).__name__}: {err}")
                here.send(answer)

        thread = threading.Thread(target=serve, name="maggy-report-relay", daemon=True)
        thread.start()
        try:
            yield
        finally:
            # Wakes the thread at once (a polling thread cost up to its poll interval, 50 ms,
            # at the end of every trial run).
            with contextlib.suppress(OSError):
                there.send(None)
            thread.join(2.0)
            self._relay_conn = None
            here.close()
            there.close()

    def _report_through_parent(self, epoch: int, value: float, wait: bool, extend: bool) -> Decision:
        conn = self._relay_conn
        if conn is None:
            raise RuntimeError(
                "a report from a process forked from the worker, with no relay open; report from "
                "global rank 0 of a trial run by lightning_maggy (MaggyCallback does)."
            )
        conn.send((int(epoch), float(value), bool(wait), bool(extend)))
        kind, payload, *budget = conn.recv()
        if kind == "drop":
            self.dropped = str(payload)
            raise TrialDropped(f"trial {self.trial_id} attempt {self.attempt} dropped: {payload}")
        if kind == "error":
            raise RuntimeError(f"the worker could not report for this rank: {payload}")
        self.last_value = float(value)
        self.last_decision = Decision(payload)
        if budget:
            self.budget = int(budget[0])
        return self.last_decision

    def _send_report(self, epoch: int, value: float, wait: bool, extend: bool = False) -> str:
        message = {
            "type": "report",
            "worker_id": self.worker_id,
            "trial_id": self.trial_id,
            "attempt": self.attempt,
            "epoch": int(epoch),
            "value": float(value),
        }
        with _lock:
            # Below async_until the answer can only be CONTINUE: don't wait for it. A NaN/inf
            # value is always awaited: the server stops such a trial at once.
            if extend:
                message["extend"] = True
            if epoch < self.async_until and math.isfinite(value) and not (wait or extend):
                self._client.send({**message, "sync": False})
                decision = Decision.CONTINUE.value
            else:
                reply = self._client.request(message, timeout=600.0)
                if reply["type"] == "drop":
                    self.drop(reply["reason"])
                    self.check_dropped()
                decision = reply["decision"]
                if "budget" in reply:  # promoted in place: train on to the new budget
                    self.budget = int(reply["budget"])
                    self.async_until = int(reply.get("async_until", 0))
        return str(decision)

    def _append_metrics(self, epoch: int, value: float) -> None:
        """Appends a report the server accepted (it is in the journal) to the trial's
        ``metrics.csv`` at once, one line per write: a run that is killed, or found stale
        later, leaves every accepted report in the file, as the journal has them. A refused
        report raised TrialDropped before it got here."""
        if self._metrics is None:
            path = os.path.join(self.trial_dir, "metrics.csv")
            self._metrics = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered
            if self._metrics.tell() == 0:
                self._metrics.write(f"epoch,{self.metric},decision\n")
        self._metrics.write(f"{int(epoch)},{float(value)!r},{self.last_decision.value}\n")

    def close(self) -> None:
        """Closes this run's ``trial_dir/metrics.csv`` (kept across resumes; every accepted
        report is in it as soon as the server answered)."""
        if self._metrics is not None:
            metrics, self._metrics = self._metrics, None
            with contextlib.suppress(OSError):  # a full disk: what fits is written, the trial said why
                metrics.close()


def current_trial() -> TrialContext | None:
    """The trial this process is running for a search, or None outside a search.

    A user-written train function (``search(train_fn, ...)``) can read ``budget``, ``trial_dir``
    and ``ckpt_path`` from it to size its Trainer and resume promoted trials.
    """
    return _current


def _set_current(ctx: TrialContext | None) -> None:
    global _current
    _current = ctx


class Reporter:
    """Handed to a function trial, ``fn(hparams, reporter)``: the original Maggy's contract.

    Call :meth:`broadcast` with the metric after every step (epoch); it raises
    :class:`~lightning_maggy.exceptions.EarlyStopException` when the server stops (or pauses)
    the trial. Let it propagate; the trial is recorded with the last reported metric.
    """

    def __init__(self, ctx: TrialContext) -> None:
        self._ctx = ctx
        self._next_step = ctx.epochs_done if ctx.resume else 0

    @property
    def budget(self) -> int:
        """Steps this trial may run in total (ASHA's rung budget, or ``max_epochs``)."""
        return self._ctx.budget

    @property
    def trial_id(self) -> str:
        return self._ctx.trial_id

    @property
    def start_step(self) -> int:
        """The first step to run: a promoted function trial may skip the steps already recorded."""
        return self._ctx.epochs_done if self._ctx.resume else 0

    def broadcast(self, metric: float, step: int | None = None) -> None:
        """Reports ``metric`` at ``step`` (default: one past the previous step)."""
        value = as_number(metric)
        if value is None:  # a str, a bool, a list...: every trial would report the same way
            raise ConfigurationError(
                f"reporter.broadcast() got {describe(metric)}; report a number (an int or float, a NumPy "
                "scalar, a tensor of one element)."
            )
        step = self._next_step if step is None else int(step)
        self._next_step = step + 1
        decision = self._ctx.report(step, value)
        if decision is not Decision.CONTINUE:
            raise EarlyStopException(value, f"trial {self.trial_id} told to {decision.value} at step {step}")

    def log(self, message: str) -> None:
        """Writes a line to this trial's output.log."""
        print(message, flush=True)
