"""End to end without sockets: ``Controller.serve`` over an :class:`InProcessServer` in one
thread, real worker loops (``run_worker``) with function trials in others.

Worker loops redirect fds 1/2 to each trial's output.log while a trial runs, process-wide; the
assertions here all run after the workers have finished.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightning_maggy.driver.controller import Controller
from lightning_maggy.driver.journal import Journal, replay
from lightning_maggy.earlystop import MedianStoppingRule
from lightning_maggy.lightning.worker import TrialTask, WorkerLaunch, run_worker
from lightning_maggy.optimizers import ASHA, AbstractOptimizer, GridSearch
from lightning_maggy.searchspace import Discrete, Searchspace
from lightning_maggy.transport import InProcessServer
from lightning_maggy.trial import Trial, TrialState

KEY = b"inprocess-e2e-key"
JOIN_TIMEOUT = 10.0
TWO = Searchspace(x=Discrete([1, 2]))


class Search:
    """Runs one experiment to its end and keeps what the assertions need."""

    def __init__(
        self,
        tmp_path: Path,
        optimizer: AbstractOptimizer,
        fn: Callable[[dict[str, Any], Any], Any],
        *,
        space: Searchspace,
        max_epochs: int,
        num_trials: int | None,
        workers: int = 2,
        **controller_kwargs: Any,
    ) -> None:
        self.exp_dir = tmp_path / "exp"
        self.server = InProcessServer(KEY)
        self.journal = Journal(self.exp_dir / "journal.jsonl")
        self.ctl = Controller(
            optimizer=optimizer,
            searchspace=space,
            direction="max",
            max_epochs=max_epochs,
            num_trials=num_trials,
            journal=self.journal,
            seed=0,
            **controller_kwargs,
        )
        task = TrialTask(kind="function", target=fn, metric="score", direction="max")
        launch = WorkerLaunch(
            address=self.server.address, key=KEY, exp_dir=str(self.exp_dir), task=task, heartbeat_interval=0.05
        )
        self.errors: list[tuple[str, BaseException]] = []
        self.ran: dict[int, int | None] = {}
        served = threading.Event()

        def serve() -> None:
            try:
                self.ctl.serve(self.server, tick_interval=0.05)
            except BaseException as err:  # noqa: BLE001 - reported by the test
                self.errors.append(("serve", err))
            finally:
                served.set()

        def work(wid: int) -> None:
            try:
                self.ran[wid] = run_worker(
                    launch,
                    wid,
                    still_wanted=lambda: not served.is_set(),
                    make_client=lambda suffix: self.server.connect(f"w{wid}-{suffix}"),
                )
            except ConnectionAbortedError:
                self.ran[wid] = None  # asked after the search had ended (checked below)
            except BaseException as err:  # noqa: BLE001
                self.errors.append((f"worker {wid}", err))

        threads = [threading.Thread(target=work, args=(wid,), daemon=True) for wid in range(1, workers + 1)]
        server_thread = threading.Thread(target=serve, daemon=True)
        # Each worker loop swaps fds 1/2 process-wide for the duration of a trial; two loops in
        # one process (only here: a real worker is a process of its own) interleave their
        # save/restore and can leave fds 1/2 on a trial's output.log. Put them back afterwards
        # (a single loop must restore them itself; test_a_trials_fd_output_... checks it).
        saved = (os.dup(1), os.dup(2)) if workers > 1 else ()
        try:
            for t in [server_thread, *threads]:
                t.start()
            server_thread.join(JOIN_TIMEOUT)
            for t in threads:
                t.join(JOIN_TIMEOUT)
        finally:
            for fd, original in zip((1, 2), saved):
                os.dup2(original, fd)
                os.close(original)
        self.journal.close()
        self.server.close()
        assert not server_thread.is_alive(), f"the search did not finish: {self.ctl.counts()}"
        assert not any(t.is_alive() for t in threads), "a worker was never told done"
        assert not self.errors, self.errors
        for wid, ran in self.ran.items():
            if ran is None:  # only a worker whose request came too late may go without "done"
                assert wid not in self.ctl.workers or not self.ctl.workers[wid].parked, f"worker {wid} never told done"

    def by_x(self) -> dict[Any, Trial]:
        return {t.config["x"]: t for t in self.ctl.trials.values()}

    def trial_dir(self, trial: Trial) -> Path:
        return self.exp_dir / "trials" / trial.trial_id


def value(x: int, step: int) -> float:
    return x / 10 + step / 100


class Recorder:
    """A deterministic function trial that records which steps it actually ran."""

    def __init__(self, fail_x: Any = None, values: Callable[[int, int], float] = value) -> None:
        self.fail_x = fail_x
        self.values = values
        self.steps: list[tuple[Any, int]] = []  # list.append is atomic across threads

    def __call__(self, hparams: dict[str, Any], reporter: Any) -> float:
        x = hparams["x"]
        if x == self.fail_x:
            raise ValueError(f"x={x} is cursed")
        last = math.nan
        for step in range(reporter.start_step, reporter.budget):
            self.steps.append((x, step))
            last = self.values(x, step)
            reporter.broadcast(last, step)
        return last

    def ran(self, x: Any) -> list[int]:
        return [s for xx, s in self.steps if xx == x]


def records_equal(a: dict[str, Trial], b: dict[str, Trial]) -> bool:
    def dump(trials: dict[str, Trial]) -> str:
        return json.dumps({k: t.to_dict() for k, t in trials.items()}, sort_keys=True)

    return dump(a) == dump(b)


def test_function_trials_complete_with_their_histories(tmp_path: Path) -> None:
    fn = Recorder()
    s = Search(tmp_path, GridSearch(), fn, space=Searchspace(x=Discrete([1, 2, 3, 4])), max_epochs=3, num_trials=None)
    assert s.ctl.stop_reason == "finished"
    trials = s.by_x()
    assert sorted(trials) == [1, 2, 3, 4]
    for x, t in trials.items():
        assert t.state is TrialState.COMPLETED
        assert t.history == tuple(value(x, step) for step in range(3))
        assert t.final_metric == value(x, 2)
        assert t.worker in (1, 2)
        assert fn.ran(x) == [0, 1, 2]
        hparams = json.loads((s.trial_dir(t) / "hparams.json").read_text())
        assert hparams["config"] == {"x": x} and hparams["trial_id"] == t.trial_id
        rows = (s.trial_dir(t) / "metrics.csv").read_text().splitlines()
        assert rows[0] == "epoch,score,decision" and len(rows) == 4
        assert (s.trial_dir(t) / "output.log").exists()
    assert sum(n or 0 for n in s.ran.values()) == 4
    assert s.ctl.best() is trials[4]
    assert records_equal(replay(s.exp_dir / "journal.jsonl"), dict(s.ctl.trials))


def test_a_raising_function_fails_its_trial_and_the_search_completes(tmp_path: Path) -> None:
    fn = Recorder(fail_x=2)
    s = Search(tmp_path, GridSearch(), fn, space=Searchspace(x=Discrete([1, 2, 3, 4])), max_epochs=2, num_trials=None)
    assert s.ctl.stop_reason == "finished"
    trials = s.by_x()
    failed = trials.pop(2)
    assert failed.state is TrialState.FAILED
    assert failed.error is not None and "ValueError: x=2 is cursed" in failed.error and "Traceback" in failed.error
    assert failed.history == () and failed.final_metric is None
    for x, t in trials.items():
        assert t.state is TrialState.COMPLETED and t.history == (value(x, 0), value(x, 1))
    assert s.ctl.failures == 1


def test_early_stop_exception_under_the_median_rule_gives_stopped(tmp_path: Path) -> None:
    # x=1 and x=2 learn the same way; x=3 is hopeless. The grid hands x=3 out only after a
    # trial has finished, so the median exists at its first report.
    def values(x: int, step: int) -> float:
        return 0.1 if x == 3 else 0.9 + step / 100

    fn = Recorder(values=values)
    s = Search(
        tmp_path,
        GridSearch(),
        fn,
        space=Searchspace(x=Discrete([1, 2, 3])),
        max_epochs=3,
        num_trials=None,
        earlystop=MedianStoppingRule(min_trials=1),
    )
    assert s.ctl.stop_reason == "finished"
    trials = s.by_x()
    assert trials[3].state is TrialState.STOPPED
    assert trials[3].history == (0.1,) and trials[3].final_metric == 0.1
    assert fn.ran(3) == [0]  # broadcast raised at the first step: the function stopped there
    for x in (1, 2):
        assert trials[x].state is TrialState.COMPLETED and len(trials[x].history) == 3


def test_asha_promotions_resume_function_trials_where_they_paused(tmp_path: Path) -> None:
    fn = Recorder()
    s = Search(
        tmp_path,
        ASHA(reduction_factor=2, resource_min=1),
        fn,
        space=Searchspace(x=Discrete([1, 2, 3, 4])),
        max_epochs=4,  # rungs [1, 2, 4]
        num_trials=4,
    )
    assert s.ctl.stop_reason == "finished"
    trials = s.by_x()
    assert sorted(trials) == [1, 2, 3, 4]
    for x, t in trials.items():
        assert t.state in (TrialState.COMPLETED, TrialState.STOPPED)
        assert len(t.history) in (1, 2, 4)
        assert (t.state is TrialState.COMPLETED) == (len(t.history) == 4)
        assert t.history == tuple(value(x, step) for step in range(len(t.history)))
        # A promoted trial resumed where it paused: no step ran twice.
        assert fn.ran(x) == list(range(len(t.history)))
        rows = (s.trial_dir(t) / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + len(t.history)
    # The best configuration always climbs every rung.
    assert trials[4].state is TrialState.COMPLETED and trials[3].budget >= 2
    assert records_equal(replay(s.exp_dir / "journal.jsonl"), dict(s.ctl.trials))


def test_a_trials_fd_output_goes_to_its_output_log(tmp_path: Path) -> None:
    def fn(hparams: dict[str, Any], reporter: Any) -> float:
        x = hparams["x"]
        os.write(1, f"stdout of x={x}\n".encode())
        os.write(2, f"stderr of x={x}\n".encode())
        reporter.broadcast(float(x), 0)
        return float(x)

    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    s = Search(tmp_path, GridSearch(), fn, space=TWO, max_epochs=1, num_trials=None, workers=1)
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before  # fds 1/2 restored
    for x, t in s.by_x().items():
        log = (s.trial_dir(t) / "output.log").read_text()
        assert f"stdout of x={x}\n" in log and f"stderr of x={x}\n" in log
        assert f"of x={3 - x}" not in log


@pytest.mark.parametrize("workers", [1, 3])
def test_more_or_fewer_workers_than_trials(tmp_path: Path, workers: int) -> None:
    fn = Recorder()
    s = Search(
        tmp_path, GridSearch(), fn, space=TWO, max_epochs=2, num_trials=None, workers=workers
    )
    assert s.ctl.stop_reason == "finished"
    assert [t.state for t in s.ctl.trials.values()] == [TrialState.COMPLETED] * 2
    assert sum(n or 0 for n in s.ran.values()) == 2


def test_a_parked_worker_is_told_done_while_its_heartbeats_keep_coming(tmp_path: Path) -> None:
    # Two trials, rungs [1, 2]: whichever worker reaches rung 1 first waits (parked) while the
    # other finishes and trains the promoted trial; that step lasts a few heartbeat intervals,
    # so the parked worker's heartbeat socket talks meanwhile. "done" must still reach the
    # socket the parked worker asked on.
    def fn(hparams: dict[str, Any], reporter: Any) -> float:
        x = hparams["x"]
        for step in range(reporter.start_step, reporter.budget):
            if step == 1:
                time.sleep(0.25)  # 5 heartbeat intervals
            reporter.broadcast(value(x, step), step)
        return value(x, reporter.budget - 1)

    s = Search(tmp_path, ASHA(reduction_factor=2), fn, space=TWO, max_epochs=2, num_trials=2)
    assert s.ctl.stop_reason == "finished"
    assert set(s.ran) == {1, 2} and None not in s.ran.values()  # both were told done
    trials = s.by_x()
    assert trials[2].state is TrialState.COMPLETED and trials[2].history == (value(2, 0), value(2, 1))
    assert trials[1].state is TrialState.STOPPED and trials[1].history == (value(1, 0),)


@pytest.mark.parametrize("name", ["tpe", "gp"])
def test_a_model_based_search_fits_off_the_serve_thread(tmp_path: Path, name: str) -> None:
    """GP and TPE end to end: their model proposals come from the controller's job thread."""
    from lightning_maggy.optimizers import GP, TPE
    from lightning_maggy.searchspace import Double

    opt = GP(seed=0, n_initial=2, num_restarts=2, raw_samples=32, mc_samples=32) if name == "gp" else TPE(seed=0)
    space = Searchspace(x=Double(0.0, 1.0))
    s = Search(tmp_path, opt, lambda hp, reporter: -((hp["x"] - 0.3) ** 2), space=space, max_epochs=1,
               num_trials=5)
    assert s.ctl.stop_reason == "finished" and len(s.ctl.trials) == 5
    assert all(t.state is TrialState.COMPLETED for t in s.ctl.trials.values())
    sources = [t.info["suggested_by"] for t in s.ctl.trials.values()]
    assert sources.count(name) >= 2, sources
    assert not opt._background_jobs  # serve() handed the jobs back


def test_a_trial_that_never_reports_is_stopped_by_trial_timeout_and_its_worker_goes_on(tmp_path: Path) -> None:
    """x=1 spins in pure Python without reporting: over ``trial_timeout`` it is recorded
    STOPPED, its worker hears ``drop`` on its heartbeat socket and the spin is interrupted
    (TrialDropped raised in the trial's thread); the worker then runs other trials."""
    spins: list[int] = []

    def fn(hparams: dict[str, Any], reporter: Any) -> float:
        if hparams["x"] == 1:
            reporter.broadcast(0.5, 0)
            n = 0
            while True:  # never reports again, never returns
                n += 1
                if n % 1_000_000 == 0:
                    spins.append(n)
        for step in range(reporter.budget):
            time.sleep(0.01)
            reporter.broadcast(value(hparams["x"], step), step)
        return value(hparams["x"], reporter.budget - 1)

    started = time.monotonic()
    s = Search(
        tmp_path, GridSearch(), fn, space=Searchspace(x=Discrete([1, 2, 3])), max_epochs=2, num_trials=None,
        workers=2, trial_timeout=0.3,
    )
    assert time.monotonic() - started < 8.0
    assert s.ctl.stop_reason == "finished"
    t = s.by_x()
    assert t[1].state is TrialState.STOPPED and "trial_timeout=0.3" in (t[1].error or "")
    assert t[1].history == (0.5,) and t[1].final_metric == 0.5 and t[1].attempt == 1
    assert t[2].state is TrialState.COMPLETED and t[3].state is TrialState.COMPLETED
    # (Search checked that every worker loop returned: the spinning one was interrupted.)
    n = len(spins)
    time.sleep(0.2)
    assert len(spins) == n  # the spin was really interrupted


def test_non_finite_reports_stop_their_trial_and_never_count_as_best(tmp_path: Path) -> None:
    def values(x: int, step: int) -> float:
        return math.inf if x == 3 and step == 1 else x / 10 + step / 100

    fn = Recorder(values=values)
    s = Search(tmp_path, GridSearch(), fn, space=Searchspace(x=Discrete([1, 2, 3])), max_epochs=3, num_trials=None)
    t = s.by_x()
    assert t[3].state is TrialState.STOPPED and t[3].final_metric is None
    assert math.isnan(t[3].history[1]) and "non-finite" in (t[3].error or "")
    assert fn.ran(3) == [0, 1]  # stopped at the inf report
    assert s.ctl.best() is t[2]
