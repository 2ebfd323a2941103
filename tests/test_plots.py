"""SearchResult.plot() and the data behind its figures: best_so_far, infer_rungs, importance."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import lightning_maggy as lm
from lightning_maggy.importance import MIN_IMPORTANCE_TRIALS, importance
from lightning_maggy.plots import Report, best_so_far, infer_rungs
from lightning_maggy.results import SearchResult
from lightning_maggy.trial import Trial, TrialState, best_trial

pytest.importorskip("matplotlib")

NAN = float("nan")
T0 = 1_700_000_000.0


def _trial(i: int, history: list[float], state: TrialState, budget: int, final: float | None = "last",  # type: ignore[assignment]
           start: float | None = None, end: float | None = None) -> Trial:
    finite = [v for v in history if not math.isnan(v)]
    if final == "last":
        final = history[-1] if history and not math.isnan(history[-1]) else (finite[-1] if finite else None)
    return Trial.create({"lr": 10 ** (-1 - i % 3), "act": ["relu", "gelu"][i % 2], "units": 8 * (i + 1)}, budget=budget).evolve(
        state=state, history=tuple(history), final_metric=final, created=start, started=start, finished=end
    )


def asha_like(direction: str = "max") -> list[Trial]:
    """Rungs 1, 3, 9: four trials stopped at the bottom rung, two promoted once, one to the top;
    a trial paused at rung 3 when the study ended; a FAILED one and one stopped for NaN."""
    sign = 1.0 if direction == "max" else -1.0
    specs = [  # (history, state, budget)
        ([0.50], TrialState.STOPPED, 1),
        ([0.62, 0.70, 0.74], TrialState.STOPPED, 3),
        ([0.40], TrialState.STOPPED, 1),
        ([0.66, 0.71, 0.79, 0.80, 0.83, 0.85, 0.84, 0.86, 0.82], TrialState.COMPLETED, 9),
        ([0.30], TrialState.STOPPED, 1),
        ([0.55, NAN, 0.60], TrialState.PAUSED, 3),
        ([0.45, 0.90], TrialState.FAILED, 3),  # failed: never scored, however good its history
        ([0.35], TrialState.STOPPED, 1),
        ([0.58, NAN], TrialState.STOPPED, 3),  # the NaN/inf policy stopped it: no final metric
    ]
    trials = []
    for i, (history, state, budget) in enumerate(specs):
        values = [sign * v for v in history]
        final = None if i == 8 else "last"
        trials.append(_trial(i, values, state, budget, final, start=T0 + 10 * i, end=T0 + 10 * i + 5 * len(history)))
    return trials


def _result(trials: list[Trial], exp_dir: Path, direction: str = "max", scope: str = "last") -> SearchResult:
    return SearchResult(trials=trials, metric="val_acc" if direction == "max" else "val_loss", direction=direction,
                        exp_dir=str(exp_dir), stop_reason="finished", best_trial=best_trial(trials, direction, scope),
                        scope=scope)


@pytest.mark.parametrize("direction", ["max", "min"])
@pytest.mark.parametrize("scope", ["last", "all"])
def test_best_so_far_is_monotone_and_ends_at_the_best_metric(direction: str, scope: str, tmp_path: Path) -> None:
    trials = asha_like(direction)
    result = _result(trials, tmp_path, direction, scope)
    bsf = best_so_far(trials, direction, scope)
    steps = np.diff(bsf.value)
    assert (steps >= 0).all() if direction == "max" else (steps <= 0).all()
    assert bsf.value[-1] == result.best_metric
    assert (np.diff(bsf.time) >= 0).all() and (np.diff(bsf.epochs) >= 0).all()
    assert bsf.time[0] >= 0 and bsf.epochs[-1] <= sum(t.epochs_done for t in trials)
    # FAILED and NaN-stopped trials have no score: no point
    assert set(bsf.trial_ids) == {t.trial_id for t in trials} - {trials[6].trial_id, trials[8].trial_id}
    best = 0.86 if scope == "all" else 0.82
    assert result.best_metric == pytest.approx(best if direction == "max" else -best)


def test_best_so_far_series_by_hand() -> None:
    trials = asha_like("max")
    bsf = best_so_far(trials, "max", "last", start=T0)
    # trial i ends at 10 i + 5 len(history) s: 5, 25, 25, 75, 45, 65, (70), 75, (90); ties keep
    # the list order
    assert bsf.trial_ids == tuple(trials[i].trial_id for i in (0, 1, 2, 4, 5, 3, 7))
    np.testing.assert_allclose(bsf.time, [5, 25, 25, 45, 65, 75, 75])
    np.testing.assert_allclose(bsf.score, [0.50, 0.74, 0.40, 0.30, 0.60, 0.82, 0.35])
    np.testing.assert_allclose(bsf.value, [0.50, 0.74, 0.74, 0.74, 0.74, 0.82, 0.82])
    # without the journal a trial's epochs count when it ends: the FAILED trial's 2 epochs at
    # 70 s too (the NaN trial's 2 at 90 s come after the last score)
    np.testing.assert_allclose(bsf.epochs, [1, 4, 5, 6, 9, 20, 21])


def test_best_so_far_times_scores_by_the_journal_reports() -> None:
    a = _trial(0, [0.5, 0.9, 0.7], TrialState.COMPLETED, 3, start=T0, end=T0 + 100)
    b = _trial(1, [0.6, 0.8], TrialState.COMPLETED, 2, start=T0, end=T0 + 100)
    reports = [Report(T0 + 1, a.trial_id, 0, 0.5), Report(T0 + 2, b.trial_id, 0, 0.6),
               Report(T0 + 3, a.trial_id, 1, 0.9), Report(T0 + 4, b.trial_id, 1, 0.8),
               Report(T0 + 5, a.trial_id, 2, 0.7)]
    last = best_so_far([a, b], "max", "last", reports=reports, start=T0)
    assert last.trial_ids == (b.trial_id, a.trial_id)  # b's last report came first
    np.testing.assert_allclose(last.time, [4, 5])
    np.testing.assert_allclose(last.epochs, [4, 5])
    np.testing.assert_allclose(last.value, [0.8, 0.8])
    every = best_so_far([a, b], "max", "all", reports=reports, start=T0)
    assert every.trial_ids == (a.trial_id, b.trial_id)  # a's best epoch (0.9) was reported at 3 s
    np.testing.assert_allclose(every.time, [3, 4])
    np.testing.assert_allclose(every.value, [0.9, 0.9])


def test_best_so_far_without_timestamps_keeps_the_list_order() -> None:
    trials = [_trial(i, h, TrialState.COMPLETED, 2) for i, h in enumerate([[0.3, 0.4], [0.2], [0.5, 0.45]])]
    bsf = best_so_far(trials, "min", "last")
    assert np.isnan(bsf.time).all()
    np.testing.assert_allclose(bsf.epochs, [2, 3, 5])
    np.testing.assert_allclose(bsf.value, [0.4, 0.2, 0.2])


def test_infer_rungs_from_the_settings_else_the_trial_budgets() -> None:
    trials = asha_like()
    asha = {"optimizer": "ASHA", "optimizer_settings": {"reduction_factor": 3, "resource_min": 1, "resource_max": None},
            "max_epochs": 27}
    assert infer_rungs(trials, asha) == ([1, 3, 9, 27], "ASHA settings in experiment.json")
    hyperband = {"optimizer": "Hyperband", "max_epochs": 10,
                 "optimizer_settings": {"reduction_factor": 2, "resource_min": 2, "resource_max": 8, "brackets": None}}
    assert infer_rungs(trials, hyperband)[0] == [2, 4, 8]
    assert infer_rungs(trials) == ([1, 3, 9], "distinct trial budgets")
    assert infer_rungs(trials, {"optimizer": "RandomSearch", "optimizer_settings": {"seed": 0}})[0] == [1, 3, 9]
    uniform = [t.evolve(budget=9) for t in trials]
    assert infer_rungs(uniform) == ([], "")


def synthetic(n: int = 40, seed: int = 0) -> tuple[list[Trial], lm.Searchspace]:
    """``lr`` drives the metric (a peak at 1e-2 on a log scale), ``noise`` and ``act`` do not."""
    rng = np.random.default_rng(seed)
    space = lm.Searchspace(lr=lm.Double(1e-4, 1.0, log=True), noise=lm.Double(0.0, 1.0),
                           act=lm.Categorical(["relu", "gelu", "tanh"]))
    trials = []
    for _ in range(n):
        config = space.sample(rng)
        value = 0.9 - 0.1 * (math.log10(config["lr"]) + 2) ** 2 + rng.normal(0, 0.01)
        trials.append(Trial.create(config, budget=3).evolve(state=TrialState.COMPLETED, history=(value,), final_metric=value))
    trials.append(Trial.create(space.sample(rng), budget=3).evolve(state=TrialState.FAILED))
    return trials, space


@pytest.mark.parametrize("method", ["forest", "eta"])
@pytest.mark.parametrize("with_space", [True, False])
def test_importance_ranks_the_driving_hyperparameter_first(method: str, with_space: bool) -> None:
    if method == "forest":
        pytest.importorskip("sklearn")
    trials, space = synthetic()
    imp = importance(trials, "max", method=method, space=space if with_space else None)
    assert imp.method == method and imp.n_trials == 40  # the FAILED trial is left out
    assert imp.names[0] == "lr" and set(imp.names) == {"lr", "noise", "act"}
    scores = dict(zip(imp.names, imp.scores))
    assert scores["lr"] > 0.5 and scores["lr"] > 5 * max(scores["noise"], scores["act"], 0.01)
    assert list(imp.scores) == sorted(imp.scores, reverse=True)


def test_importance_at_a_budget_and_below_five_trials() -> None:
    trials, _ = synthetic(20)
    flat = [t.evolve(history=(0.5, t.final_metric), budget=2) for t in trials]  # the same value at epoch 1
    at_one = importance(flat, "max", budget=1, method="eta")
    assert at_one.budget == 1 and at_one.n_trials == 20 and (at_one.scores == 0).all()
    final = importance(flat, "max", method="eta")
    assert final.budget is None and final.names[0] == "lr" and final.scores[0] > 0.5
    with pytest.raises(ValueError, match="got 0"):  # no trial trained 3 epochs
        importance(flat, "max", budget=3)
    with pytest.raises(ValueError, match=f"at least {MIN_IMPORTANCE_TRIALS}"):
        importance(trials[:4], "max")
    with pytest.raises(ValueError, match="method"):
        importance(trials, "max", method="shap")


def test_importance_falls_back_to_the_correlation_ratio_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sklearn", "sklearn.ensemble", "sklearn.inspection"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    trials, _ = synthetic()
    imp = importance(trials, "max")
    assert imp.method == "eta" and imp.names[0] == "lr"


def _check_png(path: str, width: int, height: int) -> None:
    from matplotlib.image import imread

    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (height, width) and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # something drawn, not a blank canvas


@pytest.mark.parametrize("direction,scope", [("max", "last"), ("min", "all")])
def test_plot_writes_three_pngs(direction: str, scope: str, tmp_path: Path) -> None:
    trials, _ = synthetic(12)
    budgets = [t.evolve(budget=3 if i % 3 else 1) for i, t in enumerate(trials)]
    result = _result(asha_like(direction) + budgets, tmp_path, direction, scope)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="plot")  # no "plot(): no importance plot" warning
        files = result.plot()
    assert set(files) == {"history", "curves", "importance"}
    for key, size in {"history": (1100, 420), "curves": (800, 480)}.items():
        assert files[key] == str(tmp_path / f"{key}.png")
        _check_png(files[key], *size)
    _check_png(files["importance"], 700, 360)  # 4 bars (lr, act, units, noise): 0.45 * 4 + 1.8 inches


def test_plot_reads_the_rungs_and_space_of_experiment_json_and_writes_into_path(tmp_path: Path) -> None:
    trials, space = synthetic(10)
    experiment = {"optimizer": "ASHA", "max_epochs": 4, "space": space.to_dict(),
                  "optimizer_settings": {"reduction_factor": 2, "resource_min": 1, "resource_max": None}}
    (tmp_path / "experiment.json").write_text(json.dumps(experiment))
    result = _result(trials, tmp_path)
    files = result.plot(path=tmp_path / "figures")
    assert set(files) == {"history", "curves", "importance"}
    assert all(Path(p).parent == tmp_path / "figures" for p in files.values())
    _check_png(files["importance"], 700, 315)  # the space's 3 hyperparameters


def test_plot_leaves_out_the_importance_below_five_scored_trials(tmp_path: Path) -> None:
    result = _result(asha_like()[:4], tmp_path)
    with pytest.warns(UserWarning, match="no importance plot"):
        files = result.plot()
    assert set(files) == {"history", "curves"} and not (tmp_path / "importance.png").exists()


def test_plot_of_a_study_without_scores_still_draws(tmp_path: Path) -> None:
    failed = [_trial(i, [], TrialState.FAILED, 3) for i in range(2)]
    with pytest.warns(UserWarning):
        files = _result(failed, tmp_path).plot()
    _check_png(files["history"], 1100, 420)
    _check_png(files["curves"], 800, 480)


def test_plot_without_matplotlib_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'lightning_maggy\[plot\]'"):
        _result(asha_like(), tmp_path).plot()
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_plot_of_a_real_tiny_asha_search(tmp_path: Path) -> None:
    from tiny_models import BlobsDataModule, TinyClassifier

    space = lm.Searchspace(lr=lm.Double(1e-3, 0.5, log=True), hidden=lm.Integer(4, 32, log=True))
    result = lm.search(TinyClassifier, space, datamodule=BlobsDataModule, metric="val_acc", direction="max",
                       optimizer=lm.ASHA(reduction_factor=2), num_trials=6, max_epochs=2, workers=1,
                       verbose=False, exp_dir=str(tmp_path / "exp"), seed=0)
    files = result.plot()
    assert set(files) == {"history", "curves", "importance"}
    for path in files.values():
        assert Path(path).parent == tmp_path / "exp"
        assert Path(path).stat().st_size > 5000
    from lightning_maggy.plots import _read_study

    experiment, start, reports = _read_study(result.exp_dir)
    assert infer_rungs(result.trials, experiment) == ([1, 2], "ASHA settings in experiment.json")
    bsf = best_so_far(result.trials, "max", result.scope, reports=reports, start=start)
    assert bsf.value[-1] == result.best_metric and bsf.epochs[-1] <= len(reports)
    assert len(reports) == sum(t.epochs_done for t in result.trials)
    assert (bsf.time > 0).all()
