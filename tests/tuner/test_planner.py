"""The planner: the rest of the budget's schedule that minimises the model's predicted final loss."""

import numpy as np

from tuner.lossmodel import History, Params, final_losses
from tuner.planner import Plan, optimize

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
