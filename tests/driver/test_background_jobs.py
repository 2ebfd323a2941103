"""Model fitting stays off the report path: an optimizer's Job runs on the controller's
background thread while reports are answered, and parked workers are served when it is done."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lightning_maggy.driver.controller import Controller
from lightning_maggy.driver.jobs import JobRunner
from lightning_maggy.driver.journal import Journal
from lightning_maggy.optimizers.base import IDLE, AbstractOptimizer, Job
from lightning_maggy.searchspace import Double, Searchspace
from lightning_maggy.transport import InProcessServer
from lightning_maggy.transport.messages import decode, encode
from lightning_maggy.trial import Trial

KEY = b"jobs-test-key"
SPACE = Searchspace(x=Double(0.0, 1.0))


def wire(message: dict[str, Any]) -> dict[str, Any]:
    return decode(encode(message, KEY), KEY)


class SlowModel(AbstractOptimizer):
    """The first trial is random; every later one needs a 'model fit' (a Job running ``fit``)."""

    def __init__(self, fit) -> None:
        super().__init__(seed=0)
        self.fit = fit
        self.jobs_made = 0

    def initialize(self) -> None:
        pass

    def get_suggestion(self, trial: Trial | None = None):
        if len(self.trials) >= (self.num_trials or 0):
            return None
        if not self.trials:
            return self.create_trial({"x": 0.5})
        n = len(self.trials)

        def make_job() -> Job:
            self.jobs_made += 1
            return Job(lambda: self.fit(n), name="slow fit")

        ready, x = self._job_result(make_job)
        if not ready:
            return IDLE
        return self.create_trial({"x": x})

    def finalize_experiment(self, trials) -> None:
        pass


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    yield j
    j.close()


def _controller(journal, optimizer, num_trials: int = 3) -> Controller:
    return Controller(optimizer=optimizer, searchspace=SPACE, direction="max", max_epochs=5,
                      num_trials=num_trials, journal=journal, seed=0)


def _register_and_get(ctl: Controller, wid: int) -> list:
    ctl.handle(f"w{wid}".encode(), wire({"type": "register", "worker_id": wid, "pid": wid, "host": "h"}))
    return ctl.handle(f"w{wid}".encode(), wire({"type": "get", "worker_id": wid}))


def test_without_background_jobs_the_optimizer_computes_inline(journal):
    ctl = _controller(journal, SlowModel(lambda n: 0.1 * n))
    ((_, first),) = _register_and_get(ctl, 1)
    ((_, second),) = _register_and_get(ctl, 2)  # answered at once: the job ran inline
    assert first["trial"]["config"] == {"x": 0.5} and second["trial"]["config"] == {"x": 0.1}


def test_a_worker_waits_for_the_fit_while_reports_are_answered(journal):
    release = threading.Event()

    def fit(n: int) -> float:
        assert release.wait(10)
        return 0.25

    opt = SlowModel(fit)
    ctl = _controller(journal, opt)
    ctl.start_background_jobs()
    try:
        ((_, first),) = _register_and_get(ctl, 1)
        tid = first["trial"]["trial_id"]
        assert _register_and_get(ctl, 2) == []  # parked: the model is being fitted
        assert ctl.jobs_busy and opt.jobs_made == 1
        assert _register_and_get(ctl, 3) == []  # one job at a time: no second fit is started
        assert opt.jobs_made == 1
        for epoch in range(3):  # reports are answered while the fit runs
            ((_, reply),) = ctl.handle(b"w1", wire({"type": "report", "worker_id": 1, "trial_id": tid, "attempt": 1,
                                                    "epoch": epoch, "value": 0.1}))
            assert reply["decision"] == "continue"
        assert ctl.poll_jobs() == [] and ctl.jobs_busy
        release.set()
        deadline = time.monotonic() + 10
        out: list = []
        while not out and time.monotonic() < deadline:
            out = ctl.poll_jobs()
            time.sleep(0.01)
        # The result went to the first parked worker; the next one needs another fit.
        trials = [(peer, msg) for peer, msg in out if msg["type"] == "trial"]
        assert [(peer, msg["trial"]["config"]) for peer, msg in trials] == [(b"w2", {"x": 0.25})]
        assert opt.jobs_made == 2 and ctl.jobs_busy
    finally:
        release.set()
        ctl.stop_background_jobs()
    assert not opt._background_jobs


def test_a_job_that_raises_aborts_the_search_with_its_traceback(journal):
    def fit(n: int) -> float:
        raise ValueError("the model exploded")

    ctl = _controller(journal, SlowModel(fit))
    ctl.start_background_jobs()
    try:
        _register_and_get(ctl, 1)
        assert _register_and_get(ctl, 2) == []
        deadline = time.monotonic() + 10
        while not ctl.finished and time.monotonic() < deadline:
            ctl.poll_jobs()
            time.sleep(0.01)
    finally:
        ctl.stop_background_jobs()
    assert ctl.finished and "the model exploded" in (ctl.abort_message or "")


def test_job_runner_returns_results_and_errors_in_order():
    runner = JobRunner()
    try:
        jobs = [Job(lambda: 1), Job(lambda: 1 / 0), Job(lambda: "three")]
        for job in jobs:
            runner.submit(job)
        done: list = []
        deadline = time.monotonic() + 10
        while len(done) < 3 and time.monotonic() < deadline:
            done += runner.poll()
            time.sleep(0.005)
        assert [job for job, _, _ in done] == jobs and not runner.busy
        assert done[0][1] == 1 and isinstance(done[1][2], ZeroDivisionError) and done[2][1] == "three"
    finally:
        runner.close(timeout=5)


@contextlib.contextmanager
def _parked_on_a_fit(journal, fit, fitting: threading.Event) -> Iterator[tuple[Controller, InProcessServer, Any, Any, dict]]:
    """``serve`` over the in-process transport with two workers: w1 holds the first trial, w2
    asked for the second and is parked while ``fit`` runs (it has set ``fitting``). Yields
    ``(controller, server, w1, w2, w1's trial)``; the serve thread ends afterwards."""
    ctl = _controller(journal, SlowModel(fit), num_trials=2)
    server = InProcessServer(KEY)
    serving = threading.Thread(target=ctl.serve, args=(server,), kwargs={"tick_interval": 0.05}, daemon=True)
    serving.start()
    w1, w2 = server.connect("w1"), server.connect("w2")
    try:
        for wid, client in ((1, w1), (2, w2)):
            assert client.request({"type": "register", "worker_id": wid, "pid": wid, "host": "h"}, timeout=5)["type"] == "welcome"
        first = w1.request({"type": "get", "worker_id": 1}, timeout=5)["trial"]
        w2.send({"type": "get", "worker_id": 2})  # parked until the fit is done
        assert fitting.wait(5)
        yield ctl, server, w1, w2, first
    finally:
        ctl.abort("test over")
        serving.join(5)
        server.close()
    assert not serving.is_alive()


def test_serve_answers_reports_promptly_while_a_cpu_bound_fit_runs(tmp_path, journal):
    """Through ``serve`` and the in-process transport: a 1.5 s fit that holds the GIL (pure
    Python arithmetic) runs while another worker's reports are answered within milliseconds."""
    fitting = threading.Event()

    def fit(n: int) -> float:
        fitting.set()
        end = time.perf_counter() + 1.5
        x = 0
        while time.perf_counter() < end:
            x += 1
        return 0.75

    with _parked_on_a_fit(journal, fit, fitting) as (ctl, _, w1, w2, first):
        latencies = []
        for epoch in range(5):
            t0 = time.perf_counter()
            reply = w1.request({"type": "report", "worker_id": 1, "trial_id": first["trial_id"], "attempt": 1, "epoch": epoch,
                                "value": 0.5}, timeout=5)
            latencies.append(time.perf_counter() - t0)
            assert reply["decision"] == "continue"
        assert ctl.jobs_busy, "the fit should still be running"
        assert max(latencies) < 0.25, latencies  # not 1.5 s: the fit does not block the server
        second = w2.request({"type": "get", "worker_id": 2}, timeout=10)  # already answered, or now
        assert second["type"] == "trial" and second["trial"]["config"] == {"x": 0.75}


def test_a_process_that_ends_while_a_native_fit_runs_exits_cleanly(tmp_path):
    """A study ends (close() does not wait) while its GP fit is inside torch's C++ code: the
    process must still exit with 0 once the fit is done. With a daemon thread it was stopped
    mid-native-code at exit and aborted ("terminate called without an active exception")."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import time, torch
        from lightning_maggy.driver.jobs import JobRunner
        from lightning_maggy.optimizers.base import Job
        torch.set_num_threads(2)

        def fit():
            a = torch.randn(600, 600, dtype=torch.float64)
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                a = torch.linalg.qr(a @ a.T + torch.eye(600, dtype=torch.float64))[0]
            return 1

        runner = JobRunner()
        runner.submit(Job(fit))
        time.sleep(0.3)
        runner.close()
        print("study over", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "study over" in proc.stdout and "terminate called" not in proc.stderr


def test_a_flood_of_reports_does_not_hold_back_a_finished_job(tmp_path, journal):
    """The serve loop answers queued messages in bursts (serving.BURST), and between bursts it
    hands finished jobs back: a worker parked on a fit gets its trial as soon as the fit is
    done, not after thousands of other workers' queued reports."""
    from lightning_maggy.driver import serving as serve_module

    release = threading.Event()
    fitting = threading.Event()

    def fit(n: int) -> float:
        fitting.set()
        release.wait(10)
        return 0.75

    flood = 6400
    assert serve_module.BURST <= flood // 20
    try:
        with _parked_on_a_fit(journal, fit, fitting) as (_, server, w1, w2, first):
            for k in range(flood):
                server.inject(w1.identity, encode({"type": "report", "worker_id": 1, "trial_id": first["trial_id"],
                                                   "attempt": 1, "epoch": k % 4, "value": 0.5}, KEY, w1.session))
            release.set()
            second = w2.poll(timeout=20)
            answered_by_then = server._outbox(w1.identity).qsize()
            assert second is not None and second["type"] == "trial" and second["trial"]["config"] == {"x": 0.75}
            assert answered_by_then < flood // 2, (answered_by_then, flood)
            replies = [w1.poll(timeout=30) for _ in range(flood)]
            assert all(r is not None and r["decision"] == "continue" for r in replies)  # every report answered
    finally:
        release.set()
