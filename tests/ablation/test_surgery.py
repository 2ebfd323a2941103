"""Worker-side surgery on real modules and real batches (no workers): layers replaced, the shape
check and its message, custom generators, and the feature masks for tensor and dict batches."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from ablation_models import FEATURES, SignalData, SignalNet, Widening
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_maggy as lm
from lightning_maggy.ablation.components import Component, ComponentKind
from lightning_maggy.ablation.features import FeatureMask, _hook_owner, leave_out_features
from lightning_maggy.ablation.surgery import leave_out


def layer(name, replacement=None):
    return Component(name, ComponentKind.LAYER, layers=(name,), replacement=replacement)


def test_a_layer_is_replaced_by_identity_and_the_module_still_runs():
    module = SignalNet()
    out = leave_out(module, SignalData(), layer("net.1"))
    assert out is module and isinstance(module.net[1], nn.Identity)
    assert module(torch.zeros(5, len(FEATURES))).shape == (5, 2)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # body.0 widens 8 -> 16: without it the next layer fails
        ("body.0", ["layer 'body.0' maps input shape [3, 8] to output shape [3, 16]", "Identity outputs [3, 8]",
                    "then fails with", "replacement"]),
        # head: Linear(16, 2) -> Identity runs, but the model then outputs [3, 16]: a loss could
        # broadcast it against the targets without an error, so the check refuses it too
        ("head", ["layer 'head' maps input shape [3, 16] to output shape [3, 2]", "Identity outputs [3, 16]",
                  "gives another output shape", "replacement"]),
    ],
)
def test_a_shape_breaking_removal_names_the_component_the_layer_and_both_shapes(name, expected):
    with pytest.raises(lm.AblationError) as info:
        leave_out(Widening(), None, layer(name))
    assert all(part in str(info.value) for part in expected), str(info.value)


def test_a_declared_replacement_that_keeps_the_shape_trains():
    module = leave_out(Widening(), None, layer("body.0", replacement=lambda old: nn.Linear(8, 16)))
    assert isinstance(module.body[0], nn.Linear) and module(torch.zeros(2, 8)).shape == (2, 2)
    # An nn.Module instance is copied per use, never shared between trials.
    shared = nn.Linear(8, 16)
    again = leave_out(Widening(), None, layer("body.0", replacement=shared))
    assert again.body[0] is not shared


def test_a_replacement_with_the_wrong_shape_is_reported_with_its_own_output():
    with pytest.raises(lm.AblationError, match=r"replacement Linear outputs \[3, 4\]"):
        leave_out(Widening(), None, layer("body.0", replacement=lambda old: nn.Linear(8, 4)))


def test_without_example_input_the_first_training_batch_is_used():
    class NoExample(Widening):
        def __init__(self):
            super().__init__()
            self.example_input_array = None

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.zeros(6, 8), torch.zeros(6, dtype=torch.long)), batch_size=4)

    with pytest.raises(lm.AblationError, match="first training batch"):
        leave_out(NoExample(), None, layer("body.0"))


def test_custom_generator_is_applied_and_checked():
    module = leave_out(SignalNet(), SignalData(), Component("linear", ComponentKind.CUSTOM, fn=lambda m: (setattr(m.net, "1", nn.Identity()), m)[1]))
    assert isinstance(module.net[1], nn.Identity)
    with pytest.raises(lm.AblationError, match="not a LightningModule"):
        leave_out(SignalNet(), SignalData(), Component("bad", ComponentKind.CUSTOM, fn=lambda m: m.net))


def test_feature_mask_on_tensor_batches_uses_the_training_mean():
    x = torch.tensor([[1.0, 10.0], [3.0, 20.0]])
    mask = FeatureMask(["b"], {"a": 0, "b": 1})
    mask.columns = {"b": 1}
    mask.fit([(x, torch.tensor([0, 1]))])
    masked, y = mask((x, torch.tensor([0, 1])))
    assert masked[:, 1].tolist() == [15.0, 15.0] and masked[:, 0].tolist() == [1.0, 3.0]
    assert x[0, 1] == 10.0  # the original batch is untouched


def test_feature_mask_on_dict_batches_and_integer_features():
    batch = {"age": torch.tensor([20, 31, 40]), "fare": torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}
    mask = FeatureMask(["age", "fare"], None)
    mask.fit([batch])
    out = mask(batch)
    assert out["age"].tolist() == [30, 30, 30] and out["age"].dtype == torch.int64
    assert out["fare"].tolist() == [[3.0, 4.0]] * 3
    with pytest.raises(lm.AblationError, match="without the key"):
        FeatureMask(["missing"], None).fit([batch])


def test_leave_out_features_masks_every_stage_of_real_training():
    seen = []

    class Spy(SignalNet):
        def validation_step(self, batch, batch_idx):
            seen.append(batch[0][:, 0].unique().numel())
            return super().validation_step(batch, batch_idx)

    module, data = Spy(), SignalData()
    leave_out_features(module, data, ["signal"])
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert seen == [1]  # the signal column is one constant in validation too


def test_the_hook_goes_where_lightning_calls_it():
    class OwnHook(SignalData):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            return batch

    class ModuleHook(SignalNet):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            return batch

    assert _hook_owner(SignalNet(), None).__class__ is SignalNet
    assert isinstance(_hook_owner(SignalNet(), SignalData()), SignalData)
    assert isinstance(_hook_owner(SignalNet(), OwnHook()), OwnHook)
    assert isinstance(_hook_owner(ModuleHook(), SignalData()), ModuleHook)


def test_a_datamodule_that_drops_features_itself_is_called_instead():
    class Dropping(SignalData):
        dropped = None

        def drop_features(self, names):
            self.dropped = names

    data, module = Dropping(), SignalNet()
    before = module.on_after_batch_transfer
    leave_out_features(module, data, ["noise_a"])
    assert data.dropped == ["noise_a"] and module.on_after_batch_transfer == before


def test_unnamed_columns_are_an_error_not_a_guess():
    @lm.ablatable(features=["a", "b"])  # but the tensors have 4 columns and no feature_names
    class Ambiguous(SignalData):
        pass

    with pytest.raises(lm.AblationError, match="feature_names"):
        leave_out_features(SignalNet(), Ambiguous(), ["a"])
