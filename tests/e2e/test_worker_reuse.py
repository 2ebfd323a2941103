"""What a worker keeps between trial runs: the datamodule, and the sanity check done."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from tiny_models import CountingBlobsDataModule, ScoredClassifier

import lightning_maggy as lm

pytestmark = pytest.mark.slow


def _search(tmp_path: Path, space: lm.Searchspace, workers: int, **kwargs):
    return lm.search(
        ScoredClassifier, space, datamodule=CountingBlobsDataModule, metric="score", direction="max",
        optimizer="grid", max_epochs=2, workers=workers, seed=0, exp_dir=tmp_path / "exp", verbose=False, **kwargs,
    )


def _setups(log: Path) -> Counter[tuple[str, str]]:
    """(pid, instance) -> setups, from the datamodule's log."""
    return Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())


def _sanity_checks(exp_dir: str) -> int:
    return sum(len(p.read_text().splitlines()) for p in Path(exp_dir).glob("trials/*/sanity_checks"))


def test_runs_with_the_same_datamodule_arguments_set_the_data_up_once_per_worker(tmp_path, monkeypatch):
    log = tmp_path / "setups.log"
    monkeypatch.setenv("SETUP_LOG", str(log))
    space = lm.Searchspace(score=lm.Categorical([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), batch_size=lm.Categorical([32]))
    result = _search(tmp_path, space, workers=2)
    assert result.counts()["COMPLETED"] == 6
    setups = _setups(log)
    assert len({pid for pid, _ in setups}) == 2  # both workers trained
    assert len(setups) == 2 and set(setups.values()) == {1}, setups  # one datamodule per worker, set up once
    assert _sanity_checks(result.exp_dir) == 2  # one per worker, in its first run


def test_other_datamodule_arguments_get_their_own_datamodule(tmp_path, monkeypatch):
    log = tmp_path / "setups.log"
    monkeypatch.setenv("SETUP_LOG", str(log))
    space = lm.Searchspace(n=lm.Categorical([96, 128]), score=lm.Categorical([0.1, 0.2]))
    result = _search(tmp_path, space, workers=1)
    assert result.counts()["COMPLETED"] == 4
    # One worker runs the grid in order (the last dimension varies fastest): a new datamodule
    # when n changes, once.
    sizes = [t.config["n"] for t in result.trials]
    changes = sum(a != b for a, b in zip(sizes, sizes[1:]))
    setups = _setups(log)
    assert changes == 1 and len(setups) == 2 and set(setups.values()) == {1}, (sizes, setups)


def test_a_new_batch_size_keeps_the_datamodule_and_its_loaders_use_the_new_size(tmp_path, monkeypatch):
    """Only the batch size changes: the worker's datamodule is set up once, and every run's
    training loader has that run's batch size."""
    setups, loaders = tmp_path / "setups.log", tmp_path / "loaders.log"
    monkeypatch.setenv("SETUP_LOG", str(setups))
    monkeypatch.setenv("LOADER_LOG", str(loaders))
    space = lm.Searchspace(batch_size=lm.Categorical([16, 32, 48]), score=lm.Categorical([0.1, 0.2]))
    result = _search(tmp_path, space, workers=1)
    assert result.counts()["COMPLETED"] == 6
    assert len(_setups(setups)) == 1 and set(_setups(setups).values()) == {1}
    used = [int(line.split()[2]) for line in loaders.read_text().splitlines()]
    assert used == [t.config["batch_size"] for t in result.trials], used


def test_the_sanity_check_runs_in_every_run_when_the_trainer_arguments_ask_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SETUP_LOG", str(tmp_path / "setups.log"))
    space = lm.Searchspace(score=lm.Categorical([0.1, 0.2, 0.3]))
    result = _search(tmp_path, space, workers=1, trainer_kwargs={"num_sanity_val_steps": 1})
    assert result.counts()["COMPLETED"] == 3
    assert _sanity_checks(result.exp_dir) == 3
