"""A full disk under a study: a clear error, nothing lost, and ``resume=`` continues it.

The disk is real: a small tmpfs mounted for the test (root only; skipped elsewhere).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import Journal, JournalWriteError, read_journal

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=8m", str(mount)], check=True)


def test_a_journal_that_cannot_be_written_raises_once_then_writes_nothing(tiny_disk: Path) -> None:
    journal = Journal(tiny_disk / "exp" / "journal.jsonl", sync_interval=0)
    written = 0
    with pytest.raises(JournalWriteError) as info:
        while True:
            journal.append("note", n=written, pad="x" * 200)
            written += 1
    assert "the disk is full" in str(info.value) and f"resume={str(tiny_disk / 'exp')!r}" in str(info.value)
    _grow(tiny_disk)
    journal.append("note", n=-1)  # a hole would follow the lost event: nothing more is written
    journal.close()
    numbers = [e["n"] for e in read_journal(tiny_disk / "exp" / "journal.jsonl")]
    assert numbers == list(range(len(numbers))) and len(numbers) >= written - 1


def _fills_the_disk_once(hparams: dict[str, Any], reporter: Any) -> float:
    ctx = lm.current_trial()
    for step in range(reporter.start_step, reporter.budget):
        reporter.broadcast(hparams["x"] + step, step)
        if hparams["x"] == 2 and step == 1 and ctx.attempt == 1:
            big = os.path.join(ctx.trial_dir, "big.bin")
            try:
                with open(big, "wb") as fh:
                    fh.write(b"x" * (1 << 20))  # a user's file that does not fit
            finally:
                if os.path.exists(big):
                    os.remove(big)  # space for the record of what follows
    return hparams["x"] + reporter.budget


def test_a_trial_that_finds_the_disk_full_stops_the_study_and_resume_runs_it_again(tiny_disk: Path) -> None:
    exp = tiny_disk / "exp"
    call = dict(metric="score", optimizer="grid", max_epochs=3, workers=1, exp_dir=exp, verbose=False)
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(_fills_the_disk_once, lm.Searchspace(x=lm.Discrete([1, 2, 3])), **call)
    message = str(info.value)
    assert "the disk is full" in message and "resume=" in message and "No space left on device" in message
    result = info.value.result  # type: ignore[attr-defined]
    by_x = {t.config["x"]: t for t in result.trials}
    # Stopped by the abort, not FAILED: it is not the trial's fault, and a resume runs it again.
    assert by_x[2].state is lm.TrialState.STOPPED and by_x[2].history == (2.0, 3.0)
    assert result.counts()["FAILED"] == 0
    assert not list(exp.glob("*.tmp"))
    _grow(tiny_disk)
    resumed = lm.search(_fills_the_disk_once, lm.Searchspace(x=lm.Discrete([1, 2, 3])), resume=exp, **call)
    assert resumed.stop_reason == "finished"
    by_x = {t.config["x"]: t for t in resumed.trials}
    assert all(t.state is lm.TrialState.COMPLETED for t in resumed.trials) and len(resumed.trials) == 3
    assert by_x[2].attempt == 2 and by_x[2].history == (2.0, 3.0, 4.0) and by_x[2].final_metric == 5.0


def _reports(hparams: dict[str, Any], reporter: Any) -> float:
    for step in range(reporter.start_step, reporter.budget):
        reporter.broadcast(hparams["x"] * step, step)
    return float(hparams["x"])


def test_a_disk_that_fills_during_a_study_gives_one_clear_error_and_a_whole_record(tiny_disk: Path) -> None:
    exp = tiny_disk / "exp"
    call = dict(metric="m", optimizer="randomsearch", num_trials=300, max_epochs=20, workers=1, exp_dir=exp,
                seed=3, verbose=False)
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(_reports, lm.Searchspace(x=lm.Double(0.0, 1.0)), **call)
    assert "the disk is full" in str(info.value)
    assert not list(exp.glob("*.tmp"))
    recorded = lm.SearchResult.load(exp)  # the journal is readable: whole up to its last event
    done = recorded.counts()["COMPLETED"]
    assert 0 < done < 300
    _grow(tiny_disk)
    resumed = lm.search(_reports, lm.Searchspace(x=lm.Double(0.0, 1.0)), resume=exp, **call)
    assert resumed.stop_reason == "finished" and resumed.counts()["COMPLETED"] == 300
    assert all(t.history == tuple(t.config["x"] * s for s in range(20)) for t in resumed.trials)


def test_a_lightning_checkpoint_that_does_not_fit_leaves_no_partial_file_and_resumes(tiny_disk: Path) -> None:
    exp = tiny_disk / "exp"  # 256 KiB: hidden=16 checkpoints fit, hidden=4096 ones (about 200 KiB each) do not
    call = dict(datamodule=BlobsDataModule, metric="val_acc", optimizer="grid", max_epochs=2, workers=1,
                exp_dir=exp, verbose=False)
    space = lm.Searchspace(hidden=lm.Discrete([16, 4096]))
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(TinyClassifier, space, **call)
    assert "the disk is full" in str(info.value) and "last.ckpt.attempt-1.tmp" in str(info.value)
    by_hidden = {t.config["hidden"]: t for t in info.value.result.trials}  # type: ignore[attr-defined]
    assert by_hidden[16].state is lm.TrialState.COMPLETED
    assert by_hidden[4096].state is lm.TrialState.STOPPED
    assert not list(exp.rglob("*.tmp"))  # the partial checkpoint does not hold the space
    _grow(tiny_disk)
    resumed = lm.search(TinyClassifier, space, resume=exp, **call)
    assert resumed.stop_reason == "finished"
    assert [t.state for t in resumed.trials] == [lm.TrialState.COMPLETED] * 2
    assert all(len(t.history) == 2 for t in resumed.trials)
