"""What a function trial returns is its final metric: a number (int, float, NumPy scalar, a tensor
of one element) or a dict holding the study's metric; None takes the last report. Anything else
is a misconfiguration every trial would repeat: the study stops at the first one with a message
naming what was returned."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import lightning_maggy as lm

pytestmark = pytest.mark.slow

LAST_REPORT = 0.6


def _value(name: str) -> Any:
    """Built in the worker (tensors and arrays are made where they are returned)."""
    import numpy as np
    import torch

    return {
        "int": 0,
        "float": 0.95,
        "np_float32": np.float32(0.25),
        "np_int64": np.int64(0),
        "tensor_0d": torch.tensor(0.75),
        "tensor_1": torch.tensor([0.5]),
        "dict": {"acc": 0.875, "loss": "other keys are ignored"},
        "dict_tensor": {"acc": torch.tensor(0.125)},
        "none": None,
        "nan": float("nan"),
        # refused
        "str": "abc",
        "numeric_str": "0.9",
        "bool": True,
        "dict_without_metric": {"metric": 0.95},
        "dict_of_str": {"acc": "high"},
        "list": [0.9],
        "tensor_3": torch.ones(3),
    }[name]


def objective(hparams: dict[str, Any], reporter: Any) -> Any:
    reporter.broadcast(0.5, 0)
    reporter.broadcast(LAST_REPORT, 1)
    return _value(hparams["ret"])


ACCEPTED = {
    "int": 0.0,
    "float": 0.95,
    "np_float32": 0.25,
    "np_int64": 0.0,
    "tensor_0d": 0.75,
    "tensor_1": 0.5,
    "dict": 0.875,
    "dict_tensor": 0.125,
    "none": LAST_REPORT,
}


def test_accepted_returns_are_the_final_metric(tmp_path: Path) -> None:
    result = lm.search(objective, lm.Searchspace(ret=lm.Categorical([*ACCEPTED, "nan"])), metric="acc",
                       direction="max", optimizer="grid", max_epochs=2, workers=1, exp_dir=tmp_path / "exp",
                       seed=0, verbose=False)
    assert result.stop_reason == "finished"
    by_return = {t.config["ret"]: t for t in result.trials}
    for name, expected in ACCEPTED.items():
        trial = by_return[name]
        assert trial.state is lm.TrialState.COMPLETED, (name, trial.error)
        assert trial.final_metric == pytest.approx(expected), name
    nan = by_return["nan"]  # the NaN/inf policy: stopped, no final metric, never the best
    assert nan.state is lm.TrialState.STOPPED and nan.final_metric is None and "non-finite" in nan.error
    assert result.best_config == {"ret": "float"} and not math.isnan(result.best_metric)


@pytest.mark.parametrize(
    ("ret", "shown"),
    [
        ("str", "returned 'abc' (type str)"),
        ("numeric_str", "returned '0.9' (type str)"),
        ("bool", "returned True (type bool)"),
        ("dict_without_metric", "returned a dict without the metric 'acc' (its keys: 'metric')"),
        ("dict_of_str", "returned a dict whose 'acc' is 'high' (type str)"),
        ("list", "returned [0.9] (type list)"),
        ("tensor_3", "returned tensor([1., 1., 1.]) (type torch.Tensor, shape (3,))"),
    ],
)
def test_a_refused_return_stops_the_study_at_the_first_trial(tmp_path: Path, ret: str, shown: str) -> None:
    space = lm.Searchspace(ret=lm.Categorical([ret]), x=lm.Discrete([1, 2, 3]))
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(objective, space, metric="acc", direction="max", optimizer="grid", max_epochs=2, workers=1,
                  exp_dir=tmp_path / "exp", seed=0, verbose=False)
    first = str(info.value).splitlines()[0]
    assert "objective(hparams, reporter) " + shown in first
    assert "a dict holding the metric 'acc'" in first
    result = info.value.result
    assert result.stop_reason == "aborted" and len(result.trials) == 1  # not the other two
    (trial,) = result.trials
    assert trial.state is lm.TrialState.FAILED
    assert shown in trial.error


def reports_a_string(hparams: dict[str, Any], reporter: Any) -> float:
    reporter.broadcast("0.9", 0)
    return 0.9


def test_a_report_that_is_not_a_number_stops_the_study_at_the_first_trial(tmp_path: Path) -> None:
    with pytest.raises(lm.ExperimentError) as info:
        lm.search(reports_a_string, lm.Searchspace(x=lm.Discrete([1, 2, 3])), metric="acc", optimizer="grid",
                  max_epochs=2, workers=1, exp_dir=tmp_path / "exp", seed=0, verbose=False)
    assert "reporter.broadcast() got '0.9' (type str); report a number" in str(info.value).splitlines()[0]
    assert len(info.value.result.trials) == 1


def leaves_a_reporting_thread(hparams: dict[str, Any], reporter: Any) -> float:
    import threading
    import time

    def late() -> None:
        time.sleep(0.6)  # while the worker runs the next trial
        reporter.broadcast(99.0, 5)  # after the function returned: refused, never recorded

    threading.Thread(target=late).start()
    reporter.broadcast(float(hparams["x"]), 0)
    time.sleep(0.4)
    return float(hparams["x"])


def test_a_report_after_the_function_returned_is_refused_with_why(tmp_path: Path) -> None:
    result = lm.search(leaves_a_reporting_thread, lm.Searchspace(x=lm.Discrete([1, 2, 3])), metric="acc",
                       optimizer="grid", max_epochs=1, workers=1, exp_dir=tmp_path / "exp", seed=0, verbose=False)
    assert result.stop_reason == "finished" and sorted(t.final_metric for t in result.trials) == [1.0, 2.0, 3.0]
    assert all(t.history == (t.final_metric,) for t in result.trials)  # the late 99.0 recorded nowhere
    # The first trials' threads reported while the worker ran the next trial: their error is in
    # that trial's output.log.
    logs = "".join((Path(result.exp_dir) / "trials" / t.trial_id / "output.log").read_text() for t in result.trials)
    assert "has ended: a report made after its code returned (from a thread it left running?)" in logs


def fails_on_purpose(hparams: dict[str, Any], reporter: Any) -> float:
    raise ValueError("a bug in the trial's code")  # the line the traceback must show


def test_a_failed_trials_traceback_names_the_users_file_and_line(tmp_path: Path) -> None:
    """Code shipped to the workers by value keeps its file name, so the traceback shows where."""
    result = lm.search(fails_on_purpose, lm.Searchspace(x=lm.Discrete([1])), metric="acc", optimizer="grid",
                       max_epochs=1, workers=1, max_failures=5, exp_dir=tmp_path / "exp", seed=0, verbose=False)
    (trial,) = result.trials
    assert trial.state is lm.TrialState.FAILED
    assert f'File "{__file__}", line' in trial.error and "in fails_on_purpose" in trial.error
    assert 'raise ValueError("a bug in the trial\'s code")  # the line the traceback must show' in trial.error
