"""How local workers share GPUs (CUDA_VISIBLE_DEVICES per worker)."""

from __future__ import annotations

from lightning_maggy.backends.local import assign_devices


def test_one_gpu_per_worker_when_there_are_enough():
    assert assign_devices(4, gpus=4) == {0: "0", 1: "1", 2: "2", 3: "3"}


def test_more_workers_than_gpus_share_them_round_robin():
    assert assign_devices(4, gpus=2) == {0: "0", 1: "1", 2: "0", 3: "1"}


def test_several_gpus_per_worker():
    assert assign_devices(2, gpus=4, per_worker=2) == {0: "0,1", 1: "2,3"}
    assert assign_devices(3, gpus=2, per_worker=4) == {0: "0,1", 1: "0,1", 2: "0,1"}


def test_no_gpus_leaves_the_environment_alone():
    assert assign_devices(3, gpus=0) == {0: None, 1: None, 2: None}


def test_zero_gpus_per_worker_hides_every_gpu() -> None:
    # "" (not None): the variable is set empty, so CUDA sees no device even on a GPU machine.
    assert assign_devices(3, gpus=4, per_worker=0) == {0: "", 1: "", 2: ""}
    assert assign_devices(2, gpus=0, per_worker=0) == {0: "", 1: ""}
