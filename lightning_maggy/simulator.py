"""Replays recorded learning curves through the real controller, in simulated time.

Comparing optimizers on real training costs hours; replaying curves costs seconds (the idea of
Syne Tune's simulator backend, Salinas et al., "Syne Tune", AutoML 2022). :class:`Curves` holds
one task's learning curves: for each of a few hundred configurations, the metric after every
epoch and the wall time of every epoch, recorded once by :meth:`Curves.record` (a random search
of your LightningModule that trains every trial to ``max_epochs``). :func:`simulate` then runs a
study of that task on any number of simulated workers: the same
:class:`~lightning_maggy.driver.controller.Controller`, optimizer and early-stop rule as
:func:`~lightning_maggy.search` drives, fed the same messages a worker sends, but a trial's epoch
"takes" its recorded seconds on a simulated clock instead of training. Nothing sleeps, so a
study of thousands of trials on 64 workers runs in seconds.

A configuration the optimizer proposes is rarely one that was recorded: it gets the curve of the
nearest recorded configuration (the surrogate is nearest neighbour: distance in the search
space's unit-cube encoding, log scale for log dimensions, plus 1 for each categorical value
that differs). What the simulation does not model: the time optimizers spend computing
proposals (a GP's fit costs no simulated time), and noise between repeated runs of one
configuration (a configuration always replays the same curve).

Example::

    curves = lm.Curves.record(MyModule, space, metric="val_acc", direction="max", max_epochs=27,
                              num_trials=300, datamodule=MyData, path="curves.json.gz")
    sim = lm.simulate(curves, optimizer="asha", workers=64, timeout=600)
    sim.best_metric, len(sim.trials), sim.best_at([60, 300, 600])
"""

from __future__ import annotations

import dataclasses
import gzip
import heapq
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_maggy.curves_input import curve_arrays
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.searchspace import Categorical, Searchspace
from lightning_maggy.trial import Trial, best_trial
from lightning_maggy.validation import check_positive_int, normalize_direction

__all__ = ["Curves", "SimulationResult", "simulate"]

_FORMAT = "lightning_maggy.curves/1"


class Curves:
    """Recorded learning curves of one task.

    Args:
        space: the search space the configurations come from.
        configs: the recorded configurations (n).
        values: (n, epochs) metric after each epoch (``values[i, e]``: configuration i, epoch e).
        seconds: (n, epochs) wall time of each epoch (its training and validation loops, and
            the work after the previous epoch: the report, the checkpoint).
        metric: the metric's name.
        direction: "max" (larger values are better) or "min".
        run_overhead: seconds a trial run costs beyond its epochs (building the run, restoring
            a checkpoint, ending it); each simulated run pays it once before its first epoch.
        name: a label for tables and plots.

    Raises:
        ConfigurationError: for shapes that do not match, non-finite seconds, or a configuration
            outside ``space``.
    """

    def __init__(
        self,
        space: Searchspace,
        configs: Sequence[Mapping[str, Any]],
        values: Any,
        seconds: Any,
        *,
        metric: str,
        direction: str = "max",
        run_overhead: float = 0.0,
        name: str = "",
    ) -> None:
        if not isinstance(space, Searchspace):
            raise ConfigurationError(f"Curves(space=...) must be a Searchspace, got {type(space).__name__}.")
        self.space = space
        self.configs = [dict(c) for c in configs]
        self.values, self.seconds = curve_arrays(len(self.configs), values, seconds, float(run_overhead))
        self.metric = metric
        self.direction = normalize_direction(direction)
        self.run_overhead = float(run_overhead)
        self.name = name
        for config in self.configs:
            space.validate(config)
        self._numeric = [i for i, (_, hp) in enumerate(space.items()) if not isinstance(hp, Categorical)]
        self._categorical = [i for i, (_, hp) in enumerate(space.items()) if isinstance(hp, Categorical)]
        self._points = np.array([self._encode(c) for c in self.configs])

    @property
    def max_epochs(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.configs)

    def __repr__(self) -> str:
        return f"Curves({self.name or self.metric!r}: {len(self)} configurations x {self.max_epochs} epochs)"

    def _encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """Numeric coordinates (unit cube) followed by categorical value indices."""
        items = self.space.items()
        numeric = [items[i][1].encode(config[items[i][0]]) for i in self._numeric]
        cats = [items[i][1]._index(config[items[i][0]]) for i in self._categorical]  # type: ignore[attr-defined]
        return np.array(numeric + cats, dtype=float)

    def nearest(self, config: Mapping[str, Any]) -> int:
        """The index of the recorded configuration nearest ``config`` (see the module docstring)."""
        point = self._encode(config)
        k = len(self._numeric)
        d2 = np.sum((self._points[:, :k] - point[:k]) ** 2, axis=1)
        d = np.sqrt(d2) + np.sum(self._points[:, k:] != point[k:], axis=1)
        return int(np.argmin(d))

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Writes the curves as gzipped JSON; returns the path."""
        data = {
            "format": _FORMAT, "name": self.name, "metric": self.metric, "direction": self.direction,
            "run_overhead": self.run_overhead, "space": self.space.to_dict(), "configs": self.configs,
            "values": np.round(self.values, 6).tolist(), "seconds": np.round(self.seconds, 5).tolist(),
        }
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        return str(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Curves:
        """Reads curves written by :meth:`save`."""
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ConfigurationError(f"{path} is not a curves file written by Curves.save() ({_FORMAT}).")
        return cls(
            Searchspace.from_dict(data["space"]), data["configs"], data["values"], data["seconds"],
            metric=data["metric"], direction=data["direction"], run_overhead=data["run_overhead"],
            name=data.get("name", ""),
        )

    @classmethod
    def record(
        cls,
        module: Any,
        space: Searchspace,
        *,
        metric: str,
        max_epochs: int,
        num_trials: int,
        direction: str = "max",
        path: str | os.PathLike[str] | None = None,
        name: str = "",
        seed: int = 0,
        **search_kwargs: Any,
    ) -> Curves:
        """Records curves: a random search of ``module`` (a LightningModule class) in which every
        trial trains ``max_epochs`` epochs, with a callback that times each epoch (the first
        from its training loop's start to its validation's end, every later one from the
        previous validation's end to its own, so the work between epochs counts too);
        ``run_overhead`` is the median of what each run took beyond its epochs (building the
        run before the first epoch, ending it after the last). ``search_kwargs`` go to
        :func:`~lightning_maggy.search` (``datamodule``, ``workers``, ``exp_dir``, ...). Trials
        that did not report every epoch (failed ones) are left out. Saved to ``path`` if given.
        """
        from lightning_maggy.recording import record_curves

        return record_curves(cls, module, space, metric=metric, max_epochs=max_epochs, num_trials=num_trials,
                             direction=direction, path=path, name=name, seed=seed, **search_kwargs)


@dataclasses.dataclass
class SimulationResult:
    """The outcome of :func:`simulate`.

    Attributes:
        trials: every trial record, in the order they started.
        best_trial / best_metric: the best trial by its final metric, and that metric.
        stop_reason: as :attr:`~lightning_maggy.SearchResult.stop_reason`.
        elapsed: simulated seconds from the start to the last event.
        reports: every accepted report, ``(simulated time, trial_id, epoch, value)`` in order.
        runs: trial runs handed out (a promoted trial's resumption is a run of its own).
        wall_s: real seconds the simulation took.
    """

    trials: list[Trial]
    metric: str
    direction: str
    best_trial: Trial | None
    stop_reason: str
    elapsed: float
    reports: list[tuple[float, str, int, float]]
    runs: int
    wall_s: float

    @property
    def best_metric(self) -> float | None:
        return None if self.best_trial is None else self.best_trial.final_metric

    @property
    def epochs(self) -> int:
        """Epochs trained by all trials together."""
        return len(self.reports)

    def best_at(self, times: Sequence[float]) -> np.ndarray:
        """The best value any trial had reported by each simulated time (NaN before the first)."""
        t = np.array([r[0] for r in self.reports])
        v = np.array([r[3] for r in self.reports])
        sign = 1.0 if self.direction == "max" else -1.0
        best = sign * np.maximum.accumulate(sign * np.where(np.isnan(v), -sign * np.inf, v)) if len(v) else v
        idx = np.searchsorted(t, np.asarray(times, dtype=float), side="right") - 1
        return np.where(idx >= 0, best[np.maximum(idx, 0)] if len(v) else np.nan, np.nan)


def simulate(
    curves: Curves,
    *,
    optimizer: Any = "asha",
    early_stop: Any = None,
    workers: int = 8,
    timeout: float | None = None,
    num_trials: int | None = None,
    max_epochs: int | None = None,
    seed: int | None = 0,
    lightning: bool = True,
    exp_dir: str | os.PathLike[str] | None = None,
) -> SimulationResult:
    """Runs a study of the task ``curves`` recorded, on ``workers`` simulated workers.

    The real :class:`~lightning_maggy.driver.controller.Controller` with the optimizer and
    early-stop rule decides, exactly as in :func:`~lightning_maggy.search`; each simulated
    worker sends it the messages a worker sends (register, get, a report after every epoch,
    the trial's final), and an epoch lasts its recorded seconds on a simulated clock (a run
    first pays ``curves.run_overhead``). A promoted trial resumes at the epoch it paused at.

    Args:
        curves: the recorded task.
        optimizer: as in :func:`~lightning_maggy.search`: a name or an optimizer.
        early_stop: as in :func:`~lightning_maggy.search`: None, a name or a rule.
        workers: simulated workers.
        timeout: the budget in simulated seconds (as ``search``'s ``timeout``: no trial starts
            after it, and running trials stop at their next report).
        num_trials: as in :func:`~lightning_maggy.search`; at least one of ``num_trials`` and
            ``timeout`` is needed.
        max_epochs: epochs per trial, at most ``curves.max_epochs`` (default: that).
        lightning: workers behave as a LightningModule's (a trial that reaches its rung
            budget asks to train on, so it can be promoted in place); False: as a function
            trial's (``fn(hparams, reporter)``).
        seed: the study's seed (as in :func:`~lightning_maggy.search`).
        exp_dir: where the study's journal goes (default: a temporary folder, removed after).

    Raises:
        ConfigurationError: for an invalid argument, before the study starts.
    """
    from lightning_maggy.driver.controller import Controller
    from lightning_maggy.driver.journal import Journal
    from lightning_maggy.earlystop import get_earlystop
    from lightning_maggy.optimizers import get_optimizer

    if not isinstance(curves, Curves):
        raise ConfigurationError(f"simulate() needs a Curves object (Curves.load(path)), got {type(curves).__name__}.")
    check_positive_int("workers", workers)
    check_positive_int("num_trials", num_trials, allow_none=True)
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(f"timeout must be a positive number of simulated seconds, got {timeout!r}.")
    if num_trials is None and timeout is None:
        raise ConfigurationError("simulate() needs num_trials=, timeout= (simulated seconds), or both.")
    max_epochs = curves.max_epochs if max_epochs is None else max_epochs
    check_positive_int("max_epochs", max_epochs)
    if max_epochs > curves.max_epochs:
        raise ConfigurationError(
            f"max_epochs={max_epochs} is more than the {curves.max_epochs} epochs the curves hold; pass "
            f"max_epochs <= {curves.max_epochs}, or record longer curves."
        )
    opt = get_optimizer(optimizer, seed=seed) if isinstance(optimizer, str) else get_optimizer(optimizer)
    stopper = get_earlystop(early_stop)
    tmp = None if exp_dir is not None else tempfile.mkdtemp(prefix="lm-simulate-")
    journal = Journal(Path(exp_dir or tmp) / "journal.jsonl")
    clock = _Clock()
    try:
        controller = Controller(
            optimizer=opt, earlystop=stopper, searchspace=curves.space, direction=curves.direction,
            max_epochs=max_epochs, num_trials=num_trials, timeout=timeout, journal=journal, seed=seed,
            clock=lambda: clock.now, heartbeat_timeout=math.inf,
        )
        return _Simulation(curves, controller, clock, workers, lightning).run()
    finally:
        journal.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class _Clock:
    """The simulated time, in seconds."""

    now = 0.0


@dataclasses.dataclass
class _Run:
    trial_id: str
    attempt: int
    curve: int
    epoch: int
    budget: int


class _Simulation:
    """The event loop: simulated workers talk to the controller through ``handle``."""

    def __init__(self, curves: Curves, controller: Any, clock: _Clock, workers: int, lightning: bool) -> None:
        self.curves, self.ctl, self.clock, self.n, self.lightning = curves, controller, clock, workers, lightning
        self.events: list[tuple[float, int, int]] = []  # (time, sequence, worker id; -1: a tick)
        self.seq = 0
        self.runs: dict[int, _Run] = {}
        self.curve_of: dict[str, int] = {}
        self.reports: list[tuple[float, str, int, float]] = []
        self.n_runs = 0

    def run(self) -> SimulationResult:
        started = time.perf_counter()
        ctl = self.ctl
        if ctl.timeout is not None:
            self._at(ctl.started_at + ctl.timeout, -1)
        for wid in range(self.n):
            self._deliver(ctl.handle(_peer(wid), {"type": "register", "worker_id": wid, "pid": 0, "host": "simulated"}))
        while self.events and not ctl.finished:
            self.clock.now, _, wid = heapq.heappop(self.events)
            out = ctl.tick()
            if wid >= 0 and wid in self.runs:
                out += self._epoch_end(wid)
            self._deliver(out)
        if not ctl.finished:  # every worker waits and nothing is scheduled: cannot happen, but say so
            ctl.abort("the simulation ran out of events before the study ended")
        last = self.reports[-1][0] if self.reports else 0.0
        trials = list(ctl.trials.values())
        return SimulationResult(
            trials=trials, metric=self.curves.metric, direction=ctl.direction,
            best_trial=best_trial(trials, ctl.direction, "last"), stop_reason=ctl.stop_reason,
            elapsed=max(last, self.clock.now - ctl.started_at), reports=self.reports, runs=self.n_runs,
            wall_s=time.perf_counter() - started,
        )

    def _at(self, when: float, wid: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, wid))

    def _deliver(self, out: list[tuple[bytes, dict[str, Any]]]) -> None:
        while out:
            peer, msg = out.pop(0)
            wid = int(peer.decode().rsplit("-", 1)[1])
            kind = msg["type"]
            if kind == "welcome":
                out += self.ctl.handle(peer, {"type": "get", "worker_id": wid})
            elif kind == "trial":
                self._start(wid, msg["trial"])
            elif kind == "drop":  # the run is taken away (trial_timeout): end it as a worker does
                run = self.runs.pop(wid, None)
                if run is not None:
                    out += self._final(wid, run, "dropped", None)
            # "done": the worker exits; a parked worker simply waits for its next message

    def _start(self, wid: int, trial: Mapping[str, Any]) -> None:
        tid = trial["trial_id"]
        if tid not in self.curve_of:
            self.curve_of[tid] = self.curves.nearest(trial["config"])
        epoch = int(trial["epochs_done"]) if trial["resume"] or trial["epochs_done"] else 0
        run = self.runs[wid] = _Run(tid, int(trial["attempt"]), self.curve_of[tid], epoch, int(trial["budget"]))
        self.n_runs += 1
        self._at(self.clock.now + self.curves.run_overhead + self.curves.seconds[run.curve, run.epoch], wid)

    def _epoch_end(self, wid: int) -> list[tuple[bytes, dict[str, Any]]]:
        run = self.runs[wid]
        value = float(self.curves.values[run.curve, run.epoch])
        msg = {"type": "report", "worker_id": wid, "trial_id": run.trial_id, "attempt": run.attempt,
               "epoch": run.epoch, "value": value}
        if self.lightning:
            msg["extend"] = True
        reply = self.ctl.handle(_peer(wid), msg)
        decision = reply[0][1] if reply else {"type": "decision", "decision": "continue"}
        if decision["type"] == "drop":
            del self.runs[wid]
            return self._final(wid, run, "dropped", None)
        self.reports.append((self.clock.now - self.ctl.started_at, run.trial_id, run.epoch, value))
        if "budget" in decision:
            run.budget = int(decision["budget"])
        run.epoch += 1
        if decision["decision"] != "continue" or run.epoch >= run.budget:
            del self.runs[wid]
            status = {"continue": "ok", "stop": "stopped", "pause": "paused"}[decision["decision"]]
            return self._final(wid, run, status, value)
        self._at(self.clock.now + self.curves.seconds[run.curve, run.epoch], wid)
        return []

    def _final(self, wid: int, run: _Run, status: str, metric: float | None) -> list[tuple[bytes, dict[str, Any]]]:
        return self.ctl.handle(_peer(wid), {
            "type": "final", "worker_id": wid, "trial_id": run.trial_id, "attempt": run.attempt, "status": status,
            "metric": metric, "error": None, "error_type": None, "fatal": False,
        })


def _peer(wid: int) -> bytes:
    return f"sim-{wid}".encode()

