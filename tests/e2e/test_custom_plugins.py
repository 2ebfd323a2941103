"""A custom optimizer or early-stop rule through ``lm.search``, as a user writes one from the
original Maggy's developer API: set up once, and a bug in it ends the study with an
``ExperimentError`` that names it and holds the partial result."""

from __future__ import annotations

import pytest

import lightning_maggy as lm
from lightning_maggy.trial import TrialState

pytestmark = pytest.mark.slow

SPACE = lm.Searchspace(x=lm.Double(0.0, 1.0), k=lm.Integer(1, 4))


def objective(hparams, reporter):
    for step in range(3):
        reporter.broadcast(hparams["x"] * (step + 1), step=step)
    return hparams["x"] * 3


class Counting(lm.AbstractOptimizer):
    """Two fixed trials; the third proposal is ``last`` (None: the study ends)."""

    initialized = 0

    def __init__(self, last=None) -> None:
        super().__init__()
        self.last = last

    def initialize(self) -> None:
        type(self).initialized += 1
        self.queue = [{"x": 0.2, "k": 1}, {"x": 0.7, "k": 2}]

    def get_suggestion(self, trial=None):
        if self.queue:
            return self.create_trial(self.queue.pop(0), budget=self.max_epochs)
        return None if self.last is None else self.create_trial(self.last, budget=self.max_epochs)

    def finalize_experiment(self, trials) -> None:
        pass


def test_a_custom_optimizer_is_set_up_once_and_its_trials_run(tmp_path) -> None:
    Counting.initialized = 0
    result = lm.search(objective, SPACE, optimizer=Counting(), metric="m", max_epochs=3, num_trials=5, workers=1,
                       exp_dir=tmp_path / "exp", verbose=False)
    assert Counting.initialized == 1
    assert sorted(t.config["x"] for t in result.trials) == [0.2, 0.7] and result.best_metric == pytest.approx(2.1)
    # It ran out before num_trials: the result says so rather than nothing.
    assert result.stop_reason == "finished"
    assert "Counting proposed no more configurations after 2 trial(s) of num_trials=5" in result.message


def test_an_out_of_space_suggestion_ends_the_study_and_is_never_the_best(tmp_path) -> None:
    with pytest.raises(lm.ExperimentError, match="returned a trial that cannot run") as info:
        lm.search(objective, SPACE, optimizer=Counting(last={"x": 5.0, "k": 99}), metric="m", max_epochs=3, num_trials=5,
                  workers=1, exp_dir=tmp_path / "exp", verbose=False)
    assert "value 5.0 is outside" in str(info.value)
    partial = info.value.result
    assert partial is not None and all(t.config["x"] <= 1.0 for t in partial.trials)
    assert partial.best_config in ({"x": 0.2, "k": 1}, {"x": 0.7, "k": 2})


class Buggy(lm.AbstractEarlyStop):
    def earlystop_check(self, to_check, finalized_trials, direction):
        raise RuntimeError("bug in my stopping rule")


def test_an_early_stop_rule_that_raises_gives_an_experiment_error_with_the_partial_result(tmp_path) -> None:
    with pytest.raises(lm.ExperimentError, match="Buggy raised in earlystop_check") as info:
        lm.search(objective, SPACE, optimizer="random", early_stop=Buggy(), metric="m", max_epochs=3,
                  num_trials=3, workers=1, exp_dir=tmp_path / "exp", verbose=False)
    assert "bug in my stopping rule" in str(info.value)
    partial = info.value.result
    assert partial is not None and [t.state for t in partial.trials] == [TrialState.STOPPED]
