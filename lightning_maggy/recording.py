"""Recording learning curves for the simulator: :meth:`lightning_maggy.simulator.Curves.record`."""

from __future__ import annotations

import math
import os
import time
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

    kwargs = dict(search_kwargs)
    trainer_kwargs = dict(kwargs.pop("trainer_kwargs", None) or {})
    trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), _epoch_timer()]
    result = lm.search(module, space, metric=metric, direction=direction, max_epochs=max_epochs,
                       optimizer="random", num_trials=num_trials, seed=seed,
                       trainer_kwargs=trainer_kwargs, **kwargs)
    configs, values, seconds, overheads = [], [], [], []
    for trial in result.trials:
        times = _read_epoch_seconds(os.path.join(trial_dir_for(result.exp_dir, trial.trial_id), _TIMES))
        if len(trial.history) < max_epochs or len(times) < max_epochs or not all(map(math.isfinite, trial.history)):
            continue
        configs.append(dict(trial.config))
        values.append(list(trial.history[:max_epochs]))
        seconds.append(times[:max_epochs])
        if trial.started and trial.finished:
            overheads.append(max(0.0, trial.finished - trial.started - sum(times[:max_epochs])))
    if not configs:
        raise ConfigurationError(f"Curves.record: none of the {len(result.trials)} trials reported {max_epochs} epochs.")
    curves = cls(space, configs, values, seconds, metric=metric, direction=direction,
                 run_overhead=float(np.median(overheads)) if overheads else 0.0, name=name)
    if path is not None:
        curves.save(path)
    return curves


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
