"""``trial_timeout=`` of search() (ablate(): tests/ablation/test_ablate_validation.py): refused with a clear error before any worker
starts, and nothing is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import lightning_maggy as lm

BAD = [0, -1.0, math.inf, math.nan, True, "60", [60]]


def _objective(hparams: dict[str, Any], reporter: Any) -> float:
    return 0.0


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_search_refuses_a_bad_trial_timeout(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(lm.ConfigurationError, match=r"trial_timeout=.*positive number of seconds"):
        lm.search(_objective, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="score", max_epochs=1,
                  optimizer="random", num_trials=1, trial_timeout=bad, exp_dir=tmp_path / "exp", verbose=False)
    assert not (tmp_path / "exp").exists()
