"""Checks an ablation study against the real module and data before any worker starts.

Layer names and prefixes are matched against ``module.named_modules()`` of a module built on the
driver from the study's hyperparameters; feature names against what the DataModule declares;
custom generators are tried once on a copy of the module. Every mistake is a
:class:`~lightning_maggy.exceptions.ConfigurationError` that names the component and says what
would fit.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_maggy.ablation.components import (
    ABLATION_ATTR,
    AblationStudy,
    Component,
    ComponentKind,
    declared_components,
    declared_features,
    prefix_matches,
)
from lightning_maggy.exceptions import ConfigurationError

__all__ = ["available_features", "collect_components", "resolve_components", "top_level"]


def collect_components(
    module_cls: type, datamodule: Any, study: AblationStudy | None, built: Any = None
) -> list[Component]:
    """The decorator's components (module, then datamodule) followed by the study's; a name
    declared twice, or the name of the full model's row ("base"), is an error. ``built``: the
    datamodule ``datamodule`` builds (read for its decorator when ``datamodule`` is a function)."""
    if study is not None and not isinstance(study, AblationStudy):
        raise ConfigurationError(
            f"study={study!r}: expected an lm.AblationStudy (or None to use only the components "
            "declared with @lm.ablatable)."
        )
    found: list[Component] = [dataclasses.replace(c, source=_declared_on(module_cls)) for c in declared_components(module_cls)]
    source = built if is_plain_function(datamodule) else datamodule
    if source is not None:
        for comp in declared_components(source):
            comp = dataclasses.replace(comp, source=_declared_on(source))
            if comp.kind.is_model:
                raise ConfigurationError(
                    f"@ablatable on {_name(datamodule)} declares the model component {comp.name!r}; "
                    "layers, groups and custom components belong on the LightningModule, features "
                    "on the LightningDataModule."
                )
            found.append(comp)
    if study is not None:
        found.extend(study.components)
    seen: dict[str, Component] = {}
    for comp in found:
        if comp.name == "base":
            raise ConfigurationError(
                f"The ablation component 'base' ({comp.kind.value}, from {_origin(comp)}): 'base' names "
                "the full model's row of the results; give the component another name"
                + (
                    " (a feature or layer called 'base': include it as a group of one with a name of "
                    "its own, e.g. study.features.include_groups(['base'], name='base feature'))."
                    if comp.kind in (ComponentKind.FEATURE, ComponentKind.LAYER)
                    else "."
                )
            )
        if comp.name in seen:
            first = seen[comp.name]
            raise ConfigurationError(
                f"The ablation component {comp.name!r} is named twice (as a {first.kind.value} "
                f"from {_origin(first)} and as a {comp.kind.value} from {_origin(comp)}); "
                "declare each component once, or give one of them another name."
            )
        seen[comp.name] = comp
    if not found:
        raise ConfigurationError(
            f"Nothing to ablate: {module_cls.__name__} declares no components and no study was "
            "given. Decorate the module with @lm.ablatable(layers=[...], groups={...}, "
            "custom={...}), the DataModule with @lm.ablatable(features=[...]), or pass an "
            "lm.AblationStudy with components included."
        )
    return found


def _declared_on(obj: Any) -> str:
    """Where a class's (or an instance's) ``@ablatable`` declaration comes from, for messages:
    ``"@ablatable on Net"``, or ``"@ablatable on Net, which Child inherits"``."""
    cls = obj if isinstance(obj, type) else type(obj)
    owner = next((c for c in cls.__mro__ if ABLATION_ATTR in vars(c)), cls)
    if owner is cls:
        return f"@ablatable on {cls.__name__}"
    return f"@ablatable on {owner.__name__}, which {cls.__name__} inherits"


def is_plain_function(obj: Any) -> bool:
    """Whether ``datamodule=obj`` is a function of the hyperparameters (not a class, not an instance)."""
    return callable(obj) and not isinstance(obj, type) and not hasattr(obj, "train_dataloader")


def _origin(comp: Component) -> str:
    return "the study" if comp.source == "study" else comp.source


def _name(obj: Any) -> str:
    return obj.__name__ if isinstance(obj, type) else type(obj).__name__


def top_level(names: Sequence[str]) -> list[str]:
    """The names that are not inside another name of the list (``"a.b"`` is inside ``"a"``), in
    order: replacing ``"a"`` already removes ``"a.b"``."""
    chosen = set(names)
    out = []
    for n in names:
        parts = n.split(".")
        if not any(".".join(parts[:i]) in chosen for i in range(1, len(parts))):
            out.append(n)
    return out


def _close(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    if close:
        return f"close names: {close}"
    return f"the module's submodules are: {list(candidates)[:40]}{' ...' if len(candidates) > 40 else ''}"


def available_features(datamodule_obj: Any, module_obj: Any) -> list[str]:
    """Feature names a study may leave out: declared with ``@ablatable(features=...)`` on the
    DataModule or module, or listed in their ``feature_names`` attribute. An object that has
    ``feature_names`` and no ``drop_features`` of its own has its columns masked by those
    names, so a declared name that is not one of them (a typo) is not available."""
    out: list[str] = []
    for obj in (datamodule_obj, module_obj):
        if obj is None:
            continue
        columns = tuple(getattr(obj, "feature_names", None) or ())
        masked_by_name = bool(columns) and not callable(getattr(obj, "drop_features", None))
        names = columns if masked_by_name else (*declared_features(obj), *columns)
        for name in names:
            if isinstance(name, str) and name not in out:
                out.append(name)
    return out


def resolve_components(
    components: Sequence[Component],
    module: Any,
    datamodule_obj: Any,
) -> list[Component]:
    """The components with every layer prefix and feature prefix resolved, checked against
    ``module`` (an instance built from the study's hyperparameters) and the data.

    Raises:
        ConfigurationError: a layer or prefix that matches no submodule (with the close names),
            a feature the data does not declare, or a custom generator that does not return a
            LightningModule.
    """
    # Every name of every submodule: one registered twice (``self.b = self.a``) has both.
    named = [(n, m) for n, m in module.named_modules(remove_duplicate=False) if n]
    names = list(dict.fromkeys(n for n, _ in named))
    name_set = set(names)
    features = available_features(datamodule_obj, module)
    out: list[Component] = []
    for comp in components:
        if comp.kind is ComponentKind.LAYER or (comp.kind is ComponentKind.GROUP and comp.prefix is None):
            for layer in comp.layers:
                if layer not in name_set:
                    raise ConfigurationError(
                        f"Ablation component {comp.name!r} (from {_origin(comp)}): "
                        f"{type(module).__name__} has no submodule named {layer!r}; "
                        f"{_close(layer, names)}. Use the dotted names of module.named_modules()."
                    )
            _check_replacement(comp)
            out.append(dataclasses.replace(comp, layers=tuple(top_level(list(comp.layers)))))
        elif comp.kind is ComponentKind.GROUP:
            assert comp.prefix is not None
            matched = [n for n in names if prefix_matches(n, comp.prefix)]
            if not matched:
                raise ConfigurationError(
                    f"Ablation group {comp.name!r} (from {_origin(comp)}): no submodule of "
                    f"{type(module).__name__} has a name starting with {comp.prefix!r}; "
                    f"{_close(comp.prefix, names)}."
                )
            out.append(dataclasses.replace(comp, layers=tuple(top_level(matched))))
        elif comp.kind in (ComponentKind.FEATURE, ComponentKind.FEATURE_GROUP):
            out.append(_resolve_features(comp, features, datamodule_obj))
        else:
            _try_custom(comp, module)
            out.append(comp)
    for comp in out:
        if comp.kind in (ComponentKind.LAYER, ComponentKind.GROUP):
            _warn_aliases(comp, module, named)
    return out


def _warn_aliases(comp: Component, module: Any, named: Sequence[tuple[str, Any]]) -> None:
    """Warns when a layer the component replaces is registered under another name too, which the
    component does not replace: the model still runs the layer there. (A trial replaces a layer
    by setting its parent's attribute, so every name that reaches it through a replaced
    attribute, such as ``alias.lin`` when ``alias`` is ``shared`` and ``shared.lin`` is
    replaced, loses it too.)"""
    import warnings

    objects = dict(named)
    objects[""] = module

    def edge(name: str) -> tuple[int, str]:
        parent, _, child = name.rpartition(".")
        return id(objects[parent]), child

    replaced = {edge(layer) for layer in comp.layers}

    def reached(name: str) -> bool:
        parts = name.split(".")
        return not any(edge(".".join(parts[: i + 1])) in replaced for i in range(len(parts)))

    for layer in comp.layers:
        others = [n for n, m in named if m is objects[layer] and reached(n)]
        if others:
            warnings.warn(
                f"Ablation component {comp.name!r}: the layer {layer!r} is also registered as "
                f"{others}, which its trial does not replace: the model still runs it there. To "
                f"leave it out everywhere, ablate a group of all its names, e.g. "
                f"groups={{{comp.name!r}: {[layer, *others]!r}}}.",
                stacklevel=4,
            )


def _resolve_features(comp: Component, features: Sequence[str], datamodule_obj: Any) -> Component:
    owner = _name(datamodule_obj) if datamodule_obj is not None else "the data"
    if not features:
        raise ConfigurationError(
            f"Ablation feature component {comp.name!r}: {owner} declares no features. Declare "
            f"them with @lm.ablatable(features=[...]) on the LightningDataModule, or give it a "
            "feature_names attribute (the names of its input columns, in order) once it is "
            "built: ablate() reads it before prepare_data() and setup(), so set it in __init__ "
            "or on the class, not in setup()."
        )
    if comp.prefix is not None:
        matched = tuple(f for f in features if prefix_matches(f, comp.prefix))
        if not matched:
            raise ConfigurationError(
                f"Ablation feature group {comp.name!r}: no declared feature starts with "
                f"{comp.prefix!r}; {owner} declares {list(features)}."
            )
        return dataclasses.replace(comp, features=matched)
    for f in comp.features:
        if f not in features:
            raise ConfigurationError(
                f"Ablation component {comp.name!r}: {owner} has no feature {f!r}; "
                f"{_close(f, features).replace('submodules', 'features')}. Its features (its "
                f"feature_names, or those declared with @ablatable): {list(features)}."
            )
    return comp


def _check_replacement(comp: Component) -> None:
    import torch.nn as nn

    r = comp.replacement
    if r is not None and not isinstance(r, nn.Module) and not callable(r):
        raise ConfigurationError(
            f"Ablation component {comp.name!r}: replacement={r!r} is neither an nn.Module nor a "
            "function old_layer -> nn.Module."
        )


def _try_custom(comp: Component, module: Any) -> None:
    """Runs a custom generator once on a copy of the module: it must return a LightningModule."""
    from lightning_maggy.lightning.namespace import imported_namespaces

    try:
        candidate = copy.deepcopy(module)
    except Exception:  # an uncopyable module: the worker's check will catch a bad generator
        return
    shared = _shared_state(type(module), comp.fn)
    try:
        result = comp.fn(candidate)  # type: ignore[misc]
    except Exception as err:
        _restore(shared)
        raise ConfigurationError(
            f"Custom ablation component {comp.name!r}: the generator "
            f"{getattr(comp.fn, '__name__', comp.fn)!r} raised {type(err).__name__}: {err} when "
            f"applied to {type(module).__name__}; it must take the module and return it rewritten."
        ) from err
    changed = _restore(shared)
    if changed:
        raise ConfigurationError(
            f"Custom ablation component {comp.name!r}: the generator "
            f"{getattr(comp.fn, '__name__', comp.fn)!r} changes {', '.join(changed)}, not only the "
            "module it is given. A worker runs several trials in one process, so that change would "
            "stay for the trials after it, the base trial among them (and ablate() would have "
            "shipped it to every worker). Change the instance instead: e.g. "
            "`def fn(m): m.use_skip = False; return m` with the module reading self.use_skip."
        )
    if not any(isinstance(result, ns.LightningModule) for ns in imported_namespaces()):
        raise ConfigurationError(
            f"Custom ablation component {comp.name!r}: the generator "
            f"{getattr(comp.fn, '__name__', comp.fn)!r} returned {type(result).__name__}, not a "
            "LightningModule; it must return the module it was given (rewritten) or a new "
            "LightningModule, e.g. `def fn(m): m.dropout = nn.Identity(); return m`."
        )


_FRAMEWORKS = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "builtins")


def _shared_state(module_cls: type, fn: Any) -> list[tuple[Any, str, dict[str, Any]]]:
    """What a generator could change besides its module that later trials would see: the
    attributes of the module's own classes (not the frameworks'), and the globals of the
    generator's and the module class's Python modules. ``(owner, label, snapshot)`` triples."""
    import sys

    out: list[tuple[Any, str, dict[str, Any]]] = []
    for cls in module_cls.__mro__:
        if cls is object or (cls.__module__ or "").split(".")[0] in _FRAMEWORKS:
            continue
        out.append((cls, cls.__name__, dict(vars(cls))))
    spaces: dict[int, tuple[dict[str, Any], str]] = {}
    fn_globals = getattr(fn, "__globals__", None)
    if isinstance(fn_globals, dict):
        spaces[id(fn_globals)] = (fn_globals, str(fn_globals.get("__name__", "?")))
    home = sys.modules.get(module_cls.__module__ or "")
    if home is not None and (module_cls.__module__ or "").split(".")[0] not in _FRAMEWORKS:
        spaces[id(vars(home))] = (vars(home), home.__name__)
    for space, name in spaces.values():
        out.append((space, name, {k: v for k, v in space.items() if not (k.startswith("__") and k.endswith("__"))}))
    return out


def _restore(shared: list[tuple[Any, str, dict[str, Any]]]) -> list[str]:
    """Puts back what a generator rebound of :func:`_shared_state`'s snapshot; returns what it
    changed, as ``"Net.use_skip (a class attribute)"`` or ``"the global FLAG of module __main__"``."""
    changed = []
    for owner, label, before in shared:
        is_class = isinstance(owner, type)
        now = dict(vars(owner)) if is_class else owner
        for key, value in before.items():
            if key not in now or now[key] is not value:
                changed.append(f"{label}.{key} (a class attribute)" if is_class else f"the global {key} of module {label}")
                if is_class:
                    setattr(owner, key, value)
                else:
                    owner[key] = value
        if is_class:
            for key in [k for k in now if k not in before]:
                changed.append(f"{label}.{key} (a new class attribute)")
                delattr(owner, key)
    return changed


def study_description(components: Sequence[Component], hparams: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """The study as JSON for ``experiment.json``."""
    return {
        "hparams": dict(hparams),
        "seeds": list(seeds),
        "components": [
            {
                "name": c.name,
                "kind": c.kind.value,
                "layers": list(c.layers),
                "features": list(c.features),
                "prefix": c.prefix,
                # A function by its name (its repr holds an address that differs per run, and a
                # resumed study compares this description); a module by its repr.
                "replacement": None if c.replacement is None else getattr(c.replacement, "__qualname__", None) or repr(c.replacement),
                "custom": None if c.fn is None else getattr(c.fn, "__qualname__", repr(c.fn)),
            }
            for c in components
        ],
    }
