"""Search spaces: the hyperparameters a search may choose, with their types and ranges.

Example::

    space = Searchspace(
        lr=Double(1e-4, 1e-1, log=True),
        hidden=Integer(16, 256, log=True),
        batch_size=Discrete([32, 64, 128]),
        activation=Categorical(["relu", "gelu"]),
    )

A space samples configurations from a seeded generator, enumerates a grid, and maps every
configuration to a point of the unit cube ``[0, 1]^d`` and back (one coordinate per
hyperparameter), which model-based optimizers use.

The original Maggy's tuple form, ``Searchspace(lr=("DOUBLE", [0.001, 0.1]))``, is accepted too,
and so is the dict form :meth:`Searchspace.to_dict` writes, as a YAML or JSON file holds it:
``Searchspace(lr={"type": "double", "low": 0.001, "high": 0.1, "log": True})`` (``type`` in any
case; ``discrete`` and ``categorical`` take ``values``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_maggy.exceptions import SearchspaceError
from lightning_maggy.hyperparameters import Categorical, Discrete, Double, Hyperparameter, Integer, type_hint

__all__ = ["Categorical", "Discrete", "Double", "Hyperparameter", "Integer", "Searchspace"]

_KINDS: dict[str, type[Hyperparameter]] = {
    "DOUBLE": Double,
    "INTEGER": Integer,
    "DISCRETE": Discrete,
    "CATEGORICAL": Categorical,
}


def _from_spec(name: str, spec: Any) -> Hyperparameter:
    if isinstance(spec, Hyperparameter):
        return spec
    if isinstance(spec, Mapping) and "type" in spec:  # from to_dict(), or a YAML/JSON file
        return _from_mapping(name, spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):  # original Maggy
        kind, values = spec[0].upper(), spec[1]
        if isinstance(values, np.ndarray) and values.ndim == 1:  # np.array([low, high]) or choices
            values = values.tolist()
        if kind in ("DOUBLE", "INTEGER"):
            if not isinstance(values, Sequence) or len(values) != 2:
                raise SearchspaceError(
                    f"Hyperparameter {name!r}: {kind} needs [low, high], got {values!r}."
                )
            return _KINDS[kind](values[0], values[1])  # type: ignore[call-arg]
        if kind in ("DISCRETE", "CATEGORICAL"):
            return _KINDS[kind](values)  # type: ignore[call-arg]
    raise SearchspaceError(
        f"Hyperparameter {name!r}: cannot understand {spec!r}. Expected Double(low, high), "
        "Integer(low, high), Discrete([...]) or Categorical([...]), or their dict form, "
        "e.g. {'type': 'double', 'low': 0.001, 'high': 0.1, 'log': True}."
    )


#: The dict form of each kind: (required keys, optional keys), besides ``type``.
_MAPPING_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "DOUBLE": (("low", "high"), ("log",)),
    "INTEGER": (("low", "high"), ("log",)),
    "DISCRETE": (("values",), ()),
    "CATEGORICAL": (("values",), ()),
}
_MAPPING_FORMS = {
    "DOUBLE": "{type: double, low: <number>, high: <number>, log: <true|false, optional>}",
    "INTEGER": "{type: integer, low: <int>, high: <int>, log: <true|false, optional>}",
    "DISCRETE": "{type: discrete, values: [<number>, ...]}",
    "CATEGORICAL": "{type: categorical, values: [<value>, ...]}",
}


def _from_mapping(name: str, spec: Mapping[str, Any]) -> Hyperparameter:
    """A hyperparameter from its dict form (``to_dict()``'s, with ``type`` in any case), with an
    error naming the entry and the form expected for anything else."""
    kind = spec["type"].upper() if isinstance(spec["type"], str) else None
    if kind not in _MAPPING_KEYS:
        raise SearchspaceError(
            f"Hyperparameter {name!r}: type {spec['type']!r} is not one of double, integer, "
            "discrete, categorical."
        )
    required, optional = _MAPPING_KEYS[kind]
    missing = [k for k in required if k not in spec]
    unknown = [k for k in spec if k != "type" and k not in required + optional]
    if missing or unknown:
        what = [f"missing {', '.join(missing)}"] if missing else []
        what += [f"unknown {', '.join(map(str, unknown))}"] if unknown else []
        raise SearchspaceError(f"Hyperparameter {name!r}: {'; '.join(what)}; expected {_MAPPING_FORMS[kind]}.")
    for key in ("low", "high"):
        if isinstance(spec.get(key), str):  # e.g. a YAML loader that reads 1e-4 (no dot) as text
            raise SearchspaceError(
                f"Hyperparameter {name!r}: {key}={spec[key]!r} is a string, not a number (some YAML "
                "readers take 1e-4 for text: write 1.0e-4)."
            )
    if not isinstance(spec.get("log", False), bool):
        raise SearchspaceError(f"Hyperparameter {name!r}: log={spec['log']!r} must be true or false.")
    try:
        if kind in ("DOUBLE", "INTEGER"):
            return _KINDS[kind](spec["low"], spec["high"], log=spec.get("log", False))  # type: ignore[call-arg]
        return _KINDS[kind](spec["values"])  # type: ignore[call-arg]
    except SearchspaceError as err:
        raise SearchspaceError(f"Hyperparameter {name!r}: {err}") from None


class Searchspace:
    """An ordered set of named hyperparameters.

    Args:
        **params: name -> :class:`Double` | :class:`Integer` | :class:`Discrete` |
            :class:`Categorical` (or the original Maggy's ``("DOUBLE", [low, high])`` tuples).
    """

    def __init__(self, **params: Any) -> None:
        if not params:
            raise SearchspaceError(
                "Searchspace() is empty; declare at least one hyperparameter, "
                "e.g. Searchspace(lr=Double(1e-4, 1e-1, log=True))."
            )
        self._params: dict[str, Hyperparameter] = {}
        for name, spec in params.items():
            if not name.isidentifier():
                raise SearchspaceError(
                    f"Hyperparameter name {name!r} is not a valid Python identifier; "
                    "names are passed as keyword arguments to your module."
                )
            self._params[name] = _from_spec(name, spec)

    # -- mapping-like access ------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._params)

    def __getitem__(self, name: str) -> Hyperparameter:
        try:
            return self._params[name]
        except KeyError:
            raise SearchspaceError(
                f"Unknown hyperparameter {name!r}; this space has {self.names()}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def items(self) -> list[tuple[str, Hyperparameter]]:
        return list(self._params.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"Searchspace({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Searchspace) and self.to_dict() == other.to_dict()

    # -- operations ---------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draws one configuration from ``rng`` (a :class:`numpy.random.Generator`)."""
        return {name: hp.sample(rng) for name, hp in self._params.items()}

    def grid(self, grid_size: int = 5) -> list[dict[str, Any]]:
        """Every combination of the per-dimension grids, in a stable order.

        Args:
            grid_size: points per continuous dimension (Double, and Integer ranges wider than it).
        """
        if not isinstance(grid_size, int) or grid_size < 1:
            raise SearchspaceError(f"grid_size must be a positive int, got {grid_size!r}.")
        axes = [hp.grid(grid_size) for hp in self._params.values()]
        return [dict(zip(self._params, combo)) for combo in itertools.product(*axes)]

    def grid_count(self, grid_size: int = 5) -> int:
        return math.prod(len(hp.grid(grid_size)) for hp in self._params.values())

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """Maps a configuration to a point of the unit cube, one coordinate per hyperparameter."""
        self.validate(config)
        return np.array([hp.encode(config[name]) for name, hp in self._params.items()], dtype=float)

    def decode(self, point: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Maps a point of the unit cube back to a valid configuration."""
        point = np.asarray(point, dtype=float).reshape(-1)
        if point.shape[0] != len(self._params):
            raise SearchspaceError(
                f"decode() got a point of dimension {point.shape[0]}, the space has {len(self)}."
            )
        return {name: hp.decode(u) for (name, hp), u in zip(self._params.items(), point)}

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raises :class:`SearchspaceError` unless ``config`` names every hyperparameter with a
        valid value and nothing else."""
        if not isinstance(config, Mapping):
            raise SearchspaceError(f"A configuration must be a dict, got {type(config).__name__}.")
        unknown = sorted(set(config) - set(self._params))
        missing = [n for n in self._params if n not in config]
        if unknown or missing:
            raise SearchspaceError(
                f"Configuration {dict(config)!r} does not match the space: "
                f"unknown names {unknown}, missing names {missing}; the space has {self.names()}."
            )
        for name, hp in self._params.items():
            if not hp.contains(config[name]):
                value, hint = config[name], type_hint(hp, config[name])
                where = f"of type {type(value).__name__} is not a value of" if hint else "is outside"
                raise SearchspaceError(f"Hyperparameter {name!r}: value {value!r} {where} {hp!r}.{hint}")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: hp.to_dict() for name, hp in self._params.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Searchspace:
        return cls(**{name: _from_spec(name, spec) for name, spec in data.items()})
