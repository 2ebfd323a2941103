"""Ablation studies end to end on real worker processes: a ground-truth study, and the two
examples as a user runs them (ResNet-18 blocks; breast-cancer features, a group and a custom
component)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from ablation_models import FEATURES, SignalData, SignalNet, make_signal_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_ground_truth_the_signal_feature_matters_and_the_noise_does_not(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's own backend (a notebook's inline one) ...
    result = lm.ablate(
        SignalNet, datamodule=SignalData, metric="val_acc", max_epochs=4, hparams={"lr": 0.05},
        seeds=3, workers=2, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert matplotlib.get_backend() == "svg"  # ... stays as it was while the chart is drawn
    matplotlib.use(backend)
    rows = {r.component: r for r in result.rows}
    assert list(rows) == ["base", "net.1", "middle", "linear", "signal", "noise_a", "noise_b", "noise_c"]
    assert all(r.state == "COMPLETED" and r.n == 3 for r in rows.values())
    assert rows["base"].mean > 0.9
    signal = rows["signal"]
    assert signal.delta == min(r.delta for r in result.rows[1:]), result.summary()
    assert signal.ci_high < 0 and signal.delta < -0.3, result.summary()
    for noise in ("noise_a", "noise_b", "noise_c"):
        assert rows[noise].ci_low <= 0 <= rows[noise].ci_high, result.summary()
    # The paired design: 3 seeds per component, the same 3 seeds for all.
    by_component: dict = {}
    for t in result.trials:
        by_component.setdefault(t.component, set()).add(t.seed)
    assert all(seeds == {0, 1, 2} for seeds in by_component.values()) and len(result.trials) == 24
    # The record: result.json carries the table, trials.csv the component and seed of each trial,
    # the journal every trial, and a chart is drawn.
    exp = Path(result.exp_dir)
    table = json.loads((exp / "result.json").read_text())["ablation"]
    assert [r["component"] for r in table["rows"]] == list(rows) and table["seeds"] == [0, 1, 2]
    assert (exp / "ablation.csv").read_text().startswith("component,kind,left_out,n,mean,std,delta")
    assert result.plot_path and Path(result.plot_path).stat().st_size > 5000
    ended = {e["trial"]["trial_id"] for e in read_journal(exp / "journal.jsonl") if e.get("event") == "trial" and e["trial"]["state"] == "COMPLETED"}
    assert ended == {t.trial_id for t in result.trials}
    assert json.loads((exp / "experiment.json").read_text())["ablation"]["seeds"] == [0, 1, 2]


def _run_example(name: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rows(exp: Path) -> dict[str, dict]:
    return {r["component"]: r for r in json.loads((exp / "result.json").read_text())["ablation"]["rows"]}


def test_resnet18_blocks_identity_breaks_the_downsampling_ones_and_a_replacement_fixes_them(tmp_path):
    pytest.importorskip("torchvision")
    downsampling = ["model.layer2.0", "model.layer3.0", "model.layer4.0"]
    proc = _run_example("resnet_ablation.py", "--train-size", "64", "--exp-dir", str(tmp_path / "plain"))
    rows = _rows(tmp_path / "plain")
    assert len(rows) == 9
    completed = [c for c, r in rows.items() if r["state"] == "COMPLETED"]
    assert sorted(completed) == sorted(["base", "model.layer1.0", "model.layer1.1", "model.layer2.1", "model.layer3.1", "model.layer4.1"])
    for block in downsampling:
        assert rows[block]["state"] == "FAILED"
        assert f"layer '{block}' maps input shape [2," in rows[block]["error"]
        assert "but its replacement Identity outputs" in rows[block]["error"]
    assert "Failures" in proc.stdout and "model.layer2.0: AblationError" in proc.stdout
    # They failed before any training: no epoch was reported for them.
    result = json.loads((tmp_path / "plain" / "result.json").read_text())
    for t in result["trials"]:
        if t["component"] in downsampling:
            assert t["history"] == [] and not (tmp_path / "plain" / "trials" / t["trial_id"] / "metrics.csv").exists()

    _run_example("resnet_ablation.py", "--train-size", "64", "--replace-downsampling", "--exp-dir", str(tmp_path / "fixed"))
    rows = _rows(tmp_path / "fixed")
    assert len(rows) == 9 and all(r["state"] == "COMPLETED" for r in rows.values())


def test_breast_cancer_features_group_and_custom_component_with_three_seeds(tmp_path):
    pytest.importorskip("sklearn")
    proc = _run_example("breast_cancer_ablation.py", "--epochs", "4", "--exp-dir", str(tmp_path / "exp"))
    rows = _rows(tmp_path / "exp")
    kinds = {r["kind"] for r in rows.values()}
    assert {"base", "feature", "feature_group", "group", "custom"} <= kinds
    assert all(r["n"] == 3 and r["ci_low"] is not None for c, r in rows.items() if c != "base")
    worst = rows["all worst-case features"]
    assert worst["left_out"].count("worst ") == 10  # the prefix matched the 10 "worst ..." columns
    assert "mean ± std" in proc.stdout and "95% CI" in proc.stdout
    png = tmp_path / "exp" / "ablation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_decorated_module_searched_normally_is_not_ablated(tmp_path):
    space = lm.Searchspace(lr=lm.Double(0.01, 0.1, log=True))
    result = lm.search(SignalNet, space, datamodule=SignalData, metric="val_acc", optimizer="random",
                       num_trials=2, max_epochs=1, workers=2, exp_dir=tmp_path / "exp", verbose=False, seed=0)
    assert [t.state.value for t in result.trials] == ["COMPLETED", "COMPLETED"]
    assert all(t.component is None and t.seed is None for t in result.trials)
    for t in result.trials:
        log = (tmp_path / "exp" / "trials" / t.trial_id / "output.log").read_text()
        assert "ablation" not in log


class _ZeroingData(pl.LightningDataModule):
    """The signal data, with no decorator; leaves features out itself (drop_features), by zeroing
    their columns in setup."""

    zeroed: tuple[str, ...] = ()
    feature_names = FEATURES

    def drop_features(self, names):
        self.zeroed = tuple(names)

    def setup(self, stage=None):
        x, y = make_signal_data()
        x[:, [FEATURES.index(n) for n in self.zeroed]] = 0.0
        self.train, self.val = TensorDataset(x[:400], y[:400]), TensorDataset(x[400:], y[400:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=100)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=200)


class _CountsLiveColumns(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(len(FEATURES), 2)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("live_columns", float((batch[0].std(0) > 0).sum()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_datamodule_instance_is_fresh_for_every_run_of_an_ablation(tmp_path):
    # One worker runs every trial in turn: a run that left a feature out of the instance it was
    # given must not hand the next run (the base of the next seed) that feature left out.
    study = lm.AblationStudy()
    study.features.include("signal", "noise_a")
    result = lm.ablate(_CountsLiveColumns, study, datamodule=_ZeroingData(), metric="live_columns", max_epochs=1,
                       seeds=2, workers=1, exp_dir=tmp_path / "exp", verbose=False)
    seen = {(t.component, t.seed): t.final_metric for t in result.trials}
    assert seen == {(c, s): 4.0 if c is None else 3.0 for c in (None, "signal", "noise_a") for s in (0, 1)}
