"""Records the learning curves that ``benchmarks/simulate.py`` replays (``benchmarks/data/``).

Two tasks, each a random search in which every trial trains ``--epochs`` epochs, with every
epoch's validation metric and wall time kept (:meth:`lightning_maggy.simulator.Curves.record`):

* ``digits``: the demo's ``DigitsMLP`` on scikit-learn's digits (``examples/digits_asha.py``),
  over the demo's space, ``val_acc``;
* ``shapes``: a small CNN (two conv layers) on generated 16x16 images of four shape classes
  (bars, crosses, boxes, diagonals at random positions, with noise), over a space of learning
  rate, channels, kernel size, dropout, weight decay and batch size, ``val_acc``.

Run: ``python benchmarks/record_curves.py [--tasks digits,shapes] [--trials 300] [--epochs 27]``
(about 8 minutes per task on 2 cores; run it on an otherwise idle machine, since the epochs'
wall times are part of the record).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

import lightning_maggy as lm  # noqa: E402

lm.prewarm()

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lightning_maggy.simulator import Curves  # noqa: E402


def shapes_data(n: int = 2400, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of four classes: a horizontal bar, a cross, a hollow box, a diagonal; random
    position and length, Gaussian noise (sd 0.6) on top."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.6, size=(n, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 4, size=n)
    for i, label in enumerate(y):
        r, c = rng.integers(3, size - 3, size=2)
        k = int(rng.integers(2, 4))
        img = x[i, 0]
        if label == 0:
            img[r, c - k:c + k + 1] += 1.5
        elif label == 1:
            img[r, c - k:c + k + 1] += 1.5
            img[r - k:r + k + 1, c] += 1.5
        elif label == 2:
            img[r - k, c - k:c + k + 1] += 1.5
            img[r + k, c - k:c + k + 1] += 1.5
            img[r - k:r + k + 1, c - k] += 1.5
            img[r - k:r + k + 1, c + k] += 1.5
        else:
            for d in range(-k, k + 1):
                img[r + d, c + d] += 1.5
    return x, y


class ShapesDataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        x, y = shapes_data()
        cut = int(0.75 * len(y))
        self.train = TensorDataset(torch.tensor(x[:cut]), torch.tensor(y[:cut]))
        self.val = TensorDataset(torch.tensor(x[cut:]), torch.tensor(y[cut:]))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=600)


class ShapesCNN(pl.LightningModule):
    def __init__(self, lr: float = 0.01, channels: int = 8, kernel: int = 3, dropout: float = 0.1,
                 weight_decay: float = 1e-4, batch_size: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, kernel, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, kernel, padding=pad), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * channels, 4),
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


SHAPES_SPACE = lm.Searchspace(
    lr=lm.Double(1e-4, 0.1, log=True),
    channels=lm.Integer(2, 16, log=True),
    kernel=lm.Discrete([3, 5]),
    dropout=lm.Double(0.0, 0.5),
    weight_decay=lm.Double(1e-6, 1e-2, log=True),
    batch_size=lm.Discrete([32, 64, 128]),
)


def tasks() -> dict:
    import digits_asha

    return {
        "digits": (digits_asha.DigitsMLP, digits_asha.SPACE, digits_asha.DigitsDataModule),
        "shapes": (ShapesCNN, SHAPES_SPACE, ShapesDataModule),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,shapes")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=DATA)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in args.tasks.split(","):
        module, space, datamodule = tasks()[name]
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            curves = Curves.record(
                module, space, metric="val_acc", direction="max", max_epochs=args.epochs, num_trials=args.trials,
                datamodule=datamodule, workers=args.workers, exp_dir=os.path.join(tmp, "study"), seed=0,
                name=name, path=os.path.join(args.out, f"{name}.json.gz"), verbose=False,
            )
        best = curves.values.max(axis=1)
        print(f"{name}: {len(curves)} configurations x {curves.max_epochs} epochs in {time.time() - t0:.0f} s; "
              f"epoch {np.median(curves.seconds) * 1000:.0f} ms (median), run overhead "
              f"{curves.run_overhead * 1000:.0f} ms; best val_acc {best.max():.4f}, median of bests "
              f"{np.median(best):.4f}", flush=True)


if __name__ == "__main__":
    main()
