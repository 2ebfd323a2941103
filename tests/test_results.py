"""The files a study leaves behind, read back: the TensorBoard HParams summary; the summary table."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from lightning_maggy.results import SearchResult, write_result
from lightning_maggy.trial import Trial, TrialState

REPO = Path(__file__).resolve().parents[1]


def _result(exp: Path) -> SearchResult:
    done = Trial.create({"lr": 0.1, "act": "relu", "bn": True}, budget=3).evolve(
        state=TrialState.COMPLETED, history=(0.5, 0.7, 0.8), final_metric=0.8
    )
    failed = Trial.create({"lr": 0.2, "act": "gelu", "bn": False}, budget=3).evolve(state=TrialState.FAILED)
    return SearchResult(trials=[done, failed], metric="val_acc", direction="max", exp_dir=str(exp),
                        stop_reason="finished", best_trial=done)


def test_the_hparams_summary_reads_back_with_configs_and_metrics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    result = _result(tmp_path)
    write_result(result)
    done = result.trials[0]
    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == [done.trial_id]  # the failed trial has no metric: no run
    (events_file,) = list((tmp_path / "tensorboard" / done.trial_id).iterdir())
    scalars, plugin = {}, {}
    for record in RawEventFileLoader(str(events_file)).Load():
        event = Event.FromString(record)
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                plugin[value.tag] = data
            else:
                scalars[value.tag] = value.simple_value
    assert scalars == {"hparam/val_acc": 0.800000011920929, "hparam/epochs": 3.0}
    start = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert start["lr"].number_value == 0.1 and start["act"].string_value == "relu" and start["bn"].bool_value
    experiment = plugin["_hparams_/experiment"].experiment
    assert {i.name for i in experiment.hparam_infos} == {"lr", "act", "bn"}
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/val_acc", "hparam/epochs"]


def test_writing_the_result_does_not_import_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from test_results import _result
        from lightning_maggy.results import write_result
        write_result(_result(Path({str(tmp_path)!r})))
        print("torch imported:", "torch" in sys.modules)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch imported: False" in out.stdout
    assert (tmp_path / "result.json").exists() and any((tmp_path / "tensorboard").iterdir())


def test_the_summary_lists_unranked_trials_only_when_asked(tmp_path: Path) -> None:
    result = _result(tmp_path)
    running = Trial.create({"lr": 0.3, "act": "relu", "bn": False}, budget=3).evolve(
        state=TrialState.RUNNING, history=(0.4,)
    )
    result.trials.append(running)
    ranked = result.summary()
    assert result.trials[0].trial_id in ranked and running.trial_id not in ranked
    assert result.trials[1].trial_id not in ranked  # failed: no score
    lines = result.summary(top=None, unranked=True).splitlines()
    assert lines[0].startswith("3 trials (1 running, 1 completed, 1 failed)")
    rows = lines[2:]
    assert [row.split()[0] for row in rows] == [result.trials[0].trial_id, result.trials[1].trial_id, running.trial_id]
    assert rows[0].split()[1:4] == ["COMPLETED", "3", "0.8"] and rows[0].endswith("lr=0.1, act=relu, bn=True")
    assert rows[1].split()[1:4] == ["FAILED", "0", "-"]
    assert rows[2].split()[1:4] == ["RUNNING", "1", "(0.4)"] and rows[2].endswith("lr=0.3, act=relu, bn=False")
    assert len(result.summary(top=0, unranked=True).splitlines()) == 4  # header, column names, 2 unranked


def test_the_summary_columns_stay_aligned_under_a_long_metric_label(tmp_path: Path) -> None:
    import dataclasses

    result = dataclasses.replace(_result(tmp_path), metric="validation_accuracy_macro", scope="all")
    header, *rows = result.summary(top=None, unranked=True).splitlines()[1:]
    end = header.index("config")  # every row's config starts where the header's does
    assert header[:end].rstrip().endswith("validation_accuracy_macro (best epoch)")
    assert all(row[end - 2:end] == "  " and row[end] != " " for row in rows), [header, *rows]


def _score(hparams, reporter):
    for step in range(reporter.budget):
        reporter.broadcast(hparams["x"] * (step + 1), step)
    return hparams["x"] * reporter.budget


def test_a_studys_result_loads_back_from_its_folder(tmp_path: Path) -> None:
    import pytest

    import lightning_maggy as lm

    result = lm.search(_score, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", direction="min", num_trials=4,
                       max_epochs=2, workers=1, seed=3, exp_dir=tmp_path / "exp", verbose=False, scope="all")
    loaded = lm.SearchResult.load(tmp_path / "exp")
    assert loaded.stop_reason == "finished" and loaded.scope == "all"  # as the study ranked them
    assert (loaded.metric, loaded.direction) == ("m", "min")
    assert {t.trial_id: (t.state, t.history, t.final_metric) for t in loaded.trials} == {
        t.trial_id: (t.state, t.history, t.final_metric) for t in result.trials
    }
    assert loaded.best_trial.trial_id == result.best_trial.trial_id and loaded.best_metric == result.best_metric
    assert lm.SearchResult.load(tmp_path / "exp", scope="last").scope == "last"
    with pytest.raises(lm.ConfigurationError, match="holds no study journal"):
        lm.SearchResult.load(tmp_path)
    with pytest.raises(lm.ConfigurationError, match=r"scope='best' must be one of \['last', 'all'\]"):
        lm.SearchResult.load(tmp_path / "exp", scope="best")


def test_a_study_without_trials_reads_as_an_empty_table(tmp_path: Path) -> None:
    empty = SearchResult(trials=[], metric="val_acc", direction="max", exp_dir=str(tmp_path), stop_reason="timeout",
                         best_trial=None)
    assert empty.summary().startswith("0 trials; stop reason: timeout;")
    frame = empty.to_pandas()
    assert len(frame) == 0 and "val_acc" in frame.columns and "state" in frame.columns


def test_the_summary_of_an_ablation_names_each_runs_component_and_seed(tmp_path: Path) -> None:
    runs = [Trial.create({"lr": 0.05}, budget=1, component=c, seed=s).evolve(
        state=TrialState.COMPLETED, history=(v,), final_metric=v) for c, s, v in ((None, 0, 0.9), ("fc1", 0, 0.7))]
    text = SearchResult(trials=runs, metric="val_acc", direction="max", exp_dir=str(tmp_path), stop_reason="finished",
                        best_trial=runs[0]).summary()
    assert "0.9  base, seed 0; lr=0.05" in text and "0.7  without fc1, seed 0; lr=0.05" in text
