"""Bad input to ablate() gets a clear error before any worker starts, and leaves no experiment."""

from __future__ import annotations

import math

import pytest
from ablation_models import SignalData, SignalNet
from torch import nn

import lightning_maggy as lm


def _ablate(tmp_path, study=None, module=SignalNet, **kw):
    args = dict(datamodule=SignalData, metric="val_acc", max_epochs=1, hparams={"lr": 0.05}, exp_dir=tmp_path / "exp",
                verbose=False)
    args.update(kw)
    return lm.ablate(module, study, **args)


def _study(fn):
    study = lm.AblationStudy()
    fn(study)
    return study


CASES = {
    "unknown layer": (dict(study=_study(lambda s: s.model.layers.include("net.9"))), r"no submodule named 'net.9'; close names: \[.*'net.0'"),
    "prefix matches nothing": (dict(study=_study(lambda s: s.model.layers.include_groups(prefix="encoder."))), "no submodule of SignalNet has a name starting with 'encoder.'"),
    "undeclared feature": (dict(study=_study(lambda s: s.features.include("sgnal"))), r"has no feature 'sgnal'; close names: \['signal'\]"),
    "feature without data declaring any": (dict(study=_study(lambda s: s.features.include("x")), datamodule=lambda hp: None), "declares no features"),
    "custom returns no module": (dict(study=_study(lambda s: s.model.add_custom_model_generator(lambda m: m.net, "bad"))), "returned Sequential, not a LightningModule"),
    "custom raises": (dict(study=_study(lambda s: s.model.add_custom_model_generator(lambda m: 1 / 0, "boom"))), "raised ZeroDivisionError"),
    "named twice": (dict(study=_study(lambda s: s.model.layers.include("net.1"))), "named twice"),
    "seeds zero": (dict(seeds=0), r"seeds=0: expected an int >= 1"),
    "seeds duplicate list": (dict(seeds=[1, 1]), "distinct ints"),
    "hparams not json": (dict(hparams={"lr": nn.ReLU()}), "plain JSON data"),
    "hparams the module rejects": (dict(hparams={"depth": 3}), r"does not accept the hyperparameter\(s\) \['depth'\]"),
    "bad replacement": (dict(study=_study(lambda s: s.model.layers.include("net.2", replacement=3))), "neither an nn.Module"),
    "not a module class": (dict(module=lambda hp: None), "expects a LightningModule class"),
    "bad metric": (dict(metric=" val_acc"), "metric="),
    "bad direction": (dict(direction="up"), "direction="),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_before_anything_starts(tmp_path, case):
    kwargs, pattern = CASES[case]
    with pytest.raises(lm.ConfigurationError, match=pattern):
        _ablate(tmp_path, **kwargs)
    assert not (tmp_path / "exp").exists()


def test_an_undecorated_module_without_a_study_is_an_empty_study(tmp_path):
    class Plain(SignalNet):
        __maggy_ablation__ = None

    with pytest.raises(lm.ConfigurationError, match="Nothing to ablate"):
        _ablate(tmp_path, module=Plain, datamodule=lambda hp: None)


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "60"], ids=repr)
def test_ablate_refuses_a_bad_trial_timeout(tmp_path, bad):
    with pytest.raises(lm.ConfigurationError, match=r"trial_timeout=.*positive number of seconds"):
        lm.ablate(SignalNet, datamodule=SignalData, metric="val_acc", max_epochs=1, hparams={"lr": 0.05},
                  trial_timeout=bad, exp_dir=tmp_path / "exp", verbose=False)
    assert not (tmp_path / "exp").exists()
