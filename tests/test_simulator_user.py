"""The simulator as a user meets it: recording curves of a real LightningModule (trials left
out are told, search arguments that record sets itself are refused clearly), replaying them
consistently, and bad curves refused with a message that names the problem."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import DataLoader, TensorDataset

import lightning_maggy as lm

_X, _Y = load_breast_cancer(return_X_y=True)
_X = torch.tensor((_X - _X.mean(0)) / _X.std(0), dtype=torch.float32)
_Y = torch.tensor(_Y, dtype=torch.float32)


class Cancer(pl.LightningModule):
    """Logistic regression on breast cancer; a learning rate above 0.1 raises in epoch 1."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Linear(30, 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(_X[:400], _Y[:400]), batch_size=200)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(_X[400:], _Y[400:]), batch_size=200)

    def training_step(self, batch, i):
        if self.lr > 0.1 and self.current_epoch == 1:
            raise RuntimeError("diverged")
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch[0]).squeeze(1), batch[1])

    def validation_step(self, batch, i):
        acc = ((self.net(batch[0]).squeeze(1) > 0).float() == batch[1]).float().mean()
        self.log("val_acc", acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


_SPACE = lm.Searchspace(lr=lm.Discrete([0.001, 0.01, 0.05, 0.5]))


def test_record_says_which_trials_it_left_out_and_the_replay_matches_the_recorded_curves(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        curves = lm.Curves.record(Cancer, _SPACE, metric="val_acc", max_epochs=2, num_trials=4, workers=2,
                                  verbose=False, exp_dir=tmp_path / "rec", seed=3)
    # Random sampling of 4 points from 4 choices: the record holds those that did not fail.
    result = lm.SearchResult.load(tmp_path / "rec")
    failed = [t for t in result.trials if t.state is lm.TrialState.FAILED]
    assert failed and len(curves) == len(result.trials) - len(failed)
    told = [str(w.message) for w in caught if "Curves.record" in str(w.message)]
    assert told and f"{len(failed)} of the {len(result.trials)} trials are left out" in told[0]
    assert f"{len(failed)} failed" in told[0]
    sim = lm.simulate(curves, optimizer="random", workers=2, num_trials=6, seed=0)
    for t in sim.trials:  # each simulated trial replays the recorded curve of its configuration
        i = curves.nearest(t.config)
        assert t.history == pytest.approx(tuple(curves.values[i, : t.epochs_done]))
    assert sim.best_metric == pytest.approx(max(curves.values[curves.nearest(t.config), -1] for t in sim.trials))
    assert sim.elapsed >= curves.seconds.sum(axis=1).min()


def test_record_refuses_an_optimizer_and_an_early_stop_rule_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(lm.ConfigurationError, match="runs a random search itself"):
        lm.Curves.record(Cancer, _SPACE, metric="val_acc", max_epochs=2, num_trials=2, optimizer="asha",
                         exp_dir=tmp_path / "a")
    with pytest.raises(lm.ConfigurationError, match="early_stop='median' would stop trials"):
        lm.Curves.record(Cancer, _SPACE, metric="val_acc", max_epochs=2, num_trials=2, early_stop="median",
                         exp_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_curves_of_different_lengths_are_refused_with_a_message_about_curves() -> None:
    space = lm.Searchspace(lr=lm.Double(1e-4, 1e-1, log=True))
    configs = [{"lr": 0.001}, {"lr": 0.01}, {"lr": 0.05}]
    ragged = [[0.5, 0.6, 0.7], [0.4, 0.5], [0.3, 0.4, 0.5]]
    with pytest.raises(lm.ConfigurationError, match=r"curves of different lengths \(2 to 3 epochs; configuration 1"):
        lm.Curves(space, configs, ragged, np.ones((3, 3)), metric="acc")
    with pytest.raises(lm.ConfigurationError, match="seconds must be numbers"):
        lm.Curves(space, configs, np.ones((3, 3)), [["fast"] * 3] * 3, metric="acc")
