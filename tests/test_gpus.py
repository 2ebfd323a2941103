"""gpus_per_trial: the arithmetic, the device assignment, and the errors before anything starts
(the GPU path itself, and its refusals on a machine with GPUs: tests/e2e/test_gpu_trials.py)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest

import lightning_maggy as lm
from lightning_maggy.backends.local import LocalBackend, assign_devices
from lightning_maggy.gpus import check_gpus_per_trial, plan_gpus, trials_per_gpu, visible_gpus


@pytest.mark.parametrize(
    ("per_trial", "workers", "visible", "expected"),
    [(0.25, None, 1, 4), (0.25, None, 2, 8), (0.5, 3, 2, 3), (1, None, 4, 4), (2, None, 4, 2), (2, None, 5, 2),
     (1, 2, 8, 2), (0.125, None, 1, 8)],
)
def test_plan_gpus_runs_as_many_trials_as_fit(per_trial, workers, visible, expected) -> None:
    assert plan_gpus(per_trial, workers, visible) == expected


@pytest.mark.parametrize(
    ("per_trial", "workers", "visible", "message"),
    [(0.5, None, 0, "no GPU is visible"), (3, None, 2, "more GPUs per trial than the 2 visible"),
     (0.25, 5, 1, "at most 4 fit"), (1, 3, 2, "at most 2 fit")],
)
def test_plan_gpus_refuses_what_does_not_fit(per_trial, workers, visible, message) -> None:
    with pytest.raises(lm.ConfigurationError, match=message):
        plan_gpus(per_trial, workers, visible)


@pytest.mark.parametrize("bad", [0, -1, 0.3, 1.5, True, float("nan"), "1"])
def test_gpus_per_trial_must_be_whole_gpus_or_a_fraction_one_over_n(bad) -> None:
    with pytest.raises(lm.ConfigurationError, match="gpus_per_trial"):
        check_gpus_per_trial(bad)
    assert trials_per_gpu(0.25) == 4 and trials_per_gpu(2) == 1


def test_fractions_put_n_workers_on_each_gpu() -> None:
    assert assign_devices(8, gpus=2, per_worker=0.25) == {w: str(w % 2) for w in range(8)}
    assert assign_devices(4, gpus=1, per_worker=0.25) == {0: "0", 1: "0", 2: "0", 3: "0"}
    assert assign_devices(2, gpus=4, per_worker=2) == {0: "0,1", 1: "2,3"}


def test_search_refuses_gpus_it_cannot_have_before_anything_starts(tmp_path: Path) -> None:
    def fn(h, r):
        return 1.0

    space = lm.Searchspace(x=lm.Double(0, 1))
    common = dict(metric="m", max_epochs=1, num_trials=1, exp_dir=tmp_path / "exp", verbose=False)
    if visible_gpus() == 0:
        with pytest.raises(lm.ConfigurationError, match="no GPU is visible"):
            lm.search(fn, space, gpus_per_trial=0.5, **common)
    with pytest.raises(lm.ConfigurationError, match="fraction 1/n"):
        lm.search(fn, space, gpus_per_trial=0.3, **common)
    with pytest.raises(lm.ConfigurationError, match="LocalBackend"):
        lm.search(fn, space, gpus_per_trial=1, backend=LocalBackend(), **common)
    if find_spec("pyspark") is not None:  # no session is built: the check comes first
        for master in ("local[2]", None):
            with pytest.raises(lm.ConfigurationError, match=r"local master .*schedules no GPUs"):
                lm.search(fn, space, gpus_per_trial=1, backend="spark", spark_master=master, **common)
    assert not (tmp_path / "exp").exists()
