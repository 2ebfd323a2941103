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
    AblationStudy,
    Component,
    ComponentKind,
    declared_components,
    declared_features,
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
    found: list[Component] = []
    for comp in declared_components(module_cls):
        found.append(comp)
    source = built if _is_plain_function(datamodule) else datamodule
    if source is not None:
        for comp in declared_components(source):
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
                f"The ablation component 'base' ({comp.kind.value}, from the {comp.source}): 'base' names "
                "the full model's row of the results; give the component another name."
            )
        if comp.name in seen:
            first = seen[comp.name]
            raise ConfigurationError(
                f"The ablation component {comp.name!r} is named twice (as a {first.kind.value} "
                f"from the {first.source} and as a {comp.kind.value} from the {comp.source}); "
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


def _is_plain_function(obj: Any) -> bool:
    return callable(obj) and not isinstance(obj, type) and not hasattr(obj, "train_dataloader")


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
    names = [n for n, _ in module.named_modules() if n]
    name_set = set(names)
    features = available_features(datamodule_obj, module)
    out: list[Component] = []
    for comp in components:
        if comp.kind is ComponentKind.LAYER or (comp.kind is ComponentKind.GROUP and comp.prefix is None):
            for layer in comp.layers:
                if layer not in name_set:
                    raise ConfigurationError(
                        f"Ablation component {comp.name!r}: {type(module).__name__} has no submodule "
                        f"named {layer!r}; {_close(layer, names)}. Use the dotted names of "
                        "module.named_modules()."
                    )
            _check_replacement(comp)
            out.append(dataclasses.replace(comp, layers=tuple(top_level(list(comp.layers)))))
        elif comp.kind is ComponentKind.GROUP:
            assert comp.prefix is not None
            matched = [n for n in names if n.startswith(comp.prefix)]
            if not matched:
                raise ConfigurationError(
                    f"Ablation group {comp.name!r}: no submodule of {type(module).__name__} has a "
                    f"name starting with {comp.prefix!r}; {_close(comp.prefix, names)}."
                )
            out.append(dataclasses.replace(comp, layers=tuple(top_level(matched))))
        elif comp.kind in (ComponentKind.FEATURE, ComponentKind.FEATURE_GROUP):
            out.append(_resolve_features(comp, features, datamodule_obj))
        else:
            _try_custom(comp, module)
            out.append(comp)
    return out


def _resolve_features(comp: Component, features: Sequence[str], datamodule_obj: Any) -> Component:
    owner = _name(datamodule_obj) if datamodule_obj is not None else "the data"
    if not features:
        raise ConfigurationError(
            f"Ablation feature component {comp.name!r}: {owner} declares no features. Declare "
            f"them with @lm.ablatable(features=[...]) on the LightningDataModule, or give it a "
            "feature_names attribute (the names of its input columns, in order)."
        )
    if comp.prefix is not None:
        matched = tuple(f for f in features if f.startswith(comp.prefix))
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
    try:
        result = comp.fn(candidate)  # type: ignore[misc]
    except Exception as err:
        raise ConfigurationError(
            f"Custom ablation component {comp.name!r}: the generator "
            f"{getattr(comp.fn, '__name__', comp.fn)!r} raised {type(err).__name__}: {err} when "
            f"applied to {type(module).__name__}; it must take the module and return it rewritten."
        ) from err
    if not any(isinstance(result, ns.LightningModule) for ns in imported_namespaces()):
        raise ConfigurationError(
            f"Custom ablation component {comp.name!r}: the generator "
            f"{getattr(comp.fn, '__name__', comp.fn)!r} returned {type(result).__name__}, not a "
            "LightningModule; it must return the module it was given (rewritten) or a new "
            "LightningModule, e.g. `def fn(m): m.dropout = nn.Identity(); return m`."
        )


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
