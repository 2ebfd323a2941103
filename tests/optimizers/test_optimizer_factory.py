"""get_optimizer and the public surface of lightning_maggy.optimizers."""

from __future__ import annotations

import pytest

import lightning_maggy.optimizers as optimizers
from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers import ASHA, AbstractOptimizer, GridSearch, Hyperband, RandomSearch, get_optimizer


def test_public_surface_is_pinned() -> None:
    assert sorted(optimizers.__all__) == sorted(
        ["ASHA", "BOHB", "GP", "Hyperband", "IDLE", "TPE", "AbstractOptimizer", "GridSearch", "Idle", "Job",
         "OptunaSampler", "RandomSearch", "get_optimizer"]
    )
    assert optimizers.IDLE is optimizers.Idle.IDLE


@pytest.mark.parametrize(
    ("name", "cls"),
    [("random", RandomSearch), ("grid", GridSearch), ("asha", ASHA), ("ASHA", ASHA),
     ("randomsearch", RandomSearch), ("gridsearch", GridSearch), ("hyperband", Hyperband),
     ("HyperBand", Hyperband)],
)
def test_names(name, cls) -> None:
    assert type(get_optimizer(name)) is cls


def test_kwargs_are_passed_to_the_constructor() -> None:
    opt = get_optimizer("asha", reduction_factor=2, resource_min=2, seed=4)
    assert isinstance(opt, ASHA) and opt.reduction_factor == 2 and opt.resource_min == 2 and opt.seed == 4
    assert get_optimizer("grid", grid_size=7).grid_size == 7  # type: ignore[attr-defined]
    hb = get_optimizer("hyperband", reduction_factor=2, brackets=2, seed=1)
    assert isinstance(hb, Hyperband) and hb.brackets == 2 and hb.reduction_factor == 2


def test_instance_and_subclass() -> None:
    opt = RandomSearch(seed=1)
    assert get_optimizer(opt) is opt
    assert isinstance(get_optimizer(ASHA, reduction_factor=4), ASHA)
    with pytest.raises(ConfigurationError, match="keyword arguments"):
        get_optimizer(opt, seed=3)


def test_abstract_class_or_bad_kwargs_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="cannot create"):
        get_optimizer(AbstractOptimizer)
    with pytest.raises(ConfigurationError, match="cannot create ASHA"):
        get_optimizer("asha", eta=3)
    with pytest.raises(ConfigurationError, match="reduction_factor=1"):
        get_optimizer("asha", reduction_factor=1)


@pytest.mark.parametrize(("name", "cls"), [("gp", "GP"), ("TPE", "TPE"), ("bohb", "BOHB")])
def test_model_based_names(name, cls) -> None:
    opt = get_optimizer(name, seed=3)
    assert type(opt) is getattr(optimizers, cls) and opt.seed == 3


@pytest.mark.parametrize("bad", ["bayes", "", 3, None, object(), str])
def test_unknown_lists_the_valid_choices(bad) -> None:
    with pytest.raises(ConfigurationError, match=r"choose one of \['random', 'grid', 'asha', 'hyperband', 'gp', 'tpe', 'bohb'\]"):
        get_optimizer(bad)
