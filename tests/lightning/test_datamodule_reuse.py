"""A worker's trial runs share a datamodule while its class and arguments stay the same."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import pytorch_lightning as pl
from tiny_models import BlobsDataModule, TinyClassifier

from lightning_maggy.lightning import kept as kept_mod
from lightning_maggy.lightning.kept import same_value
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
    kept_mod._KEPT.clear()
    yield
    kept_mod._KEPT.clear()


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
    first = build_datamodule(Counting, {"batch_size": 16, "n": 96}, reuse=True)
    _fit(first, tmp_path)
    ref = weakref.ref(first)
    del first
    second = build_datamodule(Counting, {"batch_size": 16, "n": 128}, reuse=True)
    gc.collect()
    assert ref() is None  # dropped before the next one was built: one run's memory, not two
    _fit(second, tmp_path)
    third = build_datamodule(Counting, {"batch_size": 16, "n": 96}, reuse=True)
    assert third is not second and third.calls == []


def test_a_new_batch_size_alone_keeps_the_datamodule_and_its_set_up_data(tmp_path):
    """As Lightning's batch-size finder does: the kept datamodule gets the new batch size and
    hands out loaders of that size, without running setup again."""
    first = build_datamodule(Counting, {"batch_size": 16, "n": 96}, reuse=True)
    _fit(first, tmp_path)
    train = first.train
    second = build_datamodule(Counting, {"batch_size": 24, "n": 96}, reuse=True)
    assert second is first and second.batch_size == 24
    _fit(second, tmp_path)
    assert second.train is train and second.calls == ["prepare", "setup:fit"]
    assert second.train_dataloader().batch_size == 24
    # ... and with another argument changed too, a new one
    third = build_datamodule(Counting, {"batch_size": 16, "n": 128}, reuse=True)
    assert third is not first and third.batch_size == 16


class SavedHparams(pl.LightningDataModule):
    """Holds its batch size in ``hparams`` only (``save_hyperparameters``)."""

    def __init__(self, batch_size: int = 32, n: int = 96) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.setups = 0

    def setup(self, stage: str | None = None) -> None:
        self.setups += 1
        inner = BlobsDataModule(n=self.hparams.n)
        inner.setup(stage)
        self.train, self.val = inner.train, inner.val

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        return DataLoader(self.train, batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        return DataLoader(self.val, batch_size=64)


def test_a_batch_size_held_in_saved_hparams_is_updated_there(tmp_path):
    first = build_datamodule(SavedHparams, {"batch_size": 16}, reuse=True)
    _fit(first, tmp_path)
    second = build_datamodule(SavedHparams, {"batch_size": 40}, reuse=True)
    assert second is first and second.hparams.batch_size == 40 and not hasattr(second, "batch_size")
    _fit(second, tmp_path)
    assert second.setups == 1 and second.train_dataloader().batch_size == 40


class Renamed(Counting):
    """Keeps its batch size under another name: changing the attribute would not reach it."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__(batch_size=batch_size)
        del self.batch_size
        self.bs = batch_size


class Scaled(Counting):
    """Keeps a derived batch size: not the value it was given."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__(batch_size=2 * batch_size)


class ReadOnly(Counting):
    """A batch size that cannot be set."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self._bs = batch_size

    @property
    def batch_size(self) -> int:
        return self._bs

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if hasattr(self, "_bs"):
            raise AttributeError("batch_size is fixed")


@pytest.mark.parametrize("cls", [Renamed, Scaled, ReadOnly])
def test_a_batch_size_not_held_as_given_gets_a_new_datamodule(cls):
    first = build_datamodule(cls, {"batch_size": 16}, reuse=True)
    second = build_datamodule(cls, {"batch_size": 32}, reuse=True)
    assert second is not first
    assert build_datamodule(cls, {"batch_size": 32}, reuse=True) is second  # equal arguments: kept


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


class Arrays(Counting):
    def __init__(self, weights=None, batch_size: int = 32) -> None:
        super().__init__(batch_size=batch_size)
        self.weights = weights


def test_arguments_are_compared_safely_arrays_by_their_values():
    a = build_datamodule(Arrays, {"weights": np.ones(3)}, reuse=True)
    assert build_datamodule(Arrays, {"weights": np.ones(3)}, reuse=True) is a  # numpy.array_equal
    b = build_datamodule(Arrays, {"weights": np.ones(4)}, reuse=True)
    assert b is not a
    assert build_datamodule(Arrays, {"weights": np.ones(4, dtype=np.int64)}, reuse=True) is not b
    c = build_datamodule(Arrays, {"weights": np.zeros(4), "batch_size": 8}, reuse=True)
    assert build_datamodule(Arrays, {"weights": np.zeros(4), "batch_size": 16}, reuse=True) is c


class _Ambiguous:
    """Whose == gives neither a bool nor something with one truth value."""

    def __eq__(self, other):
        return np.array([True, False])


class _Raising:
    def __eq__(self, other):
        raise TypeError("no equality")


def test_same_value_counts_what_it_cannot_compare_as_different():
    torch = pytest.importorskip("torch")
    assert same_value({"a": [np.ones(2), (1, "x")]}, {"a": [np.ones(2), (1, "x")]})
    assert not same_value([np.ones(2)], [np.ones(3)]) and not same_value(np.ones(2), [1.0, 1.0])
    assert same_value(torch.ones(2), torch.ones(2)) and not same_value(torch.ones(2), torch.ones(2).double())
    assert not same_value([1, 2], (1, 2))
    amb, err = _Ambiguous(), _Raising()
    assert same_value(amb, amb) and not same_value(amb, _Ambiguous())  # identical objects only
    assert same_value(err, err) and not same_value(err, _Raising())


class LoaderKw(pl.LightningDataModule):
    """Derives its loaders' arguments from the batch size in __init__ (and saves its
    hyperparameters): setting batch_size on a kept one would not reach its loaders."""

    def __init__(self, batch_size: int = 32, n: int = 96) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.loader_kw = {"batch_size": batch_size, "shuffle": True}
        self.setups = 0

    def setup(self, stage: str | None = None) -> None:
        self.setups += 1
        inner = BlobsDataModule(n=self.hparams.n)
        inner.setup(stage)
        self.train, self.val = inner.train, inner.val

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        return DataLoader(self.train, **self.loader_kw)

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        return DataLoader(self.val, batch_size=64)


def test_a_datamodule_deriving_more_from_its_batch_size_gets_a_new_one_with_that_size(tmp_path):
    first = build_datamodule(LoaderKw, {"batch_size": 8}, reuse=True)
    _fit(first, tmp_path)
    second = build_datamodule(LoaderKw, {"batch_size": 64}, reuse=True)
    assert second is not first and second.setups == 0
    _fit(second, tmp_path)
    assert second.train_dataloader().batch_size == 64 and second.hparams.batch_size == 64
    assert build_datamodule(LoaderKw, {"batch_size": 64}, reuse=True) is second  # equal arguments: kept
    assert first.train_dataloader().batch_size == 8  # the old one was not changed half-way


def test_a_kept_datamodule_records_its_new_batch_size_for_loggers(tmp_path):
    first = build_datamodule(SavedHparams, {"batch_size": 16}, reuse=True)
    _fit(first, tmp_path)
    assert build_datamodule(SavedHparams, {"batch_size": 40}, reuse=True) is first
    assert first.hparams_initial.batch_size == 40  # what a logger records as the run's hparams


class Numbered(Counting):
    """Numbers its instances and notes its creation time: values that differ between any two
    instances, whatever their arguments."""

    made = 0

    def __init__(self, batch_size: int = 32) -> None:
        import time

        super().__init__(batch_size=batch_size)
        self.number = Numbered.made
        Numbered.made += 1
        self.created = time.time()


class WithTransform(Counting):
    """Builds an object without a value equality in __init__."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__(batch_size=batch_size)
        self.transform = object()


def test_instance_numbers_do_not_count_but_objects_without_equality_do():
    a = build_datamodule(Numbered, {"batch_size": 16}, reuse=True)
    assert build_datamodule(Numbered, {"batch_size": 32}, reuse=True) is a and a.batch_size == 32
    b = build_datamodule(WithTransform, {"batch_size": 16}, reuse=True)
    assert build_datamodule(WithTransform, {"batch_size": 32}, reuse=True) is not b
