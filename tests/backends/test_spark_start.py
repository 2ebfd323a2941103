"""What shortens a Spark search's start on a local master: the pyspark daemon that preloads
torch and Lightning (lightning_maggy.backends.spark_daemon) and the driver JVM's options. The
Spark tests check that a search's own local session uses both."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lightning_maggy.backends import spark_daemon
from lightning_maggy.backends.spark import QUICK_START_JVM, session_conf
from lightning_maggy.backends.spark_daemon import DAEMON_CONF, DAEMON_MODULE


def test_preload_imports_what_the_forkserver_does_and_skips_a_module_that_fails(monkeypatch) -> None:
    monkeypatch.setattr(spark_daemon, "PRELOAD", ["json", "no_such_module_for_the_daemon", "csv"])
    assert spark_daemon.preload() == ["json", "csv"]


def test_run_as_a_module_it_has_torch_and_lightning_imported_before_pyspark_takes_over() -> None:
    pytest.importorskip("pyspark")
    # The daemon's __main__ with pyspark's loop replaced: what a forked worker would inherit.
    code = (
        "import runpy, sys, pyspark.daemon\n"
        "pyspark.daemon.manager = lambda: print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
        "runpy.run_module('lightning_maggy.backends.spark_daemon', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['pytorch_lightning', 'torch']"


def test_a_local_session_gets_the_quick_start_settings_unless_its_own_choose_otherwise(monkeypatch) -> None:
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    quick = {"spark.driver.extraJavaOptions": QUICK_START_JVM, DAEMON_CONF: DAEMON_MODULE}
    assert session_conf("local[2]", {"spark.executor.memory": "1g"}) == {"spark.executor.memory": "1g", **quick}
    assert session_conf(None, {}) == quick  # pyspark's default master is local[*]
    own = {"spark.driver.extraJavaOptions": "-Xmx2g", DAEMON_CONF: "pyspark.daemon"}
    assert session_conf("local[2]", own) == own
    assert session_conf("spark://head:7077", {}) == {}
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master yarn pyspark-shell")
    assert session_conf(None, {}) == {}
