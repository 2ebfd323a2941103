"""An ablation study whose driver is killed with SIGKILL mid-study resumes with ``resume=``:
finished trials are not run again, the running one resumes from its checkpoint, and a resumed
call with other seeds is refused before anything starts (see ``tests/driver_kill.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ablation_models import SignalData, SignalNet
from driver_kill import reports_after_resume, run, start_and_kill

import lightning_maggy as lm
from lightning_maggy.driver.journal import replay

pytestmark = pytest.mark.slow


ABLATION_SCRIPT = """
import sys
from ablation_models import SignalData, SignalNet
import lightning_maggy as lm

exp_dir, mode = sys.argv[1], sys.argv[2]
where = dict(resume=exp_dir) if mode == "resume" else dict(exp_dir=exp_dir)
result = lm.ablate(SignalNet, datamodule=SignalData, metric="val_acc", max_epochs=3, hparams={"lr": 0.05},
                   seeds=1, workers=2, verbose=False, **where)
print("RESULT", len(result.rows), flush=True)
"""


def _some_done_one_running(trials: dict) -> bool:
    states = [t.state for t in trials.values()]
    running = [t for t in trials.values() if t.state is lm.TrialState.RUNNING and 2 <= len(t.history) < 3]
    return states.count(lm.TrialState.COMPLETED) >= 2 and bool(running)


def test_a_sigkilled_ablation_study_resumes_and_refuses_other_seeds(tmp_path: Path) -> None:
    script = tmp_path / "ablation_script.py"
    script.write_text(ABLATION_SCRIPT)
    exp = tmp_path / "exp"
    killed = start_and_kill(script, exp, condition=_some_done_one_running)
    assert killed["cleanup_s"] is not None and killed["cleanup_s"] < 10.0, killed  # about 2 s
    with pytest.raises(lm.ConfigurationError, match=r"the ablation study \(components, seeds and hparams\)"):
        lm.ablate(SignalNet, datamodule=SignalData, metric="val_acc", max_epochs=3, hparams={"lr": 0.05},
                  seeds=2, workers=2, verbose=False, resume=exp)
    resumed = run(script, exp, "resume", "")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESULT 8" in resumed.stdout  # base + 7 components
    final = replay(exp / "journal.jsonl")
    assert len(final) == 8 and all(t.state is lm.TrialState.COMPLETED and t.epochs_done == 3 for t in final.values())
    after = reports_after_resume(exp)
    for tid, before in killed["trials"].items():
        if before.state.finished:
            assert tid not in after, tid
        elif before.state is lm.TrialState.RUNNING and 2 <= len(before.history) < before.budget:
            # (A trial that had reported its last epoch when the driver died may have nothing
            # left to train: its resumed run restores the checkpoint and ends.)
            assert after.get(tid) and min(after[tid]) >= 1, (tid, after.get(tid))  # from its checkpoint
    table = json.loads((exp / "result.json").read_text())["ablation"]
    assert len(table["rows"]) == 8 and all(r["n"] == 1 for r in table["rows"])
