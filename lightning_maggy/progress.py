"""The progress bar of a running study (tqdm), and on Spark one line per trial event."""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning_maggy.results import fmt_config
from lightning_maggy.trial import Trial, TrialState, best_trial, trial_value

__all__ = ["Progress"]


class Progress:
    """A tqdm bar of trials done (stopped, failed) and the best metric so far: the best of the
    trials' latest records under ``scope``, the figure ``result.best_metric`` will be if the
    study ended now (a trial paused at a rung counts with its rung's value until it is
    promoted and ends with another).

    A trial that fails, or that the NaN/inf policy stops, gets a line of its own above the bar
    (why, and where its output is): the bar's counts alone would not say which or why. When
    stderr is not a terminal (a CI log, ``2> file``), the bar is written as one line per trial
    event rather than redrawn with carriage returns, which a log shows as one endless line.
    Every line goes where the bar goes, stderr (tqdm.write's default, stdout, mixed them with
    the user's own output and left them out of a ``2> log``)."""

    def __init__(
        self, total: int | None, metric: str, direction: str, enabled: bool, lines: bool = False, scope: str = "last"
    ) -> None:
        self._lines = lines and enabled
        self._states: dict[str, TrialState] = {}
        self._records: dict[str, Trial] = {}
        self._metric, self._direction, self._scope = metric, direction, scope
        self._bar = None
        self._since = time.time()
        if enabled:
            from tqdm.auto import tqdm

            # A notebook's widget is neither a terminal nor a log: it keeps its own drawing.
            tty = _isatty(sys.stderr) or any(c.__module__.startswith("tqdm.notebook") for c in tqdm.__mro__)
            self._file = sys.stderr if tty else _LogLines(sys.stderr)
            # leave=tty: in a log, the line of the last event is the final one already.
            self._bar = tqdm(total=total, desc="maggy", unit="trial", dynamic_ncols=tty, leave=tty, file=self._file)

    def update(self, trial: Trial) -> None:
        if self._bar is None:
            return
        if self._lines:
            value = "" if trial.final_metric is None else f" {self._metric}={trial.final_metric:.5g}"
            reason = _why_unscored(trial, self._states.get(trial.trial_id))  # why, for a failure
            why = "" if reason is None else f": {reason}"
            self._bar.write(
                f"[maggy] trial {trial.trial_id} {trial.state.value} after {trial.epochs_done} epochs{value} "
                f"({fmt_config(trial.config)}){why}", file=self._file,
            )
        else:
            reason = _why_unscored(trial, self._states.get(trial.trial_id))
            if reason and (trial.finished is None or trial.finished >= self._since):  # not a resumed study's past
                epochs = f"{trial.epochs_done} epoch{'' if trial.epochs_done == 1 else 's'}"
                self._bar.write(f"[maggy] trial {trial.trial_id} {trial.state.value} after {epochs}: {reason}",
                                file=self._file)
        new = trial.trial_id not in self._states
        self._records[trial.trial_id] = trial
        self._states[trial.trial_id] = trial.state
        states = list(self._states.values())
        postfix = {
            "done": sum(s in (TrialState.COMPLETED, TrialState.PAUSED) for s in states),
            "stopped": states.count(TrialState.STOPPED),
            "failed": states.count(TrialState.FAILED),
        }
        best = best_trial(self._records.values(), self._direction, self._scope)
        if best is not None:
            postfix[f"best {self._metric}"] = f"{trial_value(best, self._direction, self._scope):.4g}"  # type: ignore[assignment]
        # The counts first, then the count of trials, then one redraw: drawn by update() before
        # the postfix was set, the bar showed each event's count beside the previous event's
        # counts and best value ("3/4 ... done=2").
        self._bar.set_postfix(postfix, refresh=False)
        if new:
            self._bar.update(1)
        self._bar.refresh()

    def set_total(self, total: int) -> None:
        """Gives a bar started without a total (``num_trials=None``) the one the optimizer
        knows (a grid's size)."""
        if self._bar is not None and self._bar.total is None and total > 0:
            self._bar.total = total
            self._bar.refresh()

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self._file)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _why_unscored(trial: Trial, before: TrialState | None) -> str | None:
    """Why a trial failed or was stopped for a NaN/inf, for its console line (its ``error`` is
    set then, and it has no score); None for any other event (a trial the study's Ctrl-C or
    timeout stopped has a note too, but keeps its score) and for one already told."""
    unscored = trial.state is TrialState.FAILED or (trial.state is TrialState.STOPPED and trial.final_metric is None)
    if trial.error is None or before is trial.state or not unscored:  # Ctrl-C's, the timeout's: a score, no line
        return None
    lines = [line for line in trial.error.strip().splitlines() if line.strip()]
    why = lines[-1].strip() if lines else "no error text"
    return why + ("; traceback in its output.log" if trial.state is TrialState.FAILED else "")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _LogLines:
    """A file for tqdm that turns each redraw of the bar (``\\r`` + the bar) into a line of its
    own, and leaves out blank redraws and a redraw the same as the last one."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._last = ""
        self._open = False  # a message is written without its line's end yet

    def write(self, text: str) -> int:
        if text.startswith("\r") or (text == "\n" and not self._open):
            for part in text.replace("\n", "\r").split("\r"):
                line = part.rstrip()
                if line and line != self._last:
                    self._stream.write(line + "\n")
                    self._last = line
        else:  # a message tqdm.write() prints above the bar, and its line's end
            self._stream.write(text)
            self._open = not text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    @property
    def encoding(self) -> str | None:
        return getattr(self._stream, "encoding", None)
