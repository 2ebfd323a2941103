"""Recording learning curves for the simulator: :meth:`lightning_maggy.simulator.Curves.record`."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import Counter
from typing import Any

import numpy as np

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.searchspace import Searchspace

__all__ = ["record_curves"]

_TIMES = "epoch_seconds.txt"


def record_curves(
    cls: type,
    module: Any,
    space: Searchspace,
    *,
    metric: str,
    max_epochs: int,
    num_trials: int,
    direction: str,
    path: Any,
    name: str,
    seed: int,
    **search_kwargs: Any,
) -> Any:
    """:meth:`~lightning_maggy.simulator.Curves.record`'s work; ``cls`` is the ``Curves`` class."""
    import lightning_maggy as lm
    from lightning_maggy.lightning.worker import trial_dir_for

    _refuse_search_choices(search_kwargs)
    kwargs = dict(search_kwargs)
    trainer_kwargs = dict(kwargs.pop("trainer_kwargs", None) or {})
    trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), _epoch_timer()]
    result = lm.search(module, space, metric=metric, direction=direction, max_epochs=max_epochs,
                       optimizer="random", num_trials=num_trials, seed=seed,
                       trainer_kwargs=trainer_kwargs, **kwargs)
    configs, values, seconds, overheads = [], [], [], []
    left_out: Counter[str] = Counter()
    for trial in result.trials:
        times = _read_epoch_seconds(os.path.join(trial_dir_for(result.exp_dir, trial.trial_id), _TIMES))
        why = _left_out(trial, times, max_epochs)
        if why is not None:
            left_out[why] += 1
            continue
        configs.append(dict(trial.config))
        values.append(list(trial.history[:max_epochs]))
        seconds.append(times[:max_epochs])
        if trial.started and trial.finished:
            overheads.append(max(0.0, trial.finished - trial.started - sum(times[:max_epochs])))
    reasons = ", ".join(f"{n} {why}" for why, n in left_out.items())
    if not configs:
        raise ConfigurationError(f"Curves.record: none of the {len(result.trials)} trials reported {max_epochs} epochs "
                                 f"({reasons}; their output.log in {result.exp_dir}/trials/ says more).")
    if left_out:
        warnings.warn(f"Curves.record: {sum(left_out.values())} of the {len(result.trials)} trials are left out of the "
                      f"curves ({reasons}; their output.log in {result.exp_dir}/trials/ says more), so the curves "
                      "do not hold the configurations that fail.", stacklevel=3)
    curves = cls(space, configs, values, seconds, metric=metric, direction=direction,
                 run_overhead=float(np.median(overheads)) if overheads else 0.0, name=name)
    if path is not None:
        curves.save(path)
    return curves


def _refuse_search_choices(search_kwargs: dict[str, Any]) -> None:
    """Refuses the search arguments that ``record`` sets itself: curves need a random search in
    which every trial trains every epoch (a TypeError about "multiple values" said neither)."""
    if "optimizer" in search_kwargs:
        raise ConfigurationError(
            "Curves.record runs a random search itself (the curves must not depend on an optimizer's "
            "choices): leave out optimizer=; simulate(curves, optimizer=...) is where the optimizer goes.")
    if search_kwargs.get("early_stop") not in (None, "none"):
        raise ConfigurationError(
            f"Curves.record: early_stop={search_kwargs['early_stop']!r} would stop trials before max_epochs and "
            "leave them out of the curves; leave it out (simulate(curves, early_stop=...) replays the rule).")


def _left_out(trial: Any, times: list[float], max_epochs: int) -> str | None:
    """Why ``trial`` cannot be a curve (None: it can)."""
    from lightning_maggy.trial import TrialState

    if not all(map(math.isfinite, trial.history[:max_epochs])):
        return "reported NaN/inf"
    if len(trial.history) < max_epochs or len(times) < max_epochs:
        return "failed" if trial.state is TrialState.FAILED else f"stopped before epoch {max_epochs}"
    return None


def _epoch_timer() -> Any:
    """A callback that appends each epoch's seconds to the trial folder's ``epoch_seconds.txt``:
    the first epoch's from its training loop's start to its validation's end, every later
    epoch's from the previous validation's end to its own (so the work between epochs, the
    report and the checkpoint, counts in the epoch it follows)."""
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        _last: float | None = None

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self._last = None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if self._last is None:
                self._last = time.perf_counter()

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            import lightning_maggy as lm

            ctx = lm.current_trial()
            if trainer.sanity_checking or ctx is None or self._last is None:
                return
            now = time.perf_counter()
            with open(os.path.join(ctx.trial_dir, _TIMES), "a") as fh:
                fh.write(f"{trainer.current_epoch} {now - self._last:.6f}\n")
            self._last = now

    return EpochTimer()


def _read_epoch_seconds(path: str) -> list[float]:
    if not os.path.exists(path):
        return []
    by_epoch: dict[int, float] = {}
    with open(path) as fh:
        for line in fh:
            epoch, secs = line.split()
            by_epoch[int(epoch)] = float(secs)
    return [by_epoch[e] for e in range(len(by_epoch)) if e in by_epoch]
