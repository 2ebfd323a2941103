"""Trials packed on one GPU: throughput of 1, 2, 4 and 8 concurrent ResNet-18 trials per GPU.

The same workload through ``lm.search`` at each packing: k trials at once on GPU 0
(``gpus_per_trial=1/k``, ``workers=k``, one trial per worker), each a torchvision ResNet-18 on
32x32 inputs (10 classes), batch 128, mixed precision, on random data generated on the GPU (no
data loading in the way). The k trials meet at a barrier after a few warm-up steps and then all
count their training steps over the same ``--window`` seconds of wall time, so process start-up,
CUDA initialisation and stragglers are left out on every side alike. The throughput of a
packing is the sum of its trials' samples per second over that window.

In the same run, the same model, batch and precision as a plain PyTorch loop in k processes
(``torch.multiprocessing``, no Lightning, no search), timed the same way: the ceiling that
packing can reach on this GPU. Printed: samples per second per packing, its ratio to one trial
per GPU, and the plain loop's. Goal: 8 trials per GPU at least 6x one (a plain training loop got
6.8x on an H100).

Processes that share a GPU take turns on it unless NVIDIA's Multi-Process Service (MPS) runs,
which lets their kernels run at the same time; ``--mps`` starts its daemon for the run (and
stops it after), so the same packings can be compared with and without it.

Run: ``python benchmarks/gpu_packing.py [--packings 1,2,4,8] [--window 8] [--mps] [--json out.json]``
(needs a GPU and torchvision; about 2.5 minutes on one GPU). Without a GPU it says so and exits
0; ``--cpu-smoke`` checks the benchmark itself on the CPU (no figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 128
WARMUP_STEPS = 30
STEPS = 1_000_000  # more than any window needs: a trial stops when its window closes


class Window:
    """Counts one process's training steps over a wall-clock window shared by ``peers`` processes.

    After ``WARMUP_STEPS`` the process writes ``ready-<pid>`` under ``folder`` and waits until
    every peer has; the window opens 0.5 s after the last peer became ready and stays open
    ``seconds``. ``step()`` is called after every training step and returns False once the window
    has closed, when ``record`` (samples, start, end, device) is written to ``<pid>.json``.
    """

    def __init__(self, folder: str, peers: int, seconds: float, device: str) -> None:
        self.folder, self.peers, self.seconds, self.device = Path(folder), peers, seconds, device
        self.steps = 0
        self.opens = self.start = self.first = None

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _wait_for_peers(self) -> float:
        self._sync()
        (self.folder / f"ready-{os.getpid()}").write_text(str(time.time()))
        deadline = time.time() + 300
        while True:
            ready = list(self.folder.glob("ready-*"))
            if len(ready) >= self.peers:
                return max(float(p.read_text() or 0) for p in ready) + 0.5
            if time.time() > deadline:
                raise RuntimeError(f"only {len(ready)} of {self.peers} trials reached the barrier in 300 s")
            time.sleep(0.01)

    def step(self) -> bool:
        self.steps += 1
        if self.steps == WARMUP_STEPS:
            self.opens = self._wait_for_peers()
        if self.opens is None:
            return True
        now = time.time()
        if self.start is None:
            if now >= self.opens:
                self._sync()
                self.start, self.first = time.time(), self.steps
            return True
        if now < self.start + self.seconds:
            return True
        self._sync()
        end = time.time()
        record = {"samples": (self.steps - self.first) * BATCH, "start": self.start, "end": end,
                  "device": self.device}
        (self.folder / f"{os.getpid()}.json").write_text(json.dumps(record))
        return False


def _module_class() -> type:
    import pytorch_lightning as pl
    import torch
    import torchvision
    from torch import nn

    class ResNetTrial(pl.LightningModule):
        def __init__(self, lr: float = 0.05, out: str = "", peers: int = 1, window: float = 10.0) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torchvision.models.resnet18(num_classes=10)
            self._window: Window | None = None
            self._done = False

        def train_dataloader(self):  # step indices only; the batches are made on the GPU
            return torch.utils.data.DataLoader(range(STEPS), batch_size=1)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(range(1), batch_size=1)

        def on_train_start(self) -> None:
            self._window = Window(self.hparams.out, self.hparams.peers, self.hparams.window, str(self.device))

        def on_train_batch_start(self, batch, batch_idx):
            return -1 if self._done else None  # -1: end the epoch (validation still runs)

        def training_step(self, batch, batch_idx):
            x = torch.randn(BATCH, 3, 32, 32, device=self.device)
            y = torch.randint(0, 10, (BATCH,), device=self.device)
            return nn.functional.cross_entropy(self.net(x), y)

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            self._done = not self._window.step()

        def validation_step(self, batch, batch_idx):
            self.log("val_score", 1.0)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    return ResNetTrial


def _plain_loop(rank: int, out: str, peers: int, window: float, smoke: bool) -> None:
    """One process of the plain-loop ceiling: the same model, batch and precision, no Lightning."""
    import torch
    import torchvision
    from torch import nn

    device = torch.device("cpu" if smoke else "cuda:0")
    net = torchvision.models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=not smoke)
    timer = Window(out, peers, window, str(device))
    while True:
        x = torch.randn(BATCH, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (BATCH,), device=device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=not smoke):
            loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if not timer.step():
            return


def _throughput(folder: Path, expected: int, what: str) -> tuple[float, list[str]]:
    records = [json.loads(p.read_text()) for p in folder.glob("[0-9]*.json")]
    if len(records) != expected:
        raise SystemExit(f"{what}: {len(records)} of {expected} processes recorded their window")
    return sum(r["samples"] / (r["end"] - r["start"]) for r in records), sorted({r["device"] for r in records})


def measure_search(per_gpu: int, window: float, smoke: bool = False) -> tuple[float, list[str]]:
    """Samples per second of ``per_gpu`` concurrent trials of ``lm.search`` on GPU 0 (``smoke``:
    on the CPU, to check the benchmark itself on a machine without a GPU), and their devices."""
    import lightning_maggy as lm

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "timings")
        out.mkdir()
        space = lm.Searchspace(lr=lm.Double(0.01, 0.1), out=lm.Categorical([str(out)]),
                               peers=lm.Discrete([per_gpu]), window=lm.Discrete([window]))
        gpu = {} if smoke else {"gpus_per_trial": 1 if per_gpu == 1 else 1 / per_gpu}
        trainer_kwargs = {"num_sanity_val_steps": 0, "enable_progress_bar": False,
                          **({"accelerator": "cpu"} if smoke else {"precision": "16-mixed"})}
        result = lm.search(
            _module_class(), space, metric="val_score", optimizer="random", num_trials=per_gpu, max_epochs=1,
            seed=per_gpu, workers=per_gpu, exp_dir=Path(tmp, "exp"), trainer_kwargs=trainer_kwargs, verbose=False,
            **gpu,
        )
        if result.counts()["COMPLETED"] != per_gpu:
            raise SystemExit(f"{per_gpu} trials per GPU: not every trial completed: {result.summary()}")
        return _throughput(out, per_gpu, f"lm.search, {per_gpu} per GPU")


def measure_plain(per_gpu: int, window: float, smoke: bool = False) -> tuple[float, list[str]]:
    """Samples per second of ``per_gpu`` plain-loop processes on GPU 0."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_plain_loop, args=(tmp, per_gpu, window, smoke), nprocs=per_gpu, start_method="spawn")
        return _throughput(Path(tmp), per_gpu, f"plain loop, {per_gpu} per GPU")


@contextlib.contextmanager
def mps_daemon():
    """NVIDIA's MPS control daemon, started for this run with its own pipe and log folders (which
    the trials' processes inherit through the environment), and stopped at the end."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        raise SystemExit("--mps: nvidia-cuda-mps-control is not on PATH (it comes with the NVIDIA "
                         "driver's utilities); run without --mps")
    folder = tempfile.mkdtemp(prefix="mps-")
    os.environ["CUDA_MPS_PIPE_DIRECTORY"] = os.path.join(folder, "pipe")
    os.environ["CUDA_MPS_LOG_DIRECTORY"] = os.path.join(folder, "log")
    for var in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        os.makedirs(os.environ[var])
    subprocess.run([exe, "-d"], check=True)
    try:
        yield
    finally:
        subprocess.run([exe], input="quit\n", text=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packings", default="1,2,4,8", help="trials per GPU to measure")
    parser.add_argument("--window", type=float, default=8.0, help="seconds each packing is timed")
    parser.add_argument("--mps", action="store_true", help="run under NVIDIA MPS (started and stopped here)")
    parser.add_argument("--no-plain", action="store_true", help="leave out the plain-loop ceiling")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--cpu-smoke", action="store_true", help="check the benchmark on the CPU (no figures)")
    args = parser.parse_args()
    if args.cpu_smoke:
        for k in (1, 2):
            rate, devices = measure_search(k, 1.0, smoke=True)
            plain, _ = measure_plain(k, 1.0, smoke=True)
            print(f"cpu smoke run, {k} trial(s): lm.search {rate:.0f} samples/s on {devices}, plain {plain:.0f}")
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
    with mps_daemon() if args.mps else contextlib.nullcontext():
        return run(packings, args)


def run(packings: list[int], args: argparse.Namespace) -> int:
    import torch

    name = torch.cuda.get_device_name(0)
    print(f"ResNet-18, 32x32, batch {BATCH}, 16-mixed, {args.window:g} s timed per packing, on {name}, "
          + ("under MPS" if args.mps else "without MPS (processes take turns on the GPU)"))
    rows = []
    for k in packings:
        t0 = time.time()
        rate, devices = measure_search(k, args.window)
        if any(not d.startswith("cuda") for d in devices):
            raise SystemExit(f"{k} per GPU: trials trained on {devices}, not the GPU")
        plain = None if args.no_plain else measure_plain(k, args.window)[0]
        rows.append({"per_gpu": k, "search": rate, "plain": plain, "devices": devices})
        print(f"  {k} trial(s) per GPU: lm.search {rate:8.0f} samples/s"
              + (f", plain loop {plain:8.0f} ({rate / plain:.0%} of it)" if plain else "")
              + f"  ({time.time() - t0:.0f} s)", flush=True)
    base = next((r for r in rows if r["per_gpu"] == 1), None)
    verdict = None
    if base:
        for r in rows:
            r["search_x"] = r["search"] / base["search"]
            r["plain_x"] = r["plain"] / base["plain"] if r["plain"] and base["plain"] else None
        print("\nthroughput against one trial per GPU: lm.search "
              + ", ".join(f"{r['per_gpu']}: {r['search_x']:.2f}x" for r in rows)
              + ("; plain loop " + ", ".join(f"{r['per_gpu']}: {r['plain_x']:.2f}x" for r in rows)
                 if all(r["plain_x"] for r in rows) else ""))
        eight = next((r for r in rows if r["per_gpu"] == 8), None)
        if eight:
            verdict = eight["search_x"] >= 6
            print(f"goal (8 per GPU >= 6x one): {'yes' if verdict else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": name, "mps": args.mps, "window_s": args.window, "batch": BATCH,
                                               "rows": rows, "goal_met": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
