"""Ablation studies: leave one component out (LOCO), declared by decorators, applied by rewriting
the LightningModule in each trial.

- :mod:`~lightning_maggy.ablation.components`: ``@ablatable`` and :class:`AblationStudy` (pure).
- :mod:`~lightning_maggy.ablation.planner`: the LOCO planner, a pure decision object on the same
  controller as ``search()``.
- :mod:`~lightning_maggy.ablation.resolve`: checks the study against the real module and data
  before any worker starts.
- :mod:`~lightning_maggy.ablation.surgery` and :mod:`~lightning_maggy.ablation.features`: the
  worker side (layers replaced, custom generators applied, features made uninformative).
- :mod:`~lightning_maggy.ablation.result`: the table with paired deltas and their intervals.
- :mod:`~lightning_maggy.ablation.api`: :func:`ablate`.
"""

from __future__ import annotations

from lightning_maggy.ablation.components import AblationStudy, Component, ComponentKind, ablatable
from lightning_maggy.ablation.planner import LOCO, loco_plan

__all__ = ["LOCO", "AblationStudy", "Component", "ComponentKind", "ablatable", "loco_plan"]
