"""The Spark backend: one Spark job whose tasks are long-running workers.

Unlike Hyperopt's SparkTrials (one Spark job per trial, polled every second), the search runs ONE
job of W tasks, ``sc.parallelize(range(W), W).foreachPartition(worker)``, launched from a driver
thread under a job group. Each task is a worker that loops over many trials and talks to the
optimization server on the driver (bound to ``spark.driver.host``). Spark's task retry restarts a
lost worker; the server notices the loss (heartbeat timeout, or the retried task registering
again) and re-queues the trial to resume from its last checkpoint. When the study ends, the
workers end their tasks; what still runs then (or when it fails or is interrupted) is cancelled
with the job group: no orphaned tasks or threads.

pyspark is imported here only, lazily; a missing pyspark, a missing Java or an unreachable master
each give one clear error before any trial starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from lightning_maggy.backends.base import Backend, pack_launch
from lightning_maggy.exceptions import BackendError, ConfigurationError
from lightning_maggy.lightning.worker import WorkerLaunch

__all__ = ["QUICK_START_JVM", "SparkBackend", "check_java", "is_local_master", "local_slots", "session_conf"]

MIN_JAVA = 17


def _import_pyspark() -> Any:
    try:
        import pyspark
        import pyspark.sql  # the session API too: a broken install fails here, clearly
    except ImportError as err:
        raise ConfigurationError(
            "backend='spark' needs pyspark, which is not installed: pip install "
            "'lightning_maggy[spark]' (or pip install pyspark). Use backend='local' to run "
            "without Spark."
        ) from err
    return pyspark


def check_java(minimum: int = MIN_JAVA) -> str:
    """Returns the ``java`` executable Spark will use; raises ConfigurationError if there is none
    or it is older than ``minimum``."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    hint = (
        f"Spark needs Java {minimum} or newer: install it (e.g. apt-get install "
        f"openjdk-{minimum}-jre-headless) and make sure `java` is on PATH or JAVA_HOME is set."
    )
    if not java or not os.path.exists(java):
        where = f"JAVA_HOME={home!r} has no bin/java" if home else "no `java` on PATH"
        raise ConfigurationError(f"backend='spark' cannot start: {where}. {hint}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigurationError(f"backend='spark' cannot run {java} -version ({err}). {hint}") from err
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0" style
            major = int(match.group(2))
        if major < minimum:
            raise ConfigurationError(f"backend='spark' found Java {major} at {java}. {hint}")
    return java


def _check_master_reachable(master: str) -> None:
    """Fails fast for a standalone master that nobody listens on (Spark itself retries for a
    minute and then leaves a dead session behind)."""
    if not master.startswith("spark://"):
        return
    for hostport in master[len("spark://"):].split(","):
        url = urlparse(f"spark://{hostport}")
        try:
            with socket.create_connection((url.hostname, url.port or 7077), timeout=5):
                return
        except OSError:
            continue
    raise ConfigurationError(
        f"spark_master={master!r} cannot be reached (no Spark master listens there). Check the "
        "URL (spark://HOST:PORT, port 7077 by default) and that the master is running and "
        "reachable from this machine."
    )


def active_session() -> Any:
    """The SparkSession a search would use without building one, or None (also without
    pyspark)."""
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    session = SparkSession.getActiveSession()
    if session is None and SparkContext._active_spark_context is not None:  # built in another thread
        session = SparkSession.builder.getOrCreate()
    return session


_CAUSE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::\s?(.*))?$")

#: How executors get the code, said wherever an executor could not import it.
SHIP_CODE_HINT = (
    "Every executor's Python needs lightning_maggy with its dependencies (pip install "
    "'lightning_maggy[spark]') and the module that defines your LightningModule, datamodule or "
    "train function. Install them in the executors' Python and point Spark at it "
    "(PYSPARK_PYTHON, or spark_conf={'spark.pyspark.python': '/path/to/python'}), or ship them "
    "with the job: a packed environment (venv-pack or conda-pack) with "
    "spark_conf={'spark.archives': 'env.tar.gz#env', 'spark.pyspark.python': './env/bin/python'}, "
    "and your own code with spark_conf={'spark.submit.pyFiles': 'mycode.zip'} (spark-submit "
    "--py-files mycode.zip)."
)


def python_cause(text: str) -> tuple[str, str] | None:
    """``(exception type, message)`` of the Python exception that ended a Spark task, read from
    the text of the error Spark raised on the driver (the last ``SomeError: ...`` line of the
    Python traceback, before the JVM's stack), or None."""
    cause = None
    for line in text.splitlines():
        if line.startswith(("\tat ", "        at ")) or "SQLSTATE" in line:
            if cause is not None:
                break
            continue
        match = _CAUSE.match(line.strip())
        if match and not match.group(1).startswith(("org.", "java.", "py4j.", "scala.")):
            cause = (match.group(1), (match.group(2) or "").strip())
    return cause


def explain_task_failure(error: BaseException, python: str) -> str:
    """One clear message for a Spark job whose worker tasks failed: the Python cause, and for
    an import error which Python the executors ran and how to ship the code."""
    text = str(error)
    cause = python_cause(text)
    if cause is None:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return (
            "the Spark job running the workers ended early (a task failed more often than "
            "spark.task.maxFailures allows, or the job was cancelled from outside the search): "
            f"{lines[0] if lines else type(error).__name__}"
        )
    kind, message = cause
    what = f"{kind}: {message}" if message else kind
    if kind.rsplit(".", 1)[-1] in ("ModuleNotFoundError", "ImportError"):
        return (
            f"the Spark executors could not import the workers' code ({what}); they ran the "
            f"Python {python!r}. {SHIP_CODE_HINT}"
        )
    return f"a Spark task running the workers failed with {what}; see the executor's log for its traceback."


#: Variables of the driver's environment never applied to a task: Spark's and pyspark's own (a
#: task's Python worker has its own values), the JVM's, and Python's start-up settings (too late
#: to matter in a running worker).
PROCESS_ENV_PREFIXES = ("SPARK_", "PYSPARK_", "PYTHON", "JAVA_", "_")


def task_environ(master: str) -> dict[str, str] | None:
    """The driver's environment a task applies on top of its own, as local workers run with the
    environment ``search()`` was called in: for a ``local`` master only, whose executors run on
    this machine but took their environment from the JVM's start (the session's creation), so a
    variable set since (a data path, a credential, a library's setting) would be missing. On a
    cluster the executors' environment is theirs (``spark.executorEnv.NAME``): None."""
    if not str(master).startswith("local"):
        return None
    return {k: v for k, v in os.environ.items() if not k.startswith(PROCESS_ENV_PREFIXES)}


def _task(blob: bytes, environ: Mapping[str, str] | None = None) -> Any:
    """The function each Spark task runs: one long-running worker."""

    def run_partition(_: Iterator[Any]) -> None:
        # pyspark reuses a task's Python worker for later tasks, also other jobs' (with
        # spark.python.worker.reuse, the default): the worker's environment is given back as it
        # was, so that none of them runs "inside a search" or with this task's GPUs.
        saved = dict(os.environ)
        try:
            _run_partition(blob, environ)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    return run_partition


def _run_partition(blob: bytes, environ: Mapping[str, str] | None) -> None:
    import cloudpickle
    from pyspark import TaskContext

    from lightning_maggy.backends.spark_daemon import preload
    from lightning_maggy.lightning.lifeline import Watchdog, driver_alive
    from lightning_maggy.lightning.worker import run_worker

    os.environ.update(environ or {})  # before the user's modules import (and read it) below
    # Lightning's packages first, as the forkserver and lightning_maggy's daemon import them:
    # one imported after the worker quieted Lightning's loggers (pytorch_lightning, which
    # lightning_maggy imports on the way to the first trial) would set its INFO level again,
    # and every trial's output.log would start with Lightning's GPU/TPU banner.
    preload()
    # Shipped inside the Spark task, like the closure itself: never from our socket.
    launch = cloudpickle.loads(blob)
    ctx = TaskContext.get()
    worker_id = ctx.partitionId()
    os.environ["LIGHTNING_MAGGY_WORKER"] = "1"  # see lightning_maggy.lightning.trainer.WORKER_ENV
    gpus = ctx.resources().get("gpu")
    if gpus is not None and gpus.addresses:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
    # An orphaned task (its python daemon, and so its executor, gone) stops within a second;
    # pyspark's own daemon ends its workers when the executor goes away in an orderly way.
    watchdog = Watchdog(driver_alive())
    watchdog.start()
    try:
        run_worker(launch, worker_id)
    finally:
        watchdog.stop()


#: The driver JVM's options for a session built here on a local master: the client compiler
#: only and the serial collector, whose threads do not compete with the JVM's own start for the
#: cores. On 2 cores kept busy by another process, a ``local[2]`` SparkSession took 16.5 s to
#: start with the JVM's defaults and 8.3 s with these; in local mode that JVM only hands out
#: the workers' tasks.
QUICK_START_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def is_local_master(master: str | None) -> bool:
    """Whether a session built for ``master`` runs on this machine (None: pyspark's default,
    ``local[*]``, unless PYSPARK_SUBMIT_ARGS names a master)."""
    if master is None:
        return "--master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    return master.startswith("local")


def local_slots(master: str, task_cpus: int = 1) -> int | None:
    """The tasks a ``local``, ``local[N]``, ``local[*]`` or ``local[N, retries]`` master runs at
    a time, each taking ``task_cpus`` cores (``spark.task.cpus``), or None for any other master
    (a cluster's slots change as executors come and go)."""
    match = re.fullmatch(r"local(?:\[\s*(\*|\d+)\s*(?:,\s*\d+\s*)?\])?", str(master).strip())
    if match is None:
        return None
    cores = 1 if match.group(1) is None else os.cpu_count() or 1 if match.group(1) == "*" else int(match.group(1))
    return max(1, cores // max(1, task_cpus))


def session_conf(master: str | None, conf: Mapping[str, str]) -> dict[str, str]:
    """The settings of a session built by the search: ``conf``, and for a local master, unless
    ``conf`` sets them itself, the driver JVM's :data:`QUICK_START_JVM` options and
    lightning_maggy's pyspark daemon (:mod:`~lightning_maggy.backends.spark_daemon`: the
    executors' Python workers fork with torch and Lightning imported). On a cluster, whose
    executors' Python need not have lightning_maggy installed, the session's owner opts in."""
    from lightning_maggy.backends.spark_daemon import DAEMON_CONF, DAEMON_MODULE

    out = dict(conf)
    if is_local_master(master):
        out.setdefault("spark.driver.extraJavaOptions", QUICK_START_JVM)
        out.setdefault(DAEMON_CONF, DAEMON_MODULE)
    return out


def _build_session(session_cls: Any, master: str | None, conf: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """A session for the search; and, when building it launched pyspark's JVM, the settings it
    was launched with (pyspark hands them to the JVM as system properties, which every later
    session of this Python process would take as its defaults)."""
    from pyspark import SparkContext

    check_java()
    if master:
        _check_master_reachable(master)
    settings = session_conf(master, conf)
    launches_jvm = SparkContext._gateway is None
    builder = session_cls.builder.appName("lightning_maggy")
    if master:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as err:
        raise ConfigurationError(
            f"could not start a SparkSession (master={master!r}): {err}. Check the master "
            "URL, Java, and the Spark settings in spark_conf."
        ) from err
    text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items()}  # as pyspark writes them
    return spark, (text if launches_jvm else {})


def _forget_launch(settings: Mapping[str, str]) -> None:
    """Clears the JVM system properties a session built by the search launched the JVM with,
    once that session is stopped: a session the user builds later in the same process (or the
    next search's) would otherwise get its ``spark_conf``, daemon and JVM options. (Its app name
    and master stay the JVM's, as after any first session: a later session needs an app name.)"""
    if not settings:
        return
    try:
        from pyspark import SparkContext

        system = SparkContext._jvm.java.lang.System
        for key, value in settings.items():
            if system.getProperty(key) == value:  # not one set since by someone else
                system.clearProperty(key)
    except Exception:  # the gateway may be gone with the session: nothing is left to leak into
        pass


class SparkBackend(Backend):
    """Runs the workers as the tasks of one Spark job.

    Args:
        spark: a SparkSession to use; default: the active one, or one built from ``master`` and
            ``conf``.
        master: the master URL when a session has to be built (e.g. ``spark://host:7077``,
            ``local[4]``, ``yarn``).
        conf: extra Spark settings for a session built here.
    """

    name = "spark"

    def __init__(self, spark: Any = None, master: str | None = None, conf: Mapping[str, str] | None = None) -> None:
        super().__init__()
        _import_pyspark()
        from pyspark.sql import SparkSession

        self._owns_session = False
        #: the settings the JVM was launched with for a session built here (see _forget_launch)
        self._launch_settings: dict[str, str] = {}
        if spark is None:
            spark = active_session()
        if spark is None:
            spark, self._launch_settings = _build_session(SparkSession, master, conf or {})
            self._owns_session = True
        elif master or conf:
            raise ConfigurationError(
                "spark_master/spark_conf were given but a SparkSession is already active; "
                "configure that session instead, or stop it first."
            )
        self.spark = spark
        self.sc = spark.sparkContext
        if self._owns_session:
            self._choose_python(conf or {})
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopping = False

    @property
    def python(self) -> str:
        """The Python executable the executors run the workers with."""
        return str(getattr(self.sc, "pythonExec", None) or os.environ.get("PYSPARK_PYTHON") or "python3")

    def _choose_python(self, conf: Mapping[str, str]) -> None:
        """For a session built here: ``spark.pyspark.python`` when given, else (a ``local``
        master, where the executors run on this machine) this very Python unless
        PYSPARK_PYTHON names another. pyspark itself would take ``python3`` from PATH, which
        need not be the Python that has lightning_maggy (a virtual environment's Python run
        without activating it)."""
        chosen = conf.get("spark.pyspark.python")
        if chosen is None and not os.environ.get("PYSPARK_PYTHON") and str(self.sc.master).startswith("local"):
            chosen = sys.executable
        if chosen:
            self.sc.pythonExec = chosen

    @property
    def driver_host(self) -> str:
        """The address executors reach the driver at (``spark.driver.host``), as an IP."""
        host = self.sc.getConf().get("spark.driver.host", None) or socket.gethostname()
        try:
            return socket.gethostbyname(host)
        except OSError:
            return host

    def default_workers(self) -> int:
        """The task slots the cluster offers now: a local master's cores (its default parallelism
        is ``spark.default.parallelism`` when that is set, which need not be its cores)."""
        return self._local_slots() or max(1, int(self.sc.defaultParallelism))

    def _local_slots(self) -> int | None:
        return local_slots(self.sc.master, int(self.sc.getConf().get("spark.task.cpus", "1") or 1))

    def _start(self, launch: WorkerLaunch, num_workers: int) -> None:
        slots = self._local_slots()
        if slots is not None and num_workers > slots:
            warnings.warn(
                f"workers={num_workers} but the Spark master {self.sc.master!r} runs {slots} task(s) at a time "
                f"(its cores / spark.task.cpus): only {slots} trial(s) run in parallel, the other workers' "
                f"tasks wait for a slot until the study ends. Pass workers={slots} (or leave workers out), "
                "or give the master more cores.", stacklevel=1)
        # One instance may serve search after search (on a user's session): a job group for each.
        self.stopped, self._stopping, self._error = False, False, None
        self._group = f"lightning_maggy-{uuid.uuid4().hex[:12]}"
        task = _task(pack_launch(launch), task_environ(self.sc.master))
        description = job_description(launch, num_workers)

        def run_job() -> None:
            try:
                self.sc.setJobGroup(self._group, description, interruptOnCancel=True)
                self.sc.parallelize(range(num_workers), num_workers).foreachPartition(task)
            except BaseException as err:  # reported by poll_lost, unless we cancelled it
                self._error = err

        from pyspark import InheritableThread

        # Inheritable: the job runs with the calling thread's Spark properties (a scheduler pool
        # of the user's, spark.scheduler.pool), as a job the user started there would.
        self._thread = InheritableThread(target=run_job, name="maggy-spark-job", daemon=True)
        self._thread.start()

    def _poll_lost(self) -> list[tuple[int, str]]:
        if self._thread is not None and not self._thread.is_alive() and self._error is not None and not self._stopping:
            raise BackendError(explain_task_failure(self._error, self.python))
        return []

    def _stop(self, timeout: float) -> None:
        self._stopping = True
        if self._thread is not None:
            # At the study's end the workers were told "done" and end their tasks themselves: a
            # moment's wait lets the job succeed, where cancelling it at once would show every
            # finished study as a failed job in the Spark UI and log a cancelled task's errors.
            self._thread.join(min(timeout, END_GRACE))
            if self._thread.is_alive():
                with contextlib.suppress(Exception):  # the context may already be gone
                    self.sc.cancelJobGroup(self._group)
                self._thread.join(timeout)
        if self._owns_session:
            self.spark.stop()
            _forget_launch(self._launch_settings)


#: Seconds a stopping backend waits for the workers' tasks to end on their own before it cancels.
END_GRACE = 1.0


def job_description(launch: WorkerLaunch, num_workers: int) -> str:
    """The job's description in the Spark UI: what is searched, by how many workers, and where
    the study's record is."""
    target = launch.task.target
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"lightning_maggy search of {name}: {num_workers} worker(s), exp_dir {launch.exp_dir}"
