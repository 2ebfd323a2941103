"""Tiny real Lightning models and data for the tests (CPU, seconds per trial)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_blobs(n: int = 256, features: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: learnable in a couple of epochs by a small MLP."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(0, 1.0, size=(n, features))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


class BlobsDataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int = 32, n: int = 256) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.n = n

    def setup(self, stage: str | None = None) -> None:
        x, y = make_blobs(self.n)
        split = int(0.75 * len(x))
        self.train = TensorDataset(x[:split], y[:split])
        self.val = TensorDataset(x[split:], y[split:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=128)


class CountingBlobsDataModule(BlobsDataModule):
    """BlobsDataModule that appends ``<pid> <instance number> <stage>`` to the file named by
    the environment variable ``SETUP_LOG`` at every ``setup``, and ``<pid> <instance number>
    <batch size>`` to ``LOADER_LOG`` (when set) at every ``train_dataloader``; instances are
    numbered in their process from 0."""

    made = 0

    def __init__(self, batch_size: int = 32, n: int = 256) -> None:
        super().__init__(batch_size=batch_size, n=n)
        self.number = CountingBlobsDataModule.made
        CountingBlobsDataModule.made += 1

    def setup(self, stage: str | None = None) -> None:
        import os

        with open(os.environ["SETUP_LOG"], "a") as fh:
            fh.write(f"{os.getpid()} {self.number} {stage}\n")
        super().setup(stage)

    def train_dataloader(self) -> DataLoader:
        import os

        loader = super().train_dataloader()
        if os.environ.get("LOADER_LOG"):
            with open(os.environ["LOADER_LOG"], "a") as fh:
                fh.write(f"{os.getpid()} {self.number} {loader.batch_size}\n")
        return loader


class TinyClassifier(pl.LightningModule):
    def __init__(
        self, lr: float = 0.01, hidden: int = 16, fail: bool = False, log_metric: bool = True, epoch_sleep: float = 0.0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail:
            raise RuntimeError("this configuration always fails")
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        if self.hparams.log_metric:
            self.log("val_acc", acc, on_epoch=True)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self.hparams.epoch_sleep:
            import time

            time.sleep(self.hparams.epoch_sleep)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class ScoredClassifier(TinyClassifier):
    """Trains like TinyClassifier and logs ``score``, a hyperparameter, as its validation
    metric: the search's decisions then depend on the configurations alone."""

    def __init__(self, score: float = 0.0, lr: float = 0.05, epoch_sleep: float = 0.0) -> None:
        super().__init__(lr=lr, epoch_sleep=epoch_sleep)
        self.score = score

    def on_validation_epoch_end(self) -> None:
        self.log("score", float(self.score))

    def on_validation_epoch_start(self) -> None:  # one line per sanity check, in the trial's folder
        if self.trainer.sanity_checking:
            with open(f"{self.trainer.default_root_dir}/sanity_checks", "a") as fh:
                fh.write(f"{self.trainer.current_epoch}\n")


def unified_module_class() -> type:
    """A linear classifier written against ``lightning.pytorch`` (``import lightning as L``)."""
    import lightning.pytorch as L

    class UnifiedModule(L.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.lr = lr
            self.net = nn.Linear(8, 3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_acc", (self.net(x).argmax(-1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    return UnifiedModule


def fit_with_own_trainer(hparams: dict, metric: str, **trainer_kwargs) -> float:
    """What a user's train function does: its own ``pl.Trainer`` with ``MaggyCallback``, sized
    by ``lm.current_trial().budget``, fitting ``TinyClassifier`` on the blobs."""
    import lightning_maggy as lm

    kwargs = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    kwargs.update(trainer_kwargs)
    trainer = pl.Trainer(max_epochs=lm.current_trial().budget, callbacks=[lm.MaggyCallback(metric=metric)], **kwargs)
    trainer.fit(TinyClassifier(**hparams), datamodule=BlobsDataModule())
    return float(trainer.callback_metrics[metric])
