"""Worker side of attempts: the fence on checkpoint writes, the drop of a stale attempt, and the
fatal flag decided by isinstance (no Trainer here: see tests/e2e for real training)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from lightning_maggy.exceptions import (
    ConfigurationError,
    ExperimentError,
    MetricNotFoundError,
    SearchspaceError,
    TrialDropped,
)
from lightning_maggy.lightning import fence
from lightning_maggy.lightning.context import Reporter, TrialContext
from lightning_maggy.lightning.worker import TrialTask, run_trial
from lightning_maggy.transport import InProcessServer

KEY = b"attempts-test-key"


# -- the fence -----------------------------------------------------------------------------------


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_newer_attempt_fences_out_the_older_ones_writes(tmp_path: Path) -> None:
    trial_dir = str(tmp_path / "trial")
    final = tmp_path / "trial" / "last.ckpt"
    assert fence.claim(trial_dir, 1)
    assert fence.commit(_write(tmp_path / "a1.tmp", "attempt 1, epoch 0"), str(final), trial_dir, 1)
    assert final.read_text() == "attempt 1, epoch 0"
    # The trial is re-queued: attempt 2 claims the folder before it reads the checkpoint.
    assert fence.claim(trial_dir, 2)
    assert fence.current_attempt(trial_dir) == 2
    # The stale attempt 1 finishes an epoch: its write is discarded, the checkpoint untouched.
    stale = tmp_path / "a1b.tmp"
    assert not fence.commit(_write(stale, "attempt 1, epoch 1"), str(final), trial_dir, 1)
    assert final.read_text() == "attempt 1, epoch 0" and not stale.exists()
    assert fence.commit(_write(tmp_path / "a2.tmp", "attempt 2, epoch 1"), str(final), trial_dir, 2)
    assert final.read_text() == "attempt 2, epoch 1"
    # An old attempt that only starts now (its assignment was delayed) may not start at all.
    assert not fence.claim(trial_dir, 1)
    assert fence.claim(trial_dir, 2)  # the holder may claim again (a restarted run of it)


def test_commits_are_atomic_and_a_claim_fences_out_a_racing_writer(tmp_path: Path) -> None:
    """Attempt 1 keeps committing while attempt 2 claims the folder and commits: a reader only
    ever sees a complete file, and attempt 1 never replaces attempt 2's checkpoint."""
    trial_dir = str(tmp_path / "trial")
    final = tmp_path / "trial" / "last.ckpt"
    fence.claim(trial_dir, 1)
    payload = {1: "1" * 200_000, 2: "2" * 200_000}
    commits = {1: 0, 2: 0}
    done = threading.Event()

    def commit(attempt: int, i: int) -> None:
        tmp = tmp_path / f"w{attempt}-{i}.tmp"
        tmp.write_text(payload[attempt])
        commits[attempt] += fence.commit(str(tmp), str(final), trial_dir, attempt)

    def old_attempt() -> None:
        i = 0
        while not done.is_set() or i < 400:
            commit(1, i)
            i += 1

    def successor() -> None:
        while commits[1] < 5:  # let attempt 1 be in full swing
            pass
        fence.claim(trial_dir, 2)
        for i in range(20):
            commit(2, i)

    threads = [threading.Thread(target=old_attempt), threading.Thread(target=successor)]
    for t in threads:
        t.start()
    while threads[1].is_alive():
        if final.exists():
            assert final.read_text() in (payload[1], payload[2])  # never torn
    done.set()
    threads[0].join()
    assert commits[1] >= 5 and commits[2] == 20
    assert final.read_text() == payload[2]  # 400 more commits of attempt 1 were all refused
    assert not list(tmp_path.glob("w1-*.tmp"))  # and cleaned up


# -- a stale attempt is dropped ------------------------------------------------------------------


def _context(server: InProcessServer, tmp_path: Path, attempt: int = 2) -> TrialContext:
    return TrialContext(
        client=server.connect("w1-rpc"),
        worker_id=1,
        trial={"trial_id": "abc", "config": {"x": 1}, "budget": 3, "attempt": attempt},
        trial_dir=str(tmp_path),
        metric="score",
        direction="max",
    )


def test_a_drop_reply_raises_and_every_later_report_raises_without_sending(tmp_path: Path) -> None:
    server = InProcessServer(KEY)
    ctx = _context(server, tmp_path)

    def answer() -> None:
        item = None
        while item is None:
            item = server.recv(0.05)
        peer, msg = item
        assert msg["attempt"] == 2 and msg["trial_id"] == "abc"
        server.send(peer, {"type": "drop", "trial_id": "abc", "attempt": 2, "reason": "stale: attempt 3 runs"})

    t = threading.Thread(target=answer)
    t.start()
    with pytest.raises(TrialDropped, match="attempt 3 runs"):
        Reporter(ctx).broadcast(0.5, 0)
    t.join()
    with pytest.raises(TrialDropped):
        ctx.report(1, 0.6)
    assert server.recv(0.05) is None  # nothing more was sent
    ctx.close()
    assert not (tmp_path / "metrics.csv").exists()  # a dropped attempt's rows are not the record


def test_run_trial_turns_a_drop_into_a_dropped_outcome(tmp_path: Path) -> None:
    server = InProcessServer(KEY)
    ctx = _context(server, tmp_path)
    ctx.drop("the trial ran over trial_timeout")

    def fn(hparams: dict[str, Any], reporter: Any) -> float:
        try:
            reporter.broadcast(0.1, 0)
        except Exception as err:  # a user's broad handler turning it into its own error
            raise RuntimeError("wrapped") from err
        return 0.1

    out = run_trial(TrialTask(kind="function", target=fn, metric="score", direction="max"), ctx)
    assert out["status"] == "dropped" and "trial_timeout" in out["error"] and out["fatal"] is False


# -- fatal errors by type, not by class name ---------------------------------------------------


class ConfigurationErrorLookalike(Exception):
    pass


ConfigurationErrorLookalike.__name__ = "ConfigurationError"  # the user's own class of that name


class MyMetricError(MetricNotFoundError):
    pass


@pytest.mark.parametrize(
    ("error", "fatal"),
    [
        (ConfigurationError("bad"), True),
        (SearchspaceError("bad"), True),
        (MetricNotFoundError("val_acc missing"), True),
        (MyMetricError("a subclass of ours"), True),
        (ConfigurationErrorLookalike("the user's own"), False),
        (ValueError("plain"), False),
        (ExperimentError("not a misconfiguration"), False),
    ],
)
def test_the_worker_flags_only_our_misconfiguration_errors_as_fatal(
    tmp_path: Path, error: Exception, fatal: bool
) -> None:
    def fn(hparams: dict[str, Any], reporter: Any) -> float:
        raise error

    server = InProcessServer(KEY)
    out = run_trial(TrialTask(kind="function", target=fn, metric="score", direction="max"), _context(server, tmp_path))
    assert out["status"] == "failed" and out["fatal"] is fatal
    assert out["error_type"] == type(error).__name__
    assert os.path.basename(__file__) in out["error"]
