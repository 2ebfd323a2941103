"""The controller, driven directly through ``handle()`` / ``tick()`` / ``worker_lost()``.

Messages are built as :func:`~lightning_maggy.transport.messages.decode` produces them (they
go through encode + decode), every reply is checked to be a valid wire message, time comes
from a fake clock, and the journal is a real one in ``tmp_path``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from controller_harness import GRID3, KEY, SPACE, Outgoing, done_peers, hb, rpc, same_floats

from lightning_maggy.driver.journal import read_journal, replay
from lightning_maggy.earlystop import MedianStoppingRule
from lightning_maggy.optimizers import ASHA, IDLE, AbstractOptimizer, GridSearch, RandomSearch
from lightning_maggy.searchspace import Discrete, Searchspace
from lightning_maggy.trial import Trial, TrialState



# -- handing out work and answering reports ----------------------------------------------------


def test_register_then_get_hands_out_a_running_trial(make: Any) -> None:
    h = make(RandomSearch(), num_trials=4)
    assert h.register(1) == [(rpc(1), {"type": "welcome", "worker_id": 1})]
    t = h.start(1)
    assert t["budget"] == 3 and t["epochs_done"] == 0 and t["resume"] is False and t["retries"] == 0
    SPACE.validate(t["config"])
    rec = h.trial(t["trial_id"])
    assert rec.state is TrialState.RUNNING and rec.worker == 1 and rec.started is not None
    assert rec.config == t["config"]
    # A second worker gets a different configuration.
    t2 = h.start(2)
    assert t2["trial_id"] != t["trial_id"]
    assert h.ctl.counts()["RUNNING"] == 2


def test_report_is_answered_continue_and_recorded(make: Any) -> None:
    h = make(RandomSearch(), num_trials=4)
    tid = h.start(1)["trial_id"]
    assert h.report(1, tid, 0, 0.25) == "continue"
    assert h.report(1, tid, 1, 0.5) == "continue"
    assert h.trial(tid).history == (0.25, 0.5)
    assert h.trial(tid).state is TrialState.RUNNING
    events = [e for e in read_journal(h.journal_path) if e["event"] == "report"]
    assert [(e["trial_id"], e["epoch"], e["value"], e["decision"]) for e in events] == [
        (tid, 0, 0.25, "continue"),
        (tid, 1, 0.5, "continue"),
    ]


def test_full_trial_completes_with_final_metric(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=2)
    tid = h.start(1)["trial_id"]
    h.report(1, tid, 0, 0.3)
    h.report(1, tid, 1, 0.4)
    nxt = h.trial_for(h.final(1, tid, metric=0.35), 1)
    assert nxt["trial_id"] != tid
    rec = h.trial(tid)
    assert rec.state is TrialState.COMPLETED and rec.final_metric == 0.35 and rec.finished is not None
    assert (tid, TrialState.COMPLETED) in h.ended


def test_final_without_metric_takes_last_non_nan_report(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=4)
    tid = h.start(1)["trial_id"]
    h.report(1, tid, 0, 0.3)
    h.report(1, tid, 3, 0.2)  # epochs 1 and 2 were never reported: NaN gaps
    h.final(1, tid, metric=None)
    assert h.trial(tid).final_metric == 0.2
    assert h.trial(tid).state is TrialState.COMPLETED


# -- ASHA: pause, promotion, resume ------------------------------------------------------------


def test_asha_pauses_at_rung_then_promotes_the_same_trial_with_larger_budget(make: Any) -> None:
    # eta=2, max_epochs=2: rungs [1, 2]; two trials; the better one is promoted.
    h = make(ASHA(reduction_factor=2, resource_min=1), max_epochs=2, num_trials=2)
    a = h.start(1)
    assert a["budget"] == 1
    assert h.report(1, a["trial_id"], 0, 0.9) == "pause"
    assert h.report(1, a["trial_id"], 0, 0.9) == "pause"  # a re-sent report keeps the decision
    b = h.trial_for(h.final(1, a["trial_id"], status="paused"), 1)
    assert h.trial(a["trial_id"]).state is TrialState.PAUSED
    assert b["trial_id"] != a["trial_id"] and b["budget"] == 1

    assert h.report(1, b["trial_id"], 0, 0.1) == "pause"
    # A function trial says "stopped" when broadcast raised on PAUSE: the decision wins.
    promoted = h.trial_for(h.final(1, b["trial_id"], status="stopped"), 1)
    assert h.trial(b["trial_id"]).state is TrialState.PAUSED
    assert promoted["trial_id"] == a["trial_id"]
    assert promoted["budget"] == 2
    assert promoted["resume"] is True
    assert promoted["epochs_done"] == len(h.trial(a["trial_id"]).history) == 1
    assert promoted["config"] == a["config"]
    assert h.trial(a["trial_id"]).state is TrialState.RUNNING

    assert h.report(1, a["trial_id"], 1, 0.95) == "continue"  # the top rung: no pause
    out = h.final(1, a["trial_id"])
    assert done_peers(out) == [rpc(1)]
    assert h.ctl.stop_reason == "finished"
    assert h.trial(a["trial_id"]).state is TrialState.COMPLETED
    assert h.trial(a["trial_id"]).history == (0.9, 0.95)
    assert h.trial(b["trial_id"]).state is TrialState.STOPPED  # never promoted: ended at its rung
    assert (a["trial_id"], TrialState.PAUSED) in h.ended and (a["trial_id"], TrialState.COMPLETED) in h.ended


def test_asha_top_rung_below_max_epochs_completes_instead_of_pausing(make: Any) -> None:
    # resource_max=2 < max_epochs=4: rungs [1, 2]; a trial that trains the top rung is done.
    h = make(ASHA(reduction_factor=2, resource_min=1, resource_max=2), max_epochs=4, num_trials=2)
    a = h.start(1)
    assert h.report(1, a["trial_id"], 0, 0.9) == "pause"
    b = h.trial_for(h.final(1, a["trial_id"], status="paused"), 1)
    assert h.report(1, b["trial_id"], 0, 0.1) == "pause"
    promoted = h.trial_for(h.final(1, b["trial_id"], status="paused"), 1)
    assert promoted["trial_id"] == a["trial_id"] and promoted["budget"] == 2
    assert h.report(1, a["trial_id"], 1, 0.95) == "continue"
    out = h.final(1, a["trial_id"])
    assert done_peers(out) == [rpc(1)] and h.ctl.stop_reason == "finished"
    assert h.trial(a["trial_id"]).state is TrialState.COMPLETED
    assert h.trial(a["trial_id"]).final_metric == 0.95
    best = h.ctl.best()
    assert best is not None and best.trial_id == a["trial_id"]
    assert (a["trial_id"], TrialState.COMPLETED) in h.ended


class ShortBudget(RandomSearch):
    """Random search whose trials train one epoch of max_epochs=3."""

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        s = super().get_suggestion(trial)
        return s.evolve(budget=1) if isinstance(s, Trial) else s


class ShortBudgetPausing(ShortBudget):
    def pauses_at_budget(self, trial: Trial) -> bool:
        return True


def test_a_trial_that_trained_its_budget_completes_unless_the_optimizer_pauses_it(make: Any) -> None:
    # The controller knows no rung rules: a budget below max_epochs alone does not pause.
    h = make(ShortBudget(), max_epochs=3, num_trials=1)
    tid = h.start(1)["trial_id"]
    h.report(1, tid, 0, 0.5)
    h.final(1, tid)
    assert h.trial(tid).state is TrialState.COMPLETED and h.ctl.stop_reason == "finished"

    # The optimizer's pauses_at_budget() decides when no PAUSE answer is on record.
    h = make(ShortBudgetPausing(), max_epochs=3, num_trials=1)
    tid = h.start(1)["trial_id"]
    h.report(1, tid, 0, 0.5)
    out = h.final(1, tid)
    assert h.ctl.stop_reason == "finished" and done_peers(out) == [rpc(1)]
    assert (tid, TrialState.PAUSED) in h.ended  # paused at its budget; never resumed
    assert h.trial(tid).state is TrialState.STOPPED


def test_asha_waits_for_a_top_trial_whose_end_is_in_flight_instead_of_skipping_it(make: Any) -> None:
    # eta=2, rungs [1, 2]. a ends paused at 0.1; b reaches the rung with 0.9 and is answered
    # PAUSE, but its "final" has not arrived when worker 1 asks for work. b is the rung's only
    # promotable trial: worker 1 must wait for it, not start a new trial (which is what it got
    # when promotion looked at PAUSED trials only).
    h = make(ASHA(reduction_factor=2, resource_min=1), max_epochs=2, num_trials=3)
    a = h.start(1)
    b = h.start(2)
    assert h.report(1, a["trial_id"], 0, 0.1) == "pause"
    assert h.report(2, b["trial_id"], 0, 0.9) == "pause"
    out = h.final(1, a["trial_id"], status="paused")
    assert [m for _, m in out if m["type"] == "trial"] == []  # parked: b's end is in flight
    assert h.ctl.counts()["RUNNING"] == 1 and len(h.ctl.trials) == 2
    out = h.final(2, b["trial_id"], status="paused")
    sent = [(p, m["trial"]) for p, m in out if m["type"] == "trial"]
    promoted = [t for _, t in sent if t["trial_id"] == b["trial_id"]]
    assert len(promoted) == 1 and promoted[0]["budget"] == 2 and promoted[0]["resume"] is True
    assert len(sent) == 2  # and the other worker starts the third configuration
    assert h.trial(a["trial_id"]).state is TrialState.PAUSED


# -- failures ----------------------------------------------------------------------------------

TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 3, in fn\nValueError: boom\n'


def test_failed_trial_is_recorded_with_its_error_and_the_search_goes_on(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=1, max_failures=3)
    a = h.start(1)
    assert h.report(1, a["trial_id"], 0, 0.9) == "continue"  # then it crashes
    nxt = h.trial_for(h.final(1, a["trial_id"], status="failed", error=TRACEBACK, error_type="ValueError"), 1)
    rec = h.trial(a["trial_id"])
    assert rec.state is TrialState.FAILED
    assert rec.history == (0.9,) and rec.final_metric is None  # no result: never sorts first in a table
    assert rec.error is not None and "ValueError: boom" in rec.error and "train.py" in rec.error
    assert rec.finished is not None and rec.worker == 1
    assert h.ctl.failures == 1 and h.ctl.stop_reason is None
    assert nxt["trial_id"] != a["trial_id"]
    h.report(1, nxt["trial_id"], 0, 0.7)
    last = h.trial_for(h.final(1, nxt["trial_id"]), 1)
    h.report(1, last["trial_id"], 0, 0.6)
    assert done_peers(h.final(1, last["trial_id"])) == [rpc(1)]
    assert h.ctl.stop_reason == "finished"
    assert h.ctl.counts()["COMPLETED"] == 2 and h.ctl.counts()["FAILED"] == 1
    assert h.ctl.best() is not None and h.ctl.best().final_metric == 0.7


def test_failed_without_error_text_gets_a_placeholder(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=1)
    a = h.start(1)
    h.final(1, a["trial_id"], status="failed")
    assert h.trial(a["trial_id"]).error


def test_max_failures_aborts_and_stops_running_trials(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=3, max_failures=2)
    a, b, c = h.start(1), h.start(2), h.start(3)
    h.report(3, c["trial_id"], 0, 0.5)
    out1 = h.final(1, a["trial_id"], status="failed", error="E1", error_type="ValueError")
    assert out1 == [] and h.ctl.stop_reason is None  # grid exhausted: worker 1 waits (parked)
    out2 = h.final(2, b["trial_id"], status="failed", error=TRACEBACK, error_type="ValueError")
    assert h.ctl.stop_reason == "aborted"
    assert "max_failures=2" in h.ctl.abort_message and "ValueError: boom" in h.ctl.abort_message
    # The worker that reported and the one waiting are told done at once.
    assert done_peers(out2) == [rpc(1), rpc(2)]
    # The running trial is recorded as STOPPED, with the last value it reported as its result;
    # its worker is told to drop it at its next report.
    assert h.trial(c["trial_id"]).state is TrialState.STOPPED
    assert h.trial(c["trial_id"]).final_metric == 0.5
    assert h.trial(c["trial_id"]).error == f"stopped: the study was aborted ({h.ctl.abort_message.splitlines()[0]})"
    assert h.report(3, c["trial_id"], 1, 0.6) == "drop"
    assert h.trial(c["trial_id"]).history == (0.5,)
    assert done_peers(h.final(3, c["trial_id"], status="stopped")) == [rpc(3)]
    assert h.trial(c["trial_id"]).state is TrialState.STOPPED
    assert done_peers(h.get(4)) == [rpc(4)]  # a latecomer is told done too
    ends = [e for e in read_journal(h.journal_path) if e["event"] == "experiment_end"]
    assert len(ends) == 1 and ends[0]["reason"] == "aborted"


def test_a_fatal_error_type_aborts_at_once(make: Any) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=2, max_failures=10)
    a, b = h.start(1), h.start(2)
    assert h.get(3) == []  # ASHA waits: worker 3 parked
    msg = "metric 'val_acc' was not logged; logged metrics: ['val_loss']"
    error = f"Traceback...\nMetricNotFoundError: {msg}"
    out = h.final(1, a["trial_id"], status="failed", error=error, error_type="MetricNotFoundError", fatal=True)
    assert h.ctl.failures == 1
    assert h.ctl.stop_reason == "aborted"
    assert h.ctl.abort_message is not None and h.ctl.abort_message.splitlines()[0] == msg
    assert "Traceback..." in h.ctl.abort_message and a["trial_id"] in h.ctl.abort_message
    assert done_peers(out) == [rpc(1), rpc(3)]
    assert h.trial(b["trial_id"]).state is TrialState.STOPPED
    assert h.trial(b["trial_id"]).error == f"stopped: the study was aborted ({msg})"  # not a traceback line


# -- time: the search timeout and silent workers -------------------------------------------------


def test_timeout_stops_running_trials_at_next_report_and_starts_no_new_one(make: Any) -> None:
    h = make(RandomSearch(), num_trials=None, max_epochs=5, timeout=10.0)
    tid = h.start(1)["trial_id"]
    assert h.report(1, tid, 0, 0.5) == "continue"
    h.clock.advance(9.0)
    assert h.tick() == [] and not h.ctl.timed_out
    h.clock.advance(2.0)
    assert h.tick() == []
    assert h.ctl.timed_out and h.ctl.stop_reason is None  # a trial is still running
    assert h.get(2) == []  # no new trial after the timeout: worker 2 waits
    assert len(h.ctl.trials) == 1
    assert h.report(1, tid, 1, 0.6) == "stop"
    assert h.trial(tid).history == (0.5, 0.6)
    out = h.final(1, tid, status="stopped")
    assert done_peers(out) == [rpc(1), rpc(2)]
    assert h.trial(tid).state is TrialState.STOPPED
    assert h.ctl.stop_reason == "timeout"
    assert any(e["event"] == "timeout" for e in read_journal(h.journal_path))


def test_what_the_timeout_stopped_is_resumed_with_the_study_and_what_a_rule_stopped_is_not(make: Any) -> None:
    from lightning_maggy.driver.journal import load_study

    h = make(RandomSearch(), num_trials=None, max_epochs=5, timeout=10.0, max_retries=3)
    h.journal.append("experiment_start")
    a, b, c = h.start(1)["trial_id"], h.start(2)["trial_id"], h.start(3)["trial_id"]
    h.report(1, a, 0, 0.5)
    d = h.start(4)["trial_id"]
    h.report(4, d, 0, 0.1)
    h.final(4, d, status="stopped")  # stopped by its own code before the timeout (ended for good); 4 takes another
    h.ctl.worker_lost(3, "worker 3 died")  # c is lost and waits to be re-queued: no worker is free
    h.clock.advance(11.0)
    h.tick()  # the timeout: c, waiting, is stopped
    assert h.report(1, a, 1, 0.6) == "stop"  # a is stopped by the timeout at its next report
    h.final(1, a, status="stopped")
    h.report(2, b, 0, 0.7)
    h.final(2, b)  # b ends its run after the timeout without a report telling it to stop
    log = load_study(h.journal_path)
    assert {tid: log.causes.get(tid) for tid in (a, b, c)} == {a: "timeout", b: "timeout", c: "timeout"}
    resumed = log.resumable_trials()
    assert all(resumed[tid].state is TrialState.LOST for tid in (a, b, c))
    assert resumed[a].history == (0.5, 0.6) and resumed[a].finished is None
    assert d not in log.causes and resumed[d].state is TrialState.STOPPED


def test_timeout_ends_the_wait_of_parked_workers(make: Any) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=2, timeout=5.0)
    a, b = h.start(1), h.start(2)
    h.report(1, a["trial_id"], 0, 0.5)
    assert h.final(1, a["trial_id"], status="paused") == []  # ASHA waits on b: parked
    h.clock.advance(6.0)
    assert h.tick() == []  # b still runs
    assert h.report(2, b["trial_id"], 0, 0.9) == "stop"  # not "pause": the time is up
    out = h.final(2, b["trial_id"], status="stopped")
    assert done_peers(out) == [rpc(1), rpc(2)]
    assert h.ctl.stop_reason == "timeout"
    assert h.trial(a["trial_id"]).state is TrialState.STOPPED  # never promoted
    assert h.trial(b["trial_id"]).state is TrialState.STOPPED


def test_silent_worker_trial_is_lost_requeued_then_failed_after_max_retries(make: Any) -> None:
    h = make(RandomSearch(), num_trials=5, heartbeat_timeout=30.0, max_retries=1, max_failures=10)
    a = h.start(1)
    h.report(1, a["trial_id"], 0, 0.4)
    b = h.start(2)
    h.clock.advance(20.0)
    h.heartbeat(2, b["trial_id"])  # worker 2 is alive, worker 1 silent
    h.clock.advance(15.0)
    h.tick()
    lost = h.trial(a["trial_id"])
    assert lost.state is TrialState.LOST and lost.retries == 1 and lost.worker is None
    assert "silent" in (lost.error or "")
    assert h.trial(b["trial_id"]).state is TrialState.RUNNING
    # The next worker that asks gets the lost trial back, to resume from its checkpoint.
    again = h.start(3)
    assert again["trial_id"] == a["trial_id"]
    assert again["retries"] == 1 and again["resume"] is True and again["epochs_done"] == 1
    assert h.trial(a["trial_id"]).state is TrialState.RUNNING and h.trial(a["trial_id"]).worker == 3
    # The first worker comes back: its reports and final are stale.
    assert h.report(1, a["trial_id"], 1, 0.99, attempt=1) == "drop"
    assert h.trial(a["trial_id"]).history == (0.4,)
    # Lost a second time: beyond max_retries=1, the trial fails.
    h.clock.advance(25.0)
    h.heartbeat(2, b["trial_id"])
    h.clock.advance(10.0)
    h.tick()
    failed = h.trial(a["trial_id"])
    assert failed.state is TrialState.FAILED and "lost 2 times" in (failed.error or "")
    assert h.ctl.failures == 1
    assert h.trial(b["trial_id"]).state is TrialState.RUNNING


def test_a_worker_silent_for_another_heartbeat_timeout_after_its_loss_is_handed_over_as_frozen(make: Any) -> None:
    h = make(RandomSearch(), num_trials=5, heartbeat_timeout=30.0, max_retries=3)
    a = h.start(1)
    h.clock.advance(31.0)
    h.tick()  # lost: re-queued; the worker may only be paused
    assert h.trial(a["trial_id"]).state is TrialState.LOST
    assert h.ctl.take_frozen() == []
    h.clock.advance(25.0)  # 56 s of silence: not yet twice the timeout
    h.tick()
    assert h.ctl.take_frozen() == []
    h.clock.advance(5.0)
    h.tick()
    assert h.ctl.take_frozen() == [(1, 61.0)]
    h.clock.advance(60.0)
    h.tick()
    assert h.ctl.take_frozen() == []  # handed over once


def test_a_paused_worker_that_speaks_again_is_not_frozen(make: Any) -> None:
    h = make(RandomSearch(), num_trials=5, heartbeat_timeout=30.0)
    a = h.start(1)
    h.clock.advance(31.0)
    h.tick()
    h.clock.advance(20.0)
    # It thaws: its heartbeat for the stale attempt is refused (told to drop), yet it is alive.
    assert h.heartbeat(1, a["trial_id"], attempt=1)[0][1]["type"] == "drop"
    h.clock.advance(20.0)
    h.tick()
    assert h.ctl.take_frozen() == []


def test_worker_lost_requeues_and_wakes_a_parked_worker(make: Any) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=1)
    a = h.start(1)
    h.report(1, a["trial_id"], 0, 0.3)
    assert h.get(2) == []  # ASHA waits on the running trial: parked, no reply
    assert h.ctl.worker_lost(99, "never seen") == []
    out = h.checked(h.ctl.worker_lost(1, "worker process exited with code -9"))
    t = h.trial_for(out, 2)
    assert t["trial_id"] == a["trial_id"] and t["retries"] == 1 and t["resume"] is True
    assert h.trial(a["trial_id"]).worker == 2
    assert h.ctl.worker_lost(1, "again") == []  # nothing held any more


def test_reregistering_worker_loses_its_trial(make: Any) -> None:
    h = make(RandomSearch(), num_trials=3)
    a = h.start(1)
    h.report(1, a["trial_id"], 0, 0.2)
    out = h.register(1)
    assert out[0] == (rpc(1), {"type": "welcome", "worker_id": 1})
    rec = h.trial(a["trial_id"])
    assert rec.state is TrialState.LOST and rec.retries == 1 and "restarted" in (rec.error or "")
    again = h.start(1)
    assert again["trial_id"] == a["trial_id"] and again["resume"] is True


def test_stale_report_is_answered_stop_and_not_recorded(make: Any) -> None:
    h = make(RandomSearch(), num_trials=3)
    a, b = h.start(1), h.start(2)
    h.report(1, a["trial_id"], 0, 0.5)
    lines = len(list(read_journal(h.journal_path)))
    assert h.report(2, a["trial_id"], 1, 0.9) == "drop"  # not worker 2's trial
    assert h.report(2, "0123456789abcdef", 0, 0.9) == "drop"  # unknown trial
    assert h.trial(a["trial_id"]).history == (0.5,)
    assert h.trial(b["trial_id"]).history == ()
    assert len(list(read_journal(h.journal_path))) == lines
    assert h.report(1, a["trial_id"], 1, 0.6) == "continue"  # the owner is unaffected


# -- idle workers ---------------------------------------------------------------------------------


def test_idle_workers_are_parked_and_all_told_done_on_their_own_socket(make: Any) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=2)
    a, b = h.start(1), h.start(2)
    assert h.get(3) == []  # ASHA waits: no reply
    h.heartbeat(3)  # its heartbeat thread talks on another socket meanwhile
    h.report(1, a["trial_id"], 0, 0.9)
    assert h.final(1, a["trial_id"], status="paused") == []  # rung of 1: nothing to promote yet
    h.report(2, b["trial_id"], 0, 0.1)
    out = h.final(2, b["trial_id"], status="paused")
    promoted = h.trial_for(out, 2)  # the finisher is served first
    assert [p for p, _ in out] == [rpc(2)]  # the parked ones stay parked
    assert promoted["trial_id"] == a["trial_id"] and promoted["budget"] == 2
    h.heartbeat(1)
    h.report(2, a["trial_id"], 1, 0.95)
    out = h.final(2, a["trial_id"])
    # Every parked worker gets exactly one "done", on the socket it asked on.
    assert done_peers(out) == [rpc(1), rpc(2), rpc(3)]
    assert h.ctl.stop_reason == "finished"


def test_everything_done_tells_every_parked_worker(make: Any) -> None:
    h = make(GridSearch(), searchspace=Searchspace(x=Discrete([1, 2])), num_trials=None, max_epochs=1)
    a, b = h.start(1), h.start(2)
    assert h.get(3) == []  # grid exhausted, trials still running: wait
    h.report(1, a["trial_id"], 0, 0.1)
    assert h.final(1, a["trial_id"]) == []
    h.report(2, b["trial_id"], 0, 0.2)
    out = h.final(2, b["trial_id"])
    assert done_peers(out) == [rpc(1), rpc(2), rpc(3)]
    assert h.ctl.stop_reason == "finished"
    assert h.ctl.finished and h.tick() == []


# -- reports ----------------------------------------------------------------------------------------


def test_report_epochs_overwrite_and_gaps_are_nan(make: Any) -> None:
    h = make(RandomSearch(), num_trials=2, max_epochs=10)
    tid = h.start(1)["trial_id"]
    h.report(1, tid, 0, 0.5)
    h.report(1, tid, 1, 0.6)
    h.report(1, tid, 1, 0.7)  # re-sent epoch replaces
    assert h.trial(tid).history == (0.5, 0.7)
    h.report(1, tid, 4, 0.9)  # skipped epochs 2, 3
    assert same_floats(h.trial(tid).history, (0.5, 0.7, math.nan, math.nan, 0.9))
    h.report(1, tid, 2, 0.8)  # a late epoch fills its gap
    assert same_floats(h.trial(tid).history, (0.5, 0.7, 0.8, math.nan, 0.9))
    assert h.report(1, tid, -1, 0.1) == "continue"  # a sanity-check epoch is not recorded
    assert len(h.trial(tid).history) == 5
    h.final(1, tid)
    h.journal.close()
    assert same_floats(replay(h.journal_path)[tid].history, h.trial(tid).history)


# -- the journal ---------------------------------------------------------------------------------


def test_journal_replay_reproduces_the_final_trial_records(make: Any) -> None:
    h = make(
        ASHA(reduction_factor=2), max_epochs=2, num_trials=3, max_failures=5, max_retries=2, heartbeat_timeout=30.0
    )
    a, b = h.start(1), h.start(2)
    h.report(1, a["trial_id"], 0, 0.9)
    c = h.trial_for(h.final(1, a["trial_id"], status="paused"), 1)
    h.report(2, b["trial_id"], 0, 0.5)
    promoted = h.trial_for(h.final(2, b["trial_id"], status="stopped"), 2)
    assert promoted["trial_id"] == a["trial_id"]
    h.report(1, c["trial_id"], 0, float("nan"))
    assert h.final(1, c["trial_id"], status="failed", error=TRACEBACK, error_type="ValueError") == []
    h.report(2, a["trial_id"], 1, 0.8)
    h.report(2, a["trial_id"], 1, 0.93)  # overwritten
    h.clock.advance(20.0)
    h.heartbeat(1)
    h.clock.advance(15.0)
    out = h.tick()  # worker 2 silent: its trial is lost and handed to the parked worker 1
    resumed = h.trial_for(out, 1)
    assert resumed["trial_id"] == a["trial_id"] and resumed["retries"] == 1
    h.report(1, a["trial_id"], 1, 0.97)
    assert done_peers(h.final(1, a["trial_id"])) == [rpc(1)]
    assert h.ctl.stop_reason == "finished"
    expected = {tid: t.to_dict() for tid, t in h.ctl.trials.items()}
    assert {t["state"] for t in expected.values()} == {"COMPLETED", "STOPPED", "FAILED"}
    h.journal.close()
    rebuilt = {tid: t.to_dict() for tid, t in replay(h.journal_path).items()}
    # NaN-aware comparison of the full records (states, histories, budgets, retries, errors...).
    assert json.dumps(rebuilt, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert rebuilt[a["trial_id"]]["history"] == [0.9, 0.97] and rebuilt[a["trial_id"]]["budget"] == 2


# -- custom optimizers ---------------------------------------------------------------------------


class ReturnsDict(AbstractOptimizer):
    """One trial, then idle once, then returns a plain dict instead of a Trial."""

    def initialize(self) -> None:
        self.calls = 0

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        self.calls += 1
        if self.calls == 1:
            return self.create_trial({"lr": 0.01, "x": 1}, budget=self.max_epochs)
        return IDLE if self.calls == 2 else {"lr": 0.01, "x": 1}

    def finalize_experiment(self, trials: list[Trial]) -> None:
        self.finalized = list(trials)


class Raises(AbstractOptimizer):
    def initialize(self) -> None:
        pass

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        raise RuntimeError("kaboom in the suggester")

    def finalize_experiment(self, trials: list[Trial]) -> None:
        pass


def test_custom_optimizer_returning_a_wrong_type_aborts_with_a_clear_message(make: Any) -> None:
    opt = ReturnsDict()
    h = make(opt)
    tid = h.start(1)["trial_id"]
    assert h.get(2) == []  # IDLE while a trial runs: parked
    out = h.get(3)
    assert h.ctl.stop_reason == "aborted"
    assert "ReturnsDict.get_suggestion() returned {'lr': 0.01, 'x': 1}" in h.ctl.abort_message
    assert "expected a Trial, IDLE or None" in h.ctl.abort_message
    assert done_peers(out) == [rpc(2), rpc(3)]
    assert list(h.ctl.trials) == [tid] and h.trial(tid).state is TrialState.STOPPED
    assert [t.trial_id for t in opt.finalized] == [tid]


def test_custom_optimizer_that_raises_aborts_with_its_traceback(make: Any) -> None:
    h = make(Raises())
    out = h.get(1)
    assert h.ctl.stop_reason == "aborted"
    assert "kaboom in the suggester" in h.ctl.abort_message and "RuntimeError" in h.ctl.abort_message
    assert done_peers(out) == [rpc(1)]


# -- early stopping ------------------------------------------------------------------------------


def test_median_rule_stops_a_bad_trial(make: Any) -> None:
    space = Searchspace(x=Discrete([1, 2, 3, 4]))
    h = make(GridSearch(), searchspace=space, num_trials=None, max_epochs=3, earlystop=MedianStoppingRule(min_trials=2))
    good = [(0.8, 0.85, 0.9), (0.7, 0.75, 0.8)]
    t = h.start(1)
    # Before min_trials finished trials exist, even a bad value continues.
    bad_early = h.start(2)
    assert h.report(2, bad_early["trial_id"], 0, 0.01) == "continue"
    for values in good:
        for epoch, v in enumerate(values):
            assert h.report(1, t["trial_id"], epoch, v) == "continue"
        t = h.trial_for(h.final(1, t["trial_id"]), 1)
    # Two finished trials: the median of their running averages at step 0 is 0.75.
    bad = t
    assert h.report(1, bad["trial_id"], 0, 0.1) == "stop"
    assert h.report(1, bad["trial_id"], 1, 0.99) == "stop"  # a stop is final
    h.final(1, bad["trial_id"], status="stopped", metric=0.99)
    rec = h.trial(bad["trial_id"])
    assert rec.state is TrialState.STOPPED and rec.history == (0.1, 0.99)
    # A trial above the median continues.
    assert h.report(2, bad_early["trial_id"], 1, 0.95) == "continue"


# -- attempts: a worker wrongly declared lost never trains beside its successor ------------------


def test_a_stale_attempt_is_refused_told_to_drop_and_changes_nothing(make: Any) -> None:
    h = make(RandomSearch(), num_trials=3, heartbeat_timeout=30.0, max_retries=2, max_failures=10)
    a = h.start(1)
    assert a["attempt"] == 1
    h.heartbeat(1, a["trial_id"])  # worker 1's heartbeat socket is known
    h.report(1, a["trial_id"], 0, 0.4)
    h.clock.advance(31.0)
    h.tick()  # worker 1 is silent (a long GIL-holding call, a network pause): declared lost
    again = h.start(2)
    assert again["trial_id"] == a["trial_id"] and again["attempt"] == 2
    assert h.trial(a["trial_id"]).attempt == 2 and h.trial(a["trial_id"]).worker == 2
    before = h.trial(a["trial_id"])
    lines = len(list(read_journal(h.journal_path)))
    # Worker 1 wakes up and goes on with attempt 1: every message of it is refused.
    assert h.report(1, a["trial_id"], 1, 0.99, attempt=1) == "drop"
    out = h.heartbeat(1, a["trial_id"], attempt=1)
    assert out == [(hb(1), {"type": "drop", "trial_id": a["trial_id"], "attempt": 1, "reason": out[0][1]["reason"]})]
    assert "attempt 2" in out[0][1]["reason"]
    # Worker 2, with the wrong attempt number, is refused too; with its own it is answered.
    assert h.report(2, a["trial_id"], 1, 0.5, attempt=1) == "drop"
    assert h.trial(a["trial_id"]) == before
    assert len(list(read_journal(h.journal_path))) == lines  # nothing journaled
    assert h.report(2, a["trial_id"], 1, 0.5) == "continue"
    # Worker 1's FINAL of the dropped attempt changes nothing, and it gets other work.
    out = h.final(1, a["trial_id"], status="dropped", attempt=1)
    nxt = h.trial_for(out, 1)
    assert nxt["trial_id"] != a["trial_id"] and nxt["attempt"] == 1
    assert h.trial(a["trial_id"]).state is TrialState.RUNNING and h.trial(a["trial_id"]).history == (0.4, 0.5)
    # A second stale FINAL (a replay-like duplicate) gets "done", not a second trial.
    assert h.final(1, a["trial_id"], status="ok", attempt=1) == [(rpc(1), {"type": "done"})]
    assert h.trial(nxt["trial_id"]).worker == 1
    # The attempts are journaled with the trial.
    attempts = [e["trial"]["attempt"] for e in read_journal(h.journal_path)
                if e["event"] == "trial" and e["trial"]["trial_id"] == a["trial_id"]]
    assert attempts == [1, 1, 2]  # RUNNING (1), LOST (1), RUNNING (2)
    assert h.ctl.refused >= 4


def test_a_promotion_is_a_new_attempt(make: Any) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=2)
    a, b = h.start(1), h.start(2)
    h.report(1, a["trial_id"], 0, 0.9)
    h.final(1, a["trial_id"], status="paused")
    h.report(2, b["trial_id"], 0, 0.1)
    promoted = h.trial_for(h.final(2, b["trial_id"], status="paused"), 2)
    assert promoted["trial_id"] == a["trial_id"] and promoted["attempt"] == 2
    assert h.report(2, a["trial_id"], 1, 0.95, attempt=1) == "drop"  # the rung run's number
    assert h.report(2, a["trial_id"], 1, 0.95) == "continue"


def test_forged_messages_for_a_parked_worker_do_not_redirect_its_work(make: Any) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=2)
    a, b = h.start(1), h.start(2)
    assert h.get(3) == []  # parked
    attacker = b"attacker"
    # A get and a stale final in worker 3's name, from another socket: nothing changes.
    assert h.handle(3, {"type": "get"}, peer=attacker) == []
    out = h.handle(
        3,
        {"type": "final", "trial_id": a["trial_id"], "attempt": 1, "status": "ok", "metric": 1.0,
         "error": None, "error_type": None, "fatal": False},
        peer=attacker,
    )
    assert out == [(attacker, {"type": "done"})]
    assert h.ctl.workers[3].peer == rpc(3)
    h.report(1, a["trial_id"], 0, 0.9)
    h.final(1, a["trial_id"], status="paused")
    h.report(2, b["trial_id"], 0, 0.1)
    out = h.final(2, b["trial_id"], status="paused")
    assert [p for p, m in out if m["type"] == "trial"] == [rpc(2)]
    assert h.trial(a["trial_id"]).state is TrialState.RUNNING


def test_a_worker_dropping_its_current_attempt_requeues_the_trial(make: Any) -> None:
    h = make(RandomSearch(), num_trials=2, max_retries=1)
    a = h.start(1)
    h.report(1, a["trial_id"], 0, 0.3)
    out = h.final(1, a["trial_id"], status="dropped")
    again = h.trial_for(out, 1)
    assert again["trial_id"] == a["trial_id"] and again["attempt"] == 2 and again["resume"] is True
    assert h.trial(a["trial_id"]).retries == 1


# -- fatal errors: decided by the worker (isinstance), sent as a flag ------------------------------


def test_a_users_exception_named_like_ours_fails_its_trial_only(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=1, max_failures=5)
    a = h.start(1)
    error = "Traceback...\nConfigurationError: the user's own class of that name"
    out = h.final(1, a["trial_id"], status="failed", error=error, error_type="ConfigurationError", fatal=False)
    assert h.ctl.stop_reason is None and h.ctl.failures == 1
    assert h.trial(a["trial_id"]).state is TrialState.FAILED
    assert h.trial_for(out, 1)["trial_id"] != a["trial_id"]  # the search goes on


def test_the_fatal_flag_alone_decides_whatever_the_class_name(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=1, max_failures=5)
    a = h.start(1)
    h.final(1, a["trial_id"], status="failed", error="E", error_type="SubclassOfMetricNotFound", fatal=True)
    assert h.ctl.stop_reason == "aborted"


# -- non-finite metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_report_stops_the_trial_never_promoted_never_best(make: Any, bad: float) -> None:
    h = make(ASHA(reduction_factor=2), max_epochs=2, num_trials=2)
    a, b = h.start(1), h.start(2)
    h.report(1, a["trial_id"], 0, 0.5)
    assert h.report(1, a["trial_id"], 0, bad) == "stop"  # +inf would rank first under "max"
    assert h.final(1, a["trial_id"], status="stopped", metric=bad) == []  # parked: b still runs
    rec = h.trial(a["trial_id"])
    assert rec.state is TrialState.STOPPED and rec.final_metric is None
    assert math.isnan(rec.history[0]) and "non-finite" in (rec.error or "")
    assert h.report(2, b["trial_id"], 0, 0.1) == "pause"
    out = h.final(2, b["trial_id"], status="paused")
    promoted = [m["trial"]["trial_id"] for _, m in out if m["type"] == "trial"]
    assert promoted == [b["trial_id"]]  # the only promotable trial is the finite one
    h.report(2, b["trial_id"], 1, 0.2)
    h.final(2, b["trial_id"])
    assert h.ctl.stop_reason == "finished"
    assert h.ctl.best().trial_id == b["trial_id"]
    events = [e for e in read_journal(h.journal_path) if e["event"] == "non_finite"]
    assert [e["trial_id"] for e in events] == [a["trial_id"]]
    # The journal replays to the same record.
    assert same_floats(replay(h.journal_path)[a["trial_id"]].history, rec.history)


def test_a_non_finite_returned_metric_is_never_best(make: Any) -> None:
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=1)
    a = h.start(1)
    h.report(1, a["trial_id"], 0, 0.9)
    nxt = h.trial_for(h.final(1, a["trial_id"], metric=math.inf), 1)
    assert h.trial(a["trial_id"]).state is TrialState.STOPPED and h.trial(a["trial_id"]).final_metric is None
    h.report(1, nxt["trial_id"], 0, 0.1)
    h.final(1, nxt["trial_id"], metric=0.1)
    assert h.ctl.best().trial_id == nxt["trial_id"]


# -- trial_timeout ---------------------------------------------------------------------------------


def test_a_trial_over_trial_timeout_is_stopped_and_its_worker_told_to_drop_it(make: Any) -> None:
    h = make(RandomSearch(), num_trials=2, trial_timeout=10.0, heartbeat_timeout=60.0)
    a = h.start(1)
    h.heartbeat(1, a["trial_id"])
    h.report(1, a["trial_id"], 0, 0.6)
    h.clock.advance(9.0)
    h.heartbeat(1, a["trial_id"])
    assert h.tick() == []
    h.clock.advance(2.0)
    out = h.tick()
    assert [(p, m["type"], m["trial_id"], m["attempt"]) for p, m in out] == [(hb(1), "drop", a["trial_id"], 1)]
    rec = h.trial(a["trial_id"])
    assert rec.state is TrialState.STOPPED and "trial_timeout=10" in (rec.error or "")
    assert rec.final_metric == 0.6 and rec.history == (0.6,)
    assert h.report(1, a["trial_id"], 1, 0.7, attempt=1) == "drop"
    nxt = h.trial_for(h.final(1, a["trial_id"], status="dropped", attempt=1), 1)
    assert nxt["trial_id"] != a["trial_id"]
    assert any(e["event"] == "trial_timeout" for e in read_journal(h.journal_path))
    assert h.trial(a["trial_id"]).state is TrialState.STOPPED  # the record stands


# -- the controller never waits forever ------------------------------------------------------------


class AlwaysIdle(AbstractOptimizer):
    def initialize(self) -> None:
        pass

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        return IDLE

    def finalize_experiment(self, trials: list[Trial]) -> None:
        pass


class SameTrialForever(AbstractOptimizer):
    def initialize(self) -> None:
        self.calls = 0

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        self.calls += 1
        return self.create_trial({"lr": 0.01, "x": 1})

    def finalize_experiment(self, trials: list[Trial]) -> None:
        pass


class IdleAfterOne(AbstractOptimizer):
    def initialize(self) -> None:
        self.calls = 0

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        self.calls += 1
        return self.create_trial({"lr": 0.01, "x": 1}) if self.calls == 1 else IDLE

    def finalize_experiment(self, trials: list[Trial]) -> None:
        pass


def test_an_optimizer_idle_with_nothing_running_ends_the_study_with_a_reason(make: Any) -> None:
    h = make(AlwaysIdle(), num_trials=3)
    out = h.get(1)
    assert done_peers(out) == [rpc(1)]
    assert h.ctl.stop_reason == "stalled"
    assert "IDLE" in h.ctl.abort_message and "nothing could change" in h.ctl.abort_message
    ends = [e for e in read_journal(h.journal_path) if e["event"] == "experiment_end"]
    assert ends[0]["reason"] == "stalled" and "IDLE" in ends[0]["message"]


def test_idle_while_a_trial_runs_waits_then_ends_when_nothing_can_change(make: Any) -> None:
    h = make(IdleAfterOne(), num_trials=3)
    a = h.start(1)
    assert h.get(2) == [] and h.ctl.stop_reason is None  # a trial runs: its end may change things
    h.report(1, a["trial_id"], 0, 0.5)
    out = h.final(1, a["trial_id"])
    assert done_peers(out) == [rpc(1), rpc(2)]
    assert h.ctl.stop_reason == "stalled"
    assert h.trial(a["trial_id"]).state is TrialState.COMPLETED


def test_only_duplicates_end_the_study_with_a_reason(make: Any) -> None:
    opt = SameTrialForever()
    h = make(opt, num_trials=5)
    a = h.start(1)
    assert h.get(2) == []  # duplicates while a runs: wait for it
    h.report(1, a["trial_id"], 0, 0.5)
    out = h.final(1, a["trial_id"])
    assert done_peers(out) == [rpc(1), rpc(2)]
    assert h.ctl.stop_reason == "stalled" and "duplicates" in h.ctl.abort_message
    assert opt.calls < 200  # bounded asking, no busy loop


# -- replays on the wire ---------------------------------------------------------------------------


def test_a_replayed_register_does_not_lose_the_trial_or_redirect_replies(make: Any) -> None:
    """A captured, validly signed ``register`` sent again would mark the worker's trial LOST
    and send its replies to the attacker; the transport drops it, so nothing changes."""
    from lightning_maggy.transport import InProcessServer

    h = make(RandomSearch(), num_trials=3)
    server = InProcessServer(KEY)
    client = server.connect("w1-rpc")
    captured: list[list[bytes]] = []
    send = client._send_frames

    def tapped(frames: list[bytes]) -> None:
        captured.append(list(frames))
        send(frames)

    client._send_frames = tapped

    def pump() -> Outgoing:
        out: Outgoing = []
        while (item := server.recv(0.01)) is not None:
            out += h.ctl.handle(*item)
        for peer, message in out:
            server.send(peer, message)
        return out

    client.send({"type": "register", "worker_id": 1, "pid": 1, "host": "h"})
    client.send({"type": "get", "worker_id": 1})
    out = pump()
    tid = next(m["trial"]["trial_id"] for _, m in out if m["type"] == "trial")
    before = dict(h.ctl.trials)
    for frames in captured:  # the register and the get, replayed from another peer
        server.inject(b"attacker", frames)
    assert pump() == []
    assert server.dropped == 2 and "replayed" in (server.last_drop_reason or "")
    assert h.ctl.trials == before and h.trial(tid).state is TrialState.RUNNING
    assert h.ctl.workers[1].peer == b"w1-rpc"


def test_epochs_trained_counts_what_was_trained_also_when_a_promoted_run_restarts_at_zero(make: Any) -> None:
    h = make(ASHA(reduction_factor=2, resource_min=1), max_epochs=2, num_trials=2)
    a = h.start(1)
    assert h.report(1, a["trial_id"], 0, 0.9) == "pause"
    assert h.report(1, a["trial_id"], 0, 0.9) == "pause"  # re-sent: not a second epoch
    b = h.trial_for(h.final(1, a["trial_id"], status="paused"), 1)
    h.report(1, b["trial_id"], 0, 0.1)
    promoted = h.trial_for(h.final(1, b["trial_id"], status="paused"), 1)
    assert promoted["trial_id"] == a["trial_id"] and promoted["epochs_done"] == 1
    # The user's own Trainer ignored the checkpoint: epochs 0 and 1 trained again.
    h.report(1, a["trial_id"], 0, 0.91)
    h.report(1, a["trial_id"], 1, 0.95)
    h.final(1, a["trial_id"])
    rec = h.trial(a["trial_id"])
    assert rec.state is TrialState.COMPLETED and rec.epochs_done == 2 and rec.epochs_trained == 3 and rec.epochs == 3
    assert h.trial(b["trial_id"]).epochs_trained == 1
    replayed = replay(h.journal_path)
    assert {t: r.epochs_trained for t, r in replayed.items()} == {t: r.epochs_trained for t, r in h.ctl.trials.items()}


def test_workers_found_dead_together_are_all_recorded_before_max_failures_ends_the_study(make: Any) -> None:
    """Two workers die in the same poll, each trial past max_retries: both trials are FAILED with
    their cause; the abort that max_failures calls for comes after, not between them."""
    h = make(GridSearch(), searchspace=GRID3, num_trials=None, max_epochs=1, max_failures=1, max_retries=0)
    a, b = h.start(1)["trial_id"], h.start(2)["trial_id"]
    h.register(3)
    out = h.ctl.workers_lost([(1, "worker 1 was killed by SIGKILL"), (2, "worker 2 was killed by SIGKILL")])
    for tid, wid in ((a, 1), (b, 2)):
        trial = h.trial(tid)
        assert trial.state is TrialState.FAILED and f"worker {wid} was killed" in trial.error
    assert h.ctl.stop_reason == "aborted" and "2 trials failed (max_failures=1)" in h.ctl.abort_message
    assert not [m for _, m in out if m["type"] == "trial"]  # the third grid point was never handed out
