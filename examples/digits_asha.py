"""Demo: an asynchronous ASHA search of a small Lightning MLP on scikit-learn's digits.

The data ships inside scikit-learn (no download). Two local worker processes train trials in
parallel; after every validation epoch the optimization server on the driver answers continue,
stop, or pause (rung reached); promoted trials resume from their rung checkpoints.

Run: ``python examples/digits_asha.py [--trials 27] [--workers 2] [--max-epochs 9] [--plot [DIR]]``
(``--plot`` writes ``result.plot()``'s figures into DIR, default the experiment directory; it
needs matplotlib. The README's figures come from ``--workers 1 --plot docs/img/digits-asha``.)
"""

from __future__ import annotations

import argparse

import lightning_maggy as lm

# Optional: start the local workers' forkserver now, so that it imports torch and Lightning while
# this script does the same; the first trial then starts about one import after the script, not two.
lm.prewarm()

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


class DigitsDataModule(pl.LightningDataModule):
    """8x8 handwritten digits (1797 images, 10 classes), standardized, 75/25 split."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        x, y = load_digits(return_X_y=True)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        xtr, xva, ytr, yva = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
        self.train = TensorDataset(torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr))
        self.val = TensorDataset(torch.tensor(xva, dtype=torch.float32), torch.tensor(yva))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=512)


class DigitsMLP(pl.LightningModule):
    """An ordinary LightningModule: nothing in it knows about the search."""

    def __init__(self, lr: float = 1e-2, hidden: int = 64, dropout: float = 0.1,
                 activation: str = "relu", batch_size: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[activation]
        self.net = nn.Sequential(
            nn.Linear(64, hidden), act(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), act(), nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


SPACE = lm.Searchspace(
    lr=lm.Double(1e-3, 0.3, log=True),
    hidden=lm.Integer(8, 128, log=True),
    dropout=lm.Double(0.0, 0.5),
    activation=lm.Categorical(["relu", "gelu", "tanh"]),
    batch_size=lm.Discrete([32, 64, 128]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--exp-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                        help="write result.plot()'s PNGs into DIR (default: the experiment directory)")
    args = parser.parse_args()

    result = lm.search(
        DigitsMLP,
        SPACE,
        datamodule=DigitsDataModule,  # built per trial with the batch_size it accepts
        metric="val_acc",
        direction="max",
        optimizer=lm.ASHA(reduction_factor=3, resource_min=1),
        num_trials=args.trials,
        max_epochs=args.max_epochs,
        workers=args.workers,
        exp_dir=args.exp_dir,
        seed=args.seed,
    )
    print(f"\nbest val_acc {result.best_metric:.4f} with {result.best_config}")
    best_epochs = result.best_trial.epochs_done
    full = sum(t.epochs_done for t in result.trials)
    print(f"epochs trained: {full} (a plain random search of {len(result.trials)} trials x "
          f"{args.max_epochs} epochs would train {len(result.trials) * args.max_epochs}); "
          f"the best trial trained {best_epochs}")
    print(f"experiment record: {result.exp_dir}")
    if args.plot is not None:
        for name, path in result.plot(path=args.plot or None).items():
            print(f"figure {name}: {path}")
    assert np.isfinite(result.best_metric)


if __name__ == "__main__":
    main()
