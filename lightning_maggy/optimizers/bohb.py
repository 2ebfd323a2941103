"""BOHB: asynchronous successive halving whose new configurations come from a model.

Falkner, Klein, Hutter: "BOHB: Robust and Efficient Hyperparameter Optimization at Scale",
ICML 2018 (a TPE-like model, fitted on the largest budget with enough observations, proposes the
configurations successive halving starts; a fraction rho of them stays random). Here the rungs
are ASHA's (Li et al. 2018, :class:`~lightning_maggy.optimizers.asha.ASHA`), as in the
asynchronous variants of BOHB, and the model is TPE (Optuna's, :func:`propose_optuna`) or a GP
(:func:`propose_gp`), composed through ASHA's ``suggester`` seam.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_maggy.exceptions import ConfigurationError, SearchspaceError
from lightning_maggy.optimizers.asha import ASHA, check_flag
from lightning_maggy.optimizers.base import IDLE, Job, SuggestionResult
from lightning_maggy.optimizers.model_based import (
    PENDING_STATES,
    Observations,
    Proposer,
    derived_seed,
    require_modules,
)
from lightning_maggy.searchspace import Searchspace
from lightning_maggy.trial import Trial, TrialState, trial_id_for

__all__ = ["BOHB", "rung_observations"]

_MODELS = ("tpe", "gp")


def rung_observations(
    trials: Mapping[str, Trial], budget: int, space: Searchspace, direction: str, seed: int
) -> Observations:
    """The snapshot a BOHB model is fitted on: every trial that reached the rung of ``budget``
    epochs, with its value there (``history[budget - 1]``; NaN values count as failures), and
    as pending the unfinished trials (running, pending, lost) that have not reached it yet."""
    observed = []
    failed = []
    pending = []
    for trial in trials.values():
        if len(trial.history) >= budget:
            value = float(trial.history[budget - 1])
            if value == value and abs(value) != float("inf"):
                observed.append((dict(trial.config), value))
            else:
                failed.append(dict(trial.config))
        elif trial.state in PENDING_STATES and trial.state is not TrialState.PAUSED:
            pending.append(dict(trial.config))
    return Observations(
        space=space,
        direction=direction,
        observed=tuple(observed),
        pending=tuple(pending),
        failed=tuple(failed),
        known=frozenset(trials),
        seed=seed,
    )


class BOHB(ASHA):
    """BOHB (Falkner et al. 2018) on ASHA's asynchronous rungs.

    Promotions are ASHA's, with ``early_promotion`` by default. A new bottom-rung
    configuration is, with probability ``random_fraction`` (the paper's rho) or while no rung
    has ``min_points`` results, a random sample (ASHA's own); otherwise the proposal of a model
    fitted on the results of the *highest* rung that has at least ``min_points`` of them (the
    paper's largest budget with enough observations), with the trials still running below that
    rung as pending points.
    NaN rung values are left out of the model; failed trials never reach a rung.

    The model is fitted in a :class:`~lightning_maggy.optimizers.base.Job` (under a controller
    on its background thread, called directly inline). Reproducible from the records: the
    random/model choice and the model's seed derive from ``(seed, number of records)``, and the
    random samples use ASHA's recorded draws.

    Args:
        reduction_factor: eta (ASHA's and the paper's).
        resource_min: r, epochs of the bottom rung (the paper's b_min).
        resource_max: R, epochs of the top rung (b_max); None: ``max_epochs``.
        seed: seed of the optimizer; None takes the experiment's seed.
        model: ``"tpe"`` (default; Optuna's multivariate TPE, the paper's choice of a
            TPE-like kernel density model) or ``"gp"`` (BoTorch GP with log noisy EI).
        random_fraction: rho, the fraction of new configurations drawn at random (default
            1/3 as in the paper).
        min_points: N_min, the results a rung needs before its model is used; default
            ``d + 2`` for d hyperparameters.
        model_options: ``optuna.samplers.TPESampler`` arguments for ``model="tpe"``, or
            :class:`~lightning_maggy.optimizers.gp.GPSettings` fields (``num_restarts``,
            ``raw_samples``, ``mc_samples``) for ``model="gp"``.
        max_retries: extra draws per new trial when a drawn configuration is already known.
        early_promotion: True (default): while a rung has fewer than eta results, its best
            trial so far is promoted too (as :class:`~lightning_maggy.optimizers.asha.ASHA`'s
            ``early_promotion``, the rule of Optuna's ``SuccessiveHalvingPruner``), so the
            model has results from the higher rungs sooner and a fully trained model comes
            sooner. False: the paper's rule, ASHA's default.

    Raises:
        ConfigurationError: for an invalid argument, or when the model's library is not
            installed (``pip install 'lightning_maggy[bo]'``).
    """

    def __init__(
        self,
        reduction_factor: float = 3,
        resource_min: int = 1,
        resource_max: int | None = None,
        seed: int | None = None,
        *,
        model: str = "tpe",
        random_fraction: float = 1 / 3,
        min_points: int | None = None,
        model_options: Mapping[str, Any] | None = None,
        max_retries: int = 100,
        early_promotion: bool = True,
    ) -> None:
        if not isinstance(model, str) or model.lower() not in _MODELS:
            raise ConfigurationError(f"BOHB: model={model!r} must be one of {list(_MODELS)}.")
        model = model.lower()
        check_flag("early_promotion", early_promotion, "BOHB")
        require_modules("BOHB", *(("optuna",) if model == "tpe" else ("torch", "botorch", "gpytorch")))
        if (
            not isinstance(random_fraction, (int, float))
            or isinstance(random_fraction, bool)
            or not 0.0 <= random_fraction <= 1.0
        ):
            raise ConfigurationError(
                f"BOHB: random_fraction={random_fraction!r} must be a number in [0, 1] (the "
                "paper's rho, the fraction of random configurations); e.g. random_fraction=1/3."
            )
        if min_points is not None and (not isinstance(min_points, int) or isinstance(min_points, bool) or min_points < 2):
            raise ConfigurationError(
                f"BOHB: min_points={min_points!r} must be an int >= 2 (results a rung needs "
                "before its model is used), or None for d + 2."
            )
        super().__init__(
            reduction_factor,
            resource_min,
            resource_max,
            seed,
            suggester=self._suggest,
            max_retries=max_retries,
            early_promotion=early_promotion,
        )
        self.model = model
        self.random_fraction = float(random_fraction)
        self.min_points = min_points
        self.model_options = dict(model_options or {})
        if model == "gp":
            from lightning_maggy.optimizers.gp import GPSettings

            try:
                self._gp_settings = GPSettings(**self.model_options)
            except TypeError as err:
                raise ConfigurationError(
                    f"BOHB: model_options={self.model_options!r} for model='gp': {err}; accepted: "
                    "num_restarts, raw_samples, mc_samples, enumerate_limit."
                ) from None
        self._candidates: list[dict[str, Any]] = []
        self._base_seed = 0

    def initialize(self) -> None:
        super().initialize()
        self._base_seed = int(self.seed) if self.seed is not None else int(self.rng.integers(2**31))

    @property
    def n_min(self) -> int:
        """N_min: results a rung needs before its model is used."""
        return self.min_points if self.min_points is not None else len(self.searchspace) + 2

    def _proposer(self) -> Proposer:
        if self.model == "gp":
            from lightning_maggy.optimizers.gp import propose_gp

            return functools.partial(propose_gp, settings=self._gp_settings)
        from lightning_maggy.optimizers.optuna_sampler import propose_optuna, tpe_sampler

        # The rung has N_min results already: TPE proposes from the first one on.
        options = {"multivariate": True, "constant_liar": True, "n_startup_trials": 0, **self.model_options}
        return functools.partial(propose_optuna, sampler=functools.partial(tpe_sampler, options=options))

    def model_snapshot(self) -> Observations | None:
        """The snapshot the next model proposal is fitted on: the highest rung with at least
        :attr:`n_min` results, or None (no rung has enough: the next configuration is random)."""
        seed = derived_seed(self._base_seed, len(self.trials))
        for budget in reversed(self.budgets):
            snapshot = rung_observations(self.trials, budget, self.searchspace, self.direction, seed)
            if len(snapshot.observed) >= self.n_min:
                return snapshot
        return None

    def get_suggestion(self, trial: Trial | None = None) -> SuggestionResult:
        promotion = self._promotion()
        if promotion is not None:
            return promotion
        self._candidates = []
        if self._budget_left():
            # The random draws this optimizer made before it was rebuilt are replayed first.
            self._drawer.catch_up(self.searchspace, self.rng, self.trials)
            choice = np.random.default_rng([derived_seed(self._base_seed, len(self.trials)), 1]).random()
            snapshot = self.model_snapshot() if choice >= self.random_fraction else None
            if snapshot is not None:
                proposer = self._proposer()
                ready, candidates = self._job_result(
                    lambda: Job(
                        functools.partial(proposer, snapshot),
                        name=f"BOHB {self.model} on {len(snapshot.observed)} rung results",
                    )
                )
                if not ready:
                    return IDLE
                self._candidates = [dict(c) for c in candidates or ()]
        return super().get_suggestion(trial)

    def _suggest(self, searchspace: Searchspace, rng: np.random.Generator, trials: Mapping[str, Trial]) -> dict[str, Any]:
        """ASHA's suggester: the next model candidate no trial has, else a random sample.

        It always draws one random sample from ``rng`` first, so that every call consumes the
        same randomness and a rebuilt optimizer can replay the recorded draws without a model.
        """
        sample = searchspace.sample(rng)
        while self._candidates:
            candidate = self._candidates.pop(0)
            if trial_id_for(candidate) not in trials:
                try:
                    searchspace.validate(candidate)
                except SearchspaceError:  # a bad proposal falls back to the random sample
                    continue
                return candidate
        return sample

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "base_seed": self._base_seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "base_seed" in state:
            self._base_seed = int(state["base_seed"])
