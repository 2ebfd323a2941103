"""A pyspark daemon that imports torch, Lightning and the worker's modules before it forks.

pyspark starts one daemon process per executor (``python -m pyspark.daemon``) and forks a
Python worker from it for each task. Every worker then imports torch and Lightning on its own
while it unpickles its task: on a 2-core machine, two workers importing side by side took
6.5-8.8 s before they could register, and 1.1 s when forked from this daemon. Run as the daemon instead (Spark's
``spark.python.daemon.module``), this module imports them once, in the daemon, and then runs
pyspark's own daemon loop, so every worker it forks starts with them imported, as the local
backend's forkserver does (the same list, :data:`~lightning_maggy.backends.local.PRELOAD`).

A search that builds its own session on a ``local`` master sets it; for a session of your own
(or a cluster, where lightning_maggy is installed on the executors' Python)::

    SparkSession.builder.config("spark.python.daemon.module", "lightning_maggy.backends.spark_daemon")
"""

from __future__ import annotations

import importlib

from lightning_maggy.backends.local import PRELOAD

__all__ = ["DAEMON_CONF", "DAEMON_MODULE", "preload"]

#: The Spark setting that names the daemon module, and this module's name for it.
DAEMON_CONF = "spark.python.daemon.module"
DAEMON_MODULE = "lightning_maggy.backends.spark_daemon"


def preload() -> list[str]:
    """Imports every module of :data:`PRELOAD` that imports (one that does not is skipped, as
    the forkserver skips it: the worker then reports the error itself); returns those imported."""
    done = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the task reports its own import errors, clearly
            continue
        done.append(name)
    return done


if __name__ == "__main__":
    preload()
    from pyspark import daemon

    daemon.manager()
