"""A worker's Trainers tell local folders from object storage without importing s3fs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("s3fs")

# Runs in a fresh interpreter: the test process may have imported s3fs already.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import fsspec
    import pytorch_lightning as pl
    import torch
    from lightning_fabric.utilities import cloud_io
    from torch.utils.data import DataLoader, TensorDataset
    from lightning_maggy.lightning.fence import claim
    from lightning_maggy.lightning.trainer import build_trainer

    out = {}
    original = cloud_io._is_object_storage

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.layer(batch[0]).pow(2).mean())
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    trial_dir = sys.argv[1]
    __import__("os").makedirs(trial_dir)
    assert claim(trial_dir, 1)  # as a worker does before a trial's run
    for run in range(2):  # the second run finds its checkpoint folder non-empty
        model = Tiny()
        trainer = build_trainer(model, trial_dir=trial_dir, budget=1, callbacks=[])
        trainer.fit(model, loader, loader)
    out["checkpoint"] = sorted(__import__("os").listdir(trial_dir + "/checkpoints"))
    out["s3fs_after_fits"] = "s3fs" in sys.modules
    out["patched"] = cloud_io._is_object_storage is not original
    out["local_is_dir"] = cloud_io._is_dir(fsspec.filesystem("file"), trial_dir, strict=True)

    import s3fs
    s3 = s3fs.S3FileSystem(anon=True)
    out["s3_is_object_storage"] = cloud_io._is_object_storage(s3)
    out["s3_original"] = original(s3)
    out["local_original"] = original(fsspec.filesystem("file"))
    print(json.dumps(out))
    """
)


def test_trainers_built_in_a_worker_never_import_s3fs_and_still_recognise_s3(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "trial")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["checkpoint"] == ["last.ckpt"]
    assert out["patched"]
    assert out["s3fs_after_fits"] is False  # Lightning's own check imports it (about 0.5 s)
    assert out["local_is_dir"] is True
    assert out["s3_is_object_storage"] is True and out["s3_original"] is True
    assert out["local_original"] is False


def test_lightnings_own_check_imports_s3fs(tmp_path):
    """The cost the patch avoids: without it, one local-folder check imports s3fs."""
    script = (
        "import sys, fsspec\n"
        "from lightning_fabric.utilities import cloud_io\n"
        "assert 's3fs' not in sys.modules\n"
        "cloud_io._is_dir(fsspec.filesystem('file'), sys.argv[1], strict=True)\n"
        "print('s3fs' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True"
