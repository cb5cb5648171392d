"""A spectral loss model: training as a noisy quadratic with an unknown spectrum, fitted to every run of a job.

Near a minimum, SGD on a loss with curvatures ``h`` moves each eigen-direction's second moment ``m`` by::

    m -> (1 - lr h)^2 m + lr^2 s h        (s: gradient-noise scale, noise covariance proportional to the curvature)

and the loss is ``L0 + sum 0.5 h m``. Relative to its start, each direction therefore carries a *decay* factor
``D`` (the product of ``(1 - lr h)^2``, 1 at the start) and a *noise* account ``N`` (the same recursion fed by
``lr^2 h``, 0 at the start). The model takes a fixed log-spaced grid of curvatures (modes) and writes the loss as::

    L(t) = L0 + sum_j w_j * (D_j(t) + kappa * N_j(t))

with a non-negative progress amplitude ``w_j`` per mode and one noise-to-progress ratio ``kappa`` (the noise
covariance proportional to the curvature, the initial displacement alike in every direction). This is the
multi-power law's picture (progress in LR area, a loss drop for every LR decay that saturates at a speed set by
the spectrum; Luo et al. 2025) made exact for a quadratic, including the stability edge: a mode with
``lr h > 2`` grows, so the model knows that too large an LR diverges, and the spectrum it fits from the LR range
sweep and the runs tells where.

Given ``kappa`` the loss is linear in ``(L0, w)``, solved by non-negative least squares on relative residuals;
``kappa`` is found by a search on its profile. No fitted shape can wander off: a fit is a convex problem per
``kappa``. A mode that the data show growing out of bounds (its features blow up where the loss did not) gets no
weight. Predictions carry an uncertainty from the covariance of the active weights, the lack of fit and an
extrapolation term (new LR levels, new LR area). The model says it cannot tell (returns None) with fewer than
``MIN_POINTS`` binned losses or a flat curve.

A job's *state* for the model is the per-mode ``(D, N)`` at the end of a line of training (:class:`ModeHistory`),
advanced exactly through constant pieces; every prediction continues it. Pure numpy/scipy, no state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import nnls

from lrtune.tuner.lossmodel import Run, constant_pieces, extrapolation

#: Fewer binned observations than this: the model cannot tell yet.
MIN_POINTS = 8
#: Relative uncertainty a prediction gains per decade of LR change and per e-fold of area beyond the data. Lower
#: than the multi-power law's (:data:`lrtune.tuner.lossmodel.EXTRAPOLATION`): this model is exact on a quadratic
#: and knows the stability edge, and its forecasts from half a run are off by a few percent, not tens
#: (``benchmarks/results/model_forecast_spectral.md``).
EXTRAPOLATION = 0.02
#: Ratio between neighbouring curvatures of the grid.
GRID_RATIO = 1.5
#: A varying LR is cut into at most this many constant pieces per run (exact where it is piecewise constant).
_MAX_PIECES = 32
#: log10 of the noise-to-progress ratio's search range.
_KAPPA_RANGE = (-8.0, 3.0)
#: A run's losses from the first one this many times above its lowest so far are left out (it diverged).
DIVERGED = 4.0
#: A mode whose features grow above this over the observed runs is held at zero weight.
_BLOWUP = 1e3


def curvature_grid(lr_top: float, total_steps: int) -> NDArray[np.float64]:
    """The modes' curvatures for a job, shape (J,), in 1/LR units (a mode is stable below ``lr = 2 / h``).

    From ``4 / lr_top`` (modes that diverge at half the top LR, so the sweep's blow-up is representable) down
    to ``0.05 / (lr_top * total_steps)`` (slower modes look the same as the floor within the budget).

    Args:
        lr_top: Highest LR the job's plans may use.
        total_steps: The job's budget.
    """
    hi = 4.0 / lr_top
    lo = 0.05 / (lr_top * max(total_steps, 1))
    count = math.ceil(math.log(hi / lo) / math.log(GRID_RATIO)) + 1
    return np.asarray(hi * GRID_RATIO ** -np.arange(count, dtype=float)[::-1], dtype=float)


def advance(
    h: NDArray[np.float64],
    d: NDArray[np.float64],
    n: NDArray[np.float64],
    lr: float | NDArray[np.float64],
    steps: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-mode ``(D, N)`` after ``steps`` steps at a constant ``lr``.

    Args:
        h: Shape (J,). The modes' curvatures.
        d: Shape (..., J). Decay factors.
        n: Shape (..., J). Noise accounts.
        lr: The LR: a float, or shape (..., 1) for one LR per row.
        steps: Steps at it.
    """
    a = (1.0 - lr * h) ** 2
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        an = np.power(a, steps)
        geo = np.where(np.abs(1.0 - a) < 1e-12, steps, (1.0 - an) / (1.0 - a))
        return an * d, an * n + lr * lr * h * geo


@dataclass(frozen=True)
class ModeHistory:
    """The model's state at the end of one line of training: every mode's decay and noise account.

    Attributes:
        h: Shape (J,). The modes' curvatures.
        d: Shape (J,). Decay factor of each mode since the initial weights (1 at the start).
        n: Shape (J,). Noise account of each mode (0 at the start).
        area: LR area of the line, in LR x steps.
        steps: Steps of the line.
        lr: The last step's LR (0 when empty).
        last_lr: Same as ``lr`` (the name the planner reads).
    """

    h: NDArray[np.float64]
    d: NDArray[np.float64]
    n: NDArray[np.float64]
    area: float = 0.0
    steps: int = 0
    lr: float = 0.0
    last_lr: float = 0.0

    @classmethod
    def start(cls, h: NDArray[np.float64]) -> ModeHistory:
        """The state of the initial weights."""
        return cls(h, np.ones_like(h), np.zeros_like(h))

    def then(self, chunk: Sequence[float] | NDArray[np.float64]) -> ModeHistory:
        """This state continued by one more run, given by its per-step LRs."""
        arr = np.asarray(chunk, dtype=float)
        if not arr.size:
            return self
        d, n = self.d, self.n
        for _start, steps, lr in constant_pieces(arr, _MAX_PIECES, geometric=True):
            d, n = advance(self.h, d, n, lr, steps)
        last = float(arr[-1])
        return ModeHistory(self.h, d, n, self.area + float(arr.sum()), self.steps + len(arr), last, last)

    def extend(self, steps: NDArray[np.float64], lrs: NDArray[np.float64]) -> ModeHistory:
        """This state continued by constant pieces of ``steps`` steps at ``lrs`` (both shape (P,))."""
        d, n = self.d, self.n
        for s, lr in zip(steps, lrs, strict=True):
            d, n = advance(self.h, d, n, float(lr), float(s))
        last = float(lrs[-1]) if len(lrs) else self.lr
        return ModeHistory(
            self.h, d, n, self.area + float(np.sum(steps * lrs)), self.steps + int(np.sum(steps)), last, last
        )


@dataclass(frozen=True)
class SpectralParams:
    """What a spectral fit is, stored: enough to rebuild its predictions.

    Attributes:
        l0: The loss floor, in loss units.
        weights: Progress amplitude of every mode of the grid, in loss units (0 for most).
        kappa: Noise-to-progress ratio (noise account units per unit of decay factor).
    """

    l0: float
    weights: tuple[float, ...]
    kappa: float

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form."""
        return {"l0": self.l0, "weights": list(self.weights), "kappa": self.kappa}


@dataclass(frozen=True)
class _Design:
    """The runs' observations as per-mode features (internal).

    Attributes:
        d: Shape (N, J). Decay factors at each observation.
        n: Shape (N, J). Noise accounts at each observation.
        y: Shape (N,). Observed mean losses.
        weight: Shape (N,). Relative weight of each observation (square root of its bin's size).
        run: Shape (N,). Run of each observation.
        centre: Shape (N,). Step of each observation within its run.
        usable: Shape (J,). Modes that stay bounded over the observations.
    """

    d: NDArray[np.float64]
    n: NDArray[np.float64]
    y: NDArray[np.float64]
    weight: NDArray[np.float64]
    run: NDArray[np.int64]
    centre: NDArray[np.float64]
    usable: NDArray[np.bool_]


def _until_divergence(bins: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """A run's bins up to its first that is ``DIVERGED`` times above the lowest before it.

    A sweep's blow-up, a candidate that diverged: the model is one of training near a minimum, not of a run that
    left it.
    """
    lowest = math.inf
    for i, (_lo, _hi, mean) in enumerate(bins):
        if mean > DIVERGED * lowest:
            return bins[:i]
        lowest = min(lowest, mean)
    return bins


@dataclass(frozen=True)
class _RunRows:
    """One run's share of the design (internal): its observations' features and its end state.

    Attributes:
        d: Shape (B, J). Decay factors at the run's observations.
        n: Shape (B, J). Noise accounts there.
        y: Shape (B,). The observed means.
        size: Shape (B,). Steps in each observation's bin.
        centre: Shape (B,). Step of each observation within the run.
        end: The state at the run's end.
    """

    d: NDArray[np.float64]
    n: NDArray[np.float64]
    y: NDArray[np.float64]
    size: NDArray[np.float64]
    centre: NDArray[np.float64]
    end: ModeHistory


@dataclass
class RowCache:
    """What a caller keeps between fits so that each run's rows are computed once (runs and states are immutable).

    Attributes:
        root: The state of the initial weights, on the grid the rows were computed on.
        rows: Per run object (by identity): the run, the state it started from and its rows.
    """

    root: ModeHistory | None = None
    rows: dict[int, tuple[Run, ModeHistory, _RunRows]] = field(default_factory=dict)


def _run_rows(run: Run, state: ModeHistory, whole: bool = False) -> _RunRows:
    h = state.h
    geo = run.geometry
    lrs = geo.lrs
    d, n = state.d, state.n
    bins = sorted(geo.bins) if whole else _until_divergence(sorted(geo.bins))
    rows_d: list[NDArray[np.float64]] = []
    rows_n: list[NDArray[np.float64]] = []
    ys: list[float] = []
    sizes: list[float] = []
    centres: list[float] = []
    b = 0
    at = 0
    for lo_step, steps, lr in constant_pieces(lrs, _MAX_PIECES, geometric=True):
        end = lo_step + steps
        while b < len(bins) and (bins[b][0] + min(bins[b][1], len(lrs))) / 2.0 <= end:
            lo, hi, mean = bins[b]
            centre = (lo + min(hi, len(lrs))) / 2.0
            bd, bn = advance(h, d, n, lr, centre - at)
            rows_d.append(bd)
            rows_n.append(bn)
            ys.append(mean)
            sizes.append(float(max(min(hi, len(lrs)) - lo, 1)))
            centres.append(centre)
            b += 1
        d, n = advance(h, d, n, lr, steps)
        at = end
    empty = np.zeros((0, len(h)))
    return _RunRows(
        np.array(rows_d) if rows_d else empty,
        np.array(rows_n) if rows_n else empty,
        np.array(ys),
        np.array(sizes),
        np.array(centres),
        ModeHistory(h, d, n),
    )


def _design(runs: Sequence[Run], h: NDArray[np.float64], cache: RowCache | None = None) -> _Design:
    if cache is None:
        cache = RowCache()
    if cache.root is None or not np.array_equal(cache.root.h, h):
        cache.root = ModeHistory.start(h)
        cache.rows.clear()
    start = cache.root
    ends: list[ModeHistory] = []
    parts: list[_RunRows] = []
    for i, run in enumerate(runs):
        p = run.parent
        if p is not None and not 0 <= p < i:
            raise ValueError(f"run {i} has parent {p}: parents must come first")
        state = ends[p] if p is not None else start
        hit = cache.rows.get(id(run))
        if hit is not None and hit[0] is run and hit[1] is state:
            rows = hit[2]
        else:
            rows = _run_rows(run, state)
            cache.rows[id(run)] = (run, state, rows)
        parts.append(rows)
        ends.append(rows.end)
    live = {id(run) for run in runs}
    for key in [k for k in cache.rows if k not in live]:
        del cache.rows[key]
    ys = [v for part in parts for v in part.y]
    rows_d = [part.d for part in parts]
    rows_n = [part.n for part in parts]
    ws = [v for part in parts for v in part.size]
    run_of = [i for i, part in enumerate(parts) for _ in part.y]
    centres = [v for part in parts for v in part.centre]
    if not ys:
        empty = np.zeros((0, len(h)))
        return _Design(empty, empty, np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0), np.ones(len(h), bool))
    dm, nm = np.concatenate(rows_d), np.concatenate(rows_n)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(dm).all(axis=0) & np.isfinite(nm).all(axis=0)
        usable &= (np.nan_to_num(dm, posinf=np.inf).max(axis=0) < _BLOWUP) & (
            np.nan_to_num(nm, posinf=np.inf).max(axis=0) < _BLOWUP * max(float(h.max()), 1.0)
        )
    dm = np.where(usable, np.nan_to_num(dm, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    nm = np.where(usable, np.nan_to_num(nm, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    w = np.array(ws)
    return _Design(dm, nm, np.array(ys), np.sqrt(w / w.mean()), np.array(run_of), np.array(centres), usable)


def _windowed(d: _Design, window: float | None) -> _Design:
    if window is None or not len(d.y):
        return d
    keep = d.y <= window * float(d.y.min())
    return _Design(d.d[keep], d.n[keep], d.y[keep], d.weight[keep], d.run[keep], d.centre[keep], d.usable)


@dataclass(frozen=True)
class SpectralFit:
    """A fitted spectral model.

    Attributes:
        h: Shape (J,). The modes' curvatures.
        params: The fitted floor, weights and noise ratio.
        cov: Shape (A, A). Covariance of the active coefficients (the floor first, then the modes with weight),
            or None.
        active: Shape (A - 1,). Indices of the modes with weight.
        rel_noise: Standard deviation of the relative residuals of the fit.
        points: Observations the fit used.
        loss_floor: Lowest value the loss can take, or None.
    """

    h: NDArray[np.float64]
    params: SpectralParams
    cov: NDArray[np.float64] | None
    active: NDArray[np.int64]
    rel_noise: float
    points: int
    loss_floor: float | None = None
    _w: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def w(self) -> NDArray[np.float64]:
        """Shape (J,). The weights as an array."""
        return self._w if self._w.size else np.asarray(self.params.weights, dtype=float)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe summary (no covariance)."""
        return {"params": self.params.to_dict(), "rel_noise": self.rel_noise, "points": self.points}

    def loss_of(self, d: NDArray[np.float64], n: NDArray[np.float64]) -> NDArray[np.float64]:
        """The loss of per-mode states ``d``, ``n`` (shape (..., J)), shape (...)."""
        w = self.w
        live = w > 0
        with np.errstate(invalid="ignore", over="ignore"):
            core = d[..., live] + self.params.kappa * n[..., live]
            out = self.params.l0 + np.nan_to_num(core, nan=np.inf) @ w[live]
        return np.asarray(np.where(np.isfinite(out), out, np.inf), dtype=float)

    def history(self) -> ModeHistory:
        """The state of the initial weights on this fit's grid."""
        return ModeHistory.start(self.h)

    def final_losses(
        self, history: ModeHistory, steps: NDArray[np.float64], lrs: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """The loss at the end of ``history`` continued by each of several piecewise-constant plans.

        Args:
            history: What has run so far.
            steps: Shape (P,). Steps of each piece of the continuation.
            lrs: Shape (M, P). LR of each piece, one row per plan.

        Returns:
            Shape (M,). Predicted final loss of each plan (inf where a plan diverges).
        """
        lrs = np.atleast_2d(lrs)
        d = np.repeat(history.d[None, :], lrs.shape[0], axis=0)
        n = np.repeat(history.n[None, :], lrs.shape[0], axis=0)
        for p in range(lrs.shape[1]):
            d, n = advance(self.h, d, n, lrs[:, p : p + 1], float(steps[p]))
        return self.loss_of(d, n)

    def curve(self, history: ModeHistory, steps: NDArray[np.float64], lrs: NDArray[np.float64]) -> NDArray[np.float64]:
        """The loss at the end of each piece of one continuation, shape (P,)."""
        d, n = history.d, history.n
        out = np.empty(len(steps))
        for p in range(len(steps)):
            d, n = advance(self.h, d, n, float(lrs[p]), float(steps[p]))
            out[p] = float(self.loss_of(d, n))
        return out

    def final_loss_std(
        self,
        history: ModeHistory,
        steps: NDArray[np.float64],
        lrs: NDArray[np.float64],
        rate: float = EXTRAPOLATION,
    ) -> float:
        """Standard deviation of the predicted final loss of one plan (``lrs`` shape (P,)).

        The weights' covariance (the data's noise) plus the lack of fit (``rel_noise`` of the prediction) and the
        risk of extrapolating (``rate`` of the prediction per decade between the history's last LR and the plan's
        final LR, and per e-fold of new area).

        Args:
            history: What has run so far.
            steps: Shape (P,). Steps of each piece of the continuation.
            lrs: Shape (P,). LR of each piece.
            rate: Relative uncertainty per unit of extrapolation.
        """
        end = history.extend(steps, lrs)
        mean = float(self.loss_of(end.d, end.n))
        if not math.isfinite(mean):
            return math.inf
        std = abs(mean) * math.hypot(self.rel_noise, extrapolation(history.last_lr, history.area, steps, lrs, rate))
        if self.cov is not None:
            grad = np.concatenate([[1.0], (end.d + self.params.kappa * end.n)[self.active]])
            with np.errstate(over="ignore", invalid="ignore"):
                var = float(grad @ self.cov @ grad)
            std = math.hypot(std, math.sqrt(var)) if math.isfinite(var) and var > 0 else std if var == 0 else math.inf
        return std

    def fitted(self, runs: Sequence[Run], cache: RowCache | None = None) -> list[tuple[int, float, float]]:
        """The model's loss at every finite observation of the runs: ``(run, step within the run, loss)``."""
        des = _design(runs, self.h, cache)
        if not len(des.y):
            return []
        pred = self.loss_of(des.d, des.n)
        return [(int(r), float(c), float(v)) for r, c, v in zip(des.run, des.centre, pred, strict=True)]


def surprise(h: NDArray[np.float64], params: SpectralParams, run: Run, start: ModeHistory) -> float | None:
    """How much worse a run ended than a fit that has not seen it predicted.

    The observed over the predicted mean loss of its last two bins (None when it has no finite bin or the prediction
    is not positive).

    Args:
        h: Shape (J,). The fit's curvatures.
        params: The fit's parameters.
        run: The run (its own losses; its parent is not read).
        start: The model's state where the run started.
    """
    last = _last_bins(h, params, run, start)
    if last is None:
        return None
    _, seen, predicted = last
    if not math.isfinite(predicted) or predicted <= 0:
        return None
    return seen / predicted


def drops(
    h: NDArray[np.float64], params: SpectralParams, run: Run, start: ModeHistory, before: float | None
) -> tuple[float, float] | None:
    """How far a run's loss dropped, seen and as a fit that has not seen it predicted.

    Seen: from ``before`` (the loss where the run started) to the mean of its last two bins; predicted: from the
    fit's loss at ``start`` to its loss at those bins. None when the run has no finite bin, ``before`` is None or
    the prediction is not finite.

    Args:
        h: Shape (J,). The fit's curvatures.
        params: The fit's parameters.
        run: The run (its own losses; its parent is not read).
        start: The model's state where the run started.
        before: The loss observed where the run started.
    """
    last = _last_bins(h, params, run, start)
    if last is None or before is None:
        return None
    fit, seen, end = last
    at = float(fit.loss_of(start.d[None, :], start.n[None, :])[0])
    if not (math.isfinite(end) and math.isfinite(at)):
        return None
    return before - seen, at - end


def _last_bins(
    h: NDArray[np.float64], params: SpectralParams, run: Run, start: ModeHistory
) -> tuple[SpectralFit, float, float] | None:
    """A fit of ``params`` and a run's mean loss over its last two bins, seen and predicted (None without a bin)."""
    rows = _run_rows(run, start, whole=True)
    if not len(rows.y):
        return None
    k = min(2, len(rows.y))
    fit = SpectralFit(h, params, None, np.flatnonzero(np.asarray(params.weights) > 0), 0.0, 0)
    return fit, float(np.mean(rows.y[-k:])), float(np.mean(fit.loss_of(rows.d[-k:], rows.n[-k:])))


def _solve(
    des: _Design, kappa: float, base: float
) -> tuple[float, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Non-negative relative least squares of ``(L0 - base, w)`` for one ``kappa``.

    Returns:
        The residual sum of squares, the coefficients (floor offset first), the scaled design and the scaled
        residuals.
    """
    rel = des.weight / np.maximum(np.abs(des.y), 1e-12)
    cols = des.d + kappa * des.n
    x = np.concatenate([np.ones((len(des.y), 1)), cols[:, des.usable]], axis=1) * rel[:, None]
    target = (des.y - base) * rel
    coef, _ = nnls(x, target, maxiter=50 * x.shape[1])
    resid = x @ coef - target
    return float(resid @ resid), coef, x, resid


def fit(
    runs: Sequence[Run],
    h: NDArray[np.float64],
    loss_floor: float | None = 0.0,
    window: float | None = None,
    kappa: float | None = None,
    cache: RowCache | None = None,
) -> SpectralFit | None:
    """Fit the spectral model to the runs.

    Args:
        runs: The runs, parents before children.
        h: Shape (J,). The modes' curvatures (:func:`curvature_grid`).
        loss_floor: Lowest value the loss can take (``L0`` is kept at or above it), or None.
        window: Leave out observations above this factor times the lowest observed loss (None: use all).
        kappa: A previous fit's noise ratio: a local search around it replaces the search over the whole range.
        cache: Rows of the runs computed by earlier calls (filled in here).

    Returns:
        The fit, or None when the runs hold too few finite observations to tell anything yet.
    """
    des = _windowed(_design(runs, h, cache), window)
    if len(des.y) < MIN_POINTS or float(np.ptp(des.y)) <= 0.0:
        return None
    base = loss_floor if loss_floor is not None else float(min(des.y.min(), 0.0)) - 1e-12
    memo: dict[float, float] = {}

    def rss(log_k: float) -> float:
        if log_k not in memo:
            memo[log_k] = _solve(des, 10.0**log_k, base)[0]
        return memo[log_k]

    lo, hi = _KAPPA_RANGE
    if kappa is not None and kappa > 0:
        centre = min(max(math.log10(kappa), lo), hi)
        points = [centre - 0.5, centre, centre + 0.5]
    else:
        points = list(np.linspace(lo, hi, 23))
    values = [rss(p) for p in points]
    best = int(np.argmin(values))
    # Walk outwards while the edge of the bracket is the best, then narrow it down (golden section).
    step = points[1] - points[0]
    while best in (0, len(points) - 1) and lo < points[best] < hi:
        nxt = min(max(points[best] + (step if best else -step), lo), hi)
        points = [*points, nxt] if best else [nxt, *points]
        values = [rss(p) for p in points]
        best = int(np.argmin(values))
    a = points[max(best - 1, 0)]
    b = points[min(best + 1, len(points) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(10):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if rss(c) <= rss(d):
            b = d
        else:
            a = c
    log_k = min(memo, key=lambda k: memo[k])
    return _fit_at(des, h, 10.0**log_k, base, loss_floor)


def rivals(
    runs: Sequence[Run],
    fit: SpectralFit,
    factor: float = 4.0,
    tolerance: float = 1.2,
    cache: RowCache | None = None,
) -> list[SpectralFit]:
    """Other readings of the same data: the fits with the noise ratio ``factor`` times lower and higher.

    A reading counts while it explains the data about as well: the RMS of its relative residuals within
    ``tolerance`` times the fit's. How much of a plateau is noise that a decay removes, and how much is progress
    still to come, is what a spectral fit knows least; a plan that is good under every reading is safe, and a search
    pays when the readings disagree on the plan.
    """
    des = _design(runs, fit.h, cache)
    if len(des.y) < MIN_POINTS:
        return []
    base = fit.loss_floor if fit.loss_floor is not None else float(min(des.y.min(), 0.0)) - 1e-12
    out = []
    for k in (fit.params.kappa / factor, fit.params.kappa * factor):
        other = _fit_at(des, fit.h, k, base, fit.loss_floor)
        if other.rel_noise <= tolerance * max(fit.rel_noise, 1e-12):
            out.append(other)
    return out


def _fit_at(des: _Design, h: NDArray[np.float64], k: float, base: float, loss_floor: float | None) -> SpectralFit:
    """The fit with the noise ratio held at ``k``."""
    total, coef, x, _ = _solve(des, k, base)
    weights = np.zeros(len(h))
    weights[np.flatnonzero(des.usable)] = coef[1:]
    active = np.flatnonzero(weights > 0)
    used = np.concatenate([[0], 1 + np.flatnonzero(coef[1:] > 0)])
    dof = max(len(des.y) - len(used) - 1, 1)
    rel_noise = math.sqrt(total / dof)
    cov = _covariance(x[:, used], rel_noise)
    params = SpectralParams(float(coef[0] + base), tuple(float(v) for v in weights), k)
    return SpectralFit(h, params, cov, active, rel_noise, len(des.y), loss_floor, weights)


def at(
    runs: Sequence[Run],
    h: NDArray[np.float64],
    params: SpectralParams,
    loss_floor: float | None = 0.0,
    window: float | None = None,
    cache: RowCache | None = None,
) -> SpectralFit | None:
    """The fit with given parameters (a stored fit's), its noise and covariance recomputed from the runs.

    Deterministic and cheap: no search. Views use it, so every process that holds the job shows the same model.
    """
    des = _windowed(_design(runs, h, cache), window)
    if len(des.y) < MIN_POINTS:
        return None
    weights = np.asarray(params.weights, dtype=float)
    if weights.shape != h.shape:
        return None
    rel = des.weight / np.maximum(np.abs(des.y), 1e-12)
    active = np.flatnonzero(weights > 0)
    cols = des.d + params.kappa * des.n
    pred = params.l0 + cols[:, active] @ weights[active]
    resid = (pred - des.y) * rel
    dof = max(len(des.y) - len(active) - 2, 1)
    rel_noise = math.sqrt(float(resid @ resid) / dof)
    x = np.concatenate([np.ones((len(des.y), 1)), cols[:, active]], axis=1) * rel[:, None]
    return SpectralFit(h, params, _covariance(x, rel_noise), active, rel_noise, len(des.y), loss_floor, weights)


def _covariance(x: NDArray[np.float64], rel_noise: float) -> NDArray[np.float64] | None:
    """Covariance of the active coefficients from the scaled design of the relative residuals."""
    if not x.size:
        return None
    xtx = x.T @ x
    xtx += np.eye(len(xtx)) * 1e-9 * max(float(np.trace(xtx)), 1e-12)
    try:
        inv = np.linalg.inv(xtx)
    except np.linalg.LinAlgError:
        return None
    return np.asarray(inv * max(rel_noise, 1e-4) ** 2, dtype=float)
