from __future__ import annotations

import os
import sys

# Make tests/tiny_models.py importable by the tests and by worker processes.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    """Says how many Spark tests ran, so that a run without Java cannot skip them unnoticed."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in counts:
        for report in terminalreporter.stats.get(outcome, []):
            if "spark" in getattr(report, "keywords", {}) and (outcome == "skipped" or report.when == "call"):
                counts[outcome] += 1
    terminalreporter.write_line(
        f"spark tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    )


# -- an S3-compatible server on loopback (moto), for cluster-storage tests -------------------------
import contextlib  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402



@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 for the whole session, and the environment that points
    boto/s3fs (here, in workers and in Spark executors started afterwards) at it. One server per
    session: fsspec caches filesystem instances, which hold the endpoint they were made with."""
    moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]' s3fs")
    pytest.importorskip("s3fs", reason="pip install s3fs")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "maggy-test-key",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-" + uuid.uuid4().hex,  # the tests look for it in every record
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture
def s3_bucket(s3_server, tmp_path, monkeypatch):
    """A new empty bucket (its name, e.g. ``maggy-1a2b3c``); the driver's local copies of
    studies go to a folder of this test's own (LIGHTNING_MAGGY_CACHE_DIR)."""
    import boto3

    name = "maggy-" + uuid.uuid4().hex[:10]
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    monkeypatch.setenv("LIGHTNING_MAGGY_CACHE_DIR", str(tmp_path / "driver-cache"))
    return name
