"""Loss forecasting: fit curves to a short loss series and extrapolate it, with an honest uncertainty.

Two curve families compete: the AutoLRS exponential ``L(t) = a exp(-r t) + c`` and a power law
``L(t) = a (t / t_last + offset)^-exponent + c`` (training curves are sums of many exponentials, which a power
law follows far better over a 10x extrapolation). The fit is Bayesian and robust:

* time is scaled to ``u = t / t_last`` and the losses to robust z-scores, so one grid of rates and exponents
  fits every series; the rate is bounded to its grid (``R_MIN`` .. ``R_MAX`` per unit of ``u``);
* each curve shape is normalized to 1 at the first point and 0 at the last, so the model is linear in its
  amplitude and its current level, which get a weakly informative Gaussian prior; outliers are
  down-weighted with Huber weights taken from the best fit's residuals;
* the forecast at the horizon is averaged over every shape of every family, weighted by its marginal
  likelihood, so its variance holds the noise of the fit, the ambiguity of the rate and the disagreement
  of the families. A slowly decaying series gets a wide band instead of a wild point estimate.

Nothing here raises on flat, rising, short or noisy series; non-finite values are ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

R_MIN = 0.03
R_MAX = 100.0
_RATES: NDArray[np.float64] = np.logspace(math.log10(R_MIN), math.log10(R_MAX), 96)
_EXPONENTS: NDArray[np.float64] = np.logspace(math.log10(0.05), math.log10(4.0), 32)
_OFFSETS: NDArray[np.float64] = np.array([0.01, 0.05, 0.2, 1.0])
FAMILIES: tuple[str, ...] = ("exp", "power")
_HUBER_K = 1.5
Z90 = 1.6448536269514722


@dataclass(frozen=True)
class Forecast:
    """A forecast of the loss at a horizon, with its uncertainty.

    Attributes:
        mean: Forecast of the (noise-free) loss at the horizon, in loss units.
        std: Standard deviation of that forecast, in loss units.
        family: Family of the most likely curve: ``"exp"`` (``a exp(-rate t) + c``) or ``"power"``
            (``a (t / t_last + offset)^-exponent + c``).
        a: Amplitude of the most likely curve, in loss units.
        rate: Its decay rate per step (exponential family), else None.
        exponent: Its exponent (power family), else None.
        c: Its asymptote, in loss units.
        noise: Estimated per-point noise of the series, in loss units.
        points: Finite points the fit used.
    """

    mean: float
    std: float
    family: str
    a: float
    rate: float | None
    exponent: float | None
    c: float
    noise: float
    points: int

    def interval(self, level: float = 0.9) -> tuple[float, float]:
        """Return the central interval holding the truth with probability ``level`` (Gaussian)."""
        z = Z90 if level == 0.9 else _normal_quantile(0.5 + level / 2)
        return self.mean - z * self.std, self.mean + z * self.std

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return asdict(self)


def _normal_quantile(q: float) -> float:
    # Acklam-free bisection on erf: accurate enough for reporting bands.
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def forecast_loss(
    steps: ArrayLike,
    losses: ArrayLike,
    horizon: float,
    families: tuple[str, ...] = FAMILIES,
    floor: float | None = None,
) -> Forecast:
    """Fit curves to a loss series and forecast the loss at ``horizon``.

    Args:
        steps: Shape (n,). Step of each loss, counted from the start of the series (1 = after the first step).
        losses: Shape (n,). Loss after each of those steps; non-finite values are ignored.
        horizon: Step at which to forecast, same origin as ``steps``.
        families: Curve families that compete: ``"exp"`` (the AutoLRS model) and/or ``"power"``.
        floor: Lowest value the loss can take (0 for cross-entropy), or None. Curves whose asymptote falls
            below it lose weight by the probability that they do.

    Returns:
        The forecast with its uncertainty. With fewer than three finite points the forecast is their mean
        with a wide band.
    """
    t = np.asarray(steps, dtype=np.float64).ravel()
    y = np.asarray(losses, dtype=np.float64).ravel()
    if t.shape != y.shape:
        raise ValueError(f"steps and losses differ in length: {t.shape[0]} != {y.shape[0]}")
    ok = np.isfinite(y) & np.isfinite(t)
    t, y = t[ok], y[ok]
    n = int(y.shape[0])
    if n < 3:
        return _fallback(y)

    t_last = float(t.max())
    if t_last <= 0:
        t = t - t.min() + 1.0
        t_last = float(t.max())
    u = t / t_last
    u_h = max(float(horizon), 0.0) / t_last

    y0 = float(np.median(y))
    scale = 1.4826 * float(np.median(np.abs(y - y0)))
    if not scale > 0:
        scale = float(np.std(y))
    if not scale > 0:
        scale = max(abs(y0) * 1e-6, 1e-12)
    z = (y - y0) / scale

    bases, bases_h, log_prior, params = _bases(u, u_h, families)
    asymptote_basis = np.array([-b_end / denom for (_, _, _, denom, b_end) in params])
    design = np.stack([bases, np.ones_like(bases)], axis=-1)  # (M, n, 2)
    prior_sd = 3.0 * float(z.max() - z.min()) + 1.0
    prior_prec = np.eye(2) / prior_sd**2

    # Pass 1: nearly unregularized fit, to estimate the noise and the Huber weights.
    m1, _, _ = _posterior(design, z, np.ones(n), 1.0, prior_prec * 1e-6)
    resid_all = z[None, :] - np.einsum("rnk,rk->rn", design, m1)
    best = int(np.argmin((resid_all**2).sum(axis=1)))
    resid = resid_all[best]
    dof = max(n - 3, 1)
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid)))) * math.sqrt(n / dof)
    if not sigma > 0:  # over half the points fit exactly: fall back to the RMS residual
        sigma = float(np.sqrt((resid**2).sum() / dof))
    sigma = max(sigma, 1e-9)
    weights = np.minimum(1.0, _HUBER_K * sigma / np.maximum(np.abs(resid), 1e-300))

    # Pass 2: Bayesian fit per curve, then average the forecast over curves by marginal likelihood.
    mean_r, cov_r, logml = _posterior(design, z, weights, sigma**2, prior_prec)
    logml = logml + log_prior
    if floor is not None:
        # Asymptote (u -> inf) of each curve: the normalized basis tends to -raw(last) / denom.
        x_inf = np.stack([asymptote_basis, np.ones_like(asymptote_basis)], axis=-1)
        mu_inf = np.einsum("rk,rk->r", x_inf, mean_r)
        sd_inf = np.sqrt(np.maximum(np.einsum("rk,rkl,rl->r", x_inf, cov_r, x_inf), 1e-300))
        logml = logml + _log_ndtr((mu_inf - (floor - y0) / scale) / sd_inf)
    x_h = np.stack([bases_h, np.ones_like(bases_h)], axis=-1)
    mu = np.einsum("rk,rk->r", x_h, mean_r)
    var = np.einsum("rk,rkl,rl->r", x_h, cov_r, x_h)
    w = np.exp(logml - logml.max())
    w /= w.sum()
    f_mean = float((w * mu).sum())
    f_var = float((w * (var + mu**2)).sum() - f_mean**2)
    f_std = math.sqrt(max(f_var, 0.0))

    top = int(np.argmax(logml))
    family, p1, _p2, denom, b_end = params[top]
    a = float(mean_r[top, 0]) * scale / denom
    return Forecast(
        mean=f_mean * scale + y0 if floor is None else max(f_mean * scale + y0, floor),
        std=max(f_std * scale, 1e-12),
        family=family,
        a=a,
        rate=p1 / t_last if family == "exp" else None,
        exponent=p1 if family == "power" else None,
        c=float(mean_r[top, 1]) * scale + y0 - a * b_end,
        noise=sigma * scale,
        points=n,
    )


def _bases(
    u: NDArray[np.float64], u_h: float, families: tuple[str, ...]
) -> tuple[
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    list[tuple[str, float, float, float, float]],
]:
    """Every candidate curve shape, normalized to 1 at the first point and 0 at the last.

    Returns:
        Bases at ``u`` (M, n), at ``u_h`` (M,), log prior of each (M,), and per basis
        ``(family, rate or exponent, offset, raw(first) - raw(last), raw(last))`` to undo the normalization.
    """
    raws: list[NDArray[np.float64]] = []
    raws_h: list[NDArray[np.float64]] = []
    priors: list[NDArray[np.float64]] = []
    params: list[tuple[str, float, float]] = []
    share = 1.0 / len(families)
    if "exp" in families:
        raws.append(np.exp(-_RATES[:, None] * u[None, :]))
        raws_h.append(np.exp(-_RATES * u_h))
        priors.append(np.full(_RATES.shape, math.log(share / _RATES.size)))
        params += [("exp", float(r), 0.0) for r in _RATES]
    if "power" in families:
        alpha, offset = (g.ravel() for g in np.meshgrid(_EXPONENTS, _OFFSETS, indexing="ij"))
        raws.append((u[None, :] + offset[:, None]) ** -alpha[:, None])
        raws_h.append((u_h + offset) ** -alpha)
        priors.append(np.full(alpha.shape, math.log(share / alpha.size)))
        params += [("power", float(al), float(of)) for al, of in zip(alpha, offset, strict=True)]
    raw = np.concatenate(raws)
    raw_h = np.concatenate(raws_h)
    first, last = raw[:, 0], raw[:, -1]
    denom = np.where(np.abs(first - last) > 1e-12, first - last, 1e-12)
    bases = (raw - last[:, None]) / denom[:, None]
    bases_h = (raw_h - last) / denom
    info = [(f, p1, p2, float(d), float(b)) for (f, p1, p2), d, b in zip(params, denom, last, strict=True)]
    return bases, bases_h, np.concatenate(priors), info


def _log_ndtr(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log of the standard normal CDF, stable far into the lower tail."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    hi = x > -5.0
    out[hi] = np.log(0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x[hi]]))
    lo = ~hi
    xl = x[lo]
    out[lo] = -0.5 * xl**2 - np.log(-xl) - 0.5 * math.log(2 * math.pi)
    return out


def _posterior(
    design: NDArray[np.float64],
    z: NDArray[np.float64],
    weights: NDArray[np.float64],
    noise_var: float,
    prior_prec: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Bayesian linear regression per rate.

    Returns:
        Posterior means (R, 2), covariances (R, 2, 2) and log marginal likelihoods (R,) up to a constant.
    """
    wx = design * weights[None, :, None]
    prec = np.einsum("rnk,rnl->rkl", wx, design) / noise_var + prior_prec[None]
    rhs = np.einsum("rnk,n->rk", wx, z) / noise_var
    cov = np.linalg.inv(prec)
    mean = np.einsum("rkl,rl->rk", cov, rhs)
    _, logdet = np.linalg.slogdet(prec)
    logml = 0.5 * np.einsum("rk,rk->r", rhs, mean) - 0.5 * logdet
    return mean, cov, logml


def _fallback(y: NDArray[np.float64]) -> Forecast:
    if y.size == 0:
        return Forecast(math.nan, math.inf, "none", 0.0, None, None, math.nan, math.nan, 0)
    mean = float(y.mean())
    spread = float(y.max() - y.min())
    std = 0.25 * abs(mean) + spread + 1e-12
    return Forecast(mean, std, "none", 0.0, None, None, mean, spread, int(y.size))
