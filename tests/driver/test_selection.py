"""The controller's selection of ended trials (what an early-stop rule compares a report with):
equal to filtering every record, the same tuple while only running trials report, and the
median rule's kept medians decide as medians recomputed on every report."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.earlystop import MedianStoppingRule
from lightning_maggy.records import Selection, TrialRecords
from lightning_maggy.trial import Trial, TrialState

ENDED = (TrialState.COMPLETED, TrialState.STOPPED, TrialState.PAUSED)
STATES = [TrialState.RUNNING, TrialState.PAUSED, TrialState.COMPLETED, TrialState.STOPPED, TrialState.FAILED]

ops = st.lists(
    st.tuples(st.integers(0, 15), st.sampled_from(["report", "state", "delete"]), st.integers(0, 4),
              st.floats(-10, 10, allow_nan=False)),
    min_size=1, max_size=80,
)


def _apply(records: TrialRecords, x: int, op: str, k: int, value: float) -> None:
    tid = f"t{x}"
    trial = records.get(tid) or Trial(trial_id=tid, config={"x": x}, state=TrialState.RUNNING, budget=9)
    if op == "delete":
        records.pop(tid, None)
    elif op == "state":
        records[tid] = trial.evolve(state=STATES[k])
    elif len(trial.history) < 9:
        records[tid] = trial.evolve(history=(*trial.history, value))


@given(ops=ops)
@settings(max_examples=150, deadline=None)
def test_the_selection_equals_filtering_every_record_and_keeps_its_tuple_while_nothing_ended_changes(ops) -> None:
    records = TrialRecords()
    selection = Selection(lambda t: t.state in ENDED)
    before = selection.of(records)
    for x, op, k, value in ops:
        ended_before = {t.trial_id: t for t in before}
        _apply(records, x, op, k, value)
        now = selection.of(records)
        assert list(now) == [t for t in records.values() if t.state in ENDED]  # in the records' order
        if {t.trial_id: t for t in now} == ended_before and all(a is b for a, b in zip(now, before)):
            assert now is before  # unchanged: the very same tuple, so a rule may keep what it derived
        before = now
    # A plain dict has no change log: filtered in full, same answer.
    assert list(Selection(lambda t: t.state in ENDED).of(dict(records))) == list(before)


@given(ops=ops, direction=st.sampled_from(["max", "min"]), history=st.lists(st.floats(-10, 10), min_size=1, max_size=9))
@settings(max_examples=150, deadline=None)
def test_the_median_rule_decides_alike_with_kept_and_recomputed_medians(ops, direction, history) -> None:
    records = TrialRecords()
    selection = Selection(lambda t: t.state in ENDED)
    kept, fresh = MedianStoppingRule(min_trials=1), MedianStoppingRule(min_trials=1)
    running = Trial(trial_id="r", config={}, state=TrialState.RUNNING, budget=9, history=tuple(history))
    for x, op, k, value in ops:
        _apply(records, x, op, k, value)
        ended = selection.of(records)
        for n in range(1, len(history) + 1):  # each step of the running trial, against the same tuple
            trial = running.evolve(history=tuple(history[:n]))
            assert kept.earlystop_check({"r": trial}, ended, direction) == fresh.earlystop_check(
                {"r": trial}, list(ended), direction)
