"""Ablation: leave each of ResNet-18's eight BasicBlocks out, one trial each (LOCO).

torchvision's ResNet-18 on ``FakeData`` (random 32x32 images, no download; pass ``--cifar10`` to
use CIFAR-10 from ``--data-dir``, downloaded if missing). Five blocks keep their input's shape
and can be replaced by ``nn.Identity``; the first block of layer2, layer3 and layer4 downsamples
(stride 2, more channels), so leaving it out breaks the shapes: those trials fail before any
training with a message naming the block and both shapes, and the study goes on. With
``--replace-downsampling`` the study declares a replacement for them instead: the block's own
shortcut (1x1 convolution with stride 2 and batch norm), which keeps the shape.

Run: ``python examples/resnet_ablation.py [--epochs 1] [--seeds 1] [--replace-downsampling]``
"""

from __future__ import annotations

import argparse

import lightning_maggy as lm

lm.prewarm()

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402

BLOCKS = [f"model.layer{i}.{j}" for i in (1, 2, 3, 4) for j in (0, 1)]
DOWNSAMPLING = ["model.layer2.0", "model.layer3.0", "model.layer4.0"]


class ResNetModule(pl.LightningModule):
    """ResNet-18 (no pretrained weights) for small images."""

    def __init__(self, lr: float = 0.05, num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = torchvision.models.resnet18(num_classes=num_classes)
        self.example_input_array = torch.zeros(2, 3, 32, 32)  # the shape check's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())
        self.log("val_loss", nn.functional.cross_entropy(logits, y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class ImageData(pl.LightningDataModule):
    """FakeData (default) or CIFAR-10 images of 3x32x32."""

    def __init__(self, batch_size: int = 32, train_size: int = 256, cifar10: bool = False, data_dir: str = "data") -> None:
        super().__init__()
        self.batch_size, self.train_size, self.cifar10, self.data_dir = batch_size, train_size, cifar10, data_dir

    def prepare_data(self) -> None:
        if self.cifar10:
            torchvision.datasets.CIFAR10(self.data_dir, train=True, download=True)
            torchvision.datasets.CIFAR10(self.data_dir, train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        tf = transforms.ToTensor()
        if self.cifar10:
            self.train = torchvision.datasets.CIFAR10(self.data_dir, train=True, transform=tf)
            self.val = torchvision.datasets.CIFAR10(self.data_dir, train=False, transform=tf)
        else:
            self.train = torchvision.datasets.FakeData(self.train_size, (3, 32, 32), 10, transform=tf, random_offset=0)
            self.val = torchvision.datasets.FakeData(self.train_size // 4, (3, 32, 32), 10, transform=tf, random_offset=10_000)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--replace-downsampling", action="store_true",
                        help="declare the block's shortcut as the replacement of the 3 downsampling blocks")
    parser.add_argument("--cifar10", action="store_true", help="real CIFAR-10 (downloaded to --data-dir)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--exp-dir", default=None)
    args = parser.parse_args()

    # ResNetModule is not decorated: the study object declares the components (it is someone
    # else's model, say). Decorating it with @lm.ablatable(layers=BLOCKS) does the same.
    study = lm.AblationStudy()
    shape_preserving = [b for b in BLOCKS if b not in DOWNSAMPLING]
    study.model.layers.include(*shape_preserving)
    if args.replace_downsampling:
        study.model.layers.include(*DOWNSAMPLING, replacement=lambda block: block.downsample)
    else:
        study.model.layers.include(*DOWNSAMPLING)

    result = lm.ablate(
        ResNetModule, study,
        datamodule=ImageData(train_size=args.train_size, cifar10=args.cifar10, data_dir=args.data_dir),
        metric="val_acc", direction="max", max_epochs=args.epochs,
        hparams={"lr": 0.05}, seeds=args.seeds, workers=args.workers, exp_dir=args.exp_dir,
    )
    print(result.summary())
    if result.plot_path:
        print("bar chart:", result.plot_path)


if __name__ == "__main__":
    main()
