"""The spectral planner: the rest of the budget's schedule that minimises the spectral model's final loss.

A plan (:class:`lrtune.tuner.planner.Plan`) is the LR at ``knots`` equally spaced points over the remaining steps,
log-linear in between: holds, cosines, 1/t-like decays and decays to the bottom of the range are all in it, and
so is a rise, where the model says it pays. The knots are found by coordinate descent in log-LR. Each mode of the
model evolves linearly (:mod:`lrtune.tuner.spectral`), so the stretch of the plan after the two intervals a knot
moves is one per-mode transfer ``(D, N) -> (G D, G N + R)``, computed once per pass: every value tried for a knot
costs two intervals of arithmetic, whatever the plan's length. Pure and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner.planner import Plan, tail_pieces
from lrtune.tuner.spectral import ModeHistory, SpectralFit, advance

#: Sub-pieces per interval between knots (the log-linear LR is held at their geometric midpoints).
RESOLUTION = 2
_COARSE = 41  # log-LR values tried per knot over the whole range
_FINE = 9  # values tried again around the best coarse one
_SWEEPS = 8  # coordinate-descent passes at most

Transfer = tuple[NDArray[np.float64], NDArray[np.float64]]


def _interval_lrs(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """The sub-pieces' LRs of intervals from log-LR ``a`` to ``b`` (shapes (...)), shape (..., RESOLUTION)."""
    f = (np.arange(RESOLUTION) + 0.5) / RESOLUTION
    return np.asarray(np.exp(a[..., None] + (b - a)[..., None] * f), dtype=float)


def _transfer(h: NDArray[np.float64], lrs: NDArray[np.float64], steps: float) -> Transfer:
    """The per-mode transfer of constant pieces of ``steps`` steps at ``lrs`` (shape (R,)): ``(G, R)``, shape (J,).

    A state ``(D, N)`` goes to ``(G D, G N + R)``: it is :func:`lrtune.tuner.spectral.advance` from ``(1, 0)``.
    """
    g, r = np.ones_like(h), np.zeros_like(h)
    for lr in lrs:
        g, r = advance(h, g, r, float(lr), steps)
    return g, r


def _run(
    h: NDArray[np.float64], d: NDArray[np.float64], n: NDArray[np.float64], lrs: NDArray[np.float64], steps: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """States ``d``, ``n`` (shape (M, J)) after the sub-pieces ``lrs`` (shape (M, R)), each ``steps`` long."""
    for k in range(lrs.shape[1]):
        d, n = advance(h, d, n, lrs[:, k : k + 1], steps)
    return d, n


def _knot_losses(
    fit: SpectralFit,
    d0: NDArray[np.float64],
    n0: NDArray[np.float64],
    around: tuple[float | None, float | None],
    tail: Transfer | None,
    values: NDArray[np.float64],
    piece: float,
    last: Transfer | None = None,
) -> NDArray[np.float64]:
    """Final losses of a plan with one knot set to each of ``values`` (log-LRs, shape (M,)), shape (M,).

    Args:
        fit: The model.
        d0: Shape (J,). Decay factors before the interval that ends at the knot (or at the plan's start).
        n0: Shape (J,). Noise accounts there.
        around: The log-LRs of the knots before and after this one (None at the plan's ends).
        tail: The transfer of the intervals after the one that starts at the knot (None for the last knot).
        values: The log-LRs tried.
        piece: Steps of each sub-piece.
        last: For the last knot of a plan that ends in a linear decay from it: the decay as ``(fractions of the
            knot's LR, steps)`` of its constant pieces, each shape (T,).
    """
    h = fit.h
    m = len(values)
    d = np.repeat(d0[None, :], m, axis=0)
    n = np.repeat(n0[None, :], m, axis=0)
    before, after = around
    if before is not None:
        d, n = _run(h, d, n, _interval_lrs(np.full(m, before), values), piece)
    if after is not None and tail is not None:
        d, n = _run(h, d, n, _interval_lrs(values, np.full(m, after)), piece)
        g, r = tail
        with np.errstate(over="ignore", invalid="ignore"):
            d, n = d * g, n * g + r
    if after is None and last is not None:
        fractions, lengths = last
        for f, length in zip(fractions, lengths, strict=True):
            d, n = advance(h, d, n, np.exp(values)[:, None] * f, float(length))
    return fit.loss_of(d, n)


def optimize(
    fit: SpectralFit,
    history: ModeHistory,
    start: int,
    steps: int,
    lr_min: float,
    lr_max: float,
    knots: int = 24,
    init: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None = None,
    tail: int = 0,
) -> Plan:
    """The plan over ``steps`` steps from ``history`` with the lowest predicted final loss.

    With a ``tail``, the plan's last ``tail`` steps fall linearly from its last knot to zero, and the knots span
    the steps before them; within the tail (``steps <= tail``) nothing is left to choose: the LR falls linearly
    from the history's last LR.

    Args:
        fit: The fitted spectral model.
        history: The model's state where the plan starts.
        start: Global step the plan starts at.
        steps: Steps to plan (the rest of the budget).
        lr_min: Lowest LR of the plan.
        lr_max: Highest LR of the plan (the stability cap).
        knots: Knots of the plan (at least 2).
        init: Where the descent starts: the LRs at given fractions of the plan (shape (K,) in [0, 1]), e.g. the
            previous plan's; default a log-linear decay from the history's last LR (within the bounds) to
            ``lr_min``.
        tail: Steps of the final linear decay to zero (0: none).

    Returns:
        The best plan found, with its predicted final loss (``final_std`` is left to the caller).
    """
    if steps <= 0:
        return Plan(start, 0, (lr_min,), None, None)
    tail = min(max(int(tail), 0), steps)
    free = steps - tail
    if free == 0:
        # Within the tail: the line it is on, one step further down (exact where the history ends on that line).
        first = history.last_lr * steps / (steps + 1) if history.last_lr > 0 else lr_min
        t_steps, t_lrs = tail_pieces(first, tail)
        end = history.extend(t_steps, t_lrs)
        return Plan(start, steps, (first,), float(fit.loss_of(end.d, end.n)), None, tail)
    knots = max(int(knots), 2)
    lo, hi = math.log(lr_min), math.log(lr_max)
    h = fit.h
    piece = free / ((knots - 1) * RESOLUTION)
    fractions = np.linspace(0.0, 1.0, knots)
    t_steps, t_fractions = tail_pieces(1.0, tail) if tail else (np.zeros(0), np.zeros(0))
    last = (t_fractions, t_steps) if tail else None
    if init is not None:
        x = np.log(np.clip(init(fractions * free / steps), lr_min, lr_max))
    else:
        first = history.last_lr if history.last_lr > 0 else math.sqrt(lr_min * lr_max)
        x = np.linspace(min(max(math.log(first), lo), hi), lo, knots)
    coarse = np.linspace(lo, hi, _COARSE)
    step = (hi - lo) / (_COARSE - 1) if _COARSE > 1 else 0.0

    def finals(x: NDArray[np.float64]) -> float:
        lrs = _interval_lrs(x[:-1], x[1:]).reshape(1, -1)
        d, n = _run(h, history.d[None, :], history.n[None, :], lrs, piece)
        for f, length in zip(t_fractions, t_steps, strict=True):
            d, n = advance(h, d, n, math.exp(x[-1]) * f, float(length))
        return float(fit.loss_of(d, n)[0])

    def decay(x_last: float) -> Transfer:
        g, r = np.ones_like(h), np.zeros_like(h)
        for f, length in zip(t_fractions, t_steps, strict=True):
            g, r = advance(h, g, r, math.exp(x_last) * f, float(length))
        return g, r

    best = finals(x)
    for _ in range(_SWEEPS):
        before = best
        # Transfers of every interval, then of each interval's suffix (the intervals after it).
        trans = [_transfer(h, _interval_lrs(x[i : i + 1], x[i + 1 : i + 2])[0], piece) for i in range(knots - 1)]
        suffix: list[Transfer] = [decay(float(x[-1]))] * (knots - 1)
        for i in range(knots - 3, -1, -1):
            g2, r2 = suffix[i + 1]
            g1, r1 = trans[i + 1]
            with np.errstate(over="ignore", invalid="ignore"):  # a knot past the stability edge: inf, as it should
                suffix[i] = (g2 * g1, g2 * r1 + r2)
        d0, n0 = history.d, history.n  # state before interval k - 1
        for k in range(knots):
            around = (x[k - 1] if k >= 1 else None, x[k + 1] if k <= knots - 2 else None)
            rest = suffix[k] if k <= knots - 2 else None
            losses = _knot_losses(fit, d0, n0, around, rest, coarse, piece, last)
            j = int(np.argmin(losses))
            fine = np.clip(np.linspace(coarse[j] - step, coarse[j] + step, _FINE), lo, hi)
            fine_losses = _knot_losses(fit, d0, n0, around, rest, fine, piece, last)
            i = int(np.argmin(fine_losses))
            if fine_losses[i] < best:
                best = float(fine_losses[i])
                x = x.copy()
                x[k] = fine[i]
            if k >= 1:
                lrs = _interval_lrs(x[k - 1 : k], x[k : k + 1])
                d1, n1 = _run(h, d0[None, :], n0[None, :], lrs, piece)
                d0, n0 = d1[0], n1[0]
        if before - best <= 1e-5 * abs(best):
            break
    return Plan(start, steps, tuple(float(v) for v in np.exp(x)), finals(x), None, tail)


def plan_pieces(plan: Plan) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The plan as the constant pieces this planner optimised: ``(steps, lrs)``, each shape (P,)."""
    return plan.pieces(RESOLUTION)
