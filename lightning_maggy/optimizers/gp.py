"""Gaussian-process Bayesian optimization on BoTorch, aware of running trials.

Snoek, Larochelle, Adams: "Practical Bayesian Optimization of Machine Learning Algorithms",
NeurIPS 2012 (a GP prior on the objective, expected improvement, and pending evaluations
integrated out so that parallel workers do not propose the same point); Balandat et al.:
"BoTorch: A Framework for Efficient Monte-Carlo Bayesian Optimization", NeurIPS 2020 (the
Monte-Carlo acquisition ``qNEI`` with ``X_pending``); Ament et al.: "Unexpected Improvements to
Expected Improvement for Bayesian Optimization", NeurIPS 2023 (its log form, ``qLogNEI``).

Everything that needs torch or BoTorch is imported inside functions, so this module imports
without them (``lightning_maggy`` stays light); :class:`GP` checks at construction that they are
installed.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_maggy.optimizers.model_based import (
    ModelBasedOptimizer,
    Observations,
    Proposer,
    check_int,
    random_unknown,
    require_modules,
)
from lightning_maggy.optimizers.random_search import finite_size
from lightning_maggy.searchspace import Categorical, Discrete, Double, Integer, Searchspace
from lightning_maggy.trial import trial_id_for

__all__ = ["GP", "GPSettings", "ModelSpace", "propose_gp"]

#: Integer dimensions with more values than this are modelled as continuous (each integer owns
#: a cell of the unit interval, see :class:`~lightning_maggy.searchspace.Integer`).
_MAX_LISTED_INTEGERS = 10_000


@dataclasses.dataclass(frozen=True)
class GPSettings:
    """How the acquisition function is estimated and optimized (see :class:`GP`).

    The defaults (10 restarts from the best of 1,024 raw samples, as BoTorch's tutorials use)
    were measured against 8 from 256 on Branin with 4 asynchronous workers and 50 evaluations:
    median regret 4.4e-5 against 1.3e-4 over seeds 0-9, and 5.5e-5 against 8.2e-5 over seeds
    10-29 (Optuna's GPSampler: 6.1e-5 and 1.3e-4), for about 10% more time per proposal."""

    num_restarts: int = 10
    raw_samples: int = 1024
    mc_samples: int = 128
    enumerate_limit: int = 2048


class ModelSpace:
    """The search space as the GP sees it: one model coordinate per hyperparameter.

    * Double: its unit-interval encoding (log scale for ``log=True``), continuous in [0, 1].
    * Integer: the midpoint of its cell of the unit interval (log cells for ``log=True``), a
      *discrete* dimension whose allowed values are those midpoints, so the acquisition is
      optimized over integers (BoTorch relaxes dimensions with many values and rounds to the
      nearest allowed value); beyond 10,000 values, continuous (decoded to the cell it falls in).
    * Discrete: the midpoint of its rank's cell, an ordered discrete dimension (its values are
      ordered numbers, so nearby values are modelled as similar).
    * Categorical: the index of the value, a categorical dimension (a Hamming-distance kernel;
      no order is assumed).

    A dimension with a single value is fixed.
    """

    def __init__(self, space: Searchspace) -> None:
        self.space = space
        self.names = space.names()
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.discrete: dict[int, list[float]] = {}
        self.categorical: dict[int, list[float]] = {}
        self.fixed: dict[int, float] = {}
        self._values: dict[int, list[Any]] = {}  # listed values, aligned with discrete/cat coords
        for i, (_, hp) in enumerate(space.items()):
            if isinstance(hp, Double):
                coords, values = None, None
            elif isinstance(hp, Integer) and hp.high - hp.low + 1 <= _MAX_LISTED_INTEGERS:
                values = list(range(hp.low, hp.high + 1))
                coords = [hp.encode(v) for v in values]
            elif isinstance(hp, Integer):
                coords, values = None, None
            elif isinstance(hp, Categorical):
                values = list(hp.values)
                coords = [float(k) for k in range(len(values))]
            else:
                assert isinstance(hp, Discrete)
                values = list(hp.values)
                coords = [hp.encode(v) for v in values]
            if coords is None:
                self.lower.append(0.0)
                self.upper.append(1.0)
                continue
            self._values[i] = values  # type: ignore[assignment]
            self.lower.append(coords[0])
            self.upper.append(coords[-1])
            if len(coords) == 1:
                self.fixed[i] = coords[0]
            elif isinstance(hp, Categorical):
                self.categorical[i] = coords
            else:
                self.discrete[i] = coords

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_model(self, config: Mapping[str, Any]) -> list[float]:
        point = []
        for i, (name, hp) in enumerate(self.space.items()):
            value = config[name]
            if isinstance(hp, Categorical):
                point.append(float(hp._index(value)))
            else:
                point.append(float(hp.encode(value)))
        return point

    def from_model(self, point: Sequence[float]) -> dict[str, Any]:
        config = {}
        for i, (name, hp) in enumerate(self.space.items()):
            x = float(point[i])
            if i in self._values:
                values = self._values[i]
                coords = self.categorical.get(i) or self.discrete.get(i) or [self.fixed.get(i, 0.0)]
                k = int(np.argmin(np.abs(np.asarray(coords) - x)))
                config[name] = values[k]
            else:
                config[name] = hp.decode(x)
        return config


def warped_outcomes(values: np.ndarray, direction: str) -> np.ndarray:
    """The values as the GP models them: larger is better (negated for "min"), standardized,
    then the worse-than-average side compressed with ``-log(1 + |z|)`` (one half of a bilog
    warping, as BoTorch's ``Bilog`` outcome transform, here on the standardized scale so it does
    not depend on the metric's units). Monotone, so the best observation stays the best. The
    compression keeps a few very bad values (a diverged run, Branin's corners) from flattening
    the model around the optimum; the better-than-average side stays linear, so the model can
    still tell apart configurations close to the optimum. (Compressing both sides, as a full
    bilog does, was measured: median regret on the mixed benchmark function 2.6e-4 against
    3.5e-5 over seeds 0-3.)"""
    y = np.asarray(values, dtype=float) * (1.0 if direction == "max" else -1.0)
    scale = float(np.std(y))
    z = (y - float(np.mean(y))) / (scale if scale > 0 else 1.0)
    return np.where(z > 0, z, -np.log1p(np.abs(z)))


def propose_gp(obs: Observations, settings: GPSettings = GPSettings()) -> list[dict[str, Any]]:
    """Fits a GP to the observations and returns candidate configurations, best first.

    The model: BoTorch's ``SingleTaskGP`` (times a categorical kernel with categorical
    dimensions, see :func:`_gp_model`; a low noise floor, :func:`_likelihood`) on the warped
    outcomes (:func:`warped_outcomes`), hyperparameters by maximum marginal likelihood
    (``fit_gpytorch_mll``). The acquisition: ``qLogNoisyExpectedImprovement`` with the observed
    points as ``X_baseline`` and the pending ones as ``X_pending``. It is maximized with
    ``optimize_acqf`` (continuous spaces), ``optimize_acqf_mixed_alternating`` (integer,
    discrete or categorical dimensions), or, in a finite space of at most
    ``settings.enumerate_limit`` configurations, over every configuration no trial has.
    Returns [] if the model cannot be fitted (the caller falls back to random).

    Args:
        obs: the snapshot; minimization negates the values (BoTorch maximizes).
        settings: acquisition settings.
    """
    import torch
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from botorch.optim import optimize_acqf
    from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
    from botorch.sampling import SobolQMCNormalSampler
    from botorch.utils.sampling import manual_seed
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from linear_operator.utils.errors import NanError, NotPSDError

    mspace = ModelSpace(obs.space)
    tkw: dict[str, Any] = {"dtype": torch.double}
    X = torch.tensor([mspace.to_model(c) for c, _ in obs.observed], **tkw)
    Y = torch.tensor(warped_outcomes(obs.values(), obs.direction), **tkw).unsqueeze(-1)
    X_pending = torch.tensor([mspace.to_model(c) for c in obs.pending], **tkw) if obs.pending else None
    bounds = torch.tensor([mspace.lower, mspace.upper], **tkw)
    _quiet_model_libraries()
    with manual_seed(obs.seed):
        model = _gp_model(X, Y, mspace)
        try:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        except (ModelFittingError, NotPSDError, NanError):
            return []
        acqf = qLogNoisyExpectedImprovement(
            model,
            X_baseline=X,
            X_pending=X_pending,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([settings.mc_samples]), seed=obs.seed),
            prune_baseline=True,
        )
        size = finite_size(obs.space)
        if size is not None and size <= settings.enumerate_limit:
            return _best_unknown(acqf, obs, mspace, torch)
        if not mspace.discrete and not mspace.categorical:
            candidates, acq_values = optimize_acqf(
                acqf,
                bounds=bounds,
                q=1,
                num_restarts=settings.num_restarts,
                fixed_features=mspace.fixed or None,
                return_best_only=False,
                batch_initial_conditions=_starting_points(acqf, bounds, X, Y, mspace, settings, torch),
            )
            order = torch.argsort(acq_values.reshape(-1), descending=True)
            points = candidates.reshape(-1, mspace.dim)[order]
        else:
            points, _ = optimize_acqf_mixed_alternating(
                acqf,
                bounds=bounds,
                discrete_dims=mspace.discrete,
                cat_dims=mspace.categorical,
                q=1,
                num_restarts=settings.num_restarts,
                raw_samples=settings.raw_samples,
                fixed_features=mspace.fixed or None,
                # BoTorch relaxes discrete dimensions of more than 20 values to continuous ones
                # and rounds. Keeping every listed integer discrete instead (max_discrete_values)
                # was tried: median regret on the mixed benchmark function went from 1.5e-4 to
                # 1.2e-3, at nearly twice the time per run.
                options={"num_spray_points": _LOCAL_STARTS, "std_cont_perturbation": 0.05},
            )
    return [mspace.from_model(p.tolist()) for p in points.reshape(-1, mspace.dim)]


@functools.cache
def _quiet_model_libraries() -> None:
    """Ignores the warnings of BoTorch, GPyTorch and linear_operator (failed or stopped
    optimizations, jitter added, input scaling hints: the fit is best effort, and a failed one
    falls back to random proposals), from now on in this process; every other warning is left
    as it was.

    Process-wide filters, installed once: the fit runs on the controller's background thread,
    and ``warnings.catch_warnings`` there would silence every thread's warnings while it runs
    and, on leaving, put back the filter list as it was, dropping filters other threads added
    meanwhile (it is not thread-safe)."""
    from botorch.exceptions.warnings import BotorchWarning

    warnings.filterwarnings("ignore", category=BotorchWarning)
    warnings.filterwarnings("ignore", module=r"(botorch|gpytorch|linear_operator)(\.|$)")


def _gp_model(X: Any, Y: Any, mspace: ModelSpace) -> Any:
    """``SingleTaskGP`` with BoTorch's default kernel (RBF, dimension-scaled lengthscale prior,
    Hvarfner et al. 2024) on the continuous and ordered dimensions, multiplied by a
    ``CategoricalKernel`` (Hamming distance, one lengthscale per dimension) on the categorical
    ones. The product is the kernel of ``MixedSingleTaskGP`` without its additive part, which
    costs about four times as much to fit for a similar fit quality."""
    from botorch.models import SingleTaskGP
    from botorch.models.kernels.categorical import CategoricalKernel
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.kernels import ProductKernel, ScaleKernel

    likelihood = _likelihood()
    cat = sorted(mspace.categorical)
    if not cat:
        return SingleTaskGP(X, Y, likelihood=likelihood)
    cont = [i for i in range(mspace.dim) if i not in mspace.categorical]
    kernel = CategoricalKernel(ard_num_dims=len(cat), active_dims=cat)
    if cont:
        cont_kernel = get_covar_module_with_dim_scaled_prior(ard_num_dims=len(cont), active_dims=cont)
        kernel = ProductKernel(cont_kernel, kernel)
    return SingleTaskGP(X, Y, likelihood=likelihood, covar_module=ScaleKernel(kernel))


def _likelihood() -> Any:
    """Gaussian noise with a LogNormal(-6, 1.5) prior and a floor of 1e-6 (of the standardized
    outcome's variance). BoTorch's default (LogNormal(-4, 1), floor 1e-4) suits noisy
    benchmarks; a lower floor and prior let the fit find almost no noise when the metric is
    (nearly) deterministic, so the GP can still tell apart configurations close to the optimum,
    while a noisy metric still fits its noise by marginal likelihood."""
    from gpytorch.constraints import GreaterThan
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.priors import LogNormalPrior

    prior = LogNormalPrior(loc=-6.0, scale=1.5)
    return GaussianLikelihood(noise_prior=prior, noise_constraint=GreaterThan(1e-6, transform=None, initial_value=prior.mode))


#: Starting points of the acquisition optimization near the best observations (besides the
#: ``raw_samples`` quasi-random ones), so the optimum found so far is refined, not only explored.
_LOCAL_STARTS = 32


def _starting_points(acqf: Any, bounds: Any, X: Any, Y: Any, mspace: ModelSpace, settings: GPSettings, torch: Any) -> Any:
    """``num_restarts`` starting points for ``optimize_acqf``: chosen by acquisition value
    (BoTorch's ``initialize_q_batch``) among ``raw_samples`` scrambled Sobol points and
    ``_LOCAL_STARTS`` Gaussian perturbations (sd 0.01 to 0.1 of the unit range) of the best
    five observations. Uses the torch generator (seeded by the caller)."""
    from botorch.optim.initializers import initialize_q_batch
    from torch.quasirandom import SobolEngine

    lower, upper = bounds[0], bounds[1]
    d = mspace.dim
    raw = lower + (upper - lower) * SobolEngine(d, scramble=True, seed=int(torch.randint(2**31 - 1, ()))).draw(
        settings.raw_samples, dtype=X.dtype)
    best = X[torch.argsort(Y.reshape(-1), descending=True)[:5]]
    picks = best[torch.randint(len(best), (_LOCAL_STARTS,))]
    sd = torch.logspace(-2, -1, _LOCAL_STARTS, dtype=X.dtype).unsqueeze(-1)
    local = torch.minimum(torch.maximum(picks + sd * torch.randn(_LOCAL_STARTS, d, dtype=X.dtype), lower), upper)
    candidates = torch.cat([raw, local]).unsqueeze(-2)
    for i, value in mspace.fixed.items():
        candidates[..., i] = value
    with torch.no_grad():
        values = torch.cat([acqf(chunk) for chunk in candidates.split(256)])
    starts, _ = initialize_q_batch(candidates, values, n=settings.num_restarts)
    return starts


def _best_unknown(acqf: Any, obs: Observations, mspace: ModelSpace, torch: Any) -> list[dict[str, Any]]:
    """Every configuration of a small finite space that no trial has, ranked by ``acqf``."""
    from lightning_maggy.optimizers.random_search import _enumerate_finite

    configs = [c for c in _enumerate_finite(obs.space) if trial_id_for(c) not in obs.known]
    if not configs:
        return []
    X = torch.tensor([mspace.to_model(c) for c in configs], dtype=torch.double).unsqueeze(-2)
    with torch.no_grad():
        scores = torch.cat([acqf(chunk) for chunk in X.split(512)])
    order = torch.argsort(scores, descending=True).tolist()
    return [configs[k] for k in order[:16]]


class GP(ModelBasedOptimizer):
    """Gaussian-process Bayesian optimization (Snoek et al. 2012) on BoTorch (Balandat et al.
    2020), with running trials as pending points.

    Each new trial: while fewer than ``n_initial`` trials exist, the next point of a scrambled
    Sobol sequence (the initial design); afterwards a GP is fitted to the finished trials and
    the configuration that maximizes the log noisy expected improvement (Ament et al. 2023) is
    proposed, with RUNNING, PAUSED, PENDING and LOST trials as pending points ``X_pending``, so
    that parallel workers spread out instead of piling onto one optimum. Log-scaled dimensions
    are modelled in log space, integers and ``Discrete`` values as ordered discrete dimensions,
    ``Categorical`` ones as categorical dimensions (see :class:`ModelSpace`). A proposal that
    some trial already has is never made: the next candidate, or a random unknown
    configuration, is taken instead.

    Trial outcomes (see :mod:`~lightning_maggy.optimizers.model_based`): COMPLETED and STOPPED
    trials with a finite value are observations (a STOPPED trial with the value it was stopped
    at); FAILED trials and NaN values are left out of the model and never proposed again.

    The model is fitted in a :class:`~lightning_maggy.optimizers.base.Job`: under a controller
    on a background thread (the controller keeps answering reports meanwhile), called directly
    inline. Every trial trains ``max_epochs``; the proposal made when n trial records exist is
    seeded from ``(seed, n)``, so a fresh optimizer over the same records proposes the same
    configuration.

    Args:
        seed: seed of the initial design and of the acquisition's randomness; None takes the
            experiment's seed.
        n_initial: size of the initial design before the GP proposes (Snoek et al.'s initial
            evaluations); default ``max(5, 2 * d)`` for d hyperparameters.
        num_restarts: starting points of the acquisition's gradient-based optimization.
        raw_samples: random points the starting points are chosen from.
        mc_samples: N, quasi-Monte-Carlo samples of the qLogNEI estimate.

    Raises:
        ConfigurationError: for an invalid argument, or when BoTorch is not installed (``pip
            install 'lightning_maggy[bo]'``).

    Example::

        lm.search(MyModule, space, metric="val_acc", optimizer=lm.GP(n_initial=8), ...)
    """

    model_name = "gp"

    def __init__(
        self,
        seed: int | None = None,
        *,
        n_initial: int | None = None,
        num_restarts: int = 10,
        raw_samples: int = 1024,
        mc_samples: int = 128,
    ) -> None:
        require_modules("GP", "torch", "botorch", "gpytorch")
        super().__init__(seed=seed, n_initial=n_initial)
        self.settings = GPSettings(
            num_restarts=check_int("GP", "num_restarts", num_restarts, 1, "GP(num_restarts=10)"),
            raw_samples=check_int("GP", "raw_samples", raw_samples, 1, "GP(raw_samples=1024)"),
            mc_samples=check_int("GP", "mc_samples", mc_samples, 1, "GP(mc_samples=128)"),
        )

    def _default_n_initial(self) -> int:
        return max(5, 2 * len(self.searchspace))

    def _proposer(self) -> Proposer:
        return functools.partial(propose_gp, settings=self.settings)

    def _initial_config(self, count: int, rng: np.random.Generator) -> dict[str, Any] | None:
        """Point ``count`` of a scrambled Sobol sequence seeded with the optimizer's seed (a
        random unknown configuration if that one is known)."""
        from torch.quasirandom import SobolEngine

        engine = SobolEngine(len(self.searchspace), scramble=True, seed=self._base_seed)
        if count:
            engine.fast_forward(count)
        config = self.searchspace.decode(engine.draw(1).double().numpy().reshape(-1))
        if self.is_known(config):
            return random_unknown(self.searchspace, rng, self.trials)
        return config
