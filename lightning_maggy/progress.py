"""The progress bar of a running study (tqdm), and on Spark one line per trial event."""

from __future__ import annotations

import math

from lightning_maggy.results import fmt_value
from lightning_maggy.trial import Trial, TrialState

__all__ = ["Progress"]


class Progress:
    """A tqdm bar of trials done (stopped, failed) and the best metric so far."""

    def __init__(self, total: int | None, metric: str, direction: str, enabled: bool, lines: bool = False) -> None:
        self._lines = lines and enabled
        self._states: dict[str, TrialState] = {}
        self._metric, self._direction = metric, direction
        self._best: float | None = None
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="maggy", unit="trial", dynamic_ncols=True)

    def update(self, trial: Trial) -> None:
        if self._bar is None:
            return
        if self._lines:
            value = "" if trial.final_metric is None else f" {self._metric}={trial.final_metric:.5g}"
            cfg = ", ".join(f"{k}={fmt_value(v)}" for k, v in trial.config.items())
            self._bar.write(f"[maggy] trial {trial.trial_id} {trial.state.value} after {trial.epochs_done} epochs{value} ({cfg})")
        if trial.final_metric is not None and not math.isnan(trial.final_metric):
            m = trial.final_metric
            if self._best is None or (m > self._best if self._direction == "max" else m < self._best):
                self._best = m
        if trial.trial_id not in self._states:
            self._bar.update(1)
        self._states[trial.trial_id] = trial.state
        states = list(self._states.values())
        postfix = {
            "done": sum(s in (TrialState.COMPLETED, TrialState.PAUSED) for s in states),
            "stopped": states.count(TrialState.STOPPED),
            "failed": states.count(TrialState.FAILED),
        }
        if self._best is not None:
            postfix[f"best {self._metric}"] = f"{self._best:.4g}"  # type: ignore[assignment]
        self._bar.set_postfix(postfix, refresh=False)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
