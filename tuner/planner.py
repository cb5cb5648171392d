"""The planner: the rest of the budget's LR schedule that minimises the loss model's predicted final loss.

A plan is a non-increasing curve over the remaining steps, given by its LR at ``pieces`` equally spaced knots
(between knots the LR moves log-linearly). Any shape the user would try is in this family: hold then decay
(WSD), a cosine, a long 1/t-like decay, or a decay to the lowest LR of the range (a decay to "zero" at the
range's resolution). The knots are found by coordinate descent in log-LR on the model's prediction, every
coordinate's values evaluated at once; the monotone constraint keeps the plan from exploiting a model's wiggles
(an LR that rises again late is never what the loss laws predict to help).

Pure and deterministic: a plan is a function of the model parameters, the history and the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner.lossmodel import History, Params, final_losses

_GRID = 49  # log-LR values tried per knot
_SWEEPS = 4  # coordinate-descent passes
#: Every plan ends at least this factor below where it starts: a loss model fitted to stretches of constant LR can
#: lose sight of what a decay buys (the noise level is then unidentifiable), and no schedule a user would run ends
#: without one.
MIN_DECAY = 10.0


@dataclass(frozen=True)
class Plan:
    """A planned continuation.

    Attributes:
        start: Global step the plan starts at.
        steps: Steps it covers (the rest of the budget).
        knots: LR at the start of each of its equal pieces; the LR moves log-linearly from one knot to the next
            and the last piece ends at the last knot.
        final_loss: The model's predicted final loss under it (None where no model was fitted).
        final_std: Standard deviation of that prediction, or None.
        anchor: With a decay tail (``decay_tail``): ``(global step, LR)`` where the line the plan's end stays under
            starts (it falls linearly to zero at the plan's end); None without one.
    """

    start: int
    steps: int
    knots: tuple[float, ...]
    final_loss: float | None = None
    final_std: float | None = None
    anchor: tuple[int, float] | None = None

    @property
    def end(self) -> int:
        """Global step after the plan's last step."""
        return self.start + self.steps

    def lr_at(self, step: int) -> float:
        """The planned LR at global step ``step`` (clamped to the plan)."""
        n = len(self.knots)
        if n == 1 or self.steps <= 0:
            return self.knots[0]
        pos = min(max((step - self.start) / self.steps, 0.0), 1.0) * (n - 1)
        i = min(int(pos), n - 2)
        frac = pos - i
        a, b = self.knots[i], self.knots[i + 1]
        return float(a * (b / a) ** frac)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form."""
        return {
            "start": self.start,
            "steps": self.steps,
            "knots": list(self.knots),
            "final_loss": self.final_loss,
            "final_std": self.final_std,
            **({} if self.anchor is None else {"anchor": list(self.anchor)}),  # plans stored before: written as read
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Plan:
        """Inverse of :meth:`to_dict`."""
        return cls(
            start=int(data["start"]),  # type: ignore[call-overload]
            steps=int(data["steps"]),  # type: ignore[call-overload]
            knots=tuple(float(v) for v in data["knots"]),  # type: ignore[attr-defined]
            final_loss=None if data.get("final_loss") is None else float(data["final_loss"]),  # type: ignore[arg-type]
            final_std=None if data.get("final_std") is None else float(data["final_std"]),  # type: ignore[arg-type]
            anchor=_anchor(data.get("anchor")),
        )

    def pieces(self, resolution: int = 4) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The plan as constant pieces for the loss model: ``(steps, lrs)``, each shape (P,)."""
        return _discretize(np.array(self.knots), self.steps, resolution)


def _anchor(value: object) -> tuple[int, float] | None:
    """A stored plan's ``anchor`` (``[step, lr]`` or absent)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"a plan's anchor must be [step, lr], got {value!r}")
    return int(value[0]), float(value[1])


def _discretize(
    knots: NDArray[np.float64], steps: int, resolution: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Constant pieces approximating the log-linear curve through ``knots`` (shape (..., n)) over ``steps``."""
    n = knots.shape[-1]
    if n == 1:
        return np.array([float(steps)]), knots.reshape(-1)[:1].copy()
    log = np.log(knots)
    fractions = (np.arange(resolution) + 0.5) / resolution
    # piece i of n-1 intervals, sub-piece f: log-LR interpolated at its midpoint
    mids = log[..., :-1, None] + (log[..., 1:, None] - log[..., :-1, None]) * fractions
    lrs = np.exp(mids.reshape(*knots.shape[:-1], (n - 1) * resolution))
    per = np.full((n - 1) * resolution, steps / ((n - 1) * resolution))
    return per, lrs


def optimize(
    params: Params,
    history: History,
    start: int,
    steps: int,
    lr_min: float,
    lr_max: float,
    pieces: int = 12,
    first_lr: float | None = None,
    rivals: Sequence[tuple[Params, float]] = (),
) -> Plan:
    """The non-increasing plan over ``steps`` steps that minimises the predicted final loss.

    The plan ends at least ``MIN_DECAY`` times below its first LR (or at ``lr_min``). With ``rivals`` (other
    models the data cannot rule out, each with the lowest final loss it predicts for its own best plan) the plan
    minimises the worst relative regret instead: the largest ``log(loss / best)`` over ``params`` and the rivals,
    so that it does not bet the run on a part of the model the data leave open (how long a decay takes to pay).

    Args:
        params: Fitted loss model.
        history: The LR trajectory so far (of the state the plan continues).
        start: Global step the plan starts at.
        steps: Steps to plan (the rest of the budget).
        lr_min: Lowest LR of the plan.
        lr_max: Highest LR of the plan (the stability cap).
        pieces: Knots of the plan.
        first_lr: Where the search starts (default: the history's last LR).
        rivals: Other plausible models and their best predicted final losses (loss units, above 0).

    Returns:
        The best plan found, with its predicted final loss under ``params``.
    """
    if steps <= 0:
        return Plan(start, 0, (lr_min,), None, None)
    lo, hi = math.log(lr_min), math.log(lr_max)
    grid = np.linspace(lo, hi, _GRID)
    init = first_lr if first_lr is not None else (history.lr if history.lr > 0 else math.sqrt(lr_min * lr_max))
    x = np.full(pieces, min(max(math.log(init), lo), hi))
    # Start from a decay over the plan: it is near the optimum for most landscapes and helps the descent.
    x = np.maximum(np.linspace(x[0], lo, pieces), lo)
    decay = math.log(MIN_DECAY) if pieces > 1 else 0.0

    def predicted(rows: NDArray[np.float64]) -> NDArray[np.float64]:
        seg_steps, lrs = _discretize(np.exp(rows), steps, 4)
        return final_losses(params, history, seg_steps, lrs)

    def evaluate(rows: NDArray[np.float64]) -> NDArray[np.float64]:
        if not rivals:
            return predicted(rows)
        seg_steps, lrs = _discretize(np.exp(rows), steps, 4)
        own = final_losses(params, history, seg_steps, lrs)
        worst = np.log(np.maximum(own, 1e-300) / max(reference, 1e-300))
        for p, ref in rivals:
            other = final_losses(p, history, seg_steps, lrs)
            worst = np.maximum(worst, np.log(np.maximum(other, 1e-300) / max(ref, 1e-300)))
        return np.asarray(worst, dtype=float)

    reference = 1.0
    if rivals:
        reference = optimize(params, history, start, steps, lr_min, lr_max, pieces, first_lr).final_loss or 1.0

    best = float(evaluate(x[None, :])[0])
    for _ in range(_SWEEPS):
        improved = False
        for i in range(pieces):
            upper = x[i - 1] if i > 0 else hi
            lower = x[i + 1] if i + 1 < pieces else lo
            if i == pieces - 1 and i > 0:
                upper = min(upper, max(x[0] - decay, lo))
            if i == 0 and pieces > 1 and x[-1] > lo + 1e-12:
                lower = max(lower, min(x[-1] + decay, hi))
            values = grid[(grid <= upper + 1e-12) & (grid >= lower - 1e-12)]
            if values.size == 0:
                continue
            rows = np.repeat(x[None, :], values.size, axis=0)
            rows[:, i] = values
            losses = evaluate(rows)
            j = int(np.nanargmin(losses))
            if losses[j] < best - 1e-15 * abs(best):
                best, x = float(losses[j]), rows[j]
                improved = True
        if not improved:
            break
    final = float(predicted(x[None, :])[0]) if rivals else best
    return Plan(start, steps, tuple(float(v) for v in np.exp(x)), final, None)
