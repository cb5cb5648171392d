"""A schedule-aware loss model: the loss curve under any LR schedule, fitted to the schedules a job has run.

The model is a response to the LR trajectory in *area* coordinates (``S(t) = sum of the LRs of the steps
before t``), in the spirit of the multi-power law (Luo et al. 2025) and the LR-annealing scaling law (Tissue et
al. 2024), but symmetric in LR changes::

    L(t) = L0 + A * (1 + S(t) / S_W)^(-alpha) + B * sum_k (lr_k - lr_{k-1}) * G(S(t) - S(s_k))
    G(x) = 1 - (1 + C x)^(-beta)

* the first term is the floor, the second the progress that any LR makes per unit of area (a larger LR makes
  more area per step): a power law of the area, which with a large ``alpha`` and ``S_W`` becomes an exponential;
* the third is the LR's *noise level*: every change of the LR at step ``s_k`` (from ``lr_{k-1}``; the LR before
  step 0 counts as 0) moves the loss by ``B`` times the change, saturating in area after the change. A decay buys
  a drop of the loss, a rise costs one. At a constant LR the loss tends to ``L0 + B * lr``: the noise floor of
  SGD grows with the LR, which is what makes a large LR early and a small one late the right trade.

On a noisy quadratic model trained by SGD at small LRs this form is exact (``G`` is a mixture of exponentials
there, which ``1 - (1 + C x)^-beta`` follows). ``L0``, ``A`` and ``B`` enter linearly and are solved in closed
form (non-negative, relative residuals) for each value of the shape parameters ``(alpha, S_W, C, beta)``, which a
bounded least-squares search finds (variable projection). The uncertainty of a prediction is propagated from the
Gauss-Newton covariance of all seven parameters, widened by the lack of fit.

Input is a forest of *runs*: stretches of training with a known per-step LR, each starting from the end of a
parent run (or from the initial weights), with their binned observed losses. Rolled-back branches are runs
that share their parent's prefix. Nothing here keeps state: a fit is a pure function of the runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares, nnls

_Z90 = 1.6448536269514722
#: Bounds of the shape parameters: alpha, log10(S_W / area scale), log10(C * area scale), beta.
_LOWER = np.array([0.05, -5.0, 0.0, 0.1])
_UPPER = np.array([40.0, 3.0, 4.0, 3.0])
_STARTS = (
    np.array([0.5, -2.0, 1.0, 0.7]),
    np.array([1.0, -3.0, 2.0, 0.5]),
    np.array([0.3, -1.0, 0.5, 1.5]),
)
_TIED_STARTS = (np.array([0.5, -2.0]), np.array([2.0, -1.0]), np.array([10.0, 0.0]))
_MIN_POINTS = 8  # fewer binned observations than this: the model cannot tell yet
#: Relative uncertainty a prediction gains per decade of LR change and per e-fold of area beyond the data.
EXTRAPOLATION = 0.1
_MAX_PIECES_PER_RUN = 8  # a varying LR is cut into at most this many constant pieces
_QUANTUM = 0.1  # relative LR change below which the model carries a change instead of adding a change point
_POINTS_PER_RUN = 8  # binned losses per run the fit uses


@dataclass(frozen=True)
class Run:
    """A stretch of training with a known LR trajectory and its observed losses.

    Attributes:
        parent: Index (in the list handed to :func:`fit`) of the run whose end state this one starts from, or
            None for the initial weights.
        lrs: Shape (steps,). The LR of each step.
        points: ``(end, mean)`` pairs: the mean loss over steps ``[previous end, end)`` of this run (ends counted
            from 1 within the run); ``mean`` is None where a bin was not finite.
    """

    parent: int | None
    lrs: tuple[float, ...]
    points: tuple[tuple[int, float | None], ...] = field(default_factory=tuple)

    @cached_property
    def geometry(self) -> _RunGeometry:
        """What the fit needs of this run alone, computed once per run object (not a field: equality ignores it)."""
        lrs = np.asarray(self.lrs, dtype=float)
        return _RunGeometry(
            lrs=lrs,
            cum=np.concatenate([[0.0], np.cumsum(lrs)]),
            pieces=constant_pieces(lrs),
            bins=_thin(self.points, _POINTS_PER_RUN),
        )


@dataclass(frozen=True)
class _RunGeometry:
    """A run's own share of the design (internal): independent of its parent.

    Attributes:
        lrs: Shape (steps,). The per-step LRs.
        cum: Shape (steps + 1,). Area before each step and at the end, counted from the run's start.
        pieces: The run's constant pieces (see :func:`_pieces`).
        bins: Its observations merged into at most ``_POINTS_PER_RUN`` bins (see :func:`_thin`).
    """

    lrs: NDArray[np.float64]
    cum: NDArray[np.float64]
    pieces: list[tuple[int, int, float]]
    bins: list[tuple[int, int, float]]


@dataclass(frozen=True)
class Params:
    """Fitted parameters of the loss model (see the module docstring).

    Attributes:
        l0: Floor of the loss, in loss units.
        a: Progress amplitude (the progress term at area 0), in loss units.
        alpha: Progress exponent.
        s_w: Area scale of the progress term, in LR x steps.
        b: Noise level per unit of LR, in loss units per LR unit.
        c: Rate of the noise response, per unit of area.
        beta: Exponent of the noise response.
    """

    l0: float
    a: float
    alpha: float
    s_w: float
    b: float
    c: float
    beta: float

    def vector(self) -> NDArray[np.float64]:
        """The seven parameters as an array, in field order."""
        return np.array([self.l0, self.a, self.alpha, self.s_w, self.b, self.c, self.beta])


@dataclass(frozen=True)
class Fit:
    """A fitted loss model.

    Attributes:
        params: The best parameters.
        cov: Shape (7, 7). Covariance of the parameters in the unconstrained coordinates ``(l0, log a, alpha,
            log s_w, log b, log c, beta)``, or None when it could not be estimated.
        rel_noise: Standard deviation of the relative residuals of the fit.
        points: Observations the fit used.
        loss_floor: Lowest value the loss can take, or None.
        tied: The noise response shares the progress term's kernel (``C = 1 / S_W``, ``beta = alpha``).
    """

    params: Params
    cov: NDArray[np.float64] | None
    rel_noise: float
    points: int
    loss_floor: float | None
    tied: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-safe summary (no covariance)."""
        return {"params": asdict(self.params), "rel_noise": self.rel_noise, "points": self.points}


# ---------------------------------------------------------------------- geometry of the runs


@dataclass
class _Design:
    """The runs turned into change points and observation points (internal)."""

    dlr: NDArray[np.float64]  # (K,) LR change at each change point
    area_at: NDArray[np.float64]  # (K,) area before each change point
    obs_area: NDArray[np.float64]  # (N,) area at each observation (bin centre)
    mask: NDArray[np.bool_]  # (N, K) change point k lies on the path of observation n, before it
    y: NDArray[np.float64]  # (N,) observed mean loss
    weight: NDArray[np.float64]  # (N,) relative weight (bin size)
    scale: float  # area scale
    run: NDArray[np.int64] | None = None  # (N,) run of each observation
    centre: NDArray[np.float64] | None = None  # (N,) step of each observation within its run

    @cached_property
    def gap(self) -> NDArray[np.float64]:
        """Shape (M,). Area from each applying change point to its observation (at least 0), in LR x steps.

        One entry per true entry of ``mask``, in row-major order; computed once per design, as every evaluation
        of the model on it needs it.
        """
        return np.maximum((self.obs_area[:, None] - self.area_at[None, :])[self.mask], 0.0)

    def noise(self, c: float, beta: float) -> NDArray[np.float64]:
        """Shape (N,). Sum over the change points that apply of ``dlr * G(area since the change)``."""
        if not self.dlr.size:
            return np.zeros(len(self.y))
        g = np.zeros(self.mask.shape)
        g[self.mask] = 1.0 - np.power(1.0 + c * self.gap, -beta)
        return np.asarray(g @ self.dlr, dtype=float)


def constant_pieces(
    lrs: Sequence[float] | NDArray[np.float64], max_pieces: int = _MAX_PIECES_PER_RUN, geometric: bool = False
) -> list[tuple[int, int, float]]:
    """Cut a per-step LR into constant pieces ``(start, steps, lr)``.

    Exact where the LR is piecewise constant, else at most ``max_pieces`` equal pieces, each at the mean LR of its
    steps (with ``geometric``, the geometric mean where every LR is positive: log-linear sweeps and decays stay
    accurate).
    """
    arr = np.asarray(lrs, dtype=float)
    n = len(arr)
    if n == 0:
        return []
    breaks = [0, *(np.flatnonzero(np.diff(arr) != 0) + 1).tolist(), n]
    if len(breaks) - 1 > max_pieces:
        breaks = sorted({round(float(v)) for v in np.linspace(0, n, max_pieces + 1)})
    out = []
    for a, b in zip(breaks[:-1], breaks[1:], strict=True):
        if b > a:
            chunk = arr[a:b]
            geo = geometric and bool(np.all(chunk > 0))
            out.append((a, b - a, float(np.exp(np.mean(np.log(chunk)))) if geo else float(chunk.mean())))
    return out


def _changes(
    pieces: list[tuple[int, int, float]], cum: NDArray[np.float64], held: float
) -> tuple[list[tuple[int, float, float]], float]:
    """The change points ``(start, dlr, area)`` of a run's pieces, given the LR the model holds before it.

    The model's LR follows the true one with a hysteresis of ``_QUANTUM`` (relative): a small change is
    carried until the changes add up, so a smooth decay costs a few dozen change points, not one per segment.
    The area itself is always exact.
    """
    out: list[tuple[int, float, float]] = []
    for start, _steps, lr in pieces:
        if held == 0.0 or abs(lr - held) > _QUANTUM * max(abs(held), abs(lr)):
            out.append((start, lr - held, float(cum[start])))
            held = lr
    return out, held


def _thin(points: Sequence[tuple[int, float | None]], keep: int) -> list[tuple[int, int, float]]:
    """Merge consecutive bins into at most ``keep`` finite ``(start, end, mean)`` bins (means weighted by size)."""
    bins: list[tuple[int, int, float]] = []
    lo = 0
    for end, mean in points:
        end = int(end)
        if end <= lo:
            continue
        if mean is not None and math.isfinite(mean):
            bins.append((lo, end, float(mean)))
        lo = end
    if len(bins) <= keep:
        return bins
    groups = np.array_split(np.arange(len(bins)), keep)
    out = []
    for g in groups:
        chunk = [bins[i] for i in g]
        size = sum(b - a for a, b, _ in chunk)
        out.append((chunk[0][0], chunk[-1][1], sum((b - a) * m for a, b, m in chunk) / size))
    return out


def _design(runs: Sequence[Run]) -> _Design:
    k_dlr: list[float] = []
    k_area: list[float] = []
    k_owner: list[int] = []
    k_start: list[int] = []
    end_area: list[float] = []
    held_lr: list[float] = []
    parents = np.full(len(runs), -1)
    o_run: list[int] = []
    o_centre: list[float] = []
    o_area: list[float] = []
    o_y: list[float] = []
    o_w: list[float] = []
    for i, run in enumerate(runs):
        p = run.parent
        if p is not None and not 0 <= p < i:
            raise ValueError(f"run {i} has parent {p}: parents must come first")
        parents[i] = -1 if p is None else p
        base_area = end_area[p] if p is not None else 0.0
        held = held_lr[p] if p is not None else 0.0
        geo = run.geometry
        cum = geo.cum + base_area
        changes, held = _changes(geo.pieces, cum, held)
        for start, dlr, area in changes:
            k_dlr.append(dlr)
            k_area.append(area)
            k_owner.append(i)
            k_start.append(start)
        end_area.append(float(cum[-1]))
        held_lr.append(held)
        centres: list[float] = []
        for lo, end, mean in geo.bins:
            end = min(end, len(geo.lrs))
            if end <= lo:
                continue
            centres.append((lo + end) / 2.0)
            o_run.append(i)
            o_y.append(mean)
            o_w.append(float(end - lo))
        if centres:
            o_centre += centres
            o_area += np.interp(np.array(centres), np.arange(len(cum)), cum).tolist()
    r = len(runs)
    # anc[i, j]: run j lies on the path to run i (strictly before it)
    anc = np.zeros((r, r), dtype=bool)
    for i in range(r):
        if parents[i] >= 0:
            anc[i] = anc[parents[i]]
            anc[i, parents[i]] = True
    orun = np.array(o_run, dtype=int)
    owner = np.array(k_owner, dtype=int)
    if len(orun) and len(owner):
        mask = anc[orun][:, owner] | (
            (orun[:, None] == owner[None, :]) & (np.array(k_start)[None, :] <= np.array(o_centre)[:, None])
        )
    else:
        mask = np.zeros((len(orun), len(owner)), dtype=bool)
    obs_area = np.array(o_area, dtype=float)
    scale = float(max(obs_area.max(initial=0.0), max(end_area, default=0.0), 1e-12))
    weight = np.array(o_w, dtype=float)
    return _Design(
        dlr=np.array(k_dlr, dtype=float),
        area_at=np.array(k_area, dtype=float),
        obs_area=obs_area,
        mask=mask,
        y=np.array(o_y, dtype=float),
        weight=np.sqrt(weight / max(weight.mean(), 1e-12)) if len(weight) else weight,
        scale=scale,
        run=orun,
        centre=np.array(o_centre, dtype=float),
    )


def _windowed(d: _Design, window: float | None) -> _Design:
    """The design without observations above ``window`` times the lowest observed loss (all kept for None)."""
    if window is None or not len(d.y):
        return d
    keep = d.y <= window * float(d.y.min())
    return _Design(d.dlr, d.area_at, d.obs_area[keep], d.mask[keep], d.y[keep], d.weight[keep], d.scale)


def fitted(p: Params, runs: Sequence[Run]) -> list[tuple[int, float, float]]:
    """The model's loss at every finite observation of the runs: ``(run, step within the run, loss)``."""
    d = _design(runs)
    if not len(d.y) or d.run is None or d.centre is None:
        return []
    pred = _predict_design(d, p)
    return [(int(r), float(c), float(v)) for r, c, v in zip(d.run, d.centre, pred, strict=True)]


# ---------------------------------------------------------------------- the model


_Columns = dict[tuple[str, float, float], NDArray[np.float64]]


def _features(d: _Design, shape: NDArray[np.float64], memo: _Columns | None = None) -> NDArray[np.float64]:
    """Columns ``[1, (S + S_W)^-alpha, noise response]`` at every observation, shape (N, 3).

    Args:
        d: The design.
        shape: ``(alpha, log10 S_W / scale, log10 C * scale, beta)``.
        memo: Columns already computed on ``d``, by the shape parameters they depend on (filled in here). A
            finite-difference Jacobian moves one parameter at a time, so half its columns repeat.
    """
    alpha, log_sw, log_c, beta = (float(v) for v in shape)
    if memo is not None and len(memo) > 16:
        memo.clear()
    progress = None if memo is None else memo.get(("progress", alpha, log_sw))
    if progress is None:
        s_w = 10.0**log_sw * d.scale
        progress = np.power(1.0 + d.obs_area / s_w, -alpha)
        if memo is not None:
            memo["progress", alpha, log_sw] = progress
    noise = None if memo is None else memo.get(("noise", log_c, beta))
    if noise is None:
        noise = d.noise(10.0**log_c / d.scale, beta)
        if memo is not None:
            memo["noise", log_c, beta] = noise
    return np.stack([np.ones(len(d.y)), progress, noise], axis=1)


def _solve_linear(
    x: NDArray[np.float64], y: NDArray[np.float64], w: NDArray[np.float64], floor: float | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Non-negative weighted relative least squares for ``(L0 - floor, A, B)``; returns them and the residuals."""
    base = floor if floor is not None else float(min(y.min(), 0.0)) - 1e-12
    rel = w / np.maximum(np.abs(y), 1e-12)
    coef, _ = nnls(x * rel[:, None], (y - base) * rel, maxiter=200)
    resid = (x @ coef - (y - base)) * rel
    return np.array([coef[0] + base, coef[1], coef[2]]), resid


def fit(
    runs: Sequence[Run],
    loss_floor: float | None = 0.0,
    window: float | None = None,
    start: Params | None = None,
    tied: bool = False,
    beta: float | None = None,
) -> Fit | None:
    """Fit the loss model to the runs.

    Args:
        runs: The runs, parents before children.
        loss_floor: Lowest value the loss can take (``L0`` is kept at or above it), or None.
        window: Leave out observations above this factor times the lowest observed loss (None: use all).
        start: A previous fit's parameters: one short search from there replaces the multi-start search.
        tied: Tie the noise response to the progress kernel: ``G(x) = 1 - (1 + x / S_W)^-alpha``. In a linear
            picture of training (exact on a noisy quadratic) the loss relaxes after an LR change through the same
            spectrum that sets its progress, so the well-observed progress tells how slowly a decay pays off,
            which short cooldown probes alone cannot. Two shape parameters instead of four.
        beta: Hold the noise response's exponent at this value (untied kernels only; None: fit it). How slowly
            a decay pays off at long range is what short decays show least; a fit with the exponent held is a
            rival reading of the same data (see :func:`lrtune.tuner.planner.optimize`).

    Returns:
        The fit, or None when the runs hold too few finite observations to tell anything yet.
    """
    d = _windowed(_design(runs), window)
    if len(d.y) < _MIN_POINTS or float(np.ptp(d.y)) <= 0.0:
        return None

    held = beta is not None and not tied
    n_shape = 2 if tied else 3 if held else 4

    def full(v: NDArray[np.float64]) -> NDArray[np.float64]:
        if tied:
            return np.array([v[0], v[1], -v[1], v[0]])
        return np.array([v[0], v[1], v[2], beta]) if held else v

    memo: _Columns = {}

    def residual(v: NDArray[np.float64]) -> NDArray[np.float64]:
        _, r = _solve_linear(_features(d, full(v), memo), d.y, d.weight, loss_floor)
        return r

    lower, upper = _LOWER[:n_shape], _UPPER[:n_shape]
    best = None
    starts: tuple[NDArray[np.float64], ...] = _TIED_STARTS if tied else tuple(s[:n_shape] for s in _STARTS)
    if start is not None:
        x0 = np.array([start.alpha, math.log10(start.s_w / d.scale), math.log10(start.c * d.scale), start.beta])
        starts = (np.clip(x0[:n_shape], lower + 1e-9, upper - 1e-9),)
    for x0 in starts:
        res = least_squares(
            residual,
            x0,
            bounds=(lower, upper),
            x_scale=[0.3, 1.0, 1.0, 0.3][:n_shape],
            max_nfev=25 if start else 60,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    shape = full(best.x)
    lin, resid = _solve_linear(_features(d, shape, memo), d.y, d.weight, loss_floor)
    params = Params(
        l0=float(lin[0]),
        a=float(lin[1]),
        alpha=float(shape[0]),
        s_w=float(10.0 ** shape[1] * d.scale),
        b=float(lin[2]),
        c=float(10.0 ** shape[2] / d.scale),
        beta=float(shape[3]),
    )
    dof = max(len(d.y) - 7, 1)
    rel_noise = float(math.sqrt(float(resid @ resid) / dof))
    cov = _covariance(d, params, rel_noise, tied, held)
    return Fit(params=params, cov=cov, rel_noise=rel_noise, points=len(d.y), loss_floor=loss_floor, tied=tied)


def at(
    runs: Sequence[Run],
    params: Params,
    loss_floor: float | None = 0.0,
    window: float | None = None,
    tied: bool = False,
) -> Fit | None:
    """The fit with given parameters (a stored fit's), its noise and covariance recomputed from the runs.

    Deterministic and cheap: no search. It is what a view of a job uses, so that every process that holds the
    job's state shows the same model.
    """
    d = _windowed(_design(runs), window)
    if len(d.y) < _MIN_POINTS:
        return None
    rel = d.weight / np.maximum(np.abs(d.y), 1e-12)
    resid = (_predict_design(d, params) - d.y) * rel
    rel_noise = float(math.sqrt(float(resid @ resid) / max(len(d.y) - 7, 1)))
    cov = _covariance(d, params, rel_noise, tied)
    return Fit(params=params, cov=cov, rel_noise=rel_noise, points=len(d.y), loss_floor=loss_floor, tied=tied)


def _unconstrained(p: Params) -> NDArray[np.float64]:
    return np.array(
        [p.l0, math.log(max(p.a, 1e-300)), p.alpha, math.log(p.s_w), math.log(max(p.b, 1e-300)), math.log(p.c), p.beta]
    )


def _constrained(u: NDArray[np.float64], tied: bool = False) -> Params:
    return Params(
        l0=float(u[0]),
        a=float(math.exp(u[1])),
        alpha=float(u[2]),
        s_w=float(math.exp(u[3])),
        b=float(math.exp(u[4])),
        c=float(math.exp(-u[3]) if tied else math.exp(u[5])),
        beta=float(u[2] if tied else u[6]),
    )


def _predict_design(d: _Design, p: Params) -> NDArray[np.float64]:
    noise = d.noise(p.c, p.beta)
    return np.asarray(p.l0 + p.a * np.power(1.0 + d.obs_area / p.s_w, -p.alpha) + p.b * noise, dtype=float)


def _covariance(
    d: _Design, p: Params, rel_noise: float, tied: bool = False, held_beta: bool = False
) -> NDArray[np.float64] | None:
    """Gauss-Newton covariance of the unconstrained parameters from the relative residuals."""
    u0 = _unconstrained(p)
    # A parameter at zero (A or B) is held there: its log has no finite neighbourhood. Tied ones follow others.
    noise_shape = p.b > 1e-200 and not tied
    free = np.array([True, p.a > 1e-200, True, True, p.b > 1e-200, noise_shape, noise_shape and not held_beta])
    rel = d.weight / np.maximum(np.abs(d.y), 1e-12)
    base = _predict_design(d, p) * rel
    cols = []
    for j in range(7):
        if not free[j]:
            cols.append(np.zeros_like(base))
            continue
        h = 1e-4 * max(1.0, abs(u0[j])) if j != 0 else 1e-4 * max(abs(p.l0), float(np.abs(d.y).mean()) * 1e-3, 1e-12)
        u = u0.copy()
        u[j] += h
        cols.append((_predict_design(d, _constrained(u, tied)) * rel - base) / h)
    jac = np.stack(cols, axis=1)
    jtj = jac.T @ jac
    idx = np.flatnonzero(free)
    sub = jtj[np.ix_(idx, idx)]
    sub += np.eye(len(idx)) * 1e-9 * max(float(np.trace(sub)), 1e-12)
    try:
        inv = np.linalg.inv(sub)
    except np.linalg.LinAlgError:
        return None
    cov = np.zeros((7, 7))
    cov[np.ix_(idx, idx)] = inv * max(rel_noise, 1e-4) ** 2
    return cov


# ---------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class History:
    """The LR trajectory of one line of training, compressed for fast predictions.

    Attributes:
        dlr: Shape (K,). LR changes.
        area_at: Shape (K,). Area before each change, in LR x steps.
        area: Area at the end of the history.
        lr: LR the model holds at the end (the last step's LR up to the change hysteresis; 0 when empty).
        last_lr: The last step's exact LR (0 when empty).
    """

    dlr: NDArray[np.float64]
    area_at: NDArray[np.float64]
    area: float
    lr: float
    last_lr: float = 0.0

    @classmethod
    def of(cls, chunks: Sequence[Sequence[float] | NDArray[np.float64]]) -> History:
        """The history of the runs on one path from the initial weights, each given by its per-step LRs.

        Args:
            chunks: Per-step LR arrays of the runs on the path, first run first (each is cut into pieces on its
                own, as :func:`fit` does).
        """
        history = cls(np.zeros(0), np.zeros(0), 0.0, 0.0, 0.0)
        for chunk in chunks:
            history = history.then(chunk)
        return history

    def then(self, chunk: Sequence[float] | NDArray[np.float64]) -> History:
        """This history followed by one more run, given by its per-step LRs (cut into pieces as :meth:`of` does).

        ``History.of([a, b])`` equals ``History.of([a]).then(b)``; a caller that extends a path one run at a time
        keeps the shorter histories instead of recomputing them.
        """
        arr = np.asarray(chunk, dtype=float)
        if not arr.size:
            return self
        cum = np.concatenate([[0.0], np.cumsum(arr)]) + self.area
        changes, held = _changes(constant_pieces(arr), cum, self.lr)
        return History(
            np.concatenate([self.dlr, np.array([c[1] for c in changes], dtype=float)]),
            np.concatenate([self.area_at, np.array([c[2] for c in changes], dtype=float)]),
            float(cum[-1]),
            held,
            float(arr[-1]),
        )

    def extend(self, steps: NDArray[np.float64], lrs: NDArray[np.float64]) -> History:
        """This history followed by constant pieces of ``steps`` steps at ``lrs`` (both shape (P,))."""
        prev = np.concatenate([[self.lr], lrs[:-1]]) if len(lrs) else np.zeros(0)
        areas = self.area + np.concatenate([[0.0], np.cumsum(steps * lrs)[:-1]]) if len(lrs) else np.zeros(0)
        keep = lrs != prev
        return History(
            np.concatenate([self.dlr, (lrs - prev)[keep]]),
            np.concatenate([self.area_at, areas[keep]]),
            self.area + float(np.sum(steps * lrs)),
            float(lrs[-1]) if len(lrs) else self.lr,
            float(lrs[-1]) if len(lrs) else self.last_lr,
        )


def loss_at_end(p: Params, history: History) -> float:
    """The model's loss at the end of a history (noise-free)."""
    gap = history.area - history.area_at
    g = 1.0 - np.power(1.0 + p.c * np.maximum(gap, 0.0), -p.beta)
    return float(p.l0 + p.a * (1.0 + history.area / p.s_w) ** -p.alpha + p.b * float(g @ history.dlr))


def final_losses(
    p: Params, history: History, steps: NDArray[np.float64], lrs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The model's loss at the end of ``history`` continued by each of several piecewise-constant plans.

    Args:
        p: Model parameters.
        history: What has run so far.
        steps: Shape (P,). Steps of each piece of the continuation.
        lrs: Shape (M, P). LR of each piece, one row per plan.

    Returns:
        Shape (M,). Predicted final loss of each plan.
    """
    lrs = np.atleast_2d(lrs)
    prev = np.concatenate([np.full((lrs.shape[0], 1), history.lr), lrs[:, :-1]], axis=1)
    dl = lrs - prev
    seg_area = lrs * steps[None, :]
    total = history.area + seg_area.sum(axis=1)  # (M,)
    start = history.area + np.cumsum(seg_area, axis=1) - seg_area  # (M, P) area before each piece
    g_new = 1.0 - np.power(1.0 + p.c * np.maximum(total[:, None] - start, 0.0), -p.beta)
    g_old = 1.0 - np.power(1.0 + p.c * np.maximum(total[:, None] - history.area_at[None, :], 0.0), -p.beta)
    noise = (g_old @ history.dlr) + np.sum(g_new * dl, axis=1)
    return np.asarray(p.l0 + p.a * np.power(1.0 + total / p.s_w, -p.alpha) + p.b * noise, dtype=float)


def curve(p: Params, history: History, steps: NDArray[np.float64], lrs: NDArray[np.float64]) -> NDArray[np.float64]:
    """The model's loss at the end of each piece of a continuation, shape (P,)."""
    out = np.empty(len(steps))
    for i in range(len(steps)):
        out[i] = final_losses(p, history, steps[: i + 1], lrs[None, : i + 1])[0]
    return out


def final_loss_std(
    f: Fit,
    history: History,
    steps: NDArray[np.float64],
    lrs: NDArray[np.float64],
    rate: float = EXTRAPOLATION,
) -> float:
    """Standard deviation of the predicted final loss of one plan, from the parameters' covariance.

    Two terms are added to it: the lack of fit (``rel_noise`` of the fit times the prediction: a model that
    misses its data by some percent is not trusted to better than that), and the risk of extrapolating
    (``rate`` times the prediction, per decade between the LR the history ends at and the plan's final
    LR, and per e-fold of new area): the parameters' covariance knows only the model's own family, not how far
    the truth may leave it.
    """
    mean = float(final_losses(f.params, history, steps, lrs[None, :])[0])
    if f.cov is None:
        return abs(mean) * max(f.rel_noise, 0.05) * 3.0
    u0 = _unconstrained(f.params)
    grad = np.zeros(7)
    for j in range(7):
        if f.cov[j, j] <= 0:
            continue
        h = 1e-4 * max(1.0, abs(u0[j])) if j else 1e-4 * max(abs(f.params.l0), abs(mean) * 1e-3, 1e-12)
        u = u0.copy()
        u[j] += h
        grad[j] = (float(final_losses(_constrained(u, f.tied), history, steps, lrs[None, :])[0]) - mean) / h
    var = (
        float(grad @ f.cov @ grad)
        + (f.rel_noise * mean) ** 2
        + (extrapolation(history.last_lr, history.area, steps, lrs, rate) * mean) ** 2
    )
    return math.sqrt(max(var, 0.0))


def extrapolation(
    last_lr: float,
    area: float,
    steps: NDArray[np.float64],
    lrs: NDArray[np.float64],
    rate: float = EXTRAPOLATION,
) -> float:
    """Relative model risk of a prediction: per decade of LR change and per e-fold of area beyond the data.

    Args:
        last_lr: The LR the history ends at (0: none).
        area: The history's LR area, in LR x steps.
        steps: Shape (P,). Steps of each piece of the continuation.
        lrs: Shape (P,). LR of each piece.
        rate: Relative uncertainty per unit of extrapolation (the model's own; this model's by default).
    """
    if not len(lrs):
        return 0.0
    now = last_lr if last_lr > 0 else float(lrs[0])
    decades = abs(math.log10(max(float(lrs[-1]), 1e-300) / max(now, 1e-300)))
    new_area = float(np.sum(steps * lrs))
    return rate * (decades + math.log1p(new_area / max(area, 1e-12)))


def band90(mean: float, std: float, floor: float | None) -> tuple[float, float]:
    """The 90% band of a prediction, kept at or above the loss floor."""
    lo, hi = mean - _Z90 * std, mean + _Z90 * std
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi
