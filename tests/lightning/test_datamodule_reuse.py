"""A worker's trial runs share a datamodule while its class and arguments stay the same."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import pytorch_lightning as pl
from tiny_models import BlobsDataModule, TinyClassifier

from lightning_maggy.lightning import trainer as trainer_mod
from lightning_maggy.lightning.trainer import build_datamodule


class Counting(BlobsDataModule):
    """Counts its own prepare_data and setup calls; fails its first setup when told to."""

    def __init__(self, batch_size: int = 32, n: int = 96, fail_first_setup: bool = False) -> None:
        super().__init__(batch_size=batch_size, n=n)
        self.calls: list[str] = []
        self.fail_first_setup = fail_first_setup

    def prepare_data(self) -> None:
        self.calls.append("prepare")

    def setup(self, stage: str | None = None) -> None:
        name = f"setup:{getattr(stage, 'value', stage)}"  # Lightning passes TrainerFn members
        self.calls.append(name)
        if self.fail_first_setup and self.calls.count(name) == 1:
            raise OSError("the data is not there yet")
        super().setup(stage)


class Freeing(Counting):
    def teardown(self, stage: str | None = None) -> None:
        del self.train, self.val  # what setup made is gone after every run


@pytest.fixture(autouse=True)
def _nothing_kept():
    trainer_mod._KEPT.clear()
    yield
    trainer_mod._KEPT.clear()


def _fit(dm, tmp_path, stage="fit") -> None:
    trainer = pl.Trainer(
        max_epochs=1, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    if stage == "fit":
        trainer.fit(TinyClassifier(), datamodule=dm)
    else:
        trainer.validate(TinyClassifier(), datamodule=dm)


def test_equal_arguments_share_one_datamodule_set_up_once_per_stage(tmp_path):
    first = build_datamodule(Counting, {"batch_size": 16, "lr": 0.1}, reuse=True)
    _fit(first, tmp_path)
    again = build_datamodule(Counting, {"batch_size": 16, "lr": 0.5}, reuse=True)  # lr is the module's
    assert again is first
    _fit(again, tmp_path)
    _fit(again, tmp_path, stage="validate")
    _fit(again, tmp_path, stage="validate")
    assert first.calls == ["prepare", "setup:fit", "setup:validate"]


def test_other_arguments_build_a_new_one_and_only_one_is_kept(tmp_path):
    first = build_datamodule(Counting, {"batch_size": 16}, reuse=True)
    _fit(first, tmp_path)
    ref = weakref.ref(first)
    del first
    second = build_datamodule(Counting, {"batch_size": 32}, reuse=True)
    gc.collect()
    assert ref() is None  # dropped before the next one was built: one run's memory, not two
    _fit(second, tmp_path)
    third = build_datamodule(Counting, {"batch_size": 16}, reuse=True)
    assert third is not second and third.calls == []


def test_without_reuse_every_run_builds_and_sets_up_its_own(tmp_path):
    a = build_datamodule(Counting, {"batch_size": 16})
    b = build_datamodule(Counting, {"batch_size": 16})
    assert a is not b
    _fit(a, tmp_path)
    _fit(a, tmp_path)
    assert a.calls == ["prepare", "setup:fit"] * 2


def test_a_datamodule_that_tears_down_its_data_is_never_kept(tmp_path):
    a = build_datamodule(Freeing, {"batch_size": 16}, reuse=True)
    _fit(a, tmp_path)
    b = build_datamodule(Freeing, {"batch_size": 16}, reuse=True)
    assert b is not a
    _fit(b, tmp_path)  # sets up its own data again
    assert b.calls == ["prepare", "setup:fit"]


def test_a_failed_setup_runs_again_in_the_next_run(tmp_path):
    dm = build_datamodule(Counting, {"fail_first_setup": True}, reuse=True)
    with pytest.raises(OSError, match="not there yet"):
        _fit(dm, tmp_path)
    assert build_datamodule(Counting, {"fail_first_setup": True}, reuse=True) is dm
    _fit(dm, tmp_path)
    assert dm.calls == ["prepare", "setup:fit", "setup:fit"]


def test_arguments_without_a_plain_equality_get_a_new_datamodule():
    class Arrays(Counting):
        def __init__(self, weights=None, batch_size: int = 32) -> None:
            super().__init__(batch_size=batch_size)
            self.weights = weights

    a = build_datamodule(Arrays, {"weights": np.ones(3)}, reuse=True)
    b = build_datamodule(Arrays, {"weights": np.ones(3)}, reuse=True)  # == is elementwise: ambiguous
    assert a is not b
