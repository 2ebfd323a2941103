"""How many trials share a GPU, or how many GPUs one trial gets (``search(gpus_per_trial=)``).

Pure arithmetic and checks; torch is imported only to count the visible GPUs.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from lightning_maggy.exceptions import ConfigurationError

__all__ = ["check_gpus_per_trial", "plan_gpus", "trials_per_gpu", "visible_gpus"]


def check_gpus_per_trial(value: Any) -> None:
    """``value`` is an int >= 1 (GPUs per trial) or a fraction 1/n (n trials share one GPU)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) and value > 0
    if ok and value >= 1:
        ok = float(value).is_integer()
    elif ok:
        ok = abs(1.0 / float(value) - round(1.0 / float(value))) < 1e-9
    if not ok:
        raise ConfigurationError(
            f"gpus_per_trial={value!r}: expected a whole number of GPUs per trial (1, 2, ...) or a "
            "fraction 1/n of one GPU (0.5, 0.25, 0.125, ...) to pack n trials on each GPU."
        )


def trials_per_gpu(gpus_per_trial: float) -> int:
    """n for a fraction 1/n; 1 for whole GPUs."""
    return 1 if gpus_per_trial >= 1 else int(round(1.0 / float(gpus_per_trial)))


def plan_gpus(gpus_per_trial: float, workers: int | None, visible: int) -> int:
    """The number of workers (trials at a time) for ``gpus_per_trial`` on ``visible`` GPUs:
    ``workers`` when given and it fits, else all that fit.

    Raises:
        ConfigurationError: no GPU is visible, a trial asks for more GPUs than exist, or
            ``workers`` trials at a time would not fit.
    """
    check_gpus_per_trial(gpus_per_trial)
    if visible <= 0:
        raise ConfigurationError(
            f"gpus_per_trial={gpus_per_trial!r}, but no GPU is visible to this process "
            "(torch.cuda.device_count() is 0; check CUDA_VISIBLE_DEVICES and the CUDA build of "
            "torch), or leave gpus_per_trial=None to train on the CPU."
        )
    if gpus_per_trial >= 1:
        per_trial = int(gpus_per_trial)
        if per_trial > visible:
            raise ConfigurationError(
                f"gpus_per_trial={per_trial} asks for more GPUs per trial than the {visible} visible; "
                f"use gpus_per_trial <= {visible}."
            )
        capacity = visible // per_trial
    else:
        capacity = visible * trials_per_gpu(gpus_per_trial)
    if workers is None:
        return capacity
    if workers > capacity:
        raise ConfigurationError(
            f"workers={workers} trials at a time with gpus_per_trial={gpus_per_trial!r} need more "
            f"than the {visible} visible GPU(s): at most {capacity} fit. Lower workers, or "
            "leave it unset to run as many as fit."
        )
    return workers


def visible_gpus() -> int:
    """The GPUs this process sees (0 without torch's CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
