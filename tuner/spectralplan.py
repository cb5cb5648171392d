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
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner.planner import Plan
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
    return fit.loss_of(d, n)


@dataclass(frozen=True)
class _Tail:
    """The line a plan's last stretch stays under: linear from an anchor knot (or a fixed anchor) to zero at the end.

    Every knot after the anchor is at most the anchor's LR times ``ratio`` (its remaining steps over the anchor's);
    log-linear interpolation between two knots under the line stays under it (the line is concave in log-LR), so the
    whole plan does. A knot whose bound falls below the range's floor sits at the floor.

    Attributes:
        index: The anchor knot (None: the anchor is fixed, ``fixed`` gives its log-LR).
        fixed: Log-LR of a fixed anchor (unused with an anchor knot).
        ratio: Shape (K,). Each knot's share of the anchor's LR on the line (0 at the end; 1 before the line).
        at: Global step of the anchor (a knot's, not always a whole step).
        end: Global step where the line reaches zero.
        floor: Log-LR every knot up to an anchor knot keeps at least (``verify_fall``; -inf: none).
    """

    index: int | None
    fixed: float
    ratio: NDArray[np.float64]
    at: float
    end: int
    floor: float = -math.inf

    def anchor(self, x: NDArray[np.float64]) -> tuple[int, float]:
        """The line as a plan keeps it: its LR at the first whole step from its anchor on."""
        step = math.ceil(self.at - 1e-9)
        return step, math.exp(self.base(x)) * (self.end - step) / max(self.end - self.at, 1e-9)

    def base(self, x: NDArray[np.float64]) -> float:
        """Log-LR of the anchor."""
        return self.fixed if self.index is None else float(x[self.index])

    def floor_of(self, k: int) -> float:
        """Log-LR knot ``k`` keeps at least: the floor up to an anchor knot, -inf after it (or with a fixed anchor)."""
        return self.floor if self.index is not None and k <= self.index else -math.inf

    def bounds(self, k: int, x: NDArray[np.float64], lo: float, hi: float) -> tuple[float, float]:
        """Lower and upper log-LR of knot ``k`` given the other knots ``x`` (the floor, where it holds, included)."""
        lower, upper = self._under_line(k, x, lo, hi)
        return min(max(lower, self.floor_of(k)), upper), upper

    def _under_line(self, k: int, x: NDArray[np.float64], lo: float, hi: float) -> tuple[float, float]:
        """:meth:`bounds` from the line alone."""
        base = self.base(x)
        bounded = k > self.index if self.index is not None else True
        if bounded:
            r = float(self.ratio[k])
            return lo, min(hi, max(base + math.log(r), lo)) if r > 0 else lo
        if k != self.index:
            return lo, hi
        # The anchor keeps every knot after it under its line (a knot at the floor is under any line).
        lower = lo
        for m in range(k + 1, len(x)):
            r = float(self.ratio[m])
            if r > 0 and x[m] > lo + 1e-12:
                lower = max(lower, float(x[m]) - math.log(r))
        return min(lower, hi), hi


def _tail(
    start: int,
    steps: int,
    knots: int,
    tail: int,
    anchor: tuple[int, float] | None,
    last_lr: float,
    floor: float | None = None,
) -> _Tail | None:
    """The line a plan over ``steps`` steps from ``start`` stays under (None without a tail).

    ``floor`` (an LR, None: none) is what the knots up to the line's anchor knot keep at least.
    """
    if tail <= 0:
        return None
    end = start + steps
    positions = start + np.linspace(0.0, float(steps), knots)
    if anchor is None and end - tail < start:
        anchor = (start, last_lr)  # already within the last ``tail`` steps, and no line yet: from here
    if anchor is not None and anchor[0] <= start and anchor[1] > 0:
        ratio = np.clip((end - positions) / max(end - anchor[0], 1), 0.0, 1.0)
        return _Tail(None, math.log(anchor[1]), ratio, float(anchor[0]), end)
    spacing = steps / (knots - 1)
    index = min(int((end - tail - start) // spacing), knots - 2)
    at = float(positions[index])
    ratio = np.where(np.arange(knots) > index, np.clip((end - positions) / max(end - at, 1e-9), 0.0, 1.0), 1.0)
    return _Tail(index, 0.0, ratio, at, end, -math.inf if floor is None else math.log(floor))


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
    anchor: tuple[int, float] | None = None,
    floor: float | None = None,
) -> Plan:
    """The plan over ``steps`` steps from ``history`` with the lowest predicted final loss.

    With a ``tail``, the plan's last ``tail`` steps (at least) stay under a line that falls linearly to zero at its
    end: from the last knot at or before their start (the anchor), or from ``anchor`` where the line was drawn by an
    earlier plan. Under the line the model chooses freely: a steeper or earlier decay, down to ``lr_min``, which is
    the plan's last knot.

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
        tail: Steps at the end of the budget that stay under the falling line (0: none).
        anchor: ``(global step, LR)`` where the line starts, when an earlier plan drew it at or before ``start``
            (None: this plan draws it).
        floor: With a tail, the lowest LR of the knots up to the line's anchor (None: ``lr_min``); under the line
            the plan goes down to ``lr_min`` as before.

    Returns:
        The best plan found, with its predicted final loss (``final_std`` is left to the caller) and, with a tail,
        its line's anchor.
    """
    if steps <= 0:
        return Plan(start, 0, (lr_min,), None, None)
    knots = max(int(knots), 2)
    lo, hi = math.log(lr_min), math.log(lr_max)
    h = fit.h
    piece = steps / ((knots - 1) * RESOLUTION)
    fractions = np.linspace(0.0, 1.0, knots)
    if init is not None:
        x = np.log(np.clip(init(fractions), lr_min, lr_max))
    else:
        first = history.last_lr if history.last_lr > 0 else math.sqrt(lr_min * lr_max)
        x = np.linspace(min(max(math.log(first), lo), hi), lo, knots)
    line = _tail(start, steps, knots, tail, anchor, history.last_lr if history.last_lr > 0 else lr_min, floor)
    if line is not None:
        for k in range(knots):  # start under the line, and up to its anchor knot at or above the floor
            upper = line.bounds(k, x, lo, hi)[1]
            x[k] = max(min(max(x[k], lo), upper), min(line.floor_of(k), upper))
    coarse = np.linspace(lo, hi, _COARSE)
    step = (hi - lo) / (_COARSE - 1) if _COARSE > 1 else 0.0

    def finals(x: NDArray[np.float64]) -> float:
        lrs = _interval_lrs(x[:-1], x[1:]).reshape(1, -1)
        d, n = _run(h, history.d[None, :], history.n[None, :], lrs, piece)
        return float(fit.loss_of(d, n)[0])

    best = finals(x)
    for _ in range(_SWEEPS):
        before = best
        # Transfers of every interval, then of each interval's suffix (the intervals after it).
        trans = [_transfer(h, _interval_lrs(x[i : i + 1], x[i + 1 : i + 2])[0], piece) for i in range(knots - 1)]
        suffix: list[Transfer] = [(np.ones_like(h), np.zeros_like(h))] * (knots - 1)
        for i in range(knots - 3, -1, -1):
            g2, r2 = suffix[i + 1]
            g1, r1 = trans[i + 1]
            with np.errstate(over="ignore", invalid="ignore"):  # a knot past the stability edge: inf, as it should
                suffix[i] = (g2 * g1, g2 * r1 + r2)
        d0, n0 = history.d, history.n  # state before interval k - 1
        for k in range(knots):
            around = (x[k - 1] if k >= 1 else None, x[k + 1] if k <= knots - 2 else None)
            tail_transfer = suffix[k] if k <= knots - 2 else None
            lower, upper = line.bounds(k, x, lo, hi) if line is not None else (lo, hi)
            values = coarse[(coarse >= lower - 1e-12) & (coarse <= upper + 1e-12)]
            if values.size == 0:
                values = np.array([upper])
            losses = _knot_losses(fit, d0, n0, around, tail_transfer, values, piece)
            j = int(np.argmin(losses))
            fine = np.clip(np.linspace(values[j] - step, values[j] + step, _FINE), lower, upper)
            fine_losses = _knot_losses(fit, d0, n0, around, tail_transfer, fine, piece)
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
    held: tuple[int, float] | None = None
    if line is not None:
        held = line.anchor(x)
    return Plan(start, steps, tuple(float(v) for v in np.exp(x)), finals(x), None, held)


def plan_pieces(plan: Plan) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The plan as the constant pieces this planner optimised: ``(steps, lrs)``, each shape (P,)."""
    return plan.pieces(RESOLUTION)
