"""A Spark driver killed with SIGKILL in the middle of an ASHA study on ``local[2]``: the JVM, the
python daemon and the workers go with it, and ``resume=`` (again on Spark) finishes the study as
an uninterrupted run would have (see ``tests/driver_kill.py`` for the script and why its outcome
is deterministic with two workers; ``tests/e2e/test_driver_death.py`` runs the uninterrupted
reference on local workers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

from driver_kill import check_resumed_study, run, start_and_kill, write_script  # noqa: E402

from lightning_maggy.driver.journal import read_journal, replay  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_sigkilled_spark_driver_leaves_no_process_and_resume_finishes_its_study(tmp_path: Path) -> None:
    script = write_script(tmp_path)
    exp = tmp_path / "exp"
    killed = start_and_kill(script, exp, "spark", timeout=600)
    tree = killed["tree"]
    print(f"driver killed; its {len(tree)} processes were gone after {killed['cleanup_s']} s: {tree}; "
          f"each after: {killed['gone_after']}")
    assert any("java" in c for c in tree.values()), tree  # the JVM with the executors
    workers = {e["pid"] for e in read_journal(exp / "journal.jsonl") if e["event"] == "worker"}
    assert workers and workers <= set(tree), (workers, tree)
    assert killed["cleanup_s"] is not None, f"still alive 30 s after the driver was killed: {killed['left']}"
    assert killed["cleanup_s"] < 15.0, killed

    resumed = run(script, exp, "resume", "spark", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESULT finished 9" in resumed.stdout
    check_resumed_study(exp, killed["trials"], replay(exp / "journal.jsonl"))
