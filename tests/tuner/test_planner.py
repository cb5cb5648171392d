"""The planner: the rest of the budget's schedule that minimises the model's predicted final loss."""

import numpy as np
import pytest

from lrtune.tuner.lossmodel import History, Params, final_losses
from lrtune.tuner.planner import Plan, optimize

# A model with the noisy quadratic's character: fast early progress, a noise floor growing with the LR.
PARAMS = Params(l0=0.0, a=5.0, alpha=1.0, s_w=1.0, b=0.02, c=0.05, beta=1.0)
HISTORY = History.of([np.full(1000, 0.2)])


def test_plan_is_non_increasing_within_bounds_and_beats_constants_and_cosines() -> None:
    plan = optimize(PARAMS, HISTORY, 1000, 19_000, 1e-3, 0.5, pieces=12)
    assert all(a >= b for a, b in zip(plan.knots, plan.knots[1:], strict=False))
    assert min(plan.knots) >= 1e-3 and max(plan.knots) <= 0.5
    assert plan.final_loss is not None
    steps = np.full(100, 190.0)
    u = (np.arange(100) + 0.5) / 100
    for lr in np.geomspace(1e-3, 0.5, 25):
        constant = final_losses(PARAMS, HISTORY, steps, np.full((1, 100), lr))[0]
        cosine = final_losses(PARAMS, HISTORY, steps, (lr * 0.5 * (1 + np.cos(np.pi * u)))[None, :] + 1e-3)[0]
        assert plan.final_loss <= constant and plan.final_loss <= cosine * 1.001


def test_plan_anneals_by_the_end_and_holds_longer_when_the_noise_is_lower() -> None:
    plan = optimize(PARAMS, HISTORY, 1000, 19_000, 1e-3, 0.5)
    assert plan.lr_at(plan.end - 1) < plan.knots[0] / 20
    quiet = optimize(Params(**{**PARAMS.__dict__, "b": 0.002}), HISTORY, 1000, 19_000, 1e-3, 0.5)
    assert quiet.lr_at(10_000) > plan.lr_at(10_000)


def test_plan_round_trips_through_json() -> None:
    plan = optimize(PARAMS, HISTORY, 1000, 19_000, 1e-3, 0.5)
    again = Plan.from_dict(plan.to_dict())
    assert again == plan
    assert again.lr_at(1000) == plan.knots[0]


def test_a_rival_reading_hedges_the_plan_against_a_late_fast_decay() -> None:
    # The best fit says a decay pays off at once (beta 3): hold the LR and drop it at the end. A rival that fits as
    # well says it pays off slowly (beta 0.5). Planning against both costs the best fit little and the rival much
    # less than the best fit's own plan does.
    fast = Params(l0=0.0, a=5.0, alpha=1.0, s_w=1.0, b=0.02, c=1.0, beta=3.0)
    slow = Params(**{**fast.__dict__, "c": 0.05, "beta": 0.5})
    own = optimize(fast, HISTORY, 1000, 19_000, 1e-3, 0.5)
    rival_best = optimize(slow, HISTORY, 1000, 19_000, 1e-3, 0.5)
    assert own.final_loss is not None and rival_best.final_loss is not None
    hedged = optimize(fast, HISTORY, 1000, 19_000, 1e-3, 0.5, rivals=[(slow, rival_best.final_loss)])

    def under(p: Params, plan: Plan) -> float:
        steps, lrs = plan.pieces()
        return float(final_losses(p, HISTORY, steps, lrs[None, :])[0])

    regret_own = max(1.0, under(slow, own) / rival_best.final_loss)
    regret_hedged = max(under(fast, hedged) / own.final_loss, under(slow, hedged) / rival_best.final_loss)
    assert regret_hedged < regret_own
    assert hedged.final_loss == pytest.approx(under(fast, hedged))  # the prediction stays the best fit's
    assert all(a >= b for a, b in zip(hedged.knots, hedged.knots[1:], strict=False))
