"""Trials packed on one GPU: throughput of 1, 2, 4 and 8 concurrent ResNet-18 trials per GPU.

The same workload through ``lm.search`` at each packing: k trials at once on GPU 0
(``gpus_per_trial=1/k``, ``workers=k``, one trial per worker), each a torchvision ResNet-18 on
32x32 inputs (10 classes), batch 128, ``--steps`` training steps on random data generated on the
GPU (no data loading in the way). Each trial times its own training steps (from its first batch
to its last, after a few warm-up steps); the throughput of a packing is all trials' samples over
the span from the first timed step to the last, so process start-up and CUDA initialisation are
left out on every side alike. Printed: samples per second per packing and its ratio to one
trial per GPU. Goal: 8 trials per GPU at least 6x one (a plain training loop gets 6.8x on an
H100).

Run: ``python benchmarks/gpu_packing.py [--packings 1,2,4,8] [--steps 300]`` (needs a GPU and
torchvision; about 3 minutes on one GPU). Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BATCH = 128
WARMUP_STEPS = 20


def _module_class() -> type:
    import pytorch_lightning as pl
    import torch
    import torchvision
    from torch import nn

    class ResNetTrial(pl.LightningModule):
        def __init__(self, lr: float = 0.05, steps: int = 300, out: str = "") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torchvision.models.resnet18(num_classes=10)
            self._times: list[float] = []

        def train_dataloader(self):  # step indices only; the batches are made on the GPU
            return torch.utils.data.DataLoader(range(self.hparams.steps), batch_size=1)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(range(1), batch_size=1)

        def training_step(self, batch, batch_idx):
            x = torch.randn(BATCH, 3, 32, 32, device=self.device)
            y = torch.randint(0, 10, (BATCH,), device=self.device)
            return nn.functional.cross_entropy(self.net(x), y)

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            if batch_idx in (WARMUP_STEPS, self.hparams.steps - 1):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self._times.append(time.time())

        def validation_step(self, batch, batch_idx):
            self.log("val_score", 1.0)

        def on_train_end(self) -> None:
            if len(self._times) == 2 and self.hparams.out:
                record = {"start": self._times[0], "end": self._times[1],
                          "samples": (self.hparams.steps - 1 - WARMUP_STEPS) * BATCH}
                Path(self.hparams.out, f"{os.getpid()}-{self.hparams.lr:.8f}.json").write_text(json.dumps(record))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    return ResNetTrial


def measure(per_gpu: int, steps: int, smoke: bool = False) -> float:
    """Samples per second of ``per_gpu`` concurrent trials on GPU 0 (``smoke``: on the CPU,
    to check the benchmark itself on a machine without a GPU)."""
    import lightning_maggy as lm

    module = _module_class()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "timings")
        out.mkdir()
        space = lm.Searchspace(lr=lm.Double(0.01, 0.1), steps=lm.Discrete([steps]), out=lm.Categorical([str(out)]))
        gpu = {} if smoke else {"gpus_per_trial": 1 if per_gpu == 1 else 1 / per_gpu}
        trainer_kwargs = {"num_sanity_val_steps": 0, **({"accelerator": "cpu"} if smoke else {"precision": "16-mixed"})}
        result = lm.search(
            module, space, metric="val_score", optimizer="random", num_trials=per_gpu, max_epochs=1, seed=per_gpu,
            workers=per_gpu, exp_dir=Path(tmp, "exp"), trainer_kwargs=trainer_kwargs, verbose=False, **gpu,
        )
        if result.counts()["COMPLETED"] != per_gpu:
            raise SystemExit(f"{per_gpu} trials per GPU: not every trial completed: {result.summary()}")
        records = [json.loads(p.read_text()) for p in out.iterdir()]
    span = max(r["end"] for r in records) - min(r["start"] for r in records)
    return sum(r["samples"] for r in records) / span


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packings", default="1,2,4,8", help="trials per GPU to measure")
    parser.add_argument("--steps", type=int, default=300, help="training steps per trial")
    parser.add_argument("--cpu-smoke", action="store_true", help="check the benchmark on the CPU (no figures)")
    args = parser.parse_args()
    if args.cpu_smoke:
        rates = {k: measure(k, WARMUP_STEPS + 5, smoke=True) for k in (1, 2)}
        print("cpu smoke run:", ", ".join(f"{k} trial(s): {r:.0f} samples/s" for k, r in rates.items()))
        return 0
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU (before CUDA starts): packing is per GPU
    try:
        import torch
    except ImportError:
        print("skipped: torch is not installed")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no GPU is visible (torch.cuda.is_available() is False); this benchmark "
              "measures trials packed on one GPU, run it on a GPU machine")
        return 0
    packings = [int(k) for k in args.packings.split(",")]
    print(f"ResNet-18, 32x32, batch {BATCH}, {args.steps} steps per trial, on {torch.cuda.get_device_name(0)}")
    rates = {}
    for k in packings:
        t0 = time.time()
        rates[k] = measure(k, args.steps)
        print(f"  {k} trial(s) per GPU: {rates[k]:9.0f} samples/s  ({time.time() - t0:.0f} s)", flush=True)
    base = rates.get(1)
    if base:
        print("\nthroughput against one trial per GPU: "
              + ", ".join(f"{k}: {rates[k] / base:.2f}x" for k in packings))
        if 8 in rates:
            print(f"goal (8 per GPU >= 6x one): {'yes' if rates[8] >= 6 * base else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
