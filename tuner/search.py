"""Bayesian optimization over normalized log10-LR.

The search space is ``x = (log10(lr) - log10(min_lr)) / (log10(max_lr) - log10(min_lr))`` in [0, 1]. The
surrogate is a botorch ``SingleTaskGP`` with a Matérn-5/2 kernel; each observation carries its own noise
variance (the forecast's uncertainty) or, in the reference mode, one learned noise level. Hyperparameters
are fitted by maximizing the marginal likelihood (plus weak log-normal priors) over a fixed grid: in one
dimension with a few dozen points this is exact enough, deterministic and takes a few milliseconds, where a
gradient fit would take a hundred. Acquisitions are evaluated on a dense grid of the (1-D) domain, again
deterministic.

Nothing here keeps state between calls: the stage machine stores observations and refits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition.analytic import PosteriorStandardDeviation, UpperConfidenceBound
from botorch.models import SingleTaskGP
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from numpy.typing import NDArray

_LENGTHSCALES = np.logspace(-1.7, 0.5, 16)
_OUTPUTSCALES = np.logspace(-1.5, 1.3, 12)
_NOISES = np.array([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
_GRID_POINTS = 257
_NOISE_FLOOR = 1e-6


@dataclass(frozen=True)
class Observation:
    """One point of the search.

    Attributes:
        x: Normalized log10-LR in [0, 1].
        y: Objective (forecast loss) at that LR.
        noise_var: Observation noise variance of ``y`` (squared forecast std), in squared loss units.
    """

    x: float
    y: float
    noise_var: float


def to_unit(lr: float, min_lr: float, max_lr: float) -> float:
    """Map an LR to normalized log10-LR in [0, 1]."""
    lo, hi = math.log10(min_lr), math.log10(max_lr)
    return (math.log10(lr) - lo) / (hi - lo)


def from_unit(x: float, min_lr: float, max_lr: float) -> float:
    """Map normalized log10-LR in [0, 1] back to an LR."""
    lo, hi = math.log10(min_lr), math.log10(max_lr)
    return float(10 ** (lo + min(max(x, 0.0), 1.0) * (hi - lo)))


def _matern52(d: NDArray[np.float64]) -> NDArray[np.float64]:
    s5 = math.sqrt(5.0) * d
    return (1.0 + s5 + s5**2 / 3.0) * np.exp(-s5)


class Surrogate:
    """A GP fitted to observations, in the observations' units.

    Args:
        observations: At least one observation.
        learn_noise: Learn one homoskedastic noise level instead of using each observation's ``noise_var``.
    """

    def __init__(self, observations: Sequence[Observation], learn_noise: bool = False) -> None:
        if not observations:
            raise ValueError("a surrogate needs at least one observation")
        x = np.array([o.x for o in observations], dtype=np.float64)
        y = np.array([o.y for o in observations], dtype=np.float64)
        var = np.array([o.noise_var for o in observations], dtype=np.float64)
        self.y_mean = float(y.mean())
        spread = float(y.std())
        self.y_std = spread if spread > 1e-12 else max(float(np.sqrt(var.mean())), 1e-12, abs(self.y_mean) * 1e-3)
        yz = (y - self.y_mean) / self.y_std
        var_z = np.maximum(var / self.y_std**2, _NOISE_FLOOR)
        lengthscale, outputscale, noise = _fit_hyperparameters(x, yz, var_z, learn_noise)
        self.lengthscale, self.outputscale, self.noise = lengthscale, outputscale, noise

        train_x = torch.tensor(x, dtype=torch.float64).unsqueeze(-1)
        train_y = torch.tensor(yz, dtype=torch.float64).unsqueeze(-1)
        covar = ScaleKernel(MaternKernel(nu=2.5))
        if learn_noise:
            likelihood = GaussianLikelihood()
            model = SingleTaskGP(train_x, train_y, likelihood=likelihood, covar_module=covar, outcome_transform=None)
            model.likelihood.noise = torch.tensor(noise, dtype=torch.float64)
        else:
            yvar = torch.tensor(var_z, dtype=torch.float64).unsqueeze(-1)
            model = SingleTaskGP(train_x, train_y, train_Yvar=yvar, covar_module=covar, outcome_transform=None)
            assert isinstance(model.likelihood, FixedNoiseGaussianLikelihood)
        model.covar_module.base_kernel.lengthscale = torch.tensor(lengthscale, dtype=torch.float64)
        model.covar_module.outputscale = torch.tensor(outputscale, dtype=torch.float64)
        model.mean_module.constant.data.fill_(0.0)
        model.eval()
        self.model = model

    def predict(self, xs: Sequence[float] | NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Posterior mean and std of the noise-free objective.

        Args:
            xs: Shape (m,). Normalized log10-LRs.

        Returns:
            Mean and std, each shape (m,), in the observations' units.
        """
        grid = torch.tensor(np.asarray(xs, dtype=np.float64), dtype=torch.float64).reshape(-1, 1)
        with torch.no_grad():
            post = self.model.posterior(grid)
            mean = post.mean.squeeze(-1).numpy()
            std = post.variance.clamp_min(0.0).sqrt().squeeze(-1).numpy()
        return mean * self.y_std + self.y_mean, std * self.y_std

    def suggest(
        self,
        lo: float = 0.0,
        hi: float = 1.0,
        acquisition: str = "lcb",
        beta: float = 2.0,
        avoid: Sequence[float] = (),
        min_distance: float = 0.02,
    ) -> float:
        """Return the normalized log10-LR in [lo, hi] that maximizes the acquisition.

        Args:
            lo: Lower end of the region to search, in [0, 1].
            hi: Upper end of the region to search, in [0, 1].
            acquisition: ``"lcb"`` (mean minus ``sqrt(beta)`` std, minimized) or ``"explore"`` (largest
                posterior std: the reference behaviour).
            beta: Exploration weight of ``"lcb"``.
            avoid: Points not to suggest again.
            min_distance: Grid points closer than this to a point in ``avoid`` are skipped.
        """
        grid = np.linspace(lo, hi, _GRID_POINTS)
        if len(avoid):
            far = np.min(np.abs(grid[:, None] - np.asarray(avoid)[None, :]), axis=1) >= min_distance
            if far.any():
                grid = grid[far]
        x = torch.tensor(grid, dtype=torch.float64).reshape(-1, 1, 1)
        acq = (
            PosteriorStandardDeviation(self.model)
            if acquisition == "explore"
            else UpperConfidenceBound(self.model, beta=beta, maximize=False)
        )
        with torch.no_grad():
            values = acq(x).numpy()
        return float(grid[int(np.argmax(values))])


def _fit_hyperparameters(
    x: NDArray[np.float64], yz: NDArray[np.float64], var_z: NDArray[np.float64], learn_noise: bool
) -> tuple[float, float, float]:
    """Grid-search (lengthscale, outputscale[, noise]) maximizing log marginal likelihood plus priors."""
    n = x.shape[0]
    d = np.abs(x[:, None] - x[None, :])
    ls, os_ = _LENGTHSCALES, _OUTPUTSCALES
    noises = _NOISES if learn_noise else np.array([0.0])
    corr = _matern52(d[None, :, :] / ls[:, None, None])  # (L, n, n)
    k = os_[None, :, None, None, None] * corr[:, None, None, :, :]  # (L, O, 1, n, n)
    diag = var_z[None, :] if not learn_noise else noises[:, None] * np.ones((1, n))  # (N, n)
    k = k + np.eye(n)[None, None, None] * diag[None, None, :, :, None]
    k = k + np.eye(n) * 1e-9
    chol = np.asarray(np.linalg.cholesky(k), dtype=np.float64)
    alpha = _cho_solve(chol, yz)
    quad = np.einsum("...i,...i->...", yz * np.ones_like(alpha), alpha)
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    lml = -0.5 * quad - 0.5 * logdet
    prior = (
        -0.5 * (np.log(ls / 0.25)[:, None, None] / 1.0) ** 2
        - 0.5 * (np.log(os_)[None, :, None] / 1.5) ** 2
        - (0.5 * (np.log(noises / 0.01)[None, None, :] / 2.0) ** 2 if learn_noise else 0.0)
    )
    score = lml + prior
    i, j, m = np.unravel_index(int(np.argmax(score)), score.shape)
    return float(ls[i]), float(os_[j]), float(noises[m]) if learn_noise else 0.0


def _cho_solve(chol: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solve ``K a = y`` for a batch of lower Cholesky factors (..., n, n)."""
    rhs = np.broadcast_to(y, chol.shape[:-1])[..., None]
    z = np.linalg.solve(chol, rhs)
    return np.linalg.solve(np.swapaxes(chol, -1, -2), z)[..., 0]
