"""Declaring components: the decorator, the study object, merging and naming rules (pure)."""

from __future__ import annotations

import pytest

import lightning_maggy as lm
from lightning_maggy.ablation.components import ComponentKind, declared_components, declared_features
from lightning_maggy.ablation.planner import LOCO, loco_plan
from lightning_maggy.ablation.resolve import collect_components, top_level
from lightning_maggy.trial import TrialState


def strip(module):
    return module


def test_decorator_declares_every_kind_in_order():
    @lm.ablatable(layers=["enc.b2", "enc.b3"], groups={"head": "head.", "norms": ["enc.n1", "enc.n2"]},
                  custom={"no_dropout": strip})
    class Net:
        pass

    comps = declared_components(Net)
    assert [(c.name, c.kind) for c in comps] == [
        ("enc.b2", ComponentKind.LAYER), ("enc.b3", ComponentKind.LAYER),
        ("head", ComponentKind.GROUP), ("norms", ComponentKind.GROUP), ("no_dropout", ComponentKind.CUSTOM),
    ]
    assert comps[2].prefix == "head." and comps[3].layers == ("enc.n1", "enc.n2")
    assert comps[4].fn is strip


def test_feature_declaration_and_a_subclass_does_not_leak_into_its_parent():
    @lm.ablatable(features=["age", "fare"])
    class Data:
        pass

    @lm.ablatable(features=["pclass"])
    class Child(Data):
        pass

    assert declared_features(Data) == ("age", "fare")
    assert declared_features(Child()) == ("pclass",)
    assert [c.kind for c in declared_components(Data)] == [ComponentKind.FEATURE, ComponentKind.FEATURE]


def test_layers_as_a_dict_declare_replacements():
    def shortcut(block):
        return block

    @lm.ablatable(layers={"layer2.0": shortcut})
    class Net:
        pass

    (comp,) = declared_components(Net)
    assert comp.layers == ("layer2.0",) and comp.replacement is shortcut


def test_study_object_api_with_the_seed_names():
    study = lm.AblationStudy()
    study.features.include("age", "fare")
    study.model.layers.include("encoder.block2")
    study.model.layers.include_groups(prefix="head")
    study.model.layers.include_groups(["a", "b"])
    study.model.add_custom_model_generator(strip, "no_dropout")
    assert [(c.name, c.kind.value) for c in study.components] == [
        ("age", "feature"), ("fare", "feature"), ("encoder.block2", "layer"), ("head", "group"),
        ("a+b", "group"), ("no_dropout", "custom"),
    ]
    assert len(study) == 6


@pytest.mark.parametrize(
    "declare",
    [
        lambda s: s.model.layers.include(""),
        lambda s: s.model.layers.include(" padded "),
        lambda s: s.model.layers.include_groups(),
        lambda s: s.model.layers.include_groups(["a"], prefix="a"),
        lambda s: s.model.layers.include_groups([]),
        lambda s: s.model.add_custom_model_generator("not callable", "x"),
        lambda s: s.features.include("age", "age"),
    ],
    ids=["empty", "spaces", "neither", "both", "empty-list", "not-callable", "twice-in-one-call"],
)
def test_bad_declarations_are_refused(declare):
    with pytest.raises(lm.ConfigurationError):
        declare(lm.AblationStudy())


def test_a_component_named_twice_is_an_error_across_decorator_and_study():
    @lm.ablatable(layers=["net.1"])
    class Net:
        pass

    study = lm.AblationStudy()
    study.model.layers.include("net.1")
    with pytest.raises(lm.ConfigurationError, match="named twice"):
        collect_components(Net, None, study)
    with pytest.raises(lm.ConfigurationError, match="named twice"):
        study.model.layers.include_groups(["net.1"], name="net.1")


def test_base_is_not_a_component_name():
    class Net:
        pass

    study = lm.AblationStudy()
    study.model.add_custom_model_generator(lambda module: module, name="base")
    with pytest.raises(lm.ConfigurationError, match="'base' names the full model's row"):
        collect_components(Net, None, study)


def test_a_datamodule_function_has_the_features_its_datamodule_declares():
    class Net:
        pass

    @lm.ablatable(features=["proline", "alcohol"])
    class Data:
        pass

    def build(hparams):
        return Data()

    found = collect_components(Net, build, None, built=build({}))
    assert [(c.name, c.kind) for c in found] == [("proline", ComponentKind.FEATURE), ("alcohol", ComponentKind.FEATURE)]


def test_an_empty_study_is_an_error():
    class Net:
        pass

    with pytest.raises(lm.ConfigurationError, match="Nothing to ablate"):
        collect_components(Net, None, lm.AblationStudy())


def test_top_level_drops_names_inside_another():
    assert top_level(["head", "head.0", "head.0.w", "headline", "body.1"]) == ["head", "headline", "body.1"]


def test_loco_plan_runs_seed_by_seed_base_first():
    assert loco_plan(["a", "b"], [3, 4]) == [(None, 3), ("a", 3), ("b", 3), (None, 4), ("a", 4), ("b", 4)]
    with pytest.raises(lm.ConfigurationError):
        loco_plan(["a", "a"], [0])


def _drive(opt, trials):
    out = []
    while (t := opt.get_suggestion(None)) is not None:
        assert t.trial_id not in trials
        trials[t.trial_id] = t.evolve(state=TrialState.COMPLETED, history=(0.5,))
        out.append((t.component, t.seed))
    return out


def test_loco_planner_proposes_every_pair_once_and_rebuilds_from_the_records():
    opt = LOCO({"lr": 0.1}, ["a", "b"], [0, 1])
    trials: dict = {}
    opt.setup(None, num_trials=6, direction="max", max_epochs=3, trials=trials)
    first = opt.get_suggestion(None)
    assert first.config == {"lr": 0.1} and first.budget == 3 and (first.component, first.seed) == (None, 0)
    trials[first.trial_id] = first.evolve(state=TrialState.RUNNING)
    rest = _drive(opt, trials)
    assert rest == [("a", 0), ("b", 0), (None, 1), ("a", 1), ("b", 1)]
    assert len({t.trial_id for t in trials.values()}) == 6
    # A planner rebuilt over the records (a resumed study) has nothing left to propose.
    fresh = LOCO({"lr": 0.1}, ["a", "b"], [0, 1])
    fresh.setup(None, num_trials=6, direction="max", max_epochs=3, trials=dict(trials))
    assert fresh.get_suggestion(None) is None
    # Over half of the records it proposes exactly the missing pairs.
    half = dict(list(trials.items())[:3])
    again = LOCO({"lr": 0.1}, ["a", "b"], [0, 1])
    again.setup(None, num_trials=6, direction="max", max_epochs=3, trials=half)
    assert _drive(again, half) == [(None, 1), ("a", 1), ("b", 1)]


def test_a_declared_feature_missing_from_feature_names_is_a_typo_not_a_feature():
    from lightning_maggy.ablation.resolve import available_features

    @lm.ablatable(features=["prolin"])
    class Data:
        feature_names = ["alcohol", "proline"]

    assert available_features(Data(), None) == ["alcohol", "proline"]  # its columns are masked by name

    @lm.ablatable(features=["prolin"])
    class Dropping:  # leaves features out itself: its declared names are its own business
        feature_names = ["alcohol", "proline"]

        def drop_features(self, names):
            pass

    assert available_features(Dropping(), None) == ["prolin", "alcohol", "proline"]
