"""Planning the rest of the budget from a fitted loss model: the plan, whether a search pays, the next candidate.

Pure functions of a fit, the LR history it continues and the settings (:class:`Knobs`); the ``plan`` preset
(:mod:`lrtune.tuner.online`, :mod:`lrtune.tuner.onlinestages`) calls them with what its state holds. A fit is either
model's: the spectral model (:mod:`lrtune.tuner.spectral`, with its :class:`lrtune.tuner.spectral.ModeHistory` and
planner :mod:`lrtune.tuner.spectralplan`) or the multi-power-law model (:mod:`lrtune.tuner.lossmodel`, with its
:class:`lrtune.tuner.lossmodel.History` and planner :mod:`lrtune.tuner.planner`); :func:`predict`,
:func:`predict_std` and :func:`best_plan` take either, with the history of the same model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner import lossmodel, planner, spectral, spectralplan
from lrtune.tuner.lossmodel import Fit, History
from lrtune.tuner.planner import Plan
from lrtune.tuner.spectral import ModeHistory, SpectralFit

#: A fitted loss model of either kind, and the history of a line of training as that model reads it.
AnyFit = Fit | SpectralFit
AnyHistory = History | ModeHistory

_UP, _DOWN = 3.0, 1.0 / 3.0  # the first stage's challengers, relative to the incumbent, before a model exists
_LCB = 1.0  # standard deviations subtracted from a candidate's predicted final loss when proposing
#: The extrapolation risk a proposal's lower confidence bound counts (relative uncertainty per decade of LR change
#: and per e-fold of new area), whichever model is fitted: the optimism that sends a search away from the
#: incumbent. It is a choice of how far to explore, not the model's stated band: the spectral model's band is
#: narrower (:data:`lrtune.tuner.spectral.EXTRAPOLATION`), and with the narrower extrapolation term
#: the proposals stayed nearer the incumbent and two of five fmnist-cnn seeds of the training benchmark ended 11%
#: and 25% worse (one fmnist-mlp seed 17% better).
EXPLORATION = lossmodel.EXTRAPOLATION
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
        tail: Steps at the end of the budget that a spectral plan keeps under a line falling linearly to zero
            (0: none; see :func:`lrtune.tuner.spectralplan.optimize`).
        anchor: Where that line starts, once the plan in force has started down it: ``(global step, LR)``; None: each
            plan draws its own.
        floor: The lowest LR a spectral plan takes before that line (``verify_fall``); None: the range's floor.
    """

    window: float
    pieces: int
    replan: bool
    search: bool
    free_shape: bool
    tied: bool = False
    rival_beta: float | None = None
    tail: int = 0
    anchor: tuple[int, float] | None = None
    floor: float | None = None


def predict(
    fit: AnyFit, history: AnyHistory, steps: NDArray[np.float64], lrs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Predicted loss at the end of ``history`` continued by constant pieces (``steps`` (P,), ``lrs`` (M, P)), (M,)."""
    if isinstance(fit, SpectralFit):
        assert isinstance(history, ModeHistory)
        return fit.final_losses(history, steps, lrs)
    assert isinstance(history, History)
    return lossmodel.final_losses(fit.params, history, steps, lrs)


def predict_std(
    fit: AnyFit,
    history: AnyHistory,
    steps: NDArray[np.float64],
    lrs: NDArray[np.float64],
    rate: float | None = None,
) -> float:
    """Standard deviation of the predicted final loss of one continuation (``lrs`` shape (P,)).

    Args:
        fit: The fitted model.
        history: What has run so far, as that model reads it.
        steps: Shape (P,). Steps of each piece of the continuation.
        lrs: Shape (P,). LR of each piece.
        rate: Relative risk per unit of extrapolation; None: the model's own (its stated band). Proposals pass
            :data:`EXPLORATION`.
    """
    if isinstance(fit, SpectralFit):
        assert isinstance(history, ModeHistory)
        return fit.final_loss_std(history, steps, lrs, spectral.EXTRAPOLATION if rate is None else rate)
    assert isinstance(history, History)
    return lossmodel.final_loss_std(fit, history, steps, lrs, lossmodel.EXTRAPOLATION if rate is None else rate)


def best_plan(
    fit: AnyFit,
    history: AnyHistory,
    start: int,
    steps: int,
    lr_min: float,
    lr_max: float,
    knobs: Knobs,
    rival: Fit | None = None,
    init: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None = None,
) -> Plan:
    """The plan for the rest of the budget from a history, with its predicted final loss and uncertainty.

    A spectral fit plans with :func:`lrtune.tuner.spectralplan.optimize` (any LR curve up to ``lr_max``, the
    descent starting from ``init`` where given: the LRs at fractions of the plan). The multi-power-law model plans
    as follows.

    With a ``rival`` fit that explains the data about as well (the RMS of its relative residuals within
    ``RIVAL_TOL`` of the better one's), the plan minimises the worse of the two readings' relative regret (see
    :func:`lrtune.tuner.planner.optimize`): the data rarely tell how long a decay keeps paying off, and a plan that bets
    on one reading (hold the LR, decay late and fast) loses badly when the other one is right. The predicted
    final loss and its uncertainty are always ``fit``'s.
    """
    if isinstance(fit, SpectralFit):
        assert isinstance(history, ModeHistory)
        if knobs.free_shape:
            plan = spectralplan.optimize(
                fit, history, start, steps, lr_min, lr_max, knobs.pieces, init, knobs.tail, knobs.anchor, knobs.floor
            )
        else:
            plan = _best_cosine(fit, history, start, steps, lr_min, lr_max, knobs.pieces)
        seg_steps, lrs = plan.pieces()
        mean = float(fit.final_losses(history, seg_steps, lrs[None, :])[0])
        std = fit.final_loss_std(history, seg_steps, lrs)
        return Plan(plan.start, plan.steps, plan.knots, mean, std, plan.anchor)
    assert isinstance(history, History)
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


def _best_cosine(fit: AnyFit, history: AnyHistory, start: int, steps: int, lo: float, hi: float, pieces: int) -> Plan:
    """The ablation's plan: a cosine from the best peak down to ``lo``."""
    best: Plan | None = None
    for peak in np.exp(np.linspace(math.log(lo), math.log(hi), 33)):
        u = np.linspace(0.0, 1.0, max(pieces, 2))
        knots = np.maximum(lo + (peak - lo) * 0.5 * (1 + np.cos(math.pi * u)), lo)
        plan = Plan(start, steps, tuple(float(v) for v in knots))
        seg_steps, lrs = plan.pieces()
        loss = float(predict(fit, history, seg_steps, lrs[None, :])[0])
        if best is None or (best.final_loss is not None and loss < best.final_loss):
            best = Plan(start, steps, plan.knots, loss)
    assert best is not None
    return best


def exploration_pays(
    fit: AnyFit,
    history: AnyHistory,
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


def follow(plan: Plan, start: int, steps: int) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """An ``init`` for :func:`best_plan`: ``plan``'s LRs at fractions of ``steps`` steps from ``start``."""

    def init(fractions: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.array([plan.lr_at(round(start + f * steps)) for f in fractions])

    return init


def disagreement_pays(
    fit: SpectralFit,
    rivals: Sequence[SpectralFit],
    history: ModeHistory,
    plan: Plan,
    cost_steps: int,
    lo: float,
    hi: float,
    knobs: Knobs,
) -> bool:
    """Whether a search costing ``cost_steps`` rolled-back steps is worth it now (the spectral model).

    The uncertainty that matters is the one that could change the plan: under each rival reading of the data
    (:func:`lrtune.tuner.spectral.rivals`), the plan in force loses against that reading's own best plan. A search
    pays when the largest such regret exceeds what its steps cost (the loss the model predicts for the best plan over
    ``cost_steps`` fewer steps, minus the plan's). A wide but unanimous uncertainty (how low the loss will go under
    any plan) is no reason to search: no measurement now would change what the job does.
    """
    if plan.final_loss is None or cost_steps >= plan.steps or not rivals:
        return False
    shorter = best_plan(fit, history, plan.start, plan.steps - cost_steps, lo, hi, knobs)
    cost = (shorter.final_loss or plan.final_loss) - plan.final_loss
    steps, lrs = plan.pieces()
    regret = 0.0
    for other in rivals:
        mine = float(other.final_losses(history, steps, lrs[None, :])[0])
        own = best_plan(
            other, history, plan.start, plan.steps, lo, hi, knobs, init=follow(plan, plan.start, plan.steps)
        )
        if own.final_loss is not None and math.isfinite(mine):
            regret = max(regret, mine - own.final_loss)
    return regret > max(cost, 0.0)


def propose(
    fit: AnyFit | None,
    history: AnyHistory,
    plan: Plan | None,
    incumbent: float,
    tried: Sequence[float],
    cand_steps: int,
    lo: float,
    hi: float,
) -> float:
    """The next candidate LR: where the lower confidence bound of its predicted final loss is lowest.

    The bound's spread counts :data:`EXPLORATION` per unit of extrapolation, not the stated band's rate.

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
    means = predict(fit, history, steps, rows)
    stds = np.array([predict_std(fit, history, steps, row, EXPLORATION) for row in rows])
    return float(grid[int(np.argmin(means - _LCB * stds))])
