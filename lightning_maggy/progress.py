"""The progress bar of a running study (tqdm), and on Spark one line per trial event."""

from __future__ import annotations

from lightning_maggy.results import fmt_config
from lightning_maggy.trial import Trial, TrialState, best_trial, trial_value

__all__ = ["Progress"]


class Progress:
    """A tqdm bar of trials done (stopped, failed) and the best metric so far: the best of the
    trials' latest records under ``scope``, the figure ``result.best_metric`` will be if the
    study ended now (a trial paused at a rung counts with its rung's value until it is
    promoted and ends with another)."""

    def __init__(
        self, total: int | None, metric: str, direction: str, enabled: bool, lines: bool = False, scope: str = "last"
    ) -> None:
        self._lines = lines and enabled
        self._states: dict[str, TrialState] = {}
        self._records: dict[str, Trial] = {}
        self._metric, self._direction, self._scope = metric, direction, scope
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="maggy", unit="trial", dynamic_ncols=True)

    def update(self, trial: Trial) -> None:
        if self._bar is None:
            return
        if self._lines:
            value = "" if trial.final_metric is None else f" {self._metric}={trial.final_metric:.5g}"
            self._bar.write(
                f"[maggy] trial {trial.trial_id} {trial.state.value} after {trial.epochs_done} epochs{value} "
                f"({fmt_config(trial.config)})"
            )
        self._records[trial.trial_id] = trial
        if trial.trial_id not in self._states:
            self._bar.update(1)
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
        self._bar.set_postfix(postfix, refresh=False)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
