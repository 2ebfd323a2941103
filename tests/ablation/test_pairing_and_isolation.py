"""What a user's study relies on beyond the happy path: a component's trial differs from the base
trial by the component alone (the same random stream, no change leaking into other trials), names
resolve as written (indices, modules registered twice, inherited declarations), the checks
explain what they refuse, and a finished study's table can be loaded from its folder."""

from __future__ import annotations

import json
import random
import shutil
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from ablation_models import FEATURES, SignalData, SignalNet, make_signal_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_maggy as lm
from lightning_maggy.ablation.api import FreshDataModules
from lightning_maggy.ablation.components import Component, ComponentKind, prefix_matches
from lightning_maggy.ablation.features import leave_out_features
from lightning_maggy.ablation.resolve import collect_components, resolve_components
from lightning_maggy.ablation.surgery import apply_model_component, leave_out

# -- models ---------------------------------------------------------------------------------------


class Classifier(pl.LightningModule):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())
        self.log("val_loss", nn.functional.cross_entropy(logits, y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.bn = nn.BatchNorm1d(d)

    def forward(self, x):
        return x + torch.relu(self.bn(self.lin(x)))


class Blocks(Classifier):
    """Twelve residual blocks in a ModuleList: ``blocks.1`` and ``blocks.10`` both exist."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(len(FEATURES), 8)
        self.blocks = nn.ModuleList([Block(8) for _ in range(12)])
        self.heads = nn.ModuleDict({"main": nn.Linear(8, 2)})

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.heads["main"](h)


class Aliased(Classifier):
    """One layer registered under two names, each used once in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(len(FEATURES), 8)
        self.shared = nn.Linear(8, 8)
        self.alias = self.shared
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.alias(torch.relu(self.shared(self.inp(x))))))


class Dropping(Classifier):
    """Dropout and an Identity slot: a no-op component must leave every random draw as it was."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(len(FEATURES), 16)
        self.drop = nn.Dropout(0.3)
        self.slot = nn.Identity()
        self.b = nn.Linear(16, 2)

    def forward(self, x):
        return self.b(self.slot(self.drop(torch.relu(self.a(x)))))


class Flagged(Dropping):
    use_hidden = True


def unchanged(module):
    return module


def without_hidden_for_every_instance(module):
    type(module).use_hidden = False
    return module


SWITCH = True


def flip_a_global(module):
    global SWITCH
    SWITCH = False
    return module


class DroppingData(pl.LightningDataModule):
    """Leaves out its own columns (``drop_features``: it zeroes them)."""

    feature_names = FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.keep = list(range(len(FEATURES)))

    def drop_features(self, names):
        self.keep = [i for i in self.keep if FEATURES[i] not in names]

    def setup(self, stage=None):
        x, y = make_signal_data(n=400)
        for i in range(len(FEATURES)):
            if i not in self.keep:
                x[:, i] = 0.0
        self.train, self.val = TensorDataset(x[:300], y[:300]), TensorDataset(x[300:], y[300:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=50, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=100)


def _resolve(module_cls, study, datamodule=None):
    return resolve_components(collect_components(module_cls, datamodule, study), module_cls(), datamodule)


def _study(fn):
    study = lm.AblationStudy()
    fn(study)
    return study


# -- names ----------------------------------------------------------------------------------------


def test_an_index_prefix_selects_that_index_not_the_ones_that_start_with_its_digits():
    assert [n for n in ["blocks.1", "blocks.1.bn", "blocks.10", "blocks.11.lin"] if prefix_matches(n, "blocks.1")] == [
        "blocks.1", "blocks.1.bn"]
    assert prefix_matches("conv1", "conv") and prefix_matches("heads", "head") and not prefix_matches("head", "heads")
    (group,) = _resolve(Blocks, _study(lambda s: s.model.layers.include_groups(prefix="blocks.1", name="b1")))
    assert group.layers == ("blocks.1",)
    (group,) = _resolve(Blocks, _study(lambda s: s.model.layers.include_groups(prefix="blocks.1.")))
    assert group.layers == ("blocks.1.lin", "blocks.1.bn")


def test_modulelist_and_moduledict_members_are_replaced_by_their_indexed_names():
    module = Blocks()
    for name in ("blocks.3", "blocks.10.bn", "heads.main"):
        (comp,) = _resolve(Blocks, _study(lambda s, n=name: s.model.layers.include(n)))
        if name == "heads.main":
            with pytest.raises(lm.AblationError, match="'heads.main' maps input shape"):
                apply_model_component(module, SignalData(), comp)
            continue
        apply_model_component(module, SignalData(), comp)
        assert isinstance(module.get_submodule(name), nn.Identity)
    assert isinstance(module.blocks[1], Block) and isinstance(module.blocks[10].lin, nn.Linear)


def test_a_layer_registered_under_two_names_resolves_by_either_and_a_lone_name_warns():
    with pytest.warns(UserWarning, match=r"'alias' is also registered as \['shared'\].*still runs it there"):
        (comp,) = _resolve(Aliased, _study(lambda s: s.model.layers.include("alias")))
    module = apply_model_component(Aliased(), SignalData(), comp)
    assert isinstance(module.alias, nn.Identity) and isinstance(module.shared, nn.Linear)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (group,) = _resolve(Aliased, _study(lambda s: s.model.layers.include_groups(["shared", "alias"], name="both")))
    module = apply_model_component(Aliased(), SignalData(), group)
    assert isinstance(module.alias, nn.Identity) and isinstance(module.shared, nn.Identity)


def test_an_inherited_declaration_that_no_longer_fits_names_the_class_it_comes_from():
    @lm.ablatable(layers=["net.1"])
    class Parent(SignalNet):
        pass

    class Child(Parent):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(len(FEATURES), 2))

    with pytest.raises(lm.ConfigurationError, match=r"\(from @ablatable on Parent, which Child inherits\): Child has no submodule named 'net.1'"):
        _resolve(Child, None)
    assert [c.name for c in _resolve(Parent, None)] == ["net.1"]


def test_feature_names_set_in_setup_are_explained():
    class LateNames(pl.LightningDataModule):
        def setup(self, stage=None):
            self.feature_names = FEATURES

    with pytest.raises(lm.ConfigurationError, match=r"set it in __init__ or on the class, not in setup\(\)"):
        resolve_components([Component("signal", ComponentKind.FEATURE, features=("signal",))], SignalNet(), LateNames())


def test_a_list_of_seeds_with_seed_is_refused(tmp_path):
    with pytest.raises(lm.ConfigurationError, match=r"seed=5 with seeds=\[1, 2\]"):
        lm.ablate(SignalNet, datamodule=SignalData, metric="val_acc", max_epochs=1, seeds=[1, 2], seed=5,
                  exp_dir=tmp_path / "exp", verbose=False)
    assert not (tmp_path / "exp").exists()


# -- what a generator may change ------------------------------------------------------------------


def test_a_generator_that_changes_a_class_attribute_is_refused_and_the_class_restored():
    with pytest.raises(lm.ConfigurationError, match=r"changes Flagged.use_hidden \(a class attribute\).*the base trial among them"):
        _resolve(Flagged, _study(lambda s: s.model.add_custom_model_generator(without_hidden_for_every_instance, "cls")))
    assert Flagged.use_hidden is True


def test_a_generator_that_rebinds_a_global_is_refused_and_the_global_restored():
    with pytest.raises(lm.ConfigurationError, match=r"changes the global SWITCH of module"):
        _resolve(Dropping, _study(lambda s: s.model.add_custom_model_generator(flip_a_global, "glob")))
    assert SWITCH is True


def test_a_generator_that_changes_its_instance_is_fine():
    def no_hidden(module):
        module.use_hidden = False
        return module

    (comp,) = _resolve(Flagged, _study(lambda s: s.model.add_custom_model_generator(no_hidden, "inst")))
    assert comp.name == "inst" and Flagged.use_hidden is True


# -- the random stream ----------------------------------------------------------------------------


def _rng_state():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state()


@pytest.mark.parametrize(
    "component",
    [
        Component("slot", ComponentKind.LAYER, layers=("slot",)),
        Component("same", ComponentKind.CUSTOM, fn=unchanged),
        Component("signal", ComponentKind.FEATURE, features=("signal",)),
        Component("new layer", ComponentKind.LAYER, layers=("slot",), replacement=lambda old: nn.Linear(16, 16)),
    ],
    ids=lambda c: c.name,
)
def test_leaving_a_component_out_draws_nothing_from_the_trials_random_generators(component):
    module, data = Dropping(), SignalData()
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    before = _rng_state()
    # The shape check reads a shuffled batch, the feature means the training data, a
    # replacement initializes new weights: none of it may move the trial's random stream.
    leave_out(module, data, component)
    after = _rng_state()
    assert after[0] == before[0] and after[1] == before[1] and torch.equal(after[2], before[2])


def test_the_shape_check_leaves_lazy_layers_uninitialized():
    class LazyNet(Dropping):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.LazyLinear(16)

    module = leave_out(LazyNet(), SignalData(), Component("slot", ComponentKind.LAYER, layers=("slot",)))
    assert module.a.has_uninitialized_params()  # initialized by training, as the base trial's are


def test_a_custom_generator_that_changes_the_output_shape_is_refused():
    def no_head(module):
        module.net[4] = nn.Identity()
        return module

    with pytest.raises(lm.AblationError, match=r"custom component 'no_head'.*gives another output shape.*from \[64, 2\] to \[64, 16\]"):
        leave_out(SignalNet(), SignalData(), Component("no_head", ComponentKind.CUSTOM, fn=no_head))


def test_a_layer_with_a_tuple_output_is_described_by_its_shapes():
    class Recurrent(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 4, batch_first=True)
            self.head = nn.Linear(4, 2)
            self.example_input_array = torch.zeros(3, 5, 4)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    with pytest.raises(lm.AblationError, match=r"output shape \(\[3, 5, 4\], \(\[1, 3, 4\], \[1, 3, 4\]\)\)"):
        leave_out(Recurrent(), None, Component("rnn", ComponentKind.LAYER, layers=("rnn",)))


# -- features -------------------------------------------------------------------------------------


class Normalizing(SignalNet):
    """Standardizes its inputs in its own on_after_batch_transfer, with a large offset."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return (x + 1000.0) / 10.0, y


def test_a_left_out_feature_is_replaced_in_the_loaders_batch_before_the_users_own_hook():
    module, data = Normalizing(), SignalData()
    leave_out_features(module, data, ["signal"])
    x, _ = make_signal_data()
    out, _ = module.on_after_batch_transfer((x[:8].clone(), torch.zeros(8)), 0)
    mean = float(x[:400, 0].mean())  # the training rows' mean, in the loader's units
    assert torch.allclose(out[:, 0], torch.full((8,), (mean + 1000.0) / 10.0), atol=1e-3)
    assert torch.allclose(out[:, 1], (x[:8, 1] + 1000.0) / 10.0)


class OwnData(SignalNet):
    """A LightningModule that loads its own data in its setup()."""

    def setup(self, stage=None):
        x, y = make_signal_data()
        self.train_set, self.val_set = TensorDataset(x[:400], y[:400]), TensorDataset(x[400:], y[400:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=200)


def test_a_module_that_loads_its_own_data_is_set_up_before_its_data_is_read():
    @lm.ablatable(features=FEATURES)
    class Declared(OwnData):
        pass

    module = Declared()
    leave_out_features(module, None, ["signal"])
    x, y = next(iter(module.val_dataloader()))
    out, _ = module.on_after_batch_transfer((x, y), 0)
    assert torch.unique(out[:, 0]).numel() == 1
    # and a layer's shape check reads its first batch (not "could not read a training batch")
    plain = OwnData()
    leave_out(plain, None, Component("net.1", ComponentKind.LAYER, layers=("net.1",)))
    assert hasattr(plain, "train_set")


def test_a_datamodule_function_gives_every_run_a_copy_of_what_it_returns():
    shared = DroppingData()
    fresh = FreshDataModules(lambda hp: shared)
    first = fresh({})
    first.drop_features(["signal"])
    second = fresh({})
    assert first is not shared and second is not shared and second.keep == list(range(len(FEATURES)))
    assert shared.keep == list(range(len(FEATURES)))
    assert fresh.__module__ == __name__  # the backends ship the user's module, not this one


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_op_components_have_a_zero_delta_and_a_shared_datamodule_leaks_into_no_other_trial(tmp_path):
    """One worker runs every trial in one process, seed by seed: the base trial of seed 1 runs
    after the trials that dropped the signal feature from the function's shared DataModule."""
    shared = DroppingData()
    study = lm.AblationStudy()
    study.model.layers.include("slot")
    study.model.add_custom_model_generator(unchanged, "same")
    study.features.include("signal")
    result = lm.ablate(
        Dropping, study, datamodule=lambda hp: shared, metric="val_loss", direction="min", max_epochs=2, seeds=2,
        workers=1, exp_dir=tmp_path / "exp", verbose=False,
    )
    rows = {r.component: r for r in result.rows}
    assert all(r.state == "COMPLETED" and r.n == 2 for r in rows.values()), result.summary()
    # Without the component nothing changes, so every seed's metric is the base's (the same data
    # order, the same dropout masks: before, the shape check's batch moved the random stream).
    by = {(t.component, t.seed): t.final_metric for t in result.trials}
    for name in ("slot", "same"):
        for seed in (0, 1):
            assert by[(name, seed)] == pytest.approx(by[(None, seed)], abs=1e-6), result.summary()
    assert rows["signal"].delta > 0.3, result.summary()  # the signal matters ...
    assert max(by[(None, 0)], by[(None, 1)]) < 0.4, result.summary()  # ... and stayed in both base trials

    # The same table, loaded from the folder; a search's folder is refused.
    loaded = lm.AblationResult.load(result.exp_dir)
    assert [r.to_dict() for r in loaded.rows] == [r.to_dict() for r in result.rows]
    assert loaded.seeds == [0, 1] and loaded.metric == "val_loss" and loaded.direction == "min"
    assert loaded.summary().splitlines()[1:] == result.summary().splitlines()[1:]
    search_dir = tmp_path / "search"
    shutil.copytree(result.exp_dir, search_dir)
    experiment = json.loads((search_dir / "experiment.json").read_text())
    del experiment["ablation"]
    (search_dir / "experiment.json").write_text(json.dumps(experiment))
    with pytest.raises(lm.ConfigurationError, match=r"holds a search, not an ablation study"):
        lm.AblationResult.load(search_dir)


class LazyNet(SignalNet):
    """A first layer sized at its first batch: Lightning's sanity check (its random state kept
    apart) initializes it in the run that makes one, training's first step in a run that does
    not, after the shuffle has drawn: other initial weights from the same seed."""

    def __init__(self, lr: float = 0.05, hidden: int = 16) -> None:
        super().__init__(lr, hidden)
        self.net[0] = nn.LazyLinear(hidden)


@pytest.mark.slow
def test_every_trial_of_an_ablation_makes_the_same_validation_runs_so_a_no_op_has_a_zero_delta(tmp_path):
    # One worker: seed 0's base trial is its process's first run. Lightning's sanity check ran in
    # that run only (later runs skip it), so only the base's lazy layer was initialized there.
    study = lm.AblationStudy()
    study.model.add_custom_model_generator(unchanged, "same")
    result = lm.ablate(
        LazyNet, study, datamodule=SignalData, metric="val_loss", direction="min", max_epochs=2, seeds=1,
        workers=1, exp_dir=tmp_path / "exp", verbose=False,
    )
    by = {t.component: t.history for t in result.trials}
    assert by["same"] == by[None], result.summary()
