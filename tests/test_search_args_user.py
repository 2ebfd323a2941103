"""``lm.search()``'s arguments as users pass them: bad ones are refused before any worker starts
(nothing is written to ``exp_dir``), with what was wrong and how to fix it; good ones run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
import lightning_maggy as lm
from lightning_maggy.exceptions import ConfigurationError


def _wine() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    return torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32), torch.tensor(y)


class WineNet(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(13, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.lr = lr

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch: Any, _: int) -> None:
        self.log("val_acc", (self.net(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        x, y = _wine()
        return DataLoader(TensorDataset(x[::2], y[::2]), batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        x, y = _wine()
        return DataLoader(TensorDataset(x[1::2], y[1::2]), batch_size=89)


SPACE = lm.Searchspace(lr=lm.Double(1e-3, 1e-1, log=True), hidden=lm.Integer(4, 16))


def _refused(tmp_path: Path, **kwargs: Any) -> str:
    """The message of the ConfigurationError that ``search()`` raises with ``kwargs``, checking
    that nothing was started or written."""
    settings = dict(metric="val_acc", max_epochs=1, num_trials=2, workers=1, verbose=False,
                    exp_dir=tmp_path / "study", optimizer="random")
    with pytest.raises(ConfigurationError) as info:
        lm.search(WineNet, SPACE, **{**settings, **kwargs})
    assert not (tmp_path / "study").exists()
    return str(info.value)


def test_a_negative_seed_is_refused_with_the_range(tmp_path: Path) -> None:
    # numpy's "expected non-negative integer" (a ValueError) before
    message = _refused(tmp_path, seed=-1)
    assert "seed=-1" in message and "int >= 0" in message


def test_a_numpy_seed_is_refused_with_the_fix(tmp_path: Path) -> None:
    message = _refused(tmp_path, seed=np.int64(3))
    assert "np.int64(3)" in message and "Pass int(seed) (3)" in message


def test_more_local_workers_than_the_machine_holds_are_refused(tmp_path: Path) -> None:
    # workers=10000 used to start worker processes until the OOM killer ended the driver
    message = _refused(tmp_path, workers=10_000)
    assert "workers=10000" in message and "Pass workers <=" in message and "LocalBackend()" in message


@pytest.mark.parametrize(
    ("trainer_kwargs", "fragment"),
    [
        ({"callbacks": ["early_stopping"]}, "callbacks holds 'early_stopping' (str)"),
        ({"callbacks": [pl.callbacks.EarlyStopping("val_acc"), object()]}, "(object), which is not a lightning.pytorch.Callback"),
        ({"logger": "tensorboard"}, "logger holds 'tensorboard' (str)"),
        ({"logger": [pl.loggers.CSVLogger("unused"), "wandb"]}, "logger holds 'wandb'"),
    ],
)
def test_callbacks_and_loggers_that_are_not_lightnings_are_refused(
    tmp_path: Path, trainer_kwargs: dict, fragment: str
) -> None:
    # each trial's Trainer refused them before: every trial FAILED, one after the other
    message = _refused(tmp_path, trainer_kwargs=trainer_kwargs)
    assert fragment in message and "Pass lightning.pytorch." in message


def test_lightning_callbacks_and_loggers_still_run(tmp_path: Path) -> None:
    other = pytest.importorskip("pytorch_lightning")  # a Trainer takes either package's
    result = lm.search(
        WineNet, SPACE, metric="val_acc", max_epochs=2, num_trials=2, workers=1, verbose=False,
        exp_dir=tmp_path / "study", optimizer="random", seed=0,
        trainer_kwargs={
            "callbacks": pl.callbacks.EarlyStopping("val_acc", mode="max", patience=5),  # one, not a list
            "logger": [pl.loggers.CSVLogger(str(tmp_path / "csv")), other.loggers.CSVLogger(str(tmp_path / "pl"))],
        },
    )
    assert [t.state for t in result.trials] == [lm.TrialState.COMPLETED] * 2, [t.error for t in result.trials]
    assert all(len(t.history) == 2 for t in result.trials)
    assert len(list((tmp_path / "csv").rglob("metrics.csv"))) == 2
    assert len(list((tmp_path / "pl").rglob("metrics.csv"))) == 2


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: lm.RandomSearch(seed=-1), "RandomSearch(seed=-1): expected an int >= 0"),
        (lambda: lm.RandomSearch(seed="0"), "RandomSearch(seed='0'): expected a Python int >= 0"),
        (lambda: lm.GridSearch(seed=np.int32(2)), "Pass int(seed) (2)"),
    ],
)
def test_optimizers_refuse_a_seed_numpy_cannot_take_with_the_fix(make: Any, fragment: str) -> None:
    # numpy's "expected non-negative integer" or a SeedSequence TypeError before
    with pytest.raises(ConfigurationError) as info:
        make()
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"direction": "maximise"}, "Did you mean 'max'?"),
        ({"direction": "Minimise"}, "Did you mean 'min'?"),
        ({"max_epochs": 3.0}, "Pass max_epochs=3."),
        ({"num_trials": 2.0}, "Pass num_trials=2."),
        ({"workers": np.int64(1)}, "Pass workers=1."),
    ],
)
def test_near_misses_of_direction_and_counts_say_the_fix(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    assert fragment in _refused(tmp_path, **kwargs)


def test_a_timedelta_timeout_is_refused_with_its_seconds(tmp_path: Path) -> None:
    import datetime

    assert "Pass timeout=300 (the timedelta in seconds)" in _refused(tmp_path, timeout=datetime.timedelta(minutes=5))
    message = _refused(tmp_path, trial_timeout=datetime.timedelta(seconds=90))
    assert "Pass trial_timeout=90" in message


def _reports_once(hparams: dict[str, Any], reporter: Any) -> float:
    reporter.broadcast(float(hparams["x"]), 0)
    return float(hparams["x"])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"exp_dir": ""}, "is empty"),
        ({"exp_dir": 5}, "expected a directory path"),
        ({"exp_dir": b"study"}, "got bytes"),
        ({"exp_dir": "/proc/no-such-dir/study"}, "cannot be created"),
        ({"resume": " "}, "is empty"),
    ],
)
def test_exp_dir_and_resume_that_are_no_usable_folder_are_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], expected: str
) -> None:
    monkeypatch.chdir(tmp_path)  # exp_dir="" used to write the study into the current directory
    with pytest.raises(ConfigurationError, match=expected):
        lm.search(_reports_once, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", num_trials=1, max_epochs=1,
                  workers=1, verbose=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_searchspace_class_instead_of_an_instance_says_to_pass_one() -> None:
    with pytest.raises(ConfigurationError, match="the Searchspace class itself: pass an instance"):
        lm.search(_reports_once, lm.Searchspace, metric="m", num_trials=1, max_epochs=1, verbose=False)


@pytest.mark.parametrize("optimizer", [lm.ASHA, lm.Hyperband, lm.GP, lm.BOHB])
def test_every_optimizer_refuses_a_seed_numpy_cannot_take(optimizer: type) -> None:
    with pytest.raises(ConfigurationError, match=rf"{optimizer.__name__}\(seed=-1\): expected an int >= 0"):
        optimizer(seed=-1)
