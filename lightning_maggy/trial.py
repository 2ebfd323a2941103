"""Trial records: immutable snapshots of one configuration's life in a search.

A :class:`Trial` never changes; the controller replaces it with an updated copy
(:func:`dataclasses.replace`) on every state change and appends the change to the journal.
Optimizers and early-stop rules receive these records and nothing else.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SCOPES", "Decision", "Trial", "TrialState", "best_trial", "trial_id_for", "trial_value"]


class TrialState(str, enum.Enum):
    """Where a trial is in its life."""

    PENDING = "PENDING"  # suggested, not handed to a worker yet (or re-queued)
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"  # reached its budget (an ASHA rung); may be promoted and resumed
    COMPLETED = "COMPLETED"  # ended by itself: its budget trained, or its own Trainer stopped (EarlyStopping, max_steps)
    STOPPED = "STOPPED"  # stopped early by the early-stop rule or never promoted
    FAILED = "FAILED"  # user code raised, or lost more often than the retry limit
    LOST = "LOST"  # its worker vanished; re-queued to resume from its checkpoint

    @property
    def finished(self) -> bool:
        return self in (TrialState.COMPLETED, TrialState.STOPPED, TrialState.FAILED)


class Decision(str, enum.Enum):
    """The server's answer to one metric report."""

    CONTINUE = "continue"
    STOP = "stop"  # early stop: the trial is finished
    PAUSE = "pause"  # rung reached: checkpoint and hand the worker back; may be resumed later


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def trial_id_for(config: Mapping[str, Any], component: str | None = None, seed: int | None = None) -> str:
    """A deterministic id from the configuration (and ablation component and trial seed), so
    that the same configuration always gets the same id and duplicates are detected."""
    record: dict[str, Any] = {"config": dict(config), "component": component}
    if seed is not None:  # only ablation trials carry a seed of their own; other ids stay as they were
        record["seed"] = int(seed)
    payload = _canonical(record)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One configuration under evaluation.

    Attributes:
        trial_id: deterministic id (see :func:`trial_id_for`).
        config: the hyperparameters, passed to the module as keyword arguments.
        state: the :class:`TrialState`.
        budget: epochs this trial may train in total in its current assignment.
        history: metric per epoch, ``history[e]`` is the value reported after epoch ``e``.
        final_metric: the trial's result: the value it returned (a function trial or a train
            function that returns a number), else its last reported value; None for a FAILED
            trial and one stopped for a NaN/inf (its history keeps what it reported).
        error: the traceback text of a FAILED trial.
        component: the ablation component left out, if any.
        seed: the trial's own training seed (ablation trials repeat each component with the
            same seeds); None: derived from the search's seed and the trial id.
        info: free-form JSON-able data an optimizer attaches (e.g. ASHA's bracket).
        epochs_trained: epochs trained in all its runs together, counted from its reports (an
            epoch trained twice, e.g. by a Trainer that restarted at epoch 0 after a promotion,
            counts twice); ``epochs_done`` is how many epochs its ``history`` holds.
        retries: times this trial was lost and re-queued.
        attempt: how many times the trial was handed to a worker (1 for its first run; every
            promotion and every re-queue is a new attempt). Reports and FINALs carry it, and
            those of any attempt but the current one are refused (the worker is told to drop
            the trial), so a worker wrongly declared lost never trains beside its successor.
        worker: the worker that runs or ran it.
        created / started / finished: UNIX timestamps.
    """

    trial_id: str
    config: Mapping[str, Any]
    state: TrialState = TrialState.PENDING
    budget: int = 0
    history: tuple[float, ...] = ()
    final_metric: float | None = None
    error: str | None = None
    component: str | None = None
    seed: int | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs_trained: int = 0
    retries: int = 0
    attempt: int = 0
    worker: int | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None

    @classmethod
    def create(
        cls,
        config: Mapping[str, Any],
        budget: int = 0,
        component: str | None = None,
        info: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> Trial:
        return cls(
            trial_id=trial_id_for(config, component, seed),
            config=dict(config),
            budget=int(budget),
            component=component,
            seed=seed,
            info=dict(info or {}),
        )

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def epochs(self) -> int:
        """Epochs trained (``epochs_trained``; ``epochs_done`` for records that predate it)."""
        return self.epochs_trained or self.epochs_done

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def best(self, direction: str) -> float | None:
        """The best reported value in ``direction`` ("max" or "min"), or None."""
        values = [v for v in self.history if v == v]  # drop NaN
        if not values:
            return None
        return max(values) if direction == "max" else min(values)

    def evolve(self, **changes: Any) -> Trial:
        """A copy with ``changes`` applied (like :func:`dataclasses.replace`, without re-running
        ``__init__``: the controller calls this on every report)."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"Trial has no field(s) {sorted(unknown)}")
        new = object.__new__(Trial)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)  # exactly the fields, in their order (see __init__ and evolve)
        d["state"] = self.state.value
        d["history"] = list(self.history)
        d["config"] = dict(self.config)
        d["info"] = dict(self.info)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        kwargs = {k: v for k, v in data.items() if k in _FIELDS}
        kwargs["state"] = TrialState(kwargs.get("state", "PENDING"))
        kwargs["history"] = tuple(float(v) for v in kwargs.get("history", ()))
        return cls(**kwargs)


_FIELDS = frozenset(f.name for f in dataclasses.fields(Trial))


#: How a trial's metric is scored when trials are ranked (``search(scope=...)``, as Ray Tune's
#: ``scope``): "last", the final metric (the value at the last epoch it trained; for a trial
#: paused at a rung, the rung's value), or "all", the best value at any epoch it trained.
SCOPES = ("last", "all")


def trial_value(trial: Trial, direction: str, scope: str = "last") -> float | None:
    """The trial's score under ``scope`` (see :data:`SCOPES`); None for a FAILED trial, a trial
    without a finite value, or one the NaN/inf policy stopped (no final metric)."""
    if trial.state is TrialState.FAILED or trial.final_metric is None or math.isnan(trial.final_metric):
        return None
    final = float(trial.final_metric)
    best = trial.best(direction) if scope == "all" else None
    if best is None:
        return final
    return max(best, final) if direction == "max" else min(best, final)


def best_trial(trials: Iterable[Trial], direction: str, scope: str = "last") -> Trial | None:
    """The trial with the best :func:`trial_value` (failed and NaN trials excluded)."""
    best, best_value = None, None
    for t in trials:
        value = trial_value(t, direction, scope)
        if value is None:
            continue
        if best_value is None or (value > best_value if direction == "max" else value < best_value):
            best, best_value = t, value
    return best
