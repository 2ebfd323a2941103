"""The Spark backend on a real local[2] SparkSession: the same searches as the local backend."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

from tiny_models import BlobsDataModule, TinyClassifier  # noqa: E402

import lightning_maggy as lm  # noqa: E402
from lightning_maggy.backends.spark import QUICK_START_JVM  # noqa: E402
from lightning_maggy.backends.spark_daemon import DAEMON_CONF, DAEMON_MODULE  # noqa: E402
from lightning_maggy.driver.journal import read_journal  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("lightning_maggy-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        # the settings README gives for a session of one's own (the search sets them on its own)
        .config("spark.driver.extraJavaOptions", QUICK_START_JVM)
        .config(DAEMON_CONF, DAEMON_MODULE)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_two_worker_asha_search_on_spark(spark, tmp_path):
    # Epochs of 0.3 s: the study lasts long enough for both tasks to start on a loaded machine.
    space = lm.Searchspace(lr=lm.Double(1e-3, 0.5, log=True), hidden=lm.Integer(4, 32), epoch_sleep=lm.Discrete([0.3]))
    result = lm.search(
        TinyClassifier,
        space,
        datamodule=BlobsDataModule,
        metric="val_acc",
        optimizer=lm.ASHA(reduction_factor=3),
        num_trials=9,
        max_epochs=9,
        backend="spark",  # the active session; workers default to its 2 task slots
        seed=1,
        exp_dir=tmp_path / "exp",
        verbose=False,
    )
    assert result.stop_reason == "finished" and len(result.trials) == 9
    epochs = sorted(t.epochs_done for t in result.trials)
    assert epochs.count(1) == 6 and epochs.count(3) == 2 and epochs.count(9) == 1
    reports: dict[str, list[int]] = {}
    workers = set()
    for ev in read_journal(Path(result.exp_dir) / "journal.jsonl"):
        if ev["event"] == "report":
            reports.setdefault(ev["trial_id"], []).append(ev["epoch"])
        if ev["event"] == "worker":
            workers.add(ev["worker_id"])
    assert workers == {0, 1}  # two Spark tasks served the trials
    for t in result.trials:  # promoted trials resumed from their checkpoints
        assert reports[t.trial_id] == list(range(t.epochs_done))
        assert (Path(result.exp_dir) / "trials" / t.trial_id / "output.log").exists()
    # The job is over and its group cancelled: no task is left running.
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


def _deterministic(hparams, reporter):
    value = 0.0
    for step in range(reporter.start_step, reporter.budget):
        value = hparams["a"] * (1 - 0.5 ** (step + 1)) + 0.01 * hparams["b"]
        reporter.broadcast(value, step)
    return value


def _decisions(exp_dir: Path) -> list[tuple]:
    """The search's decisions in order, without times, pids or hosts."""
    out = []
    for ev in read_journal(exp_dir / "journal.jsonl"):
        if ev["event"] == "trial":
            t = ev["trial"]
            out.append(("trial", t["trial_id"], t["state"], t["budget"], tuple(t["history"]), t["final_metric"]))
        elif ev["event"] == "report":
            out.append(("report", ev["trial_id"], ev["epoch"], ev["value"], ev["decision"]))
    return out


def test_local_and_spark_make_the_same_decisions(spark, tmp_path):
    space = lm.Searchspace(a=lm.Double(0.0, 1.0), b=lm.Integer(0, 9))
    common = dict(
        metric="score", optimizer="asha", num_trials=12, max_epochs=9, workers=1, seed=7, verbose=False,
    )
    local = lm.search(_deterministic, space, backend="local", exp_dir=tmp_path / "local", **common)
    on_spark = lm.search(_deterministic, space, backend="spark", exp_dir=tmp_path / "spark", **common)
    seq_local, seq_spark = _decisions(tmp_path / "local"), _decisions(tmp_path / "spark")
    assert len(seq_local) > 50
    assert seq_local == seq_spark
    assert local.best_config == on_spark.best_config and local.best_metric == on_spark.best_metric


def test_a_master_given_while_a_session_is_active_is_refused_as_such(spark, tmp_path):
    # Not as a local exp_dir that a remote master's executors could not see: that master would
    # not be used at all.
    with pytest.raises(lm.ConfigurationError, match="a SparkSession is already active"):
        lm.search(_deterministic, lm.Searchspace(a=lm.Double(0.0, 1.0), b=lm.Integer(0, 9)), metric="score",
                  num_trials=1, max_epochs=1, backend="spark", spark_master="spark://head:7077",
                  exp_dir=tmp_path / "exp", verbose=False)
    assert not (tmp_path / "exp").exists()


def _run_isolated(code: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


SEARCH = """
import lightning_maggy as lm, sys
def f(h, r):
    return 1.0
try:
    lm.search(f, lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1, num_trials=1,
              backend="spark", exp_dir=sys.argv[0] + "_exp", verbose=False{extra})
except lm.ConfigurationError as err:
    print("CONFIG_ERROR:", err)
"""


def test_missing_pyspark_gives_an_install_hint(tmp_path):
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
""" + SEARCH.format(extra="")
    proc = _run_isolated(code)
    assert "CONFIG_ERROR:" in proc.stdout, proc.stderr[-2000:]
    assert "pip install 'lightning_maggy[spark]'" in proc.stdout


def test_missing_java_gives_an_install_hint(tmp_path):
    env = {"JAVA_HOME": str(tmp_path / "no-java"), "PATH": "/usr/bin/nonexistent"}
    proc = _run_isolated(SEARCH.format(extra=""), env=env)
    assert "CONFIG_ERROR:" in proc.stdout, proc.stderr[-2000:]
    assert "Java 17" in proc.stdout and "openjdk-17-jre-headless" in proc.stdout


def test_unreachable_master_fails_before_any_trial(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run_isolated(SEARCH.format(extra=f", spark_master='spark://127.0.0.1:{port}'"))
    assert "CONFIG_ERROR:" in proc.stdout, proc.stderr[-2000:]
    assert "cannot be reached" in proc.stdout and str(port) in proc.stdout


def test_a_session_built_in_another_thread_is_used_not_stopped(spark, tmp_path):
    import threading

    box: dict = {}

    def run():
        try:
            box["result"] = lm.search(_deterministic, lm.Searchspace(a=lm.Double(0, 1), b=lm.Integer(0, 9)),
                                      metric="score", optimizer="random", num_trials=4, max_epochs=2,
                                      backend="spark", workers=2, exp_dir=tmp_path / "exp", verbose=False)
        except BaseException as err:  # surfaced below
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(300)
    assert "error" not in box, box.get("error")
    assert box["result"].counts()["COMPLETED"] == 4
    assert not spark.sparkContext._jsc.sc().isStopped()  # the user's session is still theirs


def _python_without_the_package(directory: Path) -> Path:
    """``directory/python3`` (and ``python``): this Python without site-packages and without the
    repository on PYTHONPATH, so lightning_maggy or its dependencies do not import; as the
    ``python3`` on PATH of a user whose virtual environment is not activated."""
    directory.mkdir(parents=True, exist_ok=True)
    script = textwrap.dedent(f"""\
        #!/bin/sh
        PYTHONPATH=$(printf '%s' "$PYTHONPATH" | tr ':' '\\n' | grep -v '^{REPO}/*$' | paste -sd: -)
        export PYTHONPATH
        exec {sys.executable} -S "$@"
        """)
    for name in ("python3", "python"):
        (directory / name).write_text(script)
        (directory / name).chmod(0o755)
    probe = subprocess.run([str(directory / "python3"), "-c", "import lightning_maggy"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr
    return directory / "python3"


SEARCH_ANY_ERROR = """
import lightning_maggy as lm, sys
{prelude}
try:
    result = lm.search({target}, lm.Searchspace(x=lm.Double(0, 1)), metric="m", max_epochs=1, num_trials=2,
                       backend="spark", spark_master="local[1]", exp_dir={exp!r}, verbose=False)
    print("COMPLETED:", result.counts()["COMPLETED"])
except Exception as err:
    print("ERROR:", type(err).__name__, err)
"""


def test_a_local_session_built_by_the_search_runs_executors_on_the_drivers_python(tmp_path):
    # python3 on PATH lacks the package; pyspark would take it for the executors.
    bare = _python_without_the_package(tmp_path / "bin")
    env = {"PATH": f"{bare.parent}{os.pathsep}{os.environ['PATH']}", "PYSPARK_PYTHON": ""}
    # Each trial writes down the process its worker was forked from, pyspark's daemon, and the
    # JVM that started the daemon: the daemon runs as lightning_maggy's (which imported torch
    # and Lightning before it forked), the JVM with the quick-start options.
    parents = tmp_path / "parents"
    parents.mkdir()
    prelude = (
        "import os\n"
        "def cmdline(pid):\n"
        "    return open(f'/proc/{pid}/cmdline').read().replace(chr(0), ' ')\n"
        "def f(h, r):\n"
        "    daemon = os.getppid()\n"
        "    jvm = int(open(f'/proc/{daemon}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        f"    open(os.path.join({str(parents)!r}, str(os.getpid())), 'w').write(cmdline(daemon) + chr(10) + cmdline(jvm))\n"
        "    return 1.0"
    )
    code = SEARCH_ANY_ERROR.format(prelude=prelude, target="f", exp=str(tmp_path / "exp"))
    proc = _run_isolated(code, env=env, timeout=240)
    assert "COMPLETED: 2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = [path.read_text().split("\n") for path in parents.iterdir()]
    assert found and all("-m lightning_maggy.backends.spark_daemon" in daemon for daemon, _ in found), found
    assert all("java" in jvm and QUICK_START_JVM in jvm for _, jvm in found), found


def test_an_executor_that_cannot_import_the_users_code_gives_one_clear_error(tmp_path):
    # The user's project is importable on the driver only (a path added at run time). The
    # search ships the train function's own module by value, but not the helpers it imports.
    code_dir = tmp_path / "only_on_driver"
    code_dir.mkdir()
    (code_dir / "my_study_helpers_xyz.py").write_text("def score(h):\n    return 1.0\n")
    (code_dir / "my_study_code_xyz.py").write_text(
        "from my_study_helpers_xyz import score\n\ndef train(h, r):\n    return score(h)\n"
    )
    prelude = f"sys.path.insert(0, {str(code_dir)!r})\nfrom my_study_code_xyz import train"
    proc = _run_isolated(SEARCH_ANY_ERROR.format(prelude=prelude, target="train", exp=str(tmp_path / "exp")), timeout=240)
    out = proc.stdout
    assert "ERROR: ExperimentError" in out, out[-2000:] + proc.stderr[-3000:]
    assert "No module named 'my_study_helpers_xyz'" in out and sys.executable in out
    assert "spark.submit.pyFiles" in out and "spark.archives" in out
    assert "An exception was thrown from the Python worker" not in out
