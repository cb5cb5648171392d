"""Planning the rest of the budget from a fitted loss model: the plan, whether a search pays, the next candidate.

Pure functions of a fit (:mod:`lrtune.tuner.lossmodel`), the LR history it continues and the settings
(:class:`Knobs`); the ``plan`` preset (:mod:`lrtune.tuner.online`, :mod:`lrtune.tuner.onlinestages`) calls them with
what its state holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lrtune.tuner import lossmodel, planner
from lrtune.tuner.lossmodel import Fit, History
from lrtune.tuner.planner import Plan

_UP, _DOWN = 3.0, 1.0 / 3.0  # the first stage's challengers, relative to the incumbent, before a model exists
_LCB = 1.0  # standard deviations subtracted from a candidate's predicted final loss when proposing
_PROPOSALS = 25  # LRs the proposal scores
#: The rival fit's noise-response exponent: how slowly a decay keeps paying off at long range. Short decays cannot
#: tell it apart from a fast one; the closed form of a noisy quadratic puts it near 0.5-0.6 (1 - (1 + C x)^-beta
#: fitted to its relaxation spectrum), and so do the multi-power law's fits to language-model runs.
RIVAL_BETA = 0.5
#: The rival counts while the RMS of its relative residuals is within this factor of the better fit's.
RIVAL_TOL = 1.2


@dataclass(frozen=True)
class Knobs:
    """The settings online planning runs on (resolved from the config).

    Attributes:
        window: Observations whose loss exceeds this factor times the lowest observed loss are left out of the
            fit (the model is local: early transients do not bend its prediction of the end).
        pieces: Knots of a plan.
        replan: Re-plan after every training segment (else only after a search).
        search: Search beyond the first stage when it pays.
        free_shape: Plans of any non-increasing shape (else only a cosine from the plan's first LR).
        tied: The loss model's noise response shares its progress kernel (see :func:`lrtune.tuner.lossmodel.fit`).
        rival_beta: Also fit the model with its noise-response exponent held at this value and plan against the
            worse of the two readings (see :func:`best_plan`); None: plan on the best fit alone.
    """

    window: float
    pieces: int
    replan: bool
    search: bool
    free_shape: bool
    tied: bool = False
    rival_beta: float | None = None


def best_plan(
    fit: Fit,
    history: History,
    start: int,
    steps: int,
    lr_min: float,
    lr_max: float,
    knobs: Knobs,
    rival: Fit | None = None,
) -> Plan:
    """The plan for the rest of the budget from a history, with its predicted final loss and uncertainty.

    With a ``rival`` fit that explains the data about as well (the RMS of its relative residuals within
    ``RIVAL_TOL`` of the better one's), the plan minimises the worse of the two readings' relative regret (see
    :func:`lrtune.tuner.planner.optimize`): the data rarely tell how long a decay keeps paying off, and a plan that bets
    on one reading (hold the LR, decay late and fast) loses badly when the other one is right. The predicted
    final loss and its uncertainty are always ``fit``'s.
    """
    if not knobs.free_shape:
        plan = _best_cosine(fit, history, start, steps, lr_min, lr_max, knobs.pieces)
    elif rival is None or max(fit.rel_noise, rival.rel_noise) > RIVAL_TOL * min(fit.rel_noise, rival.rel_noise):
        plan = planner.optimize(fit.params, history, start, steps, lr_min, lr_max, pieces=knobs.pieces)
    else:
        main, other = (fit, rival) if fit.rel_noise <= rival.rel_noise else (rival, fit)
        ref = planner.optimize(other.params, history, start, steps, lr_min, lr_max, pieces=knobs.pieces)
        rivals = [(other.params, float(ref.final_loss))] if ref.final_loss is not None and ref.final_loss > 0 else []
        plan = planner.optimize(main.params, history, start, steps, lr_min, lr_max, pieces=knobs.pieces, rivals=rivals)
    seg_steps, lrs = plan.pieces()
    mean = float(lossmodel.final_losses(fit.params, history, seg_steps, lrs[None, :])[0])
    std = lossmodel.final_loss_std(fit, history, seg_steps, lrs)
    return Plan(plan.start, plan.steps, plan.knots, mean, std)


def _best_cosine(fit: Fit, history: History, start: int, steps: int, lo: float, hi: float, pieces: int) -> Plan:
    """The ablation's plan: a cosine from the best peak down to ``lo``."""
    best: Plan | None = None
    for peak in np.exp(np.linspace(math.log(lo), math.log(hi), 33)):
        u = np.linspace(0.0, 1.0, max(pieces, 2))
        knots = np.maximum(lo + (peak - lo) * 0.5 * (1 + np.cos(math.pi * u)), lo)
        plan = Plan(start, steps, tuple(float(v) for v in knots))
        seg_steps, lrs = plan.pieces()
        loss = float(lossmodel.final_losses(fit.params, history, seg_steps, lrs[None, :])[0])
        if best is None or (best.final_loss is not None and loss < best.final_loss):
            best = Plan(start, steps, plan.knots, loss)
    assert best is not None
    return best


def exploration_pays(
    fit: Fit,
    history: History,
    plan: Plan,
    cost_steps: int,
    lo: float,
    hi: float,
    knobs: Knobs,
    rival: Fit | None = None,
) -> bool:
    """Whether a search costing ``cost_steps`` rolled-back steps is worth it now.

    It is while the plan's predicted final loss is more uncertain than what those steps would cost: the loss the
    model predicts for the best plan over ``cost_steps`` fewer steps, minus the loss of this plan.
    """
    if plan.final_loss is None or plan.final_std is None or cost_steps >= plan.steps:
        return False
    shorter = best_plan(fit, history, plan.start, plan.steps - cost_steps, lo, hi, knobs, rival)
    cost = (shorter.final_loss or plan.final_loss) - plan.final_loss
    return plan.final_std > max(cost, 0.0)


def propose(
    fit: Fit | None,
    history: History,
    plan: Plan | None,
    incumbent: float,
    tried: Sequence[float],
    cand_steps: int,
    lo: float,
    hi: float,
) -> float:
    """The next candidate LR: where the lower confidence bound of its predicted final loss is lowest.

    A candidate is scored as ``cand_steps`` steps at its LR followed by the incumbent's plan. Without a model
    (or a plan), the incumbent's neighbours a factor of three up, then down. LRs within a fifth of a decade of
    one already tried are not proposed again.
    """

    def fresh(lr: float) -> bool:
        return all(abs(math.log10(lr / t)) > 0.2 for t in tried)

    if fit is None or plan is None:
        for lr in (incumbent * _UP, incumbent * _DOWN, math.sqrt(lo * incumbent), math.sqrt(hi * incumbent)):
            lr = float(min(max(lr, lo), hi))
            if fresh(lr):
                return lr
        return float(min(max(incumbent * _UP, lo), hi))
    grid = np.exp(np.linspace(math.log(max(lo, incumbent / 30)), math.log(min(hi, incumbent * 30)), _PROPOSALS))
    grid = np.array([lr for lr in grid if fresh(float(lr))])
    if grid.size == 0:
        return float(min(max(incumbent * _UP, lo), hi))
    rest_steps, rest_lrs = plan.pieces()
    steps = np.concatenate([[float(cand_steps)], rest_steps])
    rows = np.concatenate([grid[:, None], np.repeat(rest_lrs[None, :], grid.size, axis=0)], axis=1)
    means = lossmodel.final_losses(fit.params, history, steps, rows)
    stds = np.array([lossmodel.final_loss_std(fit, history, steps, row) for row in rows])
    return float(grid[int(np.argmin(means - _LCB * stds))])
