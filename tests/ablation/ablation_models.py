"""Tiny models and data for the ablation tests (CPU, about a second per trial)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_maggy as lm

FEATURES = ["signal", "noise_a", "noise_b", "noise_c"]


def make_signal_data(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth: the label is the sign of column 0 ("signal"); the other columns are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return torch.tensor(x), torch.tensor(y)


@lm.ablatable(features=FEATURES)
class SignalData(pl.LightningDataModule):
    """Tensor batches ``(x, y)``, features in the last dimension."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        x, y = make_signal_data()
        self.train, self.val = TensorDataset(x[:400], y[:400]), TensorDataset(x[400:], y[400:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=200)


def no_hidden_activation(module: pl.LightningModule) -> pl.LightningModule:
    module.net[1] = nn.Identity()
    return module


@lm.ablatable(layers=["net.1"], groups={"middle": ["net.2", "net.3"]}, custom={"linear": no_hidden_activation})
class SignalNet(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())
        self.log("val_loss", nn.functional.cross_entropy(logits, y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class Widening(pl.LightningModule):
    """A model whose block ``body.0`` changes the width (8 -> 16): Identity cannot replace it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16))
        self.head = nn.Linear(16, 2)
        self.example_input_array = torch.zeros(3, 8)

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
