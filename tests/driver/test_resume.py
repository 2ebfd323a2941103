"""Resuming a study: a controller rebuilt from the journal of a driver that died continues as if
nothing had happened.

The controller is driven through ``handle()`` by a simulated worker whose trials report a
deterministic value per epoch, with a real journal in ``tmp_path``. A "crash" is the driver
vanishing after any report: nothing more is written and the journal is not closed (every event
is flushed before it is answered, so the file holds what a SIGKILL leaves). The resumed study's
final records must equal an uninterrupted run's, whatever the crash point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightning_maggy.driver.controller import Controller
from lightning_maggy.driver.journal import Journal, load_study, read_journal, replay
from lightning_maggy.optimizers import ASHA, AbstractOptimizer, Hyperband, RandomSearch
from lightning_maggy.searchspace import Double, Integer, Searchspace
from lightning_maggy.transport.messages import decode, encode
from lightning_maggy.trial import TrialState

KEY = b"resume-test-key"
SPACE = Searchspace(x=Double(0.0, 1.0), k=Integer(1, 5))


class Crash(Exception):
    """The driver died (after the report that raised it was answered and journaled)."""


def _value(config: dict[str, Any], epoch: int) -> float:
    return round(config["x"] * (1 + epoch) / (2 + epoch) + 0.01 * config["k"], 9)


class Study:
    """One run of a driver: a controller over the journal in ``exp``, new or resumed.

    A crashed run's journal stays open until the next run on the same directory starts, which
    closes it first (its file lock stands for the dead process's; every event was flushed when
    written, so closing changes nothing in the file)."""

    open: list[Study] = []

    def __init__(self, exp: Path, make_opt: Callable[[], AbstractOptimizer], *, resume: bool = False,
                 num_trials: int | None = 9, max_epochs: int = 9, **kwargs: Any) -> None:
        path = exp / "journal.jsonl"
        prior = load_study(path) if resume else None
        for other in list(Study.open):  # the dead driver's file lock goes with its process
            if other.journal.path == path:
                other.journal.close()
                Study.open.remove(other)
        Study.open.append(self)
        self.journal = Journal(path)
        if prior is not None:
            self.journal.append("resume", experiment={"num_trials": num_trials})
        self.ctl = Controller(
            optimizer=make_opt(),
            searchspace=SPACE,
            direction="max",
            max_epochs=max_epochs,
            num_trials=num_trials,
            journal=self.journal,
            seed=None,
            trials=None if prior is None else prior.resumable_trials(),
            elapsed=0.0 if prior is None else prior.elapsed,
            optimizer_state=None if prior is None else prior.optimizer_state,
            non_finite=None if prior is None else prior.non_finite,
            **kwargs,
        )
        if prior is None:
            self.journal.append("experiment_start", experiment={}, optimizer_state=self.ctl.optimizer.state_dict())
        self.reports = 0

    def send(self, wid: int, message: dict[str, Any]) -> list[tuple[bytes, dict[str, Any]]]:
        wired = decode(encode({"worker_id": wid, **message}, KEY), KEY)
        return self.ctl.handle(f"w{wid}".encode(), wired)

    def run(self, crash_after: int | None = None, ckpt_lag: int = 0, workers: int = 1) -> None:
        """Serves ``workers`` simulated workers round-robin, one report at a time, until the
        study ends, or raises Crash after ``crash_after`` reports in all. A resumed trial
        restarts ``ckpt_lag`` epochs before its recorded history ends (its checkpoint may lag
        the journal by the epoch whose report was sent before its checkpoint was written)."""
        current: dict[int, dict[str, Any] | None] = {}
        for wid in range(workers):
            self.send(wid, {"type": "register", "pid": 100 + wid, "host": "sim"})
            current[wid] = self._assignment(self.send(wid, {"type": "get"}), wid)
        while not self.ctl.finished:
            progressed = False
            for wid in range(workers):
                trial = current[wid]
                if trial is None:
                    continue
                progressed = True
                if "next_epoch" not in trial:
                    trial["next_epoch"] = max(0, trial["epochs_done"] - ckpt_lag) if trial["resume"] else 0
                    trial["status"] = "ok"
                epoch = trial["next_epoch"]
                if epoch < trial["budget"] and trial["status"] == "ok":
                    out = self.send(wid, {"type": "report", "trial_id": trial["trial_id"], "attempt": trial["attempt"], "epoch": epoch,
                                          "value": _value(trial["config"], epoch)})
                    decision = out[0][1]["decision"]
                    trial["next_epoch"] = epoch + 1
                    if decision != "continue":
                        trial["status"] = "stopped" if decision == "stop" else "paused"
                    self.reports += 1
                    if crash_after is not None and self.reports >= crash_after:
                        raise Crash()
                    continue
                out = self.send(wid, {"type": "final", "trial_id": trial["trial_id"], "attempt": trial["attempt"],
                                      "status": trial["status"], "metric": None, "error": None,
                                      "error_type": None, "fatal": False})
                for peer, msg in out:
                    if msg["type"] == "trial":
                        current[int(peer.decode()[1:])] = msg["trial"]
                    elif msg["type"] == "done":
                        current[int(peer.decode()[1:])] = None
                if current[wid] is trial:  # parked: waits until a message wakes it
                    current[wid] = None
            if not progressed:
                break

    @staticmethod
    def _assignment(out: list[tuple[bytes, dict[str, Any]]], wid: int) -> dict[str, Any] | None:
        for peer, msg in out:
            if peer == f"w{wid}".encode() and msg["type"] == "trial":
                return msg["trial"]
        return None


def record(ctl: Controller) -> dict[str, tuple[str, int, int, list[float]]]:
    """What must not depend on a crash: trial ids, states, budgets, histories."""
    return {tid: (t.state.value, t.budget, t.epochs_done, list(t.history)) for tid, t in ctl.trials.items()}


def _asha() -> ASHA:
    return ASHA(reduction_factor=3, seed=7)


def _uninterrupted(tmp_path: Path, make_opt: Callable[[], AbstractOptimizer], **kwargs: Any) -> Study:
    study = Study(tmp_path / "reference", make_opt, **kwargs)
    study.run()
    assert study.ctl.stop_reason == "finished"
    return study


def test_the_reference_study_has_paused_promoted_and_stopped_trials(tmp_path: Path) -> None:
    ref = _uninterrupted(tmp_path, _asha)
    states = sorted(v[0] for v in record(ref.ctl).values())
    epochs = sorted(v[2] for v in record(ref.ctl).values())
    assert epochs == [1, 1, 1, 1, 1, 1, 3, 3, 9] and states.count("COMPLETED") == 1
    assert ref.reports == 6 + 2 * 3 + 9


@pytest.mark.parametrize("ckpt_lag", [0, 1])
def test_a_study_resumed_after_a_crash_at_any_report_ends_as_an_uninterrupted_one(tmp_path: Path, ckpt_lag: int) -> None:
    reference = record(_uninterrupted(tmp_path, _asha).ctl)
    for crash_after in range(1, 21):  # every report of the study
        exp = tmp_path / f"crash{crash_after}"
        first = Study(exp, _asha)
        with pytest.raises(Crash):
            first.run(crash_after=crash_after)
        before = {tid: t for tid, t in first.ctl.trials.items()}
        resumed = Study(exp, _asha, resume=True)
        resumed.run(ckpt_lag=ckpt_lag)
        resumed.journal.close()
        assert resumed.ctl.stop_reason == "finished"
        assert record(resumed.ctl) == reference, f"crash after report {crash_after}"
        # Finished trials were never run again; nothing was counted as a retry.
        reports_after_resume: dict[str, int] = {}
        seen_resume = False
        for ev in read_journal(exp / "journal.jsonl"):
            seen_resume = seen_resume or ev["event"] == "resume"
            if seen_resume and ev["event"] == "report":
                reports_after_resume[ev["trial_id"]] = reports_after_resume.get(ev["trial_id"], 0) + 1
        for tid, t in before.items():
            if t.state.finished:
                assert tid not in reports_after_resume, f"{tid} re-ran after the crash at {crash_after}"
        assert all(t.retries == 0 for t in resumed.ctl.trials.values())


def test_the_interrupted_trial_resumes_where_its_history_ends(tmp_path: Path) -> None:
    for crash_after in range(1, 21):  # the first crash inside the run of a promoted trial
        exp = tmp_path / f"exp{crash_after}"
        first = Study(exp, _asha)
        with pytest.raises(Crash):
            first.run(crash_after=crash_after)
        running = [t for t in first.ctl.trials.values() if t.state is TrialState.RUNNING]
        if len(running) == 1 and 1 < running[0].epochs_done < running[0].budget:
            break
    else:
        pytest.fail("no crash point inside a promoted trial")
    resumed = Study(exp, _asha, resume=True)
    out = resumed.send(0, {"type": "get"})
    (assignment,) = [m["trial"] for _, m in out if m["type"] == "trial"]
    assert assignment["trial_id"] == running[0].trial_id
    assert assignment["resume"] is True and assignment["epochs_done"] == running[0].epochs_done
    assert assignment["budget"] == running[0].budget
    events = list(read_journal(exp / "journal.jsonl"))
    lost = [e for e in events if e["event"] == "trial" and e.get("cause") == "resume"]
    assert [e["trial"]["trial_id"] for e in lost] == [running[0].trial_id]
    assert lost[0]["trial"]["state"] == "LOST" and lost[0]["trial"]["retries"] == 0


def test_two_workers_and_a_crash_still_lose_no_finished_trial(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    first = Study(exp, _asha)
    with pytest.raises(Crash):
        first.run(crash_after=9, workers=2)
    finished = {tid: t for tid, t in first.ctl.trials.items() if t.state.finished or t.state is TrialState.PAUSED}
    resumed = Study(exp, _asha, resume=True)
    resumed.run(workers=2)
    assert resumed.ctl.stop_reason == "finished" and len(resumed.ctl.trials) == 9
    for tid, t in finished.items():
        after = resumed.ctl.trials[tid]
        assert after.history[: len(t.history)] == t.history  # kept, and a paused one only grew


def test_an_unseeded_optimizer_continues_its_sequence_from_the_recorded_state(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    first = Study(exp, lambda: RandomSearch(), max_epochs=2, num_trials=6)
    with pytest.raises(Crash):
        first.run(crash_after=5)
    state = load_study(exp / "journal.jsonl").optimizer_state
    resumed = Study(exp, lambda: RandomSearch(), resume=True, max_epochs=2, num_trials=6)
    resumed.run()
    # The uninterrupted run with the same initial generator state draws the same configurations.
    ref = Study(tmp_path / "ref", lambda: RandomSearch(), max_epochs=2, num_trials=6)
    ref.ctl.optimizer.load_state_dict(state)
    ref.run()
    assert record(resumed.ctl) == record(ref.ctl)


def test_an_interrupted_study_resumes_its_stopped_trials(tmp_path: Path) -> None:
    reference = record(_uninterrupted(tmp_path, _asha).ctl)
    exp = tmp_path / "exp"
    first = Study(exp, _asha)
    with pytest.raises(Crash):
        first.run(crash_after=11)
    first.ctl.abort("interrupted by the user (Ctrl-C)", "interrupted")  # what Ctrl-C does
    first.journal.close()
    assert any(t.state is TrialState.STOPPED and t.epochs_done < t.budget for t in first.ctl.trials.values())
    resumed = Study(exp, _asha, resume=True)
    resumed.run(ckpt_lag=1)
    assert record(resumed.ctl) == reference


def test_a_finished_study_resumed_with_more_trials_promotes_its_paused_trials(tmp_path: Path) -> None:
    reference = record(_uninterrupted(tmp_path, _asha, num_trials=18).ctl)
    exp = tmp_path / "exp"
    first = Study(exp, _asha, num_trials=9)
    first.run()
    first.journal.close()
    assert first.ctl.stop_reason == "finished" and len(first.ctl.trials) == 9
    ended = {tid: t.epochs_done for tid, t in first.ctl.trials.items() if t.state is TrialState.STOPPED}
    resumed = Study(exp, _asha, resume=True, num_trials=18)
    resumed.run()
    assert record(resumed.ctl) == reference
    # Trials the first end recorded as STOPPED at their rung were promoted with the new budget.
    assert any(resumed.ctl.trials[tid].epochs_done > epochs for tid, epochs in ended.items())


def test_hyperband_resumes_too(tmp_path: Path) -> None:
    def make() -> Hyperband:
        return Hyperband(reduction_factor=3, seed=1)

    reference = record(_uninterrupted(tmp_path, make, num_trials=8).ctl)
    exp = tmp_path / "exp"
    with pytest.raises(Crash):
        Study(exp, make, num_trials=8).run(crash_after=7)
    resumed = Study(exp, make, resume=True, num_trials=8)
    resumed.run(ckpt_lag=1)
    assert record(resumed.ctl) == reference


def test_failed_trials_count_against_max_failures_after_a_resume(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    first = Study(exp, lambda: RandomSearch(seed=0), max_epochs=1, max_failures=2)
    first.send(0, {"type": "register", "pid": 1, "host": "sim"})
    (trial,) = [m["trial"] for _, m in first.send(0, {"type": "get"}) if m["type"] == "trial"]
    first.send(0, {"type": "final", "trial_id": trial["trial_id"], "attempt": trial["attempt"], "status": "failed", "metric": None, "fatal": False,
                   "error": "Traceback...\nValueError: boom", "error_type": "ValueError"})
    resumed = Study(exp, lambda: RandomSearch(seed=0), resume=True, max_epochs=1, max_failures=2)
    assert resumed.ctl.failures == 1
    resumed.send(0, {"type": "register", "pid": 2, "host": "sim"})
    (trial,) = [m["trial"] for _, m in resumed.send(0, {"type": "get"}) if m["type"] == "trial"]
    resumed.send(0, {"type": "final", "trial_id": trial["trial_id"], "attempt": trial["attempt"], "status": "failed", "metric": None, "fatal": False,
                     "error": "Traceback...\nValueError: boom", "error_type": "ValueError"})
    assert resumed.ctl.stop_reason == "aborted" and "2 trials failed" in (resumed.ctl.abort_message or "")


def test_the_time_already_spent_counts_against_the_timeout(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    ctl = Controller(optimizer=RandomSearch(seed=0), searchspace=SPACE, direction="max", max_epochs=1,
                     num_trials=None, timeout=60.0, journal=journal, elapsed=61.0)
    ctl.tick()
    assert ctl.timed_out and ctl.stop_reason == "timeout"
    journal.close()
    assert [e["event"] for e in read_journal(tmp_path / "journal.jsonl")][-2:] == ["timeout", "experiment_end"]


def test_the_recorded_optimizer_state_is_plain_json(tmp_path: Path) -> None:
    study = Study(tmp_path / "exp", _asha)
    study.journal.close()
    start = next(e for e in read_journal(tmp_path / "exp" / "journal.jsonl") if e["event"] == "experiment_start")
    assert json.loads(json.dumps(start["optimizer_state"])) == study.ctl.optimizer.state_dict()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_trial_stopped_for_a_non_finite_metric_before_the_crash_is_not_resumed(tmp_path: Path, bad: float) -> None:
    exp = tmp_path / "exp"
    first = Study(exp, lambda: RandomSearch(seed=0), max_epochs=3, num_trials=2)
    first.send(0, {"type": "register", "pid": 1, "host": "sim"})
    (trial,) = [m["trial"] for _, m in first.send(0, {"type": "get"}) if m["type"] == "trial"]
    tid = trial["trial_id"]
    for epoch, value in ((0, 0.9), (1, bad)):
        out = first.send(0, {"type": "report", "trial_id": tid, "attempt": trial["attempt"], "epoch": epoch, "value": value})
    assert out[0][1]["decision"] == "stop"  # ... and the driver dies before the trial's final
    resumed = Study(exp, lambda: RandomSearch(seed=0), resume=True, max_epochs=3, num_trials=2)
    rec = resumed.ctl.trials[tid]
    assert rec.state is TrialState.STOPPED and rec.final_metric is None
    assert rec.error is not None and "non-finite" in rec.error and "epoch 1" in rec.error
    assert replay(exp / "journal.jsonl")[tid].state is TrialState.STOPPED
    resumed.run()
    assert resumed.ctl.stop_reason == "finished" and len(resumed.ctl.trials) == 2
    assert resumed.ctl.trials[tid].epochs_done == 2  # never run again
    best = resumed.ctl.best()
    assert best is not None and best.trial_id != tid
