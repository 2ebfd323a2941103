"""get_earlystop and the public surface of lightning_maggy.earlystop."""

from __future__ import annotations

import pytest

import lightning_maggy.earlystop as earlystop
from lightning_maggy.earlystop import (
    AbstractEarlyStop,
    CurvePredictionRule,
    MedianStoppingRule,
    NoEarlyStop,
    get_earlystop,
)
from lightning_maggy.exceptions import ConfigurationError


def test_public_surface_is_pinned() -> None:
    assert sorted(earlystop.__all__) == [
        "AbstractEarlyStop", "CurvePredictionRule", "MedianStoppingRule", "NoEarlyStop", "get_earlystop"
    ]


def test_names_and_objects() -> None:
    assert isinstance(get_earlystop(None), NoEarlyStop)
    assert isinstance(get_earlystop("none"), NoEarlyStop)
    assert isinstance(get_earlystop("Median"), MedianStoppingRule)
    assert get_earlystop("median", min_trials=5).min_trials == 5  # type: ignore[attr-defined]
    rule = MedianStoppingRule(interval=2)
    assert get_earlystop(rule) is rule
    assert isinstance(get_earlystop(MedianStoppingRule), MedianStoppingRule)
    assert get_earlystop(None).earlystop_check({}, [], "max") == []
    assert isinstance(get_earlystop("curve"), CurvePredictionRule)
    assert get_earlystop(" Curve ", threshold=0.2).threshold == 0.2  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["asha", "", 3, object(), AbstractEarlyStop])
def test_unknown_is_a_configuration_error(bad) -> None:
    with pytest.raises(ConfigurationError, match=r"\['none', 'median', 'curve'\]|cannot create"):
        get_earlystop(bad)


def test_kwargs_with_an_instance_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="keyword arguments"):
        get_earlystop(MedianStoppingRule(), min_trials=2)
