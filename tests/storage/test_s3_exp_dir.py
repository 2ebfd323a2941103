"""``exp_dir`` as an S3 URL (cluster storage) on local workers, against a real S3-compatible
server on loopback (moto, see ``tests/conftest.py``): the trial folders live in the bucket,
promotions resume from the checkpoint there, and the driver keeps the journal on its own disk
and mirrors it (a killed worker and a killed driver: ``tests/spark/test_spark_s3.py``)."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from tiny_models import BlobsDataModule, ScoredClassifier

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal
from lightning_maggy.storage import local_copy_of, open_url

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 6  # 192 training samples in batches of 32


def _descending(space, rng, trials):
    """Each new trial scores below every earlier one: ASHA's promotions then resume paused
    trials in new runs (never in place)."""
    return {"score": round(0.9 - 0.01 * len(trials), 6)}


def _reports(journal: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for ev in read_journal(journal):
        if ev["event"] == "report":
            out.setdefault(ev["trial_id"], []).append(ev["epoch"])
    return out


def _resumed_runs(journal: Path) -> int:
    """Runs that continued a PAUSED trial (a promotion that resumed from a checkpoint)."""
    count, last = 0, {}
    for ev in read_journal(journal):
        if ev["event"] == "trial":
            t = ev["trial"]
            if t["state"] == "RUNNING" and last.get(t["trial_id"]) == "PAUSED":
                count += 1
            last[t["trial_id"]] = t["state"]
    return count


def _global_step(fs, path: str) -> int:
    with fs.open(path, "rb") as fh:
        return int(torch.load(fh, weights_only=False, map_location="cpu")["global_step"])


def test_an_asha_study_on_local_workers_keeps_its_trials_in_the_bucket(s3_bucket, s3_server, capsys, tmp_path,
                                                                        monkeypatch):
    url = f"s3://{s3_bucket}/studies/asha"
    scratch_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "lightning_maggy-trials-*")))
    result = lm.search(
        ScoredClassifier,
        lm.Searchspace(score=lm.Double(0.0, 1.0)),
        datamodule=BlobsDataModule,
        metric="score",
        optimizer=lm.ASHA(reduction_factor=3, suggester=_descending),
        num_trials=9,
        max_epochs=3,
        workers=2,
        seed=0,
        exp_dir=url,
        verbose=False,
    )
    assert result.stop_reason == "finished", result.message
    assert result.exp_dir == url
    local = Path(result.local_dir)
    assert local == local_copy_of(url) and local.is_relative_to(os.environ["LIGHTNING_MAGGY_CACHE_DIR"])
    assert not (local / "trials").exists(), "trial folders belong in the bucket, not on the driver"

    fs, root = open_url(url)
    # The record is in the bucket too, complete: the journal as the driver closed it.
    for name in ("journal.jsonl", "experiment.json", "result.json", "trials.csv"):
        assert fs.isfile(f"{root}/{name}"), name
    assert fs.cat_file(f"{root}/journal.jsonl") == (local / "journal.jsonl").read_bytes()
    assert fs.find(f"{root}/tensorboard"), "the HParams summary was not uploaded"

    # Promotions resumed from the bucket's checkpoints: every epoch was trained and reported
    # once, and each checkpoint holds exactly the epochs its trial trained.
    assert _resumed_runs(local / "journal.jsonl") >= 2
    reports = _reports(local / "journal.jsonl")
    states = {t.state for t in result.trials}
    assert states == {lm.TrialState.COMPLETED, lm.TrialState.STOPPED}
    for t in result.trials:
        assert reports[t.trial_id] == list(range(t.epochs_done)), (t.trial_id, reports[t.trial_id])
        folder = f"{root}/trials/{t.trial_id}"
        assert _global_step(fs, f"{folder}/checkpoints/last.ckpt") == STEPS_PER_EPOCH * t.epochs_done
        rows = fs.cat_file(f"{folder}/metrics.csv").decode().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == list(range(t.epochs_done)), rows
        assert json.loads(fs.cat_file(f"{folder}/hparams.json"))["config"] == t.config
        assert fs.cat_file(f"{folder}/.attempt").decode() == str(t.attempt)
        assert any("tfevents" in p for p in fs.find(f"{folder}/tensorboard"))
        assert not [p for p in fs.find(folder) if p.endswith((".tmp", ".lock"))]

    # The best checkpoint is a URL that Lightning loads from.
    assert result.best_checkpoint == f"{url}/trials/{result.best_trial.trial_id}/checkpoints/last.ckpt"
    model = result.load_best(ScoredClassifier)
    assert model.score == pytest.approx(result.best_config["score"])

    # No secret in the record; the workers left no scratch copies behind.
    secret = s3_server["AWS_SECRET_ACCESS_KEY"].encode()
    for path in local.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for path in fs.find(root):
        if not path.endswith(".ckpt") and "tfevents" not in path:
            assert secret not in fs.cat_file(path), path
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "lightning_maggy-trials-*"))) - scratch_before
    assert not left, left

    # `show` reads the study from the bucket, on a machine without the driver's copy.
    from lightning_maggy.cli import main

    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path / "elsewhere"))
    capsys.readouterr()
    assert main(["show", url]) == 0
    shown = capsys.readouterr().out
    assert "9 trials" in shown and result.best_trial.trial_id in shown, shown
    assert f"exp_dir: {url}" in shown and f"record: {url}" in shown, shown
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(local.parents[3]))

    # A second study in the same URL is refused; the error names resume=.
    with pytest.raises(lm.ConfigurationError, match="already holds an experiment.*resume="):
        lm.search(ScoredClassifier, lm.Searchspace(score=lm.Double(0.0, 1.0)), datamodule=BlobsDataModule,
                  metric="score", num_trials=1, max_epochs=1, exp_dir=url, verbose=False)

