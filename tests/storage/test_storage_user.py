"""A user's URLs for ``exp_dir`` against the moto S3 server of ``tests/conftest.py``: an endpoint
that is down, credentials the store refuses, a ``memory://`` URL, a URL that names a file, and
a study at a bucket's root next to studies under it. Each refusal comes before any worker
starts and says what is wrong."""

from __future__ import annotations

import os

import pytest

import lightning_maggy as lm
from lightning_maggy.storage import local_copy_of, open_url

SPACE = lm.Searchspace(x=lm.Double(0.0, 1.0))


def _train(hparams, reporter):
    for epoch in range(2):
        reporter.broadcast(hparams["x"] + 0.01 * epoch, epoch)


def _search(**kwargs):
    return lm.search(_train, SPACE, metric="acc", direction="max", num_trials=2, max_epochs=2, workers=1,
                     seed=0, optimizer="random", verbose=False, **kwargs)


@pytest.fixture
def fresh_s3fs():
    """s3fs caches filesystem instances, which keep the endpoint and credentials they were
    made with: a test that changes them starts and ends with an empty cache."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_an_endpoint_that_is_down_is_named_as_such_not_as_a_missing_bucket(s3_bucket, monkeypatch, fresh_s3fs):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nobody listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(lm.ConfigurationError) as err:
        _search(exp_dir=f"s3://{s3_bucket}/study")
    text = str(err.value)
    assert "does not exist" not in text, text
    assert "cannot be reached" in text and "EndpointConnectionError" in text and "endpoint" in text, text
    assert not local_copy_of(f"s3://{s3_bucket}/study").exists()


def test_credentials_the_store_refuses_are_named_as_such_not_as_a_missing_bucket(s3_bucket, fresh_s3fs):
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = 0, 0  # keys must exist in IAM
    try:
        with pytest.raises(lm.ConfigurationError) as err:
            _search(exp_dir=f"s3://{s3_bucket}/study")
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved
    text = str(err.value)
    assert "does not exist" not in text, text
    assert "PermissionError" in text and "credentials" in text, text
    assert not local_copy_of(f"s3://{s3_bucket}/study").exists()


def test_a_memory_url_is_refused_before_its_trial_folders_are_lost_in_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(lm.ConfigurationError, match=r"memory:// filesystem lives in one process.*s3://"):
        _search(exp_dir="memory://maggy-user-test/study")
    with pytest.raises(lm.ConfigurationError, match=r"resume=.*memory://"):
        _search(resume="memory://maggy-user-test/study")
    assert not (tmp_path / "cache").exists()


def test_a_url_that_names_a_file_in_the_bucket_is_refused(s3_bucket):
    fs, root = open_url(f"s3://{s3_bucket}/notes.txt")
    fs.pipe_file(root, b"not a study")
    with pytest.raises(lm.ConfigurationError, match="is a file in the store, not a folder"):
        _search(exp_dir=f"s3://{s3_bucket}/notes.txt")
    assert fs.cat_file(root) == b"not a study"
    assert not local_copy_of(f"s3://{s3_bucket}/notes.txt").exists()


def test_a_study_at_the_bucket_root_leaves_the_studies_under_it_alone(s3_bucket):
    inner = f"s3://{s3_bucket}/inner"
    assert _search(exp_dir=inner).stop_reason == "finished"
    fs, root = open_url(inner)
    # Another machine resumed the inner study: its journal in the bucket went on without this
    # machine's copy, which is now stale.
    newer = fs.cat_file(f"{root}/journal.jsonl") + b'{"event": "written elsewhere"}\n'
    fs.pipe_file(f"{root}/journal.jsonl", newer)
    outer = _search(exp_dir=f"s3://{s3_bucket}")
    assert outer.stop_reason == "finished"
    assert fs.cat_file(f"{root}/journal.jsonl") == newer, "the root study uploaded the inner study's stale copy"
    assert os.path.isfile(local_copy_of(inner) / "journal.jsonl")
    assert fs.isfile(f"{s3_bucket}/journal.jsonl") and fs.isfile(f"{s3_bucket}/result.json")


def test_a_url_without_a_bucket_or_with_an_uppercase_protocol_is_refused(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for url in ("s3://", "s3:///"):
        with pytest.raises(lm.ConfigurationError, match=r"exp_dir='s3://' names no bucket or folder.*s3://bucket/"):
            _search(exp_dir=url)
    with pytest.raises(lm.ConfigurationError, match=r"lowercase; pass 's3://bucket/study'"):
        _search(exp_dir="S3://bucket/study")
    assert os.listdir(tmp_path) == [], "a study was written to a local folder named after the URL"


def _removes_the_bucket(hparams, reporter):
    """Its worker's store goes away under it (as a bucket deleted, or an endpoint gone): the
    upload of its folder at the end of the run fails."""
    import boto3

    reporter.broadcast(hparams["x"], 0)
    if hparams["x"] == 1:
        s3 = boto3.resource("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        bucket = s3.Bucket(hparams["bucket"])
        bucket.objects.all().delete()
        bucket.delete()
    reporter.broadcast(hparams["x"], 1)
    return float(hparams["x"])


def test_a_store_that_fails_under_a_trial_stops_the_study_with_why_and_the_trial_is_not_failed(s3_bucket):
    # Before, the upload's botocore error escaped the worker loop: the worker died, the trial was
    # retried until "lost 4 times ... exited with code 1", which said nothing about the store.
    space = lm.Searchspace(x=lm.Discrete([1]), bucket=lm.Categorical([s3_bucket]))
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(_removes_the_bucket, space, metric="acc", optimizer="grid", max_epochs=2, workers=1,
                  exp_dir=f"s3://{s3_bucket}/study", verbose=False)
    message = str(info.value)
    assert f"the study's store s3://{s3_bucket}/study failed while uploading to trial" in message, message
    assert "Once the store answers again" in message and "resume=" in message
    (trial,) = info.value.result.trials  # type: ignore[attr-defined]
    assert trial.state is lm.TrialState.STOPPED and trial.attempt == 1 and trial.history == (1.0, 1.0)


def test_show_on_a_url_that_holds_no_study_says_so_with_the_url(s3_bucket, capsys):
    from lightning_maggy.cli import main

    code = main(["show", f"s3://{s3_bucket}/missing"])
    err = capsys.readouterr().err
    assert code != 0 and f"s3://{s3_bucket}/missing holds no study (no journal.jsonl)" in err, err
    assert ".cache" not in err  # not the driver's local copy, which the user never named
