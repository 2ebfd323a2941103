"""What a trial's function returns, read as its final metric.

The original Maggy contract: a function trial, ``fn(hparams, reporter)``, returns its final metric
as a number, or a dict that holds it under the study's metric name; ``None`` leaves the final
metric to its last report. Anything else would end every trial the same way, so it is a
:class:`~lightning_maggy.exceptions.ConfigurationError` (fatal: the study stops at the first one).
A train function, ``train(hparams)``, reports through its Trainer; what it returns counts only
when it is such a number or dict, and is otherwise ignored (it may return a Trainer, a model, or
``trainer.validate()``'s list).
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping
from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = ["as_number", "describe", "returned_metric"]

ACCEPTED = (
    "a number (an int or float, a NumPy scalar, a tensor of one element, anything whose .item() "
    "is a real number), a dict holding the metric {metric!r} (other keys are ignored), or None "
    "to take the last reported value"
)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


def as_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bool excepted, NumPy and one-element tensors
    included, NaN and infinities kept: the server applies the NaN/inf policy), else None."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, numbers.Real):  # NumPy scalars are; tensors and arrays are not
        item = getattr(value, "item", None)
        if not callable(item):
            return None
        try:
            value = item()
        except Exception:  # several elements (ValueError, RuntimeError), or a user's own .item()
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
    try:
        return float(value)
    except OverflowError:  # an int beyond a float
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        return None


def returned_metric(value: Any, metric: str, *, strict: bool, who: str = "the trial function") -> float | None:
    """The final metric in what a trial returned (see the module docstring).

    Args:
        value: what the function returned.
        metric: the study's metric name, the key read from a returned dict.
        strict: raise for anything not accepted (a function trial); else return None for it (a
            train function).
        who: how the message names the function.

    Raises:
        ConfigurationError: ``strict`` and ``value`` is neither None, a number, nor a dict
            holding ``metric`` as a number.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        if metric in value:
            number = as_number(value[metric])
            if number is not None or not strict:
                return number
            what = f"a dict whose {metric!r} is {describe(value[metric])}"
        elif not strict:
            return None
        else:
            keys = ", ".join(_repr.repr(key) for key in list(value)[:8]) or "none"
            what = f"a dict without the metric {metric!r} (its keys: {keys})"
    else:
        number = as_number(value)
        if number is not None or not strict:
            return number
        what = describe(value)
    raise ConfigurationError(f"{who} returned {what}; it must return {ACCEPTED.format(metric=metric)}.")


def describe(value: Any) -> str:
    """``value``'s short repr on one line, with its type (and shape, for an array or tensor)."""
    cls = type(value)
    package = cls.__module__.split(".")[0]
    kind = "type " + (cls.__name__ if package == "builtins" else f"{package}.{cls.__name__}")
    shape = getattr(value, "shape", None)
    if (isinstance(shape, tuple) or type(shape).__name__ == "Size") and len(shape) > 0:
        kind += f", shape {tuple(shape)}"
    try:
        text = " ".join(_repr.repr(value).split())
    except Exception:  # a user's object whose repr fails
        text = f"<{cls.__name__}>"
    return f"{text} ({kind})"
