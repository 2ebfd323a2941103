"""Random operations on trial records, for the property tests that compare the rungs an
optimizer keeps up to date (ASHA's, Hyperband's) with the rungs rebuilt from every record."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from lightning_maggy.trial import Trial, TrialState

#: (x of the trial's config, operation, value) triples.
OPS = st.lists(
    st.tuples(st.integers(0, 39), st.sampled_from(["report", "nan", "pause", "run", "end", "fail", "promote"]),
              st.floats(0.0, 1.0)),
    min_size=1, max_size=120,
)


def apply_op(trial: Trial, op: str, value: float, next_budget: int | None, max_epochs: int = 9) -> Trial:
    """``trial`` after one operation; ``next_budget`` is what a promotion gives it (None: it
    cannot be promoted)."""
    if op in ("report", "nan") and len(trial.history) < max_epochs:
        return trial.evolve(history=(*trial.history, math.nan if op == "nan" else value), state=TrialState.RUNNING)
    if op == "pause":
        return trial.evolve(state=TrialState.PAUSED)
    if op == "run":
        return trial.evolve(state=TrialState.RUNNING)
    if op == "end":
        return trial.evolve(state=TrialState.STOPPED if value < 0.5 else TrialState.COMPLETED)
    if op == "fail":
        return trial.evolve(state=TrialState.FAILED)
    if op == "promote" and next_budget is not None:
        return trial.evolve(budget=next_budget)
    return trial
