"""A real Spark standalone cluster on loopback for the Spark backend's integration tests.

One master and two workers (one core each), every one started in a session of its own, so that a
worker can be killed together with everything it started (its executor JVM and the executor's
python daemon and workers; the pyspark daemon puts itself in a process group of its own, so the
whole process tree is walked). The fixture always tears the cluster down, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_maggy.backends.spark import QUICK_START_JVM
from lightning_maggy.backends.spark_daemon import DAEMON_CONF, DAEMON_MODULE

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
CLUSTER_START_TIMEOUT = 120.0


def _skip_without_spark() -> str:
    """SPARK_HOME (the pyspark package dir); skips the test when pyspark or Java is missing."""
    try:
        import pyspark
    except ImportError:
        pytest.skip("pyspark is not installed (pip install 'lightning_maggy[spark]')")
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        pytest.skip("Java is not installed (Spark needs Java 17+ on PATH or in JAVA_HOME)")
    spark_home = os.path.dirname(os.path.abspath(pyspark.__file__))
    if not os.path.exists(os.path.join(spark_home, "bin", "spark-class")):
        spark_home = os.environ.get("SPARK_HOME", "")
    if not os.path.exists(os.path.join(spark_home, "bin", "spark-class")):
        pytest.fail(f"pyspark is installed but no bin/spark-class was found (SPARK_HOME={spark_home!r})")
    return spark_home


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- /proc helpers ---------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2])


def pid_alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def ancestors(pid: int) -> list[int]:
    """``pid``'s parent, grandparent, ... up to init."""
    out: list[int] = []
    st = _stat(pid)
    while st is not None and st[1] > 1 and len(out) < 64:
        out.append(st[1])
        st = _stat(st[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first, then theirs)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _group_has_members(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[2] == pgid:
                return True
    return False


def kill_tree(root: int) -> None:
    """SIGKILLs ``root``, every process below it and every process group among them."""
    own = os.getpgrp()
    pids = [root, *descendants(root)]
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    for pgid in groups:
        if pgid != own:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# -- the cluster -------------------------------------------------------------------------------------
class SparkCluster:
    """A standalone master and workers started with ``spark-class``, bound to 127.0.0.1."""

    def __init__(
        self, spark_home: str, base: Path, num_workers: int = 2, cores: int = 1, gpus: list[str] | None = None
    ) -> None:
        self.spark_home = spark_home
        self.base = base
        self.num_workers = num_workers
        self.cores = cores
        #: fake GPU addresses every worker announces through a discovery script (no GPU needed)
        self.gpus = gpus
        self.master_port = free_port()
        self.master_webui = free_port()
        self.master_url = f"spark://127.0.0.1:{self.master_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        conf_dir = base / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        pythonpath = [str(REPO_ROOT), str(TESTS_DIR)]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        self.env = {
            **os.environ,
            "SPARK_HOME": spark_home,
            "SPARK_CONF_DIR": str(conf_dir),  # no stray spark-defaults.conf or spark-env.sh
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_HOSTNAME": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_DAEMON_JAVA_OPTS": QUICK_START_JVM,  # the master's and workers' JVMs start sooner
            "PYSPARK_PYTHON": sys.executable,
            "PYTHONPATH": os.pathsep.join(pythonpath),
        }
        self.env.pop("SPARK_MASTER_OPTS", None)
        self.env.pop("SPARK_WORKER_OPTS", None)
        self.worker_env = dict(self.env)
        if gpus:
            script = base / "discover_gpus.sh"
            script.write_text("#!/bin/sh\n" + "echo '" + json.dumps({"name": "gpu", "addresses": gpus}) + "'\n")
            script.chmod(0o755)
            self.worker_env["SPARK_WORKER_OPTS"] = (
                f"-Dspark.worker.resource.gpu.amount={len(gpus)} -Dspark.worker.resource.gpu.discoveryScript={script}"
            )

    # processes
    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self.base / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(
                [os.path.join(self.spark_home, "bin", "spark-class"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env or self.env,
                cwd=str(self.base),
                start_new_session=True,  # its own process group: killable as a whole
            )

    def start(self) -> None:
        self._spawn(
            "master", "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(self.master_port), "--webui-port", str(self.master_webui),
        )
        self._wait(lambda state: state is not None, "the master's web UI to answer")
        for i in range(self.num_workers):
            work = self.base / f"work-{i}"
            work.mkdir(exist_ok=True)
            # Each worker (and the executors and python workers it starts) gets a temporary
            # folder of its own, inside its work dir: nothing local is shared between them.
            tmp = work / "tmp"
            tmp.mkdir(exist_ok=True)
            self._spawn(
                f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.master_url,
                "--host", "127.0.0.1", "--cores", str(self.cores), "--memory", "1g",
                "--webui-port", str(free_port()), "--work-dir", str(work), env={**self.worker_env, "TMPDIR": str(tmp)},
            )
        self._wait(lambda state: state is not None and self.alive_workers(state) == self.num_workers,
                   f"{self.num_workers} ALIVE workers")

    def _wait(self, ok, what: str) -> None:
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.log_tails()}")
            if ok(self.state()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {CLUSTER_START_TIMEOUT:.0f} s waiting for {what}\n{self.log_tails()}")

    def state(self) -> dict | None:
        """The master's status JSON, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.master_webui}/json/", timeout=5) as resp:
                return json.loads(resp.read().decode())
        except (OSError, ValueError):
            return None

    def study_conf(self, **extra: str) -> dict[str, str]:
        """``spark_conf`` for a study of two one-core workers on this cluster, one task on each
        (both executors are up before the job starts), driver and executors on loopback."""
        return {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.memory": "512m",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.executor.memory": "512m",
            "spark.executor.cores": "1",
            "spark.cores.max": "2",
            "spark.task.maxFailures": "4",
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
            # quicker JVMs, and python workers forked with torch and Lightning imported
            "spark.driver.extraJavaOptions": QUICK_START_JVM,
            "spark.executor.extraJavaOptions": QUICK_START_JVM,
            DAEMON_CONF: DAEMON_MODULE,
            **extra,
        }

    # process helpers for the tests (a conftest is not importable from a test module)
    pid_alive = staticmethod(pid_alive)
    descendants = staticmethod(descendants)

    @staticmethod
    def alive_workers(state: dict) -> int:
        return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))

    def worker_pid(self, index: int) -> int:
        return self.procs[f"worker-{index}"].pid

    def worker_of(self, pid: int) -> int | None:
        """Which cluster worker ``pid`` (e.g. an executor's python worker) runs under."""
        chain = set(ancestors(pid))
        pgid = None
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
        for i in range(self.num_workers):
            wpid = self.worker_pid(i)
            if wpid in chain or pgid == wpid:
                return i
        return None

    def kill_worker(self, index: int) -> list[int]:
        """SIGKILLs a worker's process group and everything it started; returns the pids."""
        proc = self.procs[f"worker-{index}"]
        pids = [proc.pid, *descendants(proc.pid)]
        kill_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        return pids

    def shutdown(self) -> None:
        """Kills every process group of the cluster (workers first), with all they started."""
        for name in sorted(self.procs, key=lambda n: n == "master"):
            proc = self.procs[name]
            if proc.poll() is None:
                kill_tree(proc.pid)
            # Its session's group, also when the leader is gone (while the group has members,
            # its id cannot have been reused).
            if proc.pid != os.getpgrp() and _group_has_members(proc.pid):
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for name, path in self.logs.items():
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log)"]
            out.append(f"--- {name} ({path}) ---\n" + "\n".join(tail))
        return "\n".join(out)


@pytest.fixture
def spark_cluster(tmp_path_factory, monkeypatch) -> Iterator[SparkCluster]:
    """A running master with two ALIVE one-core workers; the driver's environment points at it."""
    yield from _cluster(tmp_path_factory, monkeypatch)


@pytest.fixture
def spark_gpu_cluster(tmp_path_factory, monkeypatch) -> Iterator[SparkCluster]:
    """A master and one two-core worker that announces two fake GPUs, addresses "3" and "7"."""
    yield from _cluster(tmp_path_factory, monkeypatch, num_workers=1, cores=2, gpus=["3", "7"])


def _cluster(tmp_path_factory, monkeypatch, **kwargs) -> Iterator[SparkCluster]:
    spark_home = _skip_without_spark()
    from lightning_maggy.backends.spark import check_java
    from lightning_maggy.exceptions import ConfigurationError

    try:
        check_java()
    except ConfigurationError as err:
        pytest.skip(str(err))
    cluster = SparkCluster(spark_home, tmp_path_factory.mktemp("spark-cluster"), **kwargs)
    # The driver (this process and the JVM pyspark starts) talks over loopback too.
    for key in ("SPARK_HOME", "SPARK_CONF_DIR", "SPARK_LOCAL_IP", "SPARK_LOCAL_HOSTNAME", "PYSPARK_PYTHON", "PYTHONPATH"):
        monkeypatch.setenv(key, cluster.env[key])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()
