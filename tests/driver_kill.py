"""Shared by the driver-death tests (local and Spark): a user's script run as a subprocess, killed
with SIGKILL in the middle of an ASHA study, and resumed with ``resume=``.

The script's module trains for real (its checkpoints hold real weights and steps), but the
metric it logs depends only on the configuration and the epoch: ``score = 1 - 0.05 rank +
0.001 epoch``, where ``rank`` is the order in which the configuration was drawn. With
reduction factor 3, rungs at 1 and 3 epochs, 9 trials and 2 workers, ASHA's outcome then does
not depend on timing: a promoted trial is always among the three best drawn so far but one, so
ranks 0, 1, 2 are promoted to 3 epochs (COMPLETED) and ranks 3 to 8 end at their rung
(STOPPED after 1 epoch), however the workers interleave. That is what makes "the final record
equals an uninterrupted run's" a fair test with two workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lightning_maggy.driver.journal import read_journal, replay
from lightning_maggy.trial import Trial, TrialState, trial_id_for

REPO = Path(__file__).resolve().parents[1]
NUM_TRIALS = 9
MAX_EPOCHS = 3
STEPS_PER_EPOCH = 4  # 64 samples in batches of 16

SCRIPT = '''
import sys, time
import torch
import pytorch_lightning as pl
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import lightning_maggy as lm

exp_dir, mode, backend = sys.argv[1], sys.argv[2], sys.argv[3]


class Ranked(pl.LightningModule):
    def __init__(self, rank, lr):
        super().__init__()
        self.rank, self.lr = rank, lr
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("score", 1.0 - 0.05 * self.rank + 0.001 * self.current_epoch)

    def on_train_epoch_end(self):
        time.sleep(0.4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Data(pl.LightningDataModule):
    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=g)
        self.ds = TensorDataset(x, (x[:, 0] > 0).long())

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=16)

    def val_dataloader(self):
        return DataLoader(self.ds, batch_size=64)


def ranked(space, rng, trials):
    """New configurations in the order drawn: rank 0, 1, 2, ... (lr from the optimizer's rng)."""
    return {"rank": len(trials), "lr": float(rng.uniform(0.01, 0.1))}


kwargs = dict(
    datamodule=Data, metric="score", direction="max",
    optimizer=lm.ASHA(reduction_factor=3, suggester=ranked),
    num_trials=NUM_TRIALS, max_epochs=MAX_EPOCHS, workers=2, seed=0, verbose=False, backend=backend,
)
if backend == "spark":  # local[2], or the master (and its settings) a test names
    import json, os
    kwargs.update(spark_master=os.environ.get("MAGGY_TEST_SPARK_MASTER", "local[2]"), spark_conf={
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false", "spark.python.worker.reuse": "true",
        **json.loads(os.environ.get("MAGGY_TEST_SPARK_CONF", "{}")),
    })
space = lm.Searchspace(rank=lm.Integer(0, 99), lr=lm.Double(0.01, 0.1))
where = dict(resume=exp_dir) if mode == "resume" else dict(exp_dir=exp_dir)
result = lm.search(Ranked, space, **where, **kwargs)
print("RESULT", result.stop_reason, len(result.trials), flush=True)
'''.replace("NUM_TRIALS", str(NUM_TRIALS)).replace("MAX_EPOCHS", str(MAX_EPOCHS))


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, **extra}
    tests = REPO / "tests"
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tests), str(tests / "ablation"), out.get("PYTHONPATH", "")])
    out["PYSPARK_PYTHON"] = sys.executable
    out["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return out


def write_script(tmp_path: Path) -> Path:
    script = tmp_path / "asha_script.py"
    script.write_text(SCRIPT)
    return script


def run(
    script: Path, exp: Path | str, mode: str, backend: str, timeout: float = 400, **extra_env: str
) -> subprocess.CompletedProcess:
    """Runs the script on ``exp`` (a path or an exp_dir URL)."""
    return subprocess.run(
        [sys.executable, str(script), str(exp), mode, backend],
        capture_output=True, text=True, timeout=timeout, env=env(**extra_env), cwd=script.parent,
    )


def expected_record() -> dict[str, tuple[str, int]]:
    """trial_id -> (state, epochs) of the study run to its end without interruption (see the
    module docstring): the configurations are drawn from ASHA's generator seeded with 0."""
    rng = np.random.default_rng(0)
    out = {}
    for rank in range(NUM_TRIALS):
        config = {"rank": rank, "lr": float(rng.uniform(0.01, 0.1))}
        out[trial_id_for(config)] = ("COMPLETED", MAX_EPOCHS) if rank < 3 else ("STOPPED", 1)
    return out


def record(trials: dict[str, Trial] | list[Trial]) -> dict[str, tuple[str, int]]:
    items = trials.values() if isinstance(trials, dict) else trials
    return {t.trial_id: (t.state.value, t.epochs_done) for t in items}


# -- processes --------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


def wait_gone(pids: list[int], timeout: float, each: dict[int, float] | None = None) -> float | None:
    """Seconds until every pid is gone, or None if some still live after ``timeout``; ``each``
    receives the seconds until each pid was gone."""
    start = time.monotonic()
    each = {} if each is None else each
    while time.monotonic() - start < timeout:
        for pid in pids:
            if pid not in each and not alive(pid):
                each[pid] = round(time.monotonic() - start, 2)
        if len(each) == len(pids):
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# -- the study --------------------------------------------------------------------------------
def mid_study(trials: dict[str, Trial]) -> bool:
    """Finished, paused and running trials all present, one of them a promoted trial in the
    middle of its extra epochs (so that it has a checkpoint to resume from)."""
    states = Counter(t.state for t in trials.values())
    promoted_running = [
        t for t in trials.values()
        if t.state is TrialState.RUNNING and t.budget == MAX_EPOCHS and 2 <= len(t.history) < MAX_EPOCHS
    ]
    return states[TrialState.COMPLETED] >= 1 and states[TrialState.PAUSED] >= 1 and bool(promoted_running)


def start_and_kill(
    script: Path,
    exp: Path,
    *args: str,
    condition: Callable[[dict[str, Trial]], bool] = mid_study,
    timeout: float = 300,
    url: str | None = None,
    **extra_env: str,
) -> dict[str, Any]:
    """Runs ``script exp run *args`` until ``condition(trials)`` holds, then SIGKILLs the driver
    process alone (not its process group: its children are left to notice by themselves). With
    a ``url``, the script gets the URL as its exp_dir and ``exp`` is the driver's copy of it.

    Returns the trials at the kill, the driver's process tree and how long it took to vanish.
    """
    proc = subprocess.Popen(
        [sys.executable, str(script), url or str(exp), "run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(**extra_env), cwd=script.parent,
    )
    journal = exp / "journal.jsonl"
    deadline = time.monotonic() + timeout
    tree: list[int] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if journal.exists() and condition(replay(journal)):
                tree = descendants(proc.pid)  # forkserver, workers, resource tracker / JVM, daemon...
                proc.kill()
                break
        else:
            out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
            raise AssertionError(f"the study never reached the kill point (exit {proc.returncode})\n{err[-3000:]}")
        proc.wait(30)
        at_kill = replay(journal)
        described = {pid: cmdline(pid) for pid in tree}
        each: dict[int, float] = {}
        took = wait_gone(tree, 30.0, each)
        left = [pid for pid in tree if alive(pid)]
        return {
            "trials": at_kill, "tree": described, "cleanup_s": took, "gone_after": each,
            "left": {p: described[p] for p in left},
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all([p for p in tree if alive(p)])


def reports_after_resume(exp: Path) -> dict[str, list[int]]:
    """trial_id -> the epochs reported after the (first) resume event."""
    out: dict[str, list[int]] = {}
    resumed = False
    for ev in read_journal(exp / "journal.jsonl"):
        resumed = resumed or ev["event"] == "resume"
        if resumed and ev["event"] == "report":
            out.setdefault(ev["trial_id"], []).append(ev["epoch"])
    return out


def reports_per_trial(exp: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for ev in read_journal(exp / "journal.jsonl"):
        if ev["event"] == "report":
            out.setdefault(ev["trial_id"], []).append(ev["epoch"])
    return out


def check_resumed_study(exp: Path, at_kill: dict[str, Trial], final: dict[str, Trial]) -> None:
    """The contract of ``resume=`` (see the module docstring of tests/e2e/test_driver_death.py)."""
    assert record(final) == expected_record()
    after = reports_after_resume(exp)
    all_reports = reports_per_trial(exp)
    for tid, before in at_kill.items():
        if before.state.finished:  # finished trials are never run again
            assert tid not in after, f"finished trial {tid} ran again after the resume: {after[tid]}"
            assert final[tid].history == before.history
        elif before.state is TrialState.PAUSED:  # kept its rung: its history only grew
            assert final[tid].history[: len(before.history)] == before.history
            assert all(e >= len(before.history) for e in after.get(tid, [])), (tid, after.get(tid))
        elif before.state is TrialState.RUNNING and 2 <= len(before.history) < before.budget == MAX_EPOCHS:
            # (One that had reported its last epoch may have nothing left to train.)
            # Resumed from its checkpoint (written after epoch 1 at least), not from scratch.
            assert after.get(tid) and min(after[tid]) >= 1, (tid, after.get(tid))
    for tid, t in final.items():
        epochs = all_reports[tid]
        assert sorted(set(epochs)) == list(range(t.epochs_done)), (tid, epochs)
        # Only an epoch whose checkpoint the kill prevented is trained (and reported) twice.
        assert len(epochs) - len(set(epochs)) <= 1, (tid, epochs)
        ckpt = exp / "trials" / tid / "checkpoints" / "last.ckpt"
        import torch

        state = torch.load(ckpt, weights_only=False, map_location="cpu")
        assert state["global_step"] == STEPS_PER_EPOCH * t.epochs_done, (tid, state["global_step"])
    events = [ev["event"] for ev in read_journal(exp / "journal.jsonl")]
    assert events.count("resume") == 1 and events.count("experiment_start") == 1
