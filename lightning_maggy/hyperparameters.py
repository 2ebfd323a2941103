"""The hyperparameter types of a search space: :class:`Double`, :class:`Integer`,
:class:`Discrete` and :class:`Categorical`, each sampling, enumerating a grid, and mapping its
values to a coordinate of the unit interval and back (see :mod:`lightning_maggy.searchspace`)."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_maggy.exceptions import SearchspaceError

__all__ = ["Categorical", "Discrete", "Double", "Hyperparameter", "Integer"]

_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_number(value: Any) -> bool:
    """A number given as a bound or a choice (NumPy scalars included: they are converted)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_plain_number(value: Any) -> bool:
    """A number a configuration may hold: a Python int or float (``np.float64`` is a float),
    which JSON records and sends to the workers as it is; ``np.int64`` or ``np.float32`` is not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The bounds numpy's generator draws integers within.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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

    def __eq__(self, other: object) -> bool:
        """Equal when of the same type with the same description (:meth:`to_dict`)."""
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.describe())


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
        if not isinstance(log, (bool, np.bool_)) and log not in (0, 1):
            raise SearchspaceError(f"{name}(low={low!r}, high={high!r}, log={log!r}): log must be True or False.")
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


class Double(_Range):
    """A real number in ``[low, high]``, sampled uniformly or log-uniformly (``log=True``, which
    needs ``low > 0``). Bounds may be NumPy scalars; trials get a Python ``float``. Its grid holds
    both bounds as given."""

    kind = "DOUBLE"

    def __init__(self, low: float, high: float, log: bool = False) -> None:
        super().__init__(float(low) if _is_number(low) else low, float(high) if _is_number(high) else high, log)

    # decode() clamps: exp(log(x)) and low + 1.0 * (high - low) may round past the bounds.
    def sample(self, rng: np.random.Generator) -> float:
        return self.decode(rng.random())

    def grid(self, grid_size: int) -> list[float]:
        if grid_size == 1:
            return [self._tidy(self.decode(0.5))]
        return [self._tidy(self.decode(i / (grid_size - 1))) for i in range(grid_size)]

    def _tidy(self, x: float) -> float:
        """``x`` to 15 significant digits, inside the bounds: a grid point the user reads as
        0.001, not exp(log(...))'s 0.0010000000000000002 (the trial gets what the table shows)."""
        return float(min(self.high, max(self.low, float(f"{x:.15g}"))))

    def encode(self, value: Any) -> float:
        return self._to_unit(float(value))

    def decode(self, u: float) -> float:
        if u <= 0.0 or u >= 1.0:  # the bounds as given, not exp(log(low)) rounded
            return self.low if u <= 0.0 else self.high
        return float(min(self.high, max(self.low, self._from_unit(u))))

    def contains(self, value: Any) -> bool:
        return _is_plain_number(value) and self.low <= float(value) <= self.high


class Integer(_Range):
    """An integer in ``[low, high]`` (both included), uniform or log-uniform (``log=True``).

    Bounds are ints (NumPy ints too) within the 64-bit range; trials get a Python ``int``, and a
    configuration (a custom optimizer's) must hold one: ``3.0`` or ``np.int64(3)`` is refused."""

    kind = "INTEGER"

    def __init__(self, low: int, high: int, log: bool = False) -> None:
        for bound in (low, high):
            if not isinstance(bound, (int, np.integer)) or isinstance(bound, bool):
                whole = all(_is_number(b) and float(b).is_integer() for b in (low, high))
                raise SearchspaceError(
                    f"Integer(low={low!r}, high={high!r}): bounds must be ints; "
                    + (f"write Integer({int(low)}, {int(high)})." if whole else "use Double for real numbers.")
                )
            if not _INT64_MIN <= int(bound) <= _INT64_MAX:
                raise SearchspaceError(
                    f"Integer(low={low!r}, high={high!r}): bounds must lie within the 64-bit integers "
                    "[-2**63, 2**63 - 1], which numpy's generator draws from; for a wider range, search "
                    "Double(low, high, log=True) and round the value in your module."
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
        if self.high == _INT64_MAX:  # high + 1 would overflow numpy's int64
            return int(rng.integers(self.low, self.high, endpoint=True))
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
            points.append(min(self.high, max(self.low, int(round(x)))))  # floats round past 2**53
        return sorted(set(points))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


class _Choice(Hyperparameter):
    def __init__(self, values: Sequence[Any]) -> None:
        name = type(self).__name__
        if isinstance(values, np.ndarray) and values.ndim == 1:
            values = values.tolist()  # NumPy scalars become Python ones
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise SearchspaceError(
                f"{name}({values!r}): expected a list of values, e.g. {name}([32, 64, 128])"
                + (" (a set has no order: pass sorted(...))." if isinstance(values, (set, frozenset)) else ".")
            )
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
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


class Discrete(_Choice):
    """One of an ordered list of distinct numbers, e.g. ``Discrete([32, 64, 128])`` or
    ``Discrete(np.arange(16, 129, 16))`` (NumPy values become Python ones; 1 and 1.0 are one
    number, refused as a duplicate)."""

    kind = "DISCRETE"

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(values)
        if not all(_is_number(v) for v in self.values):
            raise SearchspaceError(
                f"Discrete({self.values!r}): values must be numbers; use Categorical for other values."
            )
        if len(set(self.values)) != len(self.values):  # 1 and 1.0 are one number
            raise SearchspaceError(
                f"Discrete({self.values!r}): values must be distinct numbers; some are equal (e.g. 1 "
                "and 1.0). Remove the duplicates."
            )
        self.values = sorted(self.values)


class Categorical(_Choice):
    """One of an unordered list of values, e.g. ``Categorical(["relu", "gelu"])``: str, int,
    float, bool or None (NumPy scalars become Python ones), distinct as JSON writes them, and
    given to trials as they are."""

    kind = "CATEGORICAL"


def type_hint(hp: Hyperparameter, value: Any) -> str:
    """Why ``value`` may have been refused for its type, as advice for the message; "" if not."""
    if isinstance(value, np.generic):
        return (
            f" It is a NumPy {type(value).__name__}: a configuration holds Python values (int, float, "
            "str, bool, None), which are recorded as JSON and given to your module as they are; "
            "convert it with value.item()."
        )
    if isinstance(hp, Integer) and isinstance(value, float) and value.is_integer():
        return f" An Integer dimension takes Python ints: return int(value) ({int(value)}), not a float."
    return ""
