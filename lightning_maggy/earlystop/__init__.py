"""Early-stop rules: pure decision objects that judge running trials.

Use one by name (``get_earlystop("median")``) or pass an instance. Write your own by subclassing
:class:`AbstractEarlyStop`.
"""

from __future__ import annotations

from typing import Any

from lightning_maggy.earlystop.base import AbstractEarlyStop, NoEarlyStop
from lightning_maggy.earlystop.curve import CurvePredictionRule
from lightning_maggy.earlystop.median import MedianStoppingRule
from lightning_maggy.exceptions import ConfigurationError

__all__ = ["AbstractEarlyStop", "CurvePredictionRule", "MedianStoppingRule", "NoEarlyStop", "get_earlystop"]

_RULES: dict[str, type[AbstractEarlyStop]] = {
    "none": NoEarlyStop,
    "median": MedianStoppingRule,
    "curve": CurvePredictionRule,
}


def get_earlystop(
    name_or_obj: str | AbstractEarlyStop | type[AbstractEarlyStop] | None, **kwargs: Any
) -> AbstractEarlyStop:
    """The early-stop rule that ``name_or_obj`` names.

    Args:
        name_or_obj: None or "none" (never stop), "median" (:class:`MedianStoppingRule`),
            "curve" (:class:`CurvePredictionRule`, learning-curve extrapolation), an
            :class:`AbstractEarlyStop` instance (returned as is) or subclass (instantiated).
        **kwargs: constructor arguments, e.g. ``get_earlystop("median", min_trials=5)`` or
            ``get_earlystop("curve", threshold=0.1)``.

    Raises:
        ConfigurationError: for an unknown name or object, or arguments the rule rejects.
    """
    if isinstance(name_or_obj, AbstractEarlyStop):
        if kwargs:
            raise ConfigurationError(
                f"get_earlystop({name_or_obj!r}, {', '.join(kwargs)}=...): keyword arguments are "
                "only used with a name or a class; configure the instance directly instead."
            )
        return name_or_obj
    cls: type[AbstractEarlyStop] | None = None
    if name_or_obj is None:
        cls = NoEarlyStop
    elif isinstance(name_or_obj, str):
        cls = _RULES.get(name_or_obj.strip().lower())
    elif isinstance(name_or_obj, type) and issubclass(name_or_obj, AbstractEarlyStop):
        cls = name_or_obj
    if cls is None:
        raise ConfigurationError(
            f"Unknown early-stop rule {name_or_obj!r}; choose one of "
            f"{list(_RULES)} (or None), or pass an AbstractEarlyStop instance or subclass."
        )
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"cannot create {cls.__name__}(**{kwargs!r}): {exc}") from exc
