"""The journal on real files: what it tolerates (a torn last line) and what it refuses (damage
anywhere else), the group commit, and what :func:`load_study` makes of a study's events."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lightning_maggy.driver.journal import (
    CAUSE_ABORT,
    CAUSE_END,
    Journal,
    load_study,
    read_journal,
    replay,
)
from lightning_maggy.exceptions import JournalError
from lightning_maggy.trial import Trial, TrialState


def _trial(x: int, **changes: object) -> Trial:
    return Trial.create({"x": x}, budget=3).evolve(**changes)


def _write_study(path: Path) -> tuple[Trial, Trial]:
    journal = Journal(path)
    journal.append("experiment_start", experiment={"metric": "m"}, optimizer_state={"rng": 1})
    a = _trial(1, state=TrialState.RUNNING)
    b = _trial(2, state=TrialState.RUNNING)
    journal.trial(a)
    journal.report(a.trial_id, 0, 0.5, "continue")
    journal.trial(b)
    journal.report(a.trial_id, 1, 0.6, "continue")
    journal.close()
    return a, b


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    a, _ = _write_study(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"event":"report","trial_id":"' + a.trial_id + '","epo')  # a crash mid-write
    trials = replay(path)
    assert trials[a.trial_id].history == (0.5, 0.6)


@pytest.mark.parametrize("damage", ["garbage", '{"event":"trial","trial":{"trial_id"', "[1, 2]", '{"no_event": 1}'])
def test_damage_before_the_last_line_names_the_line(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "journal.jsonl"
    _write_study(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(2, damage + "\n")  # becomes line 3, with three good lines after it
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(JournalError, match=r"line 3 is corrupt") as info:
        replay(path)
    assert str(path) in str(info.value) and "Only the last line" in str(info.value)
    with pytest.raises(JournalError, match="line 3"):
        load_study(path)


def test_a_bad_line_followed_only_by_blank_lines_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    a, _ = _write_study(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\x00\x00\x00\n\n")  # zeros where a power loss left the last block unwritten
    assert replay(path)[a.trial_id].history == (0.5, 0.6)


def test_reopening_cuts_a_torn_tail_so_the_next_event_starts_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    a, b = _write_study(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"event":"report","trial_id":"xx","epoch":')
    journal = Journal(path)
    journal.report(b.trial_id, 0, 0.7, "continue")
    journal.close()
    events = list(read_journal(path))  # strict: no corrupt line in the middle
    assert events[-1]["trial_id"] == b.trial_id and events[-1]["value"] == 0.7
    assert path.read_text(encoding="utf-8").count("\n") == len(events)


def test_reopening_keeps_a_whole_last_event_that_only_lost_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    a, b = _write_study(path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.rstrip("\n"), encoding="utf-8")
    journal = Journal(path)
    journal.report(b.trial_id, 0, 0.7, "continue")
    journal.close()
    trials = replay(path)
    assert trials[a.trial_id].history == (0.5, 0.6) and trials[b.trial_id].history == (0.7,)


def test_group_commit_fsyncs_reports_too(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", sync_interval=0.01)
    try:
        journal.report("t", 0, 1.0, "continue")  # only a report, no state change
        deadline = time.monotonic() + 5
        while journal.syncs == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert journal.syncs >= 1
    finally:
        journal.close()


def test_without_group_commit_a_state_change_is_fsynced_before_append_returns(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", sync_interval=0)
    journal.report("t", 0, 1.0, "continue")
    assert journal.syncs == 0
    journal.trial(_trial(1))
    assert journal.syncs == 1
    journal.close()


def test_load_study_reads_settings_causes_and_elapsed_time(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = []
    t = 1000.0

    def event(kind: str, at: float, **fields: object) -> None:
        lines.append(json.dumps({"event": kind, "time": at, **fields}))

    running = _trial(1, state=TrialState.RUNNING)
    paused = _trial(2, state=TrialState.PAUSED, history=(0.2,), budget=1)
    done = _trial(3, state=TrialState.COMPLETED, history=(0.3, 0.4, 0.5))
    event("experiment_start", t, experiment={"num_trials": 3}, optimizer_state={"draws": 0})
    event("trial", t + 1, trial=done.to_dict())
    event("trial", t + 2, trial=paused.to_dict())
    event("trial", t + 3, trial=running.to_dict())
    event("report", t + 10, trial_id=running.trial_id, epoch=0, value=0.9, decision="continue")
    # The driver was interrupted: the abort stopped the running trial, the end the paused one.
    stopped = running.evolve(state=TrialState.STOPPED, error="Ctrl-C", history=(0.9,), finished=t + 11)
    event("trial", t + 11, trial=stopped.to_dict(), cause=CAUSE_ABORT)
    event("trial", t + 11, trial=paused.evolve(state=TrialState.STOPPED).to_dict(), cause=CAUSE_END)
    event("experiment_end", t + 12, reason="interrupted", message="interrupted by the user (Ctrl-C)")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ended = load_study(path)
    assert ended.end_reason == "interrupted" and ended.end_message == "interrupted by the user (Ctrl-C)"
    event("resume", t + 500, experiment={"num_trials": 5})  # hours later
    event("report", t + 504, trial_id=running.trial_id, epoch=1, value=0.95, decision="continue")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    log = load_study(path)
    assert log.runs == 2 and log.end_reason is None and log.end_message is None  # the second run never ended
    assert log.experiment == {"num_trials": 5} and log.optimizer_state == {"draws": 0}
    assert log.elapsed == pytest.approx(12 + 4)  # the runs, not the pause between them
    assert log.trials[running.trial_id].state is TrialState.STOPPED
    assert log.trials[running.trial_id].history == (0.9, 0.95)  # reports after the last snapshot
    resumable = log.resumable_trials()
    assert resumable[running.trial_id].state is TrialState.LOST  # re-queued when resumed
    assert resumable[running.trial_id].error is None and resumable[running.trial_id].finished is None
    assert resumable[paused.trial_id].state is TrialState.PAUSED  # may still be promoted
    assert resumable[done.trial_id] == done


def test_load_study_without_a_start_event_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event":"trial","trial":' + json.dumps(_trial(1).to_dict()) + "}\n", encoding="utf-8")
    with pytest.raises(JournalError, match="no experiment_start"):
        load_study(path)


def test_a_new_journal_is_created_with_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "journal.jsonl"
    journal = Journal(path)
    journal.append("experiment_start", experiment={})
    journal.close()
    assert os.path.getsize(path) > 0 and list(read_journal(path))[0]["event"] == "experiment_start"


@pytest.mark.parametrize("tail", ["\x00" * 300, "\x00\x00\x00\n\n", "\n\n  \n", '{"event":"report","tr', ""])
def test_reopening_leaves_a_journal_that_reads_strictly_after_more_appends(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "journal.jsonl"
    a, b = _write_study(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(tail)
    for value in (0.7, 0.8):  # two resumes, each appending
        journal = Journal(path)
        journal.report(b.trial_id, int(value * 10) - 7, value, "continue")
        journal.close()
    trials = replay(path)  # strict: raises on any damaged line but the last
    assert trials[a.trial_id].history == (0.5, 0.6) and trials[b.trial_id].history == (0.7, 0.8)
    assert "\n\n" not in path.read_text(encoding="utf-8")


def test_reopening_a_long_journal_with_a_torn_tail_longer_than_a_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    a, b = _write_study(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"event":"report","pad":"' + "x" * 200_000)  # torn in the middle of a huge line
    journal = Journal(path)
    journal.report(b.trial_id, 0, 0.7, "continue")
    journal.close()
    assert replay(path)[b.trial_id].history == (0.7,)


def test_two_drivers_never_append_to_one_journal(tmp_path: Path) -> None:
    pytest.importorskip("fcntl")
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    first.append("experiment_start", experiment={})
    with pytest.raises(JournalError, match="in use by another running driver"):
        Journal(path)
    first.close()
    second = Journal(path)  # free again once the first driver is gone
    second.close()
