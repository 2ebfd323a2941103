"""Clear errors before any worker starts: a local exp_dir with a Spark master whose executors
run on other machines, a URL whose filesystem package is missing, an unreachable bucket; and
the rules for URLs and paths (no Spark, no network needed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from tiny_models import BlobsDataModule, TinyClassifier

import lightning_maggy as lm
from lightning_maggy.storage import check_shared_exp_dir, is_remote, local_copy_of, local_path, redact

SPACE = lm.Searchspace(lr=lm.Double(0.01, 0.1))


def _search(**kwargs):
    return lm.search(TinyClassifier, SPACE, datamodule=BlobsDataModule, metric="val_acc", num_trials=1,
                     max_epochs=1, verbose=False, **kwargs)


def test_a_local_exp_dir_with_a_remote_spark_master_is_refused_before_any_cluster_is_contacted(tmp_path):
    # Nobody listens on this master: the exp_dir check comes first, and says what to pass.
    with pytest.raises(lm.ConfigurationError) as err:
        _search(backend="spark", spark_master="spark://10.255.255.1:7077", exp_dir=tmp_path / "exp")
    text = str(err.value)
    assert "local path" in text and "s3://" in text and f"file://{tmp_path / 'exp'}" in text
    assert not (tmp_path / "exp").exists()
    with pytest.raises(lm.ConfigurationError, match="default ./maggy_experiments"):
        check_shared_exp_dir(None, "yarn")
    with pytest.raises(lm.ConfigurationError, match="local path"):
        check_shared_exp_dir("/mnt/shared/exp", "k8s://https://10.0.0.1:6443")


@pytest.mark.parametrize(
    ("exp_dir", "master"),
    [
        ("/tmp/exp", "local[2]"),
        ("/tmp/exp", "spark://127.0.0.1:7077"),
        ("/tmp/exp", "spark://localhost:7077,127.0.0.2:7077"),
        (None, "local[*]"),
        ("s3://bucket/exp", "spark://10.0.0.5:7077"),
        ("file:///mnt/nfs/exp", "yarn"),
        ("/dbfs/studies/exp", "spark://10.0.0.5:7077"),
    ],
)
def test_shared_or_local_setups_pass_the_check(exp_dir, master):
    check_shared_exp_dir(exp_dir, master)


def test_urls_and_paths():
    assert is_remote("s3://b/x") and is_remote("gs://b/x") and is_remote("hdfs://nn:8020/x")
    assert not is_remote("/tmp/x") and not is_remote("file:///tmp/x") and not is_remote(Path("s3:/x"))
    assert not is_remote("C:\\studies\\x")
    assert local_path("file:///tmp/x") == "/tmp/x" and local_path("/tmp/y") == "/tmp/y"
    assert redact("https://user:pw@host/x") == "https://host/x" and redact("s3://b/x") == "s3://b/x"


def test_the_driver_copy_of_a_url_study(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path))
    assert local_copy_of("s3://bucket/a/b/") == tmp_path / "s3" / "bucket" / "a" / "b"
    assert local_copy_of("gs://bucket/../x") == tmp_path / "gs" / "bucket" / "x"
    monkeypatch.delenv("LIGHTNING_MAGGY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert local_copy_of("s3://bucket/a") == tmp_path / "xdg" / "lightning_maggy" / "studies" / "s3" / "bucket" / "a"


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_a_url_whose_filesystem_package_is_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(lm.ConfigurationError, match=r"gs:// URLs need a package.*pip install gcsfs"):
        _search(exp_dir="gs://bucket/exp")
    with pytest.raises(lm.ConfigurationError, match="does not know the nosuchfs:// protocol"):
        _search(exp_dir="nosuchfs://bucket/exp")
    assert not (tmp_path / "cache").exists()


def test_an_unreachable_bucket_is_a_clear_error_before_anything_is_written(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path / "cache"))
    bucket = f"no-such-bucket-{os.getpid()}"
    with pytest.raises(lm.ConfigurationError, match=f"the bucket '{bucket}' does not exist.*Create it"):
        _search(exp_dir=f"s3://{bucket}/exp")
    with pytest.raises(lm.ConfigurationError, match=f"resume=.*the bucket '{bucket}' does not exist"):
        _search(resume=f"s3://{bucket}/exp")
    assert not (tmp_path / "cache").exists()


def test_a_file_url_is_its_path(tmp_path):
    result = _search(exp_dir=f"file://{tmp_path / 'exp'}")
    assert result.exp_dir == str(tmp_path / "exp") and result.local_dir is None
    assert (tmp_path / "exp" / "journal.jsonl").is_file()
    assert os.path.isfile(result.best_checkpoint)
