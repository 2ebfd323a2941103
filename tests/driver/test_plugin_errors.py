"""Custom optimizers and early-stop rules with bugs: what they return is checked, and a bug ends
the study with a message that names it, never a wrong record or a bare exception."""

from __future__ import annotations

from typing import Any

import pytest
from controller_harness import done_peers, rpc

from lightning_maggy.driver.journal import read_journal
from lightning_maggy.earlystop import AbstractEarlyStop
from lightning_maggy.optimizers import AbstractOptimizer
from lightning_maggy.trial import Trial, TrialState


class Proposes(AbstractOptimizer):
    """Proposes ``config`` with ``budget`` (None: max_epochs), once."""

    def __init__(self, config: dict[str, Any], budget: Any = None) -> None:
        super().__init__()
        self.config, self.budget = config, budget

    def initialize(self) -> None:
        self.done = False

    def get_suggestion(self, trial: Trial | None = None) -> Any:
        if self.done:
            return None
        self.done = True
        return self.create_trial(self.config, budget=self.max_epochs if self.budget is None else self.budget)

    def finalize_experiment(self, trials: list[Trial]) -> None:
        pass


@pytest.mark.parametrize(
    ("config", "budget", "fragment"),
    [
        ({"lr": 5.0, "x": 1}, None, "value 5.0 is outside"),
        ({"lr": 0.01, "x": 99}, None, "value 99 is outside"),
        ({"lr": 0.01}, None, "missing names ['x']"),
        ({"lr": 0.01, "x": 1, "zzz": "?"}, None, "unknown names ['zzz']"),
        ({"lr": 0.01, "x": 1}, 0, "budget=0"),
        ({"lr": 0.01, "x": 1}, -1, "budget=-1"),
        ({"lr": 0.01, "x": 1}, 50, "budget=50"),
    ],
)
def test_a_suggestion_outside_the_space_or_the_budget_ends_the_study(make: Any, config, budget, fragment) -> None:
    h = make(Proposes(config, budget), max_epochs=3)
    h.register(1)
    out = h.get(1)
    assert h.ctl.stop_reason == "aborted" and h.ctl.trials == {}
    assert "Proposes.get_suggestion() returned a trial that cannot run" in h.ctl.abort_message
    assert fragment in h.ctl.abort_message and "max_epochs=3" in h.ctl.abort_message
    assert done_peers(out) == [rpc(1)]


def test_a_valid_suggestion_runs(make: Any) -> None:
    h = make(Proposes({"lr": 0.01, "x": 4}, 3), max_epochs=3)
    assert h.start(1)["config"] == {"lr": 0.01, "x": 4} and h.ctl.stop_reason is None


class Rule(AbstractEarlyStop):
    """Answers ``answer`` (an exception is raised) from the second report on."""

    def __init__(self, answer: Any) -> None:
        self.answer, self.calls = answer, 0

    def earlystop_check(self, to_check, finalized_trials, direction):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls == 1:
            return []
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (RuntimeError("bug in my stopping rule"), "raised in earlystop_check():"),
        (None, "earlystop_check() returned None; it must return the ids"),
        ("abc", "earlystop_check() returned 'abc'"),
    ],
)
def test_an_early_stop_rule_that_fails_ends_the_study_with_why(make: Any, answer, fragment) -> None:
    h = make(Proposes({"lr": 0.01, "x": 1}), earlystop=Rule(answer), max_epochs=5)
    running = h.start(1)["trial_id"]
    h.register(2)
    assert h.get(2) == []  # no other trial: worker 2 waits
    assert h.report(1, running, 0, 0.5) == "continue"
    out = h.handle(1, {"type": "report", "trial_id": running, "attempt": 1, "epoch": 1, "value": 0.6})
    assert out[0] == (rpc(1), {"type": "decision", "decision": "stop"})
    assert done_peers(out) == [rpc(2)]  # the parked worker is told the study is over
    assert h.ctl.stop_reason == "aborted" and "Rule" in h.ctl.abort_message and fragment in h.ctl.abort_message
    if isinstance(answer, Exception):
        assert "bug in my stopping rule" in h.ctl.abort_message
    trial = h.trial(running)
    assert trial.state is TrialState.STOPPED and trial.history == (0.5, 0.6) and trial.final_metric == 0.6
    h.journal.close()
    kinds = [e["event"] for e in read_journal(h.journal_path)]
    assert kinds[-1] == "experiment_end"  # nothing recorded after the study's end
