"""The ``make`` fixture of the controller tests (see ``controller_harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_harness import Harness

from lightning_maggy.optimizers import AbstractOptimizer


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def factory(optimizer: AbstractOptimizer, **kwargs: Any) -> Harness:
        h = Harness(tmp_path / f"exp{len(made)}", optimizer, **kwargs)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.journal.close()
