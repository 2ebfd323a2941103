"""What workers receive at start: the user's code by value, installed packages by reference,
and never the secret in a log line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tiny_models import BlobsDataModule, TinyClassifier

from lightning_maggy.backends.base import pack_launch
from lightning_maggy.lightning.worker import TrialTask, WorkerLaunch


def _launch(target, datamodule=None) -> WorkerLaunch:
    task = TrialTask(kind="module", target=target, metric="val_acc", direction="max", datamodule=datamodule)
    return WorkerLaunch(address="tcp://127.0.0.1:1", key=b"s3cr3t-key-bytes" * 2, exp_dir="/tmp/x", task=task)


def test_user_modules_travel_by_value_so_workers_need_not_import_them(tmp_path):
    blob = pack_launch(_launch(TinyClassifier, BlobsDataModule))
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    # A fresh interpreter that cannot import tests/tiny_models.py still rebuilds the classes.
    code = textwrap.dedent(f"""
        import sys
        sys.path = [p for p in sys.path if not p.rstrip('/').endswith('tests')]
        try:
            import tiny_models
            raise SystemExit("tiny_models should not be importable here")
        except ImportError:
            pass
        import cloudpickle
        launch = cloudpickle.loads(open({str(path)!r}, 'rb').read())
        model = launch.task.target(lr=0.1, hidden=4)
        print(type(model).__name__, launch.task.datamodule.__name__)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["TinyClassifier", "BlobsDataModule"]


def test_installed_packages_travel_by_reference():
    import torch

    small = pack_launch(_launch(torch.nn.Linear))
    assert len(small) < 2000  # a reference, not torch's code
    assert b"torch.nn.modules.linear" in small


def test_the_secret_never_appears_in_a_repr():
    launch = _launch(TinyClassifier)
    assert "s3cr3t" not in repr(launch) and "s3cr3t" not in str(launch)
