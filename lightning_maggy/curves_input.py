"""The checks of :class:`~lightning_maggy.simulator.Curves`' arrays, with messages that say
which curve is wrong (numpy's own errors, for a ragged list, name neither curves nor epochs)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightning_maggy.exceptions import ConfigurationError

__all__ = ["curve_arrays"]


def curve_arrays(n: int, values: Any, seconds: Any, run_overhead: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` and ``seconds`` as float arrays of shape (``n`` configurations, epochs).

    Raises:
        ConfigurationError: curves of different lengths, shapes that do not match ``n`` or each
            other, or seconds and ``run_overhead`` that are not finite and >= 0.
    """
    arrays = [_matrix(name, data) for name, data in (("values", values), ("seconds", seconds))]
    vals, secs = arrays
    if n == 0 or vals.ndim != 2 or vals.shape[0] != n or secs.shape != vals.shape:
        raise ConfigurationError(
            f"Curves: got {n} configurations, values of shape {vals.shape} and seconds of shape "
            f"{secs.shape}; expected at least one configuration and both arrays of shape "
            "(configurations, epochs)."
        )
    if not np.all(np.isfinite(secs)) or np.any(secs < 0) or not (math.isfinite(run_overhead) and run_overhead >= 0):
        raise ConfigurationError("Curves: seconds and run_overhead must be finite and >= 0.")
    return vals, secs


def _matrix(name: str, data: Any) -> np.ndarray:
    try:
        return np.asarray(data, dtype=float)
    except (TypeError, ValueError) as err:
        lengths = _row_lengths(data)
        if lengths is not None and len(set(lengths)) > 1:
            short = min(range(len(lengths)), key=lengths.__getitem__)
            raise ConfigurationError(
                f"Curves: the {name} are curves of different lengths ({min(lengths)} to {max(lengths)} epochs; "
                f"configuration {short} has {lengths[short]}): every configuration needs a value for each of "
                "the same epochs (cut the curves to the shortest, or leave the short ones out)."
            ) from err
        raise ConfigurationError(f"Curves: {name} must be numbers of shape (configurations, epochs): {err}") from err


def _row_lengths(data: Any) -> list[int] | None:
    try:
        return [len(row) for row in data]
    except TypeError:
        return None
