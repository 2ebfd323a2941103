"""Worker side: rewrites one trial's instantiated LightningModule to leave a component out.

Layers are replaced in place (``setattr`` on their parent) by ``nn.Identity`` or the declared
replacement; a custom component's generator rewrites the module. Before the trial trains, one
forward pass on ``example_input_array`` (or, without one, the first training batch) checks the
rewritten module: a removal that breaks shapes fails the trial with an :class:`AblationError`
that names the component, the layer and both shapes, and the study goes on with the others.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from lightning_maggy.ablation.components import Component, ComponentKind
from lightning_maggy.exceptions import AblationError

__all__ = ["apply_model_component", "first_train_batch", "leave_out", "preserved_rng", "probe_input", "replace_layer"]


def leave_out(module: Any, datamodule: Any, component: Component) -> Any:
    """The trial's module with ``component`` left out (features through the data, see
    :mod:`lightning_maggy.ablation.features`; layers and custom components by rewriting it).

    The random generators (Python's, NumPy's, torch's) are as they were before: the shape
    check's batch, the feature means and a generator's new layers draw from them, and the
    trial must then train on the base trial's random stream (its data order, its dropout
    masks) for the paired delta to measure the component and nothing else."""
    with preserved_rng():
        if component.kind.is_model:
            return apply_model_component(module, datamodule, component)
        from lightning_maggy.ablation.features import leave_out_features

        leave_out_features(module, datamodule, component.features)
        return module


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restores the states of Python's, NumPy's and torch's (CPU and initialized CUDA) random
    generators when the block ends."""
    import random

    state: dict[str, Any] = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.random.get_rng_state()
        if torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        yield
    finally:
        random.setstate(state["random"])
        if "numpy" in state:
            np.random.set_state(state["numpy"])
        if "torch" in state:
            torch.random.set_rng_state(state["torch"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def _fmt(shape: Any) -> str:
    """A shape as the messages show it: ``[2, 64]``; a layer's tuple output (an LSTM's) as
    ``([2, 5, 6], ([1, 2, 6], [1, 2, 6]))`` (see :func:`output_shapes`)."""
    if shape is None:
        return "an unknown shape"
    return _fmt_inner(shape)


def _fmt_inner(shape: Any) -> str:
    if isinstance(shape, (list, tuple)) and all(isinstance(d, int) for d in shape):
        return f"[{', '.join(map(str, shape))}]"
    if isinstance(shape, (list, tuple)):
        return f"({', '.join(_fmt_inner(s) for s in shape)})"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k!r}: {_fmt_inner(v)}" for k, v in shape.items()) + "}"
    return str(shape)


def data_owner(module: Any, datamodule: Any) -> Any:
    return datamodule if datamodule is not None else module


def prepare_owner(owner: Any) -> None:
    """``prepare_data()`` and ``setup("fit")`` of the data's owner, as ``trainer.fit`` calls them:
    the DataModule's, or those of a LightningModule that loads its own data."""
    owner.prepare_data()
    owner.setup("fit")


def first_train_batch(module: Any, datamodule: Any) -> Any:
    """One batch of the training data (its owner is prepared and set up for "fit" first), or
    None when it cannot be had."""
    owner = data_owner(module, datamodule)
    try:
        prepare_owner(owner)
        return next(iter(owner.train_dataloader()))
    except Exception as err:  # the trial's own fit will raise the real error
        print(f"[maggy] ablation: could not read a training batch for the shape check: {err!r}", file=sys.stderr)
        return None


def probe_input(module: Any, datamodule: Any) -> tuple[Any, str, bool] | None:
    """What to run the forward check on: ``(input, where, unpack)``; ``unpack`` follows Lightning's
    ``example_input_array`` rule (a tuple is ``module(*x)``, a dict ``module(**x)``)."""
    example = getattr(module, "example_input_array", None)
    if example is not None:
        return example, "example_input_array", True
    batch = first_train_batch(module, datamodule)
    if batch is None:
        return None
    x = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    return x, "the first training batch", False


def _forward(module: Any, x: Any, unpack: bool) -> Any:
    if unpack and isinstance(x, (list, tuple)):
        return module(*x)
    if unpack and isinstance(x, dict):
        return module(**x)
    return module(x)


@contextlib.contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _recording(layers: dict[str, Any], shapes: dict[str, tuple[Any, Any]]) -> Iterator[None]:
    """Records each layer's (input shape, output shape) of its first call."""

    def hook_for(name: str) -> Any:
        def hook(_mod: Any, inputs: Any, output: Any) -> None:
            if name not in shapes:
                shapes[name] = (output_shapes(inputs[0]) if inputs else None, output_shapes(output))

        return hook

    handles = [layer.register_forward_hook(hook_for(name)) for name, layer in layers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _replacement_for(component: Component, old: Any) -> Any:
    import torch.nn as nn

    r = component.replacement
    if r is None:
        return nn.Identity()
    if isinstance(r, nn.Module):
        return copy.deepcopy(r)
    new = r(old)
    if not isinstance(new, nn.Module):
        raise AblationError(
            f"Ablation component {component.name!r}: the replacement function "
            f"{getattr(r, '__name__', r)!r} returned {type(new).__name__}, not an nn.Module."
        )
    return new


def replace_layer(module: Any, name: str, new: Any) -> Any:
    """Puts ``new`` where the submodule ``name`` (dotted) was; returns the old one."""
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def apply_model_component(module: Any, datamodule: Any, component: Component) -> Any:
    """The module with ``component`` (a layer, group or custom component) left out, checked by
    one forward pass. Raises :class:`AblationError` when the rewritten module cannot run."""
    from lightning_maggy.lightning.namespace import imported_namespaces

    probe = probe_input(module, datamodule)
    before: dict[str, tuple[Any, Any]] = {}
    layers: Sequence[str] = component.layers if component.kind is not ComponentKind.CUSTOM else ()
    output_before: Any = None
    if probe is not None:
        subject = _checked(module)
        with _evaluating(subject), _recording({n: subject.get_submodule(n) for n in layers}, before):
            try:
                output_before = output_shapes(_forward(subject, probe[0], probe[2]))
            except Exception as err:
                print(f"[maggy] ablation: the unmodified module fails on {probe[1]} ({err!r}); "
                      "skipping the shape check", file=sys.stderr)
                probe = None
    if component.kind is ComponentKind.CUSTOM:
        fn = component.fn
        module = fn(module)  # type: ignore[misc]
        if not any(isinstance(module, ns.LightningModule) for ns in imported_namespaces()):
            raise AblationError(
                f"Custom ablation component {component.name!r}: the generator "
                f"{getattr(fn, '__name__', fn)!r} returned {type(module).__name__}, not a LightningModule."
            )
    else:
        new_layers = {}
        for name in layers:
            old = module.get_submodule(name)
            new_layers[name] = _replacement_for(component, old)
            replace_layer(module, name, new_layers[name])
    if probe is None:
        return module
    after: dict[str, tuple[Any, Any]] = {}
    subject = _checked(module)
    recorded = {n: subject.get_submodule(n) for n in layers}
    with _evaluating(subject), _recording(recorded, after):
        try:
            output_after = output_shapes(_forward(subject, probe[0], probe[2]))
        except Exception as err:
            raise AblationError(_breakage_message(component, module, layers, before, after, probe[1], err)) from err
    if output_before is not None and output_after != output_before:  # the loss would broadcast another shape
        changed = AblationError(f"the model's output shape changes from {output_before} to {output_after}")
        raise AblationError(_breakage_message(component, module, layers, before, after, probe[1], changed))
    return module


def _checked(module: Any) -> Any:
    """What the shape check runs: the module itself (in eval mode, without gradients, a forward
    pass changes nothing), or a copy of one with lazy layers (``nn.LazyLinear``), which a first
    forward pass would initialize here, from other random draws than the base trial's."""
    from torch.nn.modules.lazy import LazyModuleMixin

    if not any(isinstance(m, LazyModuleMixin) and m.has_uninitialized_params() for m in module.modules()):
        return module
    try:
        return copy.deepcopy(module)
    except Exception:
        return module


def output_shapes(value: Any) -> Any:
    """The shapes of a forward pass's output: a tensor's shape, and those of the tensors in a
    tuple, list or dict (anything else: its type's name), to compare two outputs by."""
    shape = _shape(value)
    if shape is not None:
        return list(shape)
    if isinstance(value, (list, tuple)):
        return [output_shapes(v) for v in value]
    if isinstance(value, dict):
        return {k: output_shapes(v) for k, v in value.items()}
    return type(value).__name__


def _breakage_message(
    component: Component,
    module: Any,
    layers: Sequence[str],
    before: dict[str, tuple[Any, Any]],
    after: dict[str, tuple[Any, Any]],
    where: str,
    err: BaseException,
) -> str:
    error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    if component.kind is ComponentKind.CUSTOM:
        outcome = (
            f"gives another output shape: {err}" if isinstance(err, AblationError) else f"fails with {error}"
        )
        return (
            f"Leaving out custom component {component.name!r} breaks the model: the forward pass on "
            f"{where} {outcome}. Fix the generator so that the module it returns still runs, with "
            "the output shape of the full model."
        )
    changed = []
    for name in layers:
        in_shape, out_shape = before.get(name, (None, None))
        new_out = after.get(name, (None, None))[1]
        if new_out is None and name not in after:
            new_out = in_shape if component.replacement is None else None
        if out_shape != new_out:
            replacement = type(module.get_submodule(name)).__name__
            changed.append(
                f"layer {name!r} maps input shape {_fmt(in_shape)} to output shape {_fmt(out_shape)}, "
                f"but its replacement {replacement} outputs {_fmt(new_out)}"
            )
    detail = "; ".join(changed) if changed else f"the forward pass without {list(layers)} fails"
    hint = (
        f" Declare a replacement that keeps the output shape, e.g. @lm.ablatable(layers={{{layers[0]!r}: fn}}) "
        f"or study.model.layers.include({layers[0]!r}, replacement=fn), where fn(old_layer) returns an "
        "nn.Module (a ResNet block's own shortcut, for instance: lambda block: block.downsample)."
        if changed
        else ""
    )
    outcome = "gives another output shape" if isinstance(err, AblationError) else f"then fails with {error}"
    return (
        f"Leaving out component {component.name!r} ({component.kind.value}) breaks the model: {detail}; "
        f"the forward pass on {where} {outcome}.{hint}"
    )
