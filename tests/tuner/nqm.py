"""A noisy quadratic model: a synthetic training landscape whose expected loss has a closed form.

Loss ``0.5 * sum_i h_i theta_i^2`` trained by SGD whose gradient noise has variance ``sigma2 * h_i`` per
coordinate. With ``m_i = E[theta_i^2]``, one step at LR ``lr`` maps ``m_i -> (1 - lr h_i)^2 m_i + lr^2 sigma2
h_i``, so ``n`` steps from ``m`` give ``m* + (1 - lr h)^(2n) (m - m*)`` with ``m* = lr sigma2 / (2 - lr h)``.
The best LR for a horizon is therefore known exactly, which is what the search is judged against.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class NoisyQuadratic:
    def __init__(self, dims: int = 50, sigma2: float = 0.5, seed: int = 0, noise: float = 0.03) -> None:
        self.h = 1.0 / np.arange(1, dims + 1)
        self.sigma2 = sigma2
        self.m = np.full(dims, 4.0)
        self.rng = np.random.default_rng(seed)
        self.noise = noise

    def loss_of(self, m: NDArray[np.float64]) -> float:
        return float(0.5 * (self.h * m).sum())

    def advance(self, m: NDArray[np.float64], lr: float, steps: int) -> NDArray[np.float64]:
        a = (1.0 - lr * self.h) ** 2
        with np.errstate(over="ignore", invalid="ignore"):
            fixed = lr * lr * self.sigma2 * self.h / (1.0 - a)
            return fixed + a**steps * (m - fixed)

    def step(self, lr: float) -> float:
        """One SGD step in expectation; returns the observed (noisy) loss after it."""
        self.m = self.advance(self.m, lr, 1)
        loss = self.loss_of(self.m)
        return loss * (1.0 + self.noise * float(self.rng.standard_normal()))

    def best_lr(self, m: NDArray[np.float64], steps: int, lo: float, hi: float) -> float:
        lrs = np.logspace(np.log10(lo), np.log10(hi), 600)
        losses = [self.loss_of(self.advance(m, lr, steps)) for lr in lrs]
        return float(lrs[int(np.nanargmin(losses))])


def binned(losses: NDArray[np.float64], bins: int = 16) -> tuple[tuple[int, float | None], ...]:
    """A run's losses as ``(end, mean)`` bins, as a job's segment records hold them."""
    edges = np.linspace(0, len(losses), bins + 1).round().astype(int)
    return tuple((int(b), float(losses[a:b].mean())) for a, b in zip(edges[:-1], edges[1:], strict=True))
