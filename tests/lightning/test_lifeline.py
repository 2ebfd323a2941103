"""Workers never outlive their driver: the SIGTERM handler, the parent-death signal and the
watchdog, on real processes (plain Python, no torch: each runs in a fraction of a second)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> float | None:
    """Seconds until ``pid`` is gone, or None if it is still there after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not _alive(pid):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


BLOCKED_IN_POLL = """
import sys, zmq
from lightning_maggy.lightning.lifeline import install_sigterm_handler, WorkerTerminated
install_sigterm_handler()
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.connect("ipc:///tmp/lightning_maggy-nobody-listens.sock")
print("ready", flush=True)
try:
    sock.poll(600_000)  # a report waiting for an answer from a driver that is gone
except WorkerTerminated as err:
    print("unwound", err.code, flush=True)
    raise
"""


def test_sigterm_unwinds_a_worker_blocked_on_its_socket_and_exits_with_143(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED_IN_POLL], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + signal.SIGTERM
    assert "unwound 143" in proc.stdout.read()
    assert took < 2.0


ORPHAN = """
import os, signal, subprocess, sys, time
# The "driver": starts a "worker" and waits to be killed.
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]])
print(child.pid, flush=True)
time.sleep(600)
"""

WORKER = """
import os, sys, time
from lightning_maggy.lightning.lifeline import (
    Watchdog, driver_alive, install_sigterm_handler, set_parent_death_signal)
driver_pid, mode = int(sys.argv[1]), sys.argv[2]
install_sigterm_handler()
if mode == "pdeathsig":
    assert set_parent_death_signal()
else:
    Watchdog(driver_alive(driver_pid), interval=0.2).start()
while True:
    time.sleep(0.05)  # "training"
"""


@pytest.mark.parametrize("mode", ["pdeathsig", "watchdog"])
def test_a_worker_exits_within_a_second_of_its_driver_being_killed(mode: str) -> None:
    if mode == "pdeathsig" and not sys.platform.startswith("linux"):
        pytest.skip("prctl(PR_SET_PDEATHSIG) is Linux only")
    driver = subprocess.Popen([sys.executable, "-c", ORPHAN, WORKER, mode], stdout=subprocess.PIPE, text=True, env=_env())
    worker = None
    try:
        assert driver.stdout is not None
        worker = int(driver.stdout.readline())
        time.sleep(1.0)  # the worker is set up and "training"
        assert _alive(worker)
        driver.kill()  # SIGKILL: no chance to clean up
        driver.wait(10)
        took = _wait_gone(worker, 10.0)
        assert took is not None, f"the worker outlived its driver ({mode})"
        assert took < 2.0
    finally:
        if driver.poll() is None:
            driver.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
