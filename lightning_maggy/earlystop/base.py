"""The developer API for early-stop rules, with the original Maggy's names."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from lightning_maggy.trial import Trial

__all__ = ["AbstractEarlyStop", "NoEarlyStop"]


class AbstractEarlyStop(ABC):
    """Decides which running trials to stop early. A pure decision object: it sees trial records
    and returns ids; the controller applies the decision."""

    @abstractmethod
    def earlystop_check(
        self,
        to_check: Mapping[str, Trial],
        finalized_trials: Sequence[Trial],
        direction: str,
    ) -> list[str]:
        """Returns the ids of the trials in ``to_check`` that should stop now.

        Args:
            to_check: trial_id -> running trial, each with its metric ``history`` so far.
            finalized_trials: the trials that have finished (completed, stopped or paused at a
                rung); failed trials are excluded.
            direction: "max" or "min".
        """


class NoEarlyStop(AbstractEarlyStop):
    """Never stops a trial."""

    def earlystop_check(
        self,
        to_check: Mapping[str, Trial],
        finalized_trials: Sequence[Trial],
        direction: str,
    ) -> list[str]:
        return []
