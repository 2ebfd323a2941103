"""What an ablation study leaves out: components, declared by decorator or with the study object.

A *component* is one thing a leave-one-component-out (LOCO) trial leaves out:

- a **layer**: one named submodule (``"encoder.block2"``), replaced by ``nn.Identity`` or by a
  replacement the user declares;
- a **layer group**: several submodules at once, by name prefix (``"head."``) or explicit list;
- a **feature**: an input feature of the data, made uninformative (see
  :mod:`lightning_maggy.ablation.features`);
- a **feature group**: several features at once;
- a **custom** component: ``fn(module) -> module`` that rewrites the model as the user likes.

Declared once on the classes::

    @lm.ablatable(layers=["encoder.block2"], groups={"head": "head."}, custom={"no_dropout": fn})
    class Net(pl.LightningModule): ...

    @lm.ablatable(features=["age", "fare"])
    class Data(pl.LightningDataModule): ...

or with the original Maggy's object API on :class:`AblationStudy`. This module is pure: it
imports no torch or Lightning; names are resolved against the real module in
:mod:`lightning_maggy.ablation.resolve`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = [
    "ABLATION_ATTR",
    "AblationStudy",
    "Component",
    "ComponentKind",
    "ablatable",
    "declared_components",
    "declared_features",
    "prefix_matches",
]

#: The class attribute that ``@ablatable`` sets.
ABLATION_ATTR = "__maggy_ablation__"


class ComponentKind(str, enum.Enum):
    """What kind of thing a component leaves out."""

    LAYER = "layer"
    GROUP = "group"
    FEATURE = "feature"
    FEATURE_GROUP = "feature_group"
    CUSTOM = "custom"

    @property
    def is_model(self) -> bool:
        return self in (ComponentKind.LAYER, ComponentKind.GROUP, ComponentKind.CUSTOM)


@dataclasses.dataclass(frozen=True)
class Component:
    """One component of a LOCO study.

    Attributes:
        name: the component's name in results (a layer's dotted name, a group's or custom
            component's key, a feature's name).
        kind: the :class:`ComponentKind`.
        layers: for layers and explicit groups, the submodule names; filled from ``prefix``
            when the study is resolved against the module.
        prefix: for groups by prefix, the name prefix.
        features: for features and feature groups, the feature names.
        replacement: for layers, what replaces them: None (``nn.Identity``), an ``nn.Module``
            (a fresh copy per trial) or ``fn(old_layer) -> nn.Module``.
        fn: for custom components, ``fn(module) -> module``.
        source: where it was declared ("decorator" or "study"; ``ablate()`` names the class:
            "@ablatable on Net"), for error messages.
    """

    name: str
    kind: ComponentKind
    layers: tuple[str, ...] = ()
    prefix: str | None = None
    features: tuple[str, ...] = ()
    replacement: Any = None
    fn: Callable[[Any], Any] | None = None
    source: str = "study"

    def describe(self) -> str:
        if self.kind is ComponentKind.GROUP and self.prefix is not None and not self.layers:
            return f"layers with prefix {self.prefix!r}"
        if self.kind in (ComponentKind.LAYER, ComponentKind.GROUP):
            return ", ".join(self.layers)
        if self.kind in (ComponentKind.FEATURE, ComponentKind.FEATURE_GROUP):
            return ", ".join(self.features)
        return getattr(self.fn, "__name__", repr(self.fn))


def prefix_matches(name: str, prefix: str) -> bool:
    """Whether a group's ``prefix`` selects ``name``: ``name`` starts with it, and a prefix that
    ends in a digit does not continue into more digits (an index: ``"blocks.1"`` selects
    ``blocks.1`` and ``blocks.1.conv``, not ``blocks.10``; ``"conv"`` selects ``conv1``).

    >>> [n for n in ["blocks.1", "blocks.1.bn", "blocks.10", "conv1"] if prefix_matches(n, "blocks.1")]
    ['blocks.1', 'blocks.1.bn']
    """
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix):]
    return not (prefix[-1:].isdigit() and rest[:1].isdigit())


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ConfigurationError(
            f"{what}: {value!r} is not a valid name; expected a non-empty str without surrounding "
            "spaces, e.g. 'encoder.block2'."
        )
    return value


def _names(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        return (_check_name(values, what),)
    if not isinstance(values, Iterable):
        raise ConfigurationError(f"{what}: expected a list of names, got {values!r}.")
    out = tuple(_check_name(v, what) for v in values)
    if len(set(out)) != len(out):
        dup = sorted({v for v in out if out.count(v) > 1})
        raise ConfigurationError(f"{what}: the name(s) {dup} are listed twice.")
    return out


def _layer_components(layers: Any, source: str) -> list[Component]:
    if layers is None:
        return []
    if isinstance(layers, Mapping):
        return [
            Component(_check_name(k, "layers"), ComponentKind.LAYER, layers=(k,), replacement=v, source=source)
            for k, v in layers.items()
        ]
    return [Component(n, ComponentKind.LAYER, layers=(n,), source=source) for n in _names(layers, "layers")]


def _group_components(groups: Any, kind: ComponentKind, source: str) -> list[Component]:
    if groups is None:
        return []
    what = "groups" if kind is ComponentKind.GROUP else "feature_groups"
    if not isinstance(groups, Mapping):
        raise ConfigurationError(
            f"{what}={groups!r}: expected a dict of group name -> name prefix (str) or list of "
            f"names, e.g. {what}={{'head': 'head.'}}."
        )
    out = []
    for name, spec in groups.items():
        _check_name(name, what)
        if isinstance(spec, str):
            out.append(Component(name, kind, prefix=_check_prefix(spec, f"{what}[{name!r}]"), source=source))
            continue
        members = _names(spec, f"{what}[{name!r}]")
        if not members:
            raise ConfigurationError(f"{what}[{name!r}] is empty; list at least one name.")
        if kind is ComponentKind.GROUP:
            out.append(Component(name, kind, layers=members, source=source))
        else:
            out.append(Component(name, kind, features=members, source=source))
    return out


def _check_prefix(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what}: the prefix {value!r} must be a non-empty str, e.g. 'head.'.")
    return value


def _custom_components(custom: Any, source: str) -> list[Component]:
    if custom is None:
        return []
    if not isinstance(custom, Mapping):
        raise ConfigurationError(f"custom={custom!r}: expected a dict of name -> fn(module) -> module.")
    out = []
    for name, fn in custom.items():
        _check_name(name, "custom")
        if not callable(fn):
            raise ConfigurationError(
                f"custom[{name!r}]={fn!r} is not callable; expected fn(module) -> module, a "
                "function that rewrites the LightningModule and returns it."
            )
        out.append(Component(name, ComponentKind.CUSTOM, fn=fn, source=source))
    return out


@dataclasses.dataclass(frozen=True)
class _Declaration:
    components: tuple[Component, ...]
    features: tuple[str, ...]


def ablatable(
    *,
    layers: Sequence[str] | Mapping[str, Any] | None = None,
    groups: Mapping[str, str | Sequence[str]] | None = None,
    custom: Mapping[str, Callable[[Any], Any]] | None = None,
    features: Sequence[str] | None = None,
    feature_groups: Mapping[str, str | Sequence[str]] | None = None,
) -> Callable[[type], type]:
    """Declares the ablatable components of a LightningModule or LightningDataModule class.

    On a LightningModule::

        @lm.ablatable(
            layers=["encoder.block2", "encoder.block3"],      # dotted submodule names
            groups={"head": "head.", "norms": ["enc.n1", "enc.n2"]},  # prefix, or list of names
            custom={"no_dropout": strip_dropout},             # name -> fn(module) -> module
        )
        class Net(pl.LightningModule): ...

    ``layers`` may also be a dict of name -> replacement (an ``nn.Module``, or
    ``fn(old_layer) -> nn.Module``) for layers that ``nn.Identity`` cannot replace because they
    change the shape (e.g. ``{"layer2.0": lambda block: block.downsample}`` in a ResNet).

    On a LightningDataModule (or a LightningModule that loads its own data)::

        @lm.ablatable(features=["age", "fare", "pclass"], feature_groups={"size": "mean "})
        class Data(pl.LightningDataModule): ...

    A group's prefix selects the names that start with it; one that ends in a digit is an index
    and does not continue into more digits (``"blocks.1"`` selects ``blocks.1`` and what is
    inside it, not ``blocks.10``).

    A subclass inherits its parent's declaration; one that has its own ``@ablatable`` uses only
    that one (declare the parent's components again to keep them).

    Every declared component is ablated by :func:`lightning_maggy.ablate`; searching the class
    with :func:`lightning_maggy.search` ignores the declaration.
    """
    decl = _Declaration(
        components=tuple(
            _layer_components(layers, "decorator")
            + _group_components(groups, ComponentKind.GROUP, "decorator")
            + _custom_components(custom, "decorator")
            + [Component(f, ComponentKind.FEATURE, features=(f,), source="decorator") for f in _names(features or (), "features")]
            + _group_components(feature_groups, ComponentKind.FEATURE_GROUP, "decorator")
        ),
        features=_names(features or (), "features"),
    )
    _unique([c.name for c in decl.components], "@ablatable")

    def apply(cls: type) -> type:
        if not isinstance(cls, type):
            raise ConfigurationError(
                f"@ablatable(...) decorates a LightningModule or LightningDataModule class, not {cls!r}."
            )
        # Its own attribute, so that a subclass's declaration does not leak into its parent.
        setattr(cls, ABLATION_ATTR, decl)
        return cls

    return apply


def _declaration(cls: Any) -> _Declaration | None:
    target = cls if isinstance(cls, type) else type(cls)
    return getattr(target, ABLATION_ATTR, None)


def declared_components(cls: Any) -> list[Component]:
    """The components declared with ``@ablatable`` on ``cls`` (a class or an instance)."""
    decl = _declaration(cls)
    return list(decl.components) if decl else []


def declared_features(cls: Any) -> tuple[str, ...]:
    """The feature names declared with ``@ablatable(features=...)`` on ``cls``."""
    decl = _declaration(cls)
    return decl.features if decl else ()


def _unique(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigurationError(
                f"{where}: the component {n!r} is named twice; each component needs its own name "
                "(rename one, e.g. with include_groups(..., name=...))."
            )
        seen.add(n)


class _Features:
    def __init__(self, study: AblationStudy) -> None:
        self._study = study

    def include(self, *names: str | Sequence[str]) -> None:
        """Leaves out each named feature in a trial of its own."""
        flat = [n for item in names for n in ([item] if isinstance(item, str) else item)]
        for n in _names(flat, "features.include"):
            self._study._add(Component(n, ComponentKind.FEATURE, features=(n,)))

    def include_groups(
        self, names: Sequence[str] | None = None, *, prefix: str | None = None, name: str | None = None
    ) -> None:
        """Leaves out several features together: those named, or those whose name starts with
        ``prefix``. The group is called ``name`` (default: the prefix, or the names joined by "+")."""
        self._study._add(_group(ComponentKind.FEATURE_GROUP, names, prefix, name, "features.include_groups"))


class _Layers:
    def __init__(self, study: AblationStudy) -> None:
        self._study = study

    def include(self, *names: str | Sequence[str], replacement: Any = None) -> None:
        """Leaves out each named layer (dotted submodule name) in a trial of its own, replacing it
        with ``nn.Identity`` or ``replacement`` (an ``nn.Module``, or ``fn(old_layer) -> nn.Module``)."""
        flat = [n for item in names for n in ([item] if isinstance(item, str) else item)]
        for n in _names(flat, "model.layers.include"):
            self._study._add(Component(n, ComponentKind.LAYER, layers=(n,), replacement=replacement))

    def include_groups(
        self, names: Sequence[str] | None = None, *, prefix: str | None = None, name: str | None = None
    ) -> None:
        """Leaves out several layers together: those named, or every submodule whose name starts
        with ``prefix``. The group is called ``name`` (default: the prefix, or the names joined
        by "+")."""
        self._study._add(_group(ComponentKind.GROUP, names, prefix, name, "model.layers.include_groups"))


def _group(kind: ComponentKind, names: Sequence[str] | None, prefix: str | None, name: str | None, where: str) -> Component:
    if (names is None) == (prefix is None):
        raise ConfigurationError(f"{where}: pass either a list of names or prefix=..., not both or neither.")
    if prefix is not None:
        _check_prefix(prefix, f"{where}(prefix=...)")
        group_name = _check_name(name if name is not None else prefix.strip(" ._") or prefix, f"{where}(name=...)")
        return Component(group_name, kind, prefix=prefix)
    members = _names(names, where)
    if not members:
        raise ConfigurationError(f"{where}: the list of names is empty.")
    group_name = _check_name(name if name is not None else "+".join(members), f"{where}(name=...)")
    if kind is ComponentKind.GROUP:
        return Component(group_name, kind, layers=members)
    return Component(group_name, kind, features=members)


class _Model:
    def __init__(self, study: AblationStudy) -> None:
        self._study = study
        self.layers = _Layers(study)

    def add_custom_model_generator(self, fn: Callable[[Any], Any], name: str) -> None:
        """A custom component: ``fn(module) -> module`` rewrites the instantiated LightningModule
        (and returns it, or a new one) for the trial that leaves ``name`` out."""
        (component,) = _custom_components({name: fn}, "study")
        self._study._add(component)


class AblationStudy:
    """The components of a LOCO study, with the original Maggy's object API.

    For modules the user cannot decorate::

        study = lm.AblationStudy()
        study.features.include("age", "fare")
        study.model.layers.include("encoder.block2")
        study.model.layers.include_groups(prefix="head")
        study.model.layers.include_groups(["enc.n1", "enc.n2"], name="norms")
        study.model.add_custom_model_generator(strip_dropout, "no_dropout")
        lm.ablate(Net, study, ...)

    Components declared here are merged with those declared by ``@ablatable``; a component
    named twice is an error.
    """

    def __init__(self) -> None:
        self._components: list[Component] = []
        self.features = _Features(self)
        self.model = _Model(self)

    def _add(self, component: Component) -> None:
        _unique([c.name for c in self._components] + [component.name], "AblationStudy")
        self._components.append(component)

    @property
    def components(self) -> list[Component]:
        return list(self._components)

    def __len__(self) -> int:
        return len(self._components)

    def __repr__(self) -> str:
        return f"AblationStudy({', '.join(f'{c.kind.value}:{c.name}' for c in self._components)})"
