"""The leave-one-component-out (LOCO) planner: the "optimizer" of an ablation study.

It is a pure decision object on the same controller as ``search()`` (the original Maggy's
"ablator" in place of the optimizer): it proposes one base trial and one trial per component,
each repeated with the same k seeds (a paired design: the base and every component see the same
seeds, so their difference per seed is a paired sample). It keeps no state that the trial records
do not hold: a trial's ``component`` and ``seed`` say which (component, seed) pairs exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning_maggy.exceptions import ConfigurationError
from lightning_maggy.optimizers.base import ALWAYS, AbstractOptimizer, SuggestionResult
from lightning_maggy.trial import Trial

__all__ = ["LOCO", "loco_plan"]


def loco_plan(components: Sequence[str], seeds: Sequence[int]) -> list[tuple[str | None, int]]:
    """Every (component, seed) of a LOCO study, seed by seed: the base (None) first, then each
    component in order. Running seed by seed means a study cut short still has complete pairs.

    >>> loco_plan(["a", "b"], [0, 1])
    [(None, 0), ('a', 0), ('b', 0), (None, 1), ('a', 1), ('b', 1)]
    """
    if len(set(components)) != len(components):
        raise ConfigurationError(f"loco_plan: component names must be unique, got {list(components)}.")
    if not seeds:
        raise ConfigurationError("loco_plan: at least one seed is needed.")
    return [(c, s) for s in seeds for c in (None, *components)]


class LOCO(AbstractOptimizer):
    """Leave one component out: a base trial plus one trial per component, k seeds each.

    Args:
        hparams: the hyperparameters every trial trains with (the module's keyword arguments).
        components: the component names, in the order their trials start.
        seeds: the training seeds; every component (base included) runs once per seed.
    """

    def __init__(self, hparams: Mapping[str, Any], components: Sequence[str], seeds: Sequence[int]) -> None:
        super().__init__(seed=None)
        self.hparams = dict(hparams)
        self.plan = loco_plan(list(components), [int(s) for s in seeds])
        self._next = 0

    def validate(self) -> None:
        self._require(
            self.num_trials is None or self.num_trials >= len(self.plan),
            f"LOCO: num_trials={self.num_trials} is smaller than the study's {len(self.plan)} trials.",
        )

    def initialize(self) -> None:
        self._next = 0

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        del trial
        while self._next < len(self.plan):
            component, seed = self.plan[self._next]
            self._next += 1
            candidate = Trial.create(self.hparams, budget=self.max_epochs, component=component, seed=seed)
            if candidate.trial_id not in self.trials:  # already run (a resumed study): skip it
                return candidate
        return None

    def continue_until(self, trial: Trial) -> int:
        del trial
        return ALWAYS

    def finalize_experiment(self, trials: list[Trial]) -> None:
        del trials
