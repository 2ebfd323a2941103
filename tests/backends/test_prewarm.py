"""lm.prewarm() in a module that a trial's code imports: it must not start a forkserver of its
own in the worker (real worker processes)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import lightning_maggy as lm

pytestmark = pytest.mark.slow


def test_prewarm_in_a_module_a_trial_imports_starts_no_forkserver_in_the_worker(tmp_path: Path, monkeypatch) -> None:
    # A module with lm.prewarm() at its top, as the examples have, imported by the trial's code
    # in the worker (the trial's own function travels by value and does not import it).
    (tmp_path / "user_helpers.py").write_text("import lightning_maggy as lm\n\nlm.prewarm()\n")
    (tmp_path / "user_trials.py").write_text(textwrap.dedent('''
        def objective(config, reporter):
            import multiprocessing.forkserver as fs

            import user_helpers  # noqa: F401

            # 1.0: the import above started no forkserver in this worker.
            return 1.0 if fs._forkserver._forkserver_pid is None else 0.0
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_trials", None)
    import user_trials

    result = lm.search(
        user_trials.objective, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random",
        num_trials=2, max_epochs=1, workers=1, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert [t.final_metric for t in result.trials] == [1.0, 1.0]


def _read_env(config, reporter):
    import os

    return float(os.environ.get("MAGGY_TEST_SETTING", "-1"))


def test_workers_see_the_environment_of_the_search_not_that_of_the_prewarmed_forkserver(tmp_path, monkeypatch):
    lm.prewarm()  # the forkserver starts now, before the setting exists
    monkeypatch.setenv("MAGGY_TEST_SETTING", "0.25")  # e.g. credentials set in a notebook cell
    result = lm.search(
        _read_env, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", optimizer="random",
        num_trials=2, max_epochs=1, workers=1, exp_dir=tmp_path / "exp", verbose=False,
    )
    assert [t.final_metric for t in result.trials] == [0.25, 0.25]
