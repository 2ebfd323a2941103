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
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_maggy.exceptions import SearchspaceError

__all__ = ["Categorical", "Discrete", "Double", "Hyperparameter", "Integer", "Searchspace"]

_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class Hyperparameter(ABC):
    """One dimension of a search space."""

    kind: str = ""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """Draws one value."""

    @abstractmethod
    def grid(self, grid_size: int) -> list[Any]:
        """Returns the values this dimension takes in a grid search."""

    @abstractmethod
    def encode(self, value: Any) -> float:
        """Maps a valid value to ``[0, 1]``."""

    @abstractmethod
    def decode(self, u: float) -> Any:
        """Maps a point of ``[0, 1]`` to a valid value (the inverse of :meth:`encode`)."""

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this dimension."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, read back by :meth:`Searchspace.from_dict`."""

    def describe(self) -> str:
        return json.dumps(self.to_dict())


class _Range(Hyperparameter):
    def __init__(self, low: float, high: float, log: bool = False) -> None:
        name = type(self).__name__
        if not _is_number(low) or not _is_number(high):
            raise SearchspaceError(
                f"{name}(low={low!r}, high={high!r}): low and high must be numbers."
            )
        if not (math.isfinite(float(low)) and math.isfinite(float(high))):
            raise SearchspaceError(f"{name}(low={low!r}, high={high!r}): bounds must be finite.")
        if low >= high:
            raise SearchspaceError(
                f"{name}(low={low!r}, high={high!r}): low must be smaller than high. "
                f"For a fixed value, pass it to the module directly or use Discrete([{low!r}])."
            )
        if log and low <= 0:
            raise SearchspaceError(
                f"{name}(low={low!r}, high={high!r}, log=True): a log scale needs low > 0; "
                "use a positive lower bound or log=False."
            )
        self.low = low
        self.high = high
        self.log = bool(log)

    def _to_unit(self, x: float) -> float:
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return (math.log(x) - lo) / (hi - lo)
        return (x - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> float:
        u = min(1.0, max(0.0, float(u)))
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return math.exp(lo + u * (hi - lo))
        return self.low + u * (self.high - self.low)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}

    def __repr__(self) -> str:
        log = ", log=True" if self.log else ""
        return f"{type(self).__name__}({self.low!r}, {self.high!r}{log})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.describe())


class Double(_Range):
    """A real number in ``[low, high]``, sampled uniformly or log-uniformly (``log=True``)."""

    kind = "DOUBLE"

    def __init__(self, low: float, high: float, log: bool = False) -> None:
        super().__init__(float(low) if _is_number(low) else low, float(high) if _is_number(high) else high, log)

    # decode() clamps: exp(log(x)) and low + 1.0 * (high - low) may round past the bounds.
    def sample(self, rng: np.random.Generator) -> float:
        return self.decode(rng.random())

    def grid(self, grid_size: int) -> list[float]:
        if grid_size == 1:
            return [self.decode(0.5)]
        return [self.decode(i / (grid_size - 1)) for i in range(grid_size)]

    def encode(self, value: Any) -> float:
        return self._to_unit(float(value))

    def decode(self, u: float) -> float:
        return float(min(self.high, max(self.low, self._from_unit(u))))

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= float(value) <= self.high


class Integer(_Range):
    """An integer in ``[low, high]`` (both included), uniform or log-uniform (``log=True``)."""

    kind = "INTEGER"

    def __init__(self, low: int, high: int, log: bool = False) -> None:
        for bound in (low, high):
            if not isinstance(bound, (int, np.integer)) or isinstance(bound, bool):
                raise SearchspaceError(
                    f"Integer(low={low!r}, high={high!r}): bounds must be ints; "
                    "use Double for real numbers."
                )
        super().__init__(int(low), int(high), log)

    # Each integer v owns an equal cell of the unit interval: [v, v + 1) on a linear or a log
    # scale; encode() returns the cell's midpoint and decode() the cell a point falls in.
    def encode(self, value: Any) -> float:
        v = int(value)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high + 1)
            return (0.5 * (math.log(v) + math.log(v + 1)) - lo) / (hi - lo)
        return (v - self.low + 0.5) / (self.high - self.low + 1)

    def decode(self, u: float) -> int:
        u = min(1.0, max(0.0, float(u)))
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high + 1)
            v = int(math.floor(math.exp(lo + u * (hi - lo))))
        else:
            v = self.low + int(math.floor(u * (self.high - self.low + 1)))
        return int(min(self.high, max(self.low, v)))

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            return self.decode(rng.random())
        return int(rng.integers(self.low, self.high + 1))

    def grid(self, grid_size: int) -> list[int]:
        count = self.high - self.low + 1
        if count <= grid_size:
            return list(range(self.low, self.high + 1))
        if grid_size == 1:
            return [self.decode(0.5)]
        points = []
        for i in range(grid_size):
            lo_hi = self.low, self.high
            if self.log:
                x = math.exp(math.log(lo_hi[0]) + i / (grid_size - 1) * math.log(lo_hi[1] / lo_hi[0]))
            else:
                x = lo_hi[0] + i / (grid_size - 1) * (lo_hi[1] - lo_hi[0])
            points.append(int(round(x)))
        return sorted(set(points))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not _is_number(value):
            return False
        return float(value).is_integer() and self.low <= value <= self.high


class _Choice(Hyperparameter):
    def __init__(self, values: Sequence[Any]) -> None:
        name = type(self).__name__
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise SearchspaceError(
                f"{name}({values!r}): expected a list of values, e.g. {name}([32, 64, 128])."
            )
        values = list(values)
        if not values:
            raise SearchspaceError(f"{name}([]): needs at least one value.")
        for v in values:
            if not isinstance(v, _JSON_SCALARS) or (isinstance(v, float) and not math.isfinite(v)):
                raise SearchspaceError(
                    f"{name}: value {v!r} of type {type(v).__name__} is not allowed; values must be "
                    "str, int, float, bool or None so that trials can be recorded as JSON. "
                    "Map richer objects inside your module (e.g. a name -> class dict)."
                )
        if len({json.dumps(v) for v in values}) != len(values):
            raise SearchspaceError(f"{name}({values!r}): values must be distinct.")
        self.values = values

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self, grid_size: int) -> list[Any]:
        return list(self.values)

    def _index(self, value: Any) -> int:
        key = json.dumps(value)
        for i, v in enumerate(self.values):
            if json.dumps(v) == key:
                return i
        raise SearchspaceError(f"{value!r} is not one of {self.values!r}")

    def encode(self, value: Any) -> float:
        return (self._index(value) + 0.5) / len(self.values)

    def decode(self, u: float) -> Any:
        u = min(1.0, max(0.0, float(u)))
        return self.values[min(len(self.values) - 1, int(math.floor(u * len(self.values))))]

    def contains(self, value: Any) -> bool:
        try:
            self._index(value)
        except (SearchspaceError, TypeError):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "values": list(self.values)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.values!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.describe())


class Discrete(_Choice):
    """One of an ordered list of numbers, e.g. ``Discrete([32, 64, 128])``."""

    kind = "DISCRETE"

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(values)
        if not all(_is_number(v) for v in self.values):
            raise SearchspaceError(
                f"Discrete({self.values!r}): values must be numbers; use Categorical for other values."
            )
        self.values = sorted(self.values)


class Categorical(_Choice):
    """One of an unordered list of values, e.g. ``Categorical(["relu", "gelu"])``."""

    kind = "CATEGORICAL"


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
                raise SearchspaceError(
                    f"Hyperparameter {name!r}: value {config[name]!r} is outside {hp!r}."
                )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: hp.to_dict() for name, hp in self._params.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Searchspace:
        return cls(**{name: _from_spec(name, spec) for name, spec in data.items()})
