"""What a trial's function returns, read as its final metric (lightning_maggy.lightning.returns)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.lightning.returns import as_number, returned_metric


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (3, 3.0),
        (np.float32(0.25), 0.25),
        (np.int64(2), 2.0),
        (torch.tensor(0.75), 0.75),
        (torch.tensor([0.5]), 0.5),
        (np.array([[0.125]]), 0.125),
        ({"acc": 0.95, "loss": "ignored"}, 0.95),
        ({"acc": torch.tensor(0.5)}, 0.5),
        (None, None),
        (10**400, math.inf),
    ],
)
def test_accepted_returns(value, expected) -> None:
    assert returned_metric(value, "acc", strict=True) == expected
    assert returned_metric(value, "acc", strict=False) == expected


def test_non_finite_numbers_are_kept_for_the_servers_policy() -> None:
    assert math.isnan(returned_metric(float("nan"), "acc", strict=True))
    assert returned_metric(np.float64("-inf"), "acc", strict=True) == -math.inf


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abc", "returned 'abc' (type str)"),
        ("0.9", "returned '0.9' (type str)"),
        (True, "returned True (type bool)"),
        (np.bool_(True), "(type numpy.bool"),
        (torch.tensor(True), "returned tensor(True) (type torch.Tensor)"),
        ({"metric": 0.95}, "returned a dict without the metric 'acc' (its keys: 'metric')"),
        ({"acc": "high"}, "returned a dict whose 'acc' is 'high' (type str)"),
        ([0.9], "returned [0.9] (type list)"),
        (torch.ones(2, 3), "(type torch.Tensor, shape (2, 3))"),
        (1 + 2j, "(type complex)"),
    ],
)
def test_refused_returns_name_the_value_and_what_is_accepted(value, shown) -> None:
    with pytest.raises(ConfigurationError) as info:
        returned_metric(value, "acc", strict=True, who="objective(hparams, reporter)")
    message = str(info.value)
    assert message.startswith("objective(hparams, reporter) returned ") and shown in message
    assert "a dict holding the metric 'acc'" in message and "\n" not in message
    assert returned_metric(value, "acc", strict=False) is None  # a train function's: ignored


def test_as_number_calls_item_only_for_one_real_number() -> None:
    class Boxed:
        def __init__(self, value):
            self.value = value

        def item(self):
            return self.value

    assert as_number(Boxed(0.5)) == 0.5
    assert as_number(Boxed("0.5")) is None and as_number(Boxed(False)) is None
    assert as_number(np.ones(2)) is None
