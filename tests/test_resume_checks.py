"""The checks a resumed call passes before any worker starts (``lightning_maggy/resume.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import lightning_maggy as lm
from lightning_maggy.driver.journal import Journal
from lightning_maggy.resume import check_same_study, open_study, settings_of


def _study(**changes: Any) -> dict[str, Any]:
    study = {
        "name": "Net",
        "kind": "module",
        "metric": "val_acc",
        "direction": "max",
        "optimizer": "ASHA",
        "optimizer_settings": settings_of(lm.ASHA(reduction_factor=3, seed=0)),
        "early_stop": "NoEarlyStop",
        "early_stop_settings": {},
        "num_trials": 9,
        "timeout": None,
        "max_epochs": 9,
        "seed": 0,
        "space": lm.Searchspace(lr=lm.Double(1e-3, 1e-1, log=True)).to_dict(),
    }
    study.update(changes)
    return json.loads(json.dumps(study))  # as experiment.json / the journal hold it


def test_the_same_study_passes_and_budgets_may_be_raised() -> None:
    check_same_study(_study(), _study(), "exp")
    check_same_study(_study(timeout=60), _study(num_trials=20, timeout=3600.0), "exp")
    check_same_study(_study(num_trials=None, timeout=60), _study(num_trials=None, timeout=None), "exp")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"metric": "val_loss"}, "metric: the study has 'val_acc', this call passes 'val_loss'"),
        ({"direction": "min"}, "direction"),
        ({"max_epochs": 27}, "max_epochs: the study has 9, this call passes 27"),
        ({"seed": 1}, "seed"),
        ({"space": lm.Searchspace(lr=lm.Double(1e-4, 1e-1, log=True)).to_dict()}, "space"),
        ({"optimizer": "RandomSearch"}, "optimizer (its type)"),
        ({"optimizer_settings": settings_of(lm.ASHA(reduction_factor=2, seed=0))},
         "optimizer (its settings), reduction_factor: the study has 3, this call passes 2"),
        ({"early_stop": "MedianStoppingRule"}, "early_stop (its type)"),
        ({"name": "OtherNet"}, "the module or function"),
        ({"num_trials": 5}, "num_trials: the study has 9, this call passes 5"),
        ({"timeout": 10.0}, "timeout: the study has no limit (None), this call passes 10.0"),
    ],
)
def test_each_difference_is_named_with_both_values(change: dict[str, Any], named: str) -> None:
    with pytest.raises(lm.ConfigurationError) as info:
        check_same_study(_study(), _study(**change), "runs/exp1")
    message = str(info.value)
    assert named in message and "resume='runs/exp1'" in message
    assert "exp_dir=" in message  # how to start a new study instead


def test_a_seed_that_differs_is_named_once() -> None:
    """The optimizer's settings hold the seed too: a new seed is one difference, not two."""
    with pytest.raises(lm.ConfigurationError) as info:
        check_same_study(_study(), _study(seed=1, optimizer_settings=settings_of(lm.ASHA(reduction_factor=3, seed=1))),
                         "exp")
    assert str(info.value).count("seed") == 1 and "seed: the study has 0, this call passes 1" in str(info.value)


def test_all_differences_are_listed_at_once() -> None:
    with pytest.raises(lm.ConfigurationError) as info:
        check_same_study(_study(), _study(metric="val_loss", max_epochs=3, num_trials=1), "exp")
    message = str(info.value)
    assert "metric:" in message and "max_epochs:" in message and "num_trials:" in message


def test_ablation_components_seeds_and_hparams_must_match() -> None:
    ablation = {"hparams": {"lr": 0.1}, "seeds": [0, 1], "components": [{"name": "fc1", "kind": "layer"}]}
    recorded = _study(study="ablation", ablation=ablation)
    check_same_study(recorded, _study(study="ablation", ablation=json.loads(json.dumps(ablation))), "exp")
    for key, value in (("seeds", [0, 1, 2]), ("hparams", {"lr": 0.2}), ("components", [])):
        with pytest.raises(lm.ConfigurationError, match=r"the ablation study \(components, seeds and hparams\)"):
            check_same_study(recorded, _study(study="ablation", ablation={**ablation, key: value}), "exp")


def test_keys_an_older_journal_did_not_record_are_not_compared() -> None:
    old = _study()
    del old["optimizer_settings"]
    check_same_study(old, _study(optimizer_settings={"anything": 1}), "exp")


def test_settings_describe_functions_by_name_not_by_address() -> None:
    def suggester(space, rng, trials):  # noqa: ANN001, ANN202
        return space.sample(rng)

    a = settings_of(lm.CurvePredictionRule(threshold=0.1))
    assert a == settings_of(lm.CurvePredictionRule(threshold=0.1)) and a["threshold"] == 0.1
    assert settings_of(lm.MedianStoppingRule(min_trials=5)) == {"min_trials": 5, "interval": 1, "grace_period": 1}
    json.dumps(settings_of(lm.ASHA(suggester=suggester)))  # plain data


def test_resume_needs_a_journal(tmp_path: Path) -> None:
    with pytest.raises(lm.ConfigurationError, match=r"does not exist.*exp_dir= to start a new study"):
        open_study(tmp_path / "nowhere", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(lm.ConfigurationError, match="holds no journal.jsonl"):
        open_study(tmp_path / "empty", None)


def test_resume_and_a_different_exp_dir_are_refused(tmp_path: Path) -> None:
    with pytest.raises(lm.ConfigurationError, match="name different directories"):
        open_study(tmp_path / "a", tmp_path / "b")


def test_a_corrupt_journal_is_refused_with_its_line_number(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("experiment_start", experiment=_study())
    journal.close()
    with open(tmp_path / "journal.jsonl", "a", encoding="utf-8") as fh:
        fh.write("not json\n" + json.dumps({"event": "timeout", "time": 1.0}) + "\n")
    with pytest.raises(lm.ConfigurationError, match="line 2 is corrupt"):
        open_study(tmp_path, tmp_path)


def test_an_intact_journal_opens(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("experiment_start", experiment=_study())
    journal.close()
    path, log = open_study(tmp_path, tmp_path)
    assert path == tmp_path and log.experiment == _study() and log.runs == 1 and log.end_reason is None


def _constant(hparams, reporter):
    return 1.0


def test_an_exp_dir_that_is_or_lies_under_a_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    for exp in (tmp_path / "a_file", tmp_path / "a_file" / "study"):
        with pytest.raises(lm.ConfigurationError, match=r"cannot be a directory: .*a_file' is a file"):
            lm.search(_constant, lm.Searchspace(x=lm.Double(0, 1)), metric="m", num_trials=1, max_epochs=1,
                      exp_dir=exp, verbose=False)
    assert (tmp_path / "a_file").read_text() == "x"


def test_an_ablation_names_the_field_that_differs_once() -> None:
    recorded = _study(study="ablation", optimizer="LOCO", optimizer_settings={"hparams": {"lr": 0.01}},
                      ablation={"hparams": {"lr": 0.01}, "seeds": [0], "components": [{"name": "head"}]})
    current = _study(study="ablation", optimizer="LOCO", optimizer_settings={"hparams": {"lr": 0.02}},
                     ablation={"hparams": {"lr": 0.02}, "seeds": [0, 1], "components": [{"name": "head"}]})
    with pytest.raises(lm.ConfigurationError) as info:
        check_same_study(recorded, current, "exp")
    problems = [line for line in str(info.value).splitlines() if line.startswith("  - ")]
    assert problems == [
        "  - the ablation study (components, seeds and hparams), hparams: the study has {'lr': 0.01}, "
        "this call passes {'lr': 0.02}",
        "  - the ablation study (components, seeds and hparams), seeds: the study has [0], this call passes [0, 1]",
    ]
