"""What a user reads on the console during a study: the progress bar's counts agree with its
count of trials and with ``result.best_metric``, a trial that fails or reports NaN says why
in a line of its own, and stderr piped to a file (a CI log) holds lines, not carriage returns."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from lightning_maggy.progress import Progress
from lightning_maggy.trial import Trial, TrialState

# Wine classification with a tiny MLP; mode "b" raises at epoch 1 (fail) or reports NaN from
# epoch 1 (nan), so one study has completed, failed and NaN-stopped trials.
_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, pytorch_lightning as pl
    from sklearn.datasets import load_wine
    from torch.utils.data import DataLoader, TensorDataset
    import lightning_maggy as lm

    X, y = load_wine(return_X_y=True)
    X = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    y = torch.tensor(y)

    class Wine(pl.LightningModule):
        def __init__(self, lr, mode):
            super().__init__()
            self.lr, self.mode = lr, mode
            self.net = torch.nn.Linear(13, 3)
        def train_dataloader(self):
            return DataLoader(TensorDataset(X[:140], y[:140]), batch_size=70)
        def val_dataloader(self):
            return DataLoader(TensorDataset(X[140:], y[140:]), batch_size=64)
        def training_step(self, batch, i):
            if self.mode == "fail" and self.current_epoch == 1:
                raise ValueError("the user's bug in training_step")
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
        def validation_step(self, batch, i):
            loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("val_loss", loss * float("nan") if self.mode == "nan" and self.current_epoch else loss)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    space = lm.Searchspace(lr=lm.Discrete([0.1, 0.5]), mode=lm.Categorical(["ok", "fail", "nan"]))
    result = lm.search(Wine, space, metric="val_loss", direction="min", optimizer="grid", max_epochs=3,
                       workers=2, seed=0, exp_dir=sys.argv[1], num_trials=6)
    print("BEST", repr(result.best_metric), flush=True)
    """
)


def test_piped_console_is_lines_whose_counts_agree_and_unscored_trials_say_why(tmp_path: Path) -> None:
    script = tmp_path / "study.py"
    script.write_text(_SCRIPT)
    # Bytes: text=True would read every "\r" as a line's end.
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "exp")], capture_output=True,
                          timeout=600, cwd=tmp_path)
    err, out = proc.stderr.decode(), proc.stdout.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "\r" not in err  # one line per event in a log, not one endless line of redraws
    bars = [line for line in err.splitlines() if line.startswith("maggy:")]
    assert len(bars) >= 2 and bars[0].split("|")[-1].strip().startswith("0/6")
    for line in bars[1:]:
        n = int(re.search(r"\| *(\d+)/6 ", line).group(1))
        counts = {k: int(v) for k, v in re.findall(r"(done|stopped|failed)=(\d+)", line)}
        assert sum(counts.values()) == n, line  # the counts of the same event as the count of trials
    best = float(out.split("BEST")[1])
    shown = re.findall(r"best val_loss=([0-9.e+-]+)", bars[-1])
    assert shown and math.isclose(float(shown[0]), best, rel_tol=1e-3), (bars[-1], best)
    failed = [line for line in err.splitlines() if " FAILED after " in line]
    assert failed and "ValueError: the user's bug in training_step" in failed[0] and "output.log" in failed[0]
    nan = [line for line in err.splitlines() if " STOPPED after " in line]
    assert nan and "nan" in nan[0].lower()
    assert "the user's bug" not in out  # and no Lightning/user traceback on the driver's stdout


def _trial(x: int, history: tuple[float, ...], state: TrialState, final: float | None,
           error: str | None = None) -> Trial:
    return Trial.create({"x": x}, budget=3).evolve(state=state, history=history, final_metric=final, error=error)


def test_trials_stopped_by_ctrl_c_and_failures_before_a_resume_get_no_line_of_their_own(capsys) -> None:
    bar = Progress(3, "acc", "max", enabled=True)
    bar.update(_trial(1, (0.4, 0.5), TrialState.STOPPED, 0.5, "stopped: the study was interrupted"))
    bar.update(_trial(2, (0.4,), TrialState.FAILED, None, "Traceback\nKeyError: 'x'\n"))
    bar.update(_trial(2, (0.4,), TrialState.FAILED, None, "Traceback\nKeyError: 'x'\n"))  # a resume passes it again
    earlier = _trial(3, (0.4,), TrialState.FAILED, None, "Traceback\nOSError: before the resume\n")
    bar.update(earlier.evolve(finished=time.time() - 3600))  # a resumed study's past failure: no line
    bar.close()
    err = capsys.readouterr().err
    # The study says it was interrupted once: a line per running trial would be noise.
    assert "interrupted" not in err and "before the resume" not in err
    assert err.count("KeyError: 'x'") == 1 and "after 1 epoch:" in err
    assert "best acc=0.5" in err.splitlines()[-1] and "stopped=1, failed=2" in err.splitlines()[-1]


def test_a_grid_search_without_num_trials_shows_the_grid_size_as_the_bars_total(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        import lightning_maggy as lm
        def f(hparams, reporter):
            reporter.broadcast(float(hparams["x"]), 0)
            return float(hparams["x"])
        lm.search(f, lm.Searchspace(x=lm.Discrete([1, 2, 3]), c=lm.Categorical(["a", "b"])), metric="m",
                  optimizer="grid", max_epochs=1, workers=1, exp_dir=sys.argv[1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "exp")], capture_output=True, timeout=300)
    bars = [line for line in proc.stderr.decode().splitlines() if line.startswith("maggy:")]
    assert proc.returncode == 0 and bars, proc.stderr.decode()[-2000:]
    assert "6/6" in bars[-1], bars  # before: "maggy: 6trial [...]", no total


def test_the_one_line_per_event_console_of_spark_says_why_a_trial_failed(capsys) -> None:
    bar = Progress(2, "acc", "max", enabled=True, lines=True)
    bar.update(_trial(1, (0.4, 0.5), TrialState.COMPLETED, 0.5))
    bar.update(_trial(2, (0.4,), TrialState.FAILED, None, "Traceback\nKeyError: 'x'\n"))
    bar.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[maggy] trial")]
    assert len(lines) == 2 and lines[0].endswith("(x=1)")  # a completed trial: nothing added
    assert "FAILED after 1 epochs" in lines[1] and lines[1].endswith("KeyError: 'x'; traceback in its output.log")
