"""The same ablation study on Spark local[2] as on local workers: same rows, same metrics."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablation"))
from ablation_models import SignalData, SignalNet  # noqa: E402

import lightning_maggy as lm  # noqa: E402
from lightning_maggy.backends.spark import QUICK_START_JVM  # noqa: E402
from lightning_maggy.backends.spark_daemon import DAEMON_CONF, DAEMON_MODULE  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_ablation_on_spark_gives_the_same_rows_and_metrics_as_local(tmp_path):
    from pyspark.sql import SparkSession

    study = lm.AblationStudy()  # a shape-breaking component too: its failure must match
    study.model.layers.include("net.0")
    common = dict(datamodule=SignalData, metric="val_loss", direction="min", max_epochs=2,
                  hparams={"lr": 0.05}, seeds=2, workers=2, verbose=False)
    local = lm.ablate(SignalNet, study, backend="local", exp_dir=tmp_path / "local", **common)
    session = (
        SparkSession.builder.master("local[2]").appName("lightning_maggy-ablation")
        .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false").config("spark.driver.extraJavaOptions", QUICK_START_JVM)
        .config(DAEMON_CONF, DAEMON_MODULE).getOrCreate()
    )
    try:
        on_spark = lm.ablate(SignalNet, study, backend="spark", exp_dir=tmp_path / "spark", **common)
    finally:
        session.stop()
    assert [(r.component, r.kind, r.state, r.n) for r in on_spark.rows] == [
        (r.component, r.kind, r.state, r.n) for r in local.rows
    ]
    assert local.row("net.0").state == "FAILED" and "net.0" in local.row("net.0").error
    # Seeded CPU training is deterministic: every trial's metric history matches.
    local_h = {t.trial_id: t.history for t in local.trials}
    spark_h = {t.trial_id: t.history for t in on_spark.trials}
    assert local_h.keys() == spark_h.keys()
    for tid, history in local_h.items():
        assert spark_h[tid] == pytest.approx(history, rel=1e-5, abs=1e-6), tid
