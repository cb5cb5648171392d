"""The fall check (``verify_fall``): a plan falls below the LRs the model has seen work only as far as falls pay."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.nqm import Landscape, run_tuner
from lrtune.tuner import Tuner
from lrtune.tuner.online import FALL_GROWTH

TOTAL = 4000
TAIL = 0.2


def play(noise_lr: float, **switches: Any) -> tuple[Tuner, list[tuple[int, float]], float]:
    """Run a ``plan`` job on the quadratic; below ``noise_lr`` a lower LR still slows progress but no longer lowers
    the gradient noise's equilibrium (as on a network where the model reads progress as noise).

    Returns:
        The job recovered from its final state, the kept line's training segments as ``(start step, lowest LR)`` and
        the final expected loss.
    """
    land = Landscape("test", dims=50, noise_lr=noise_lr)
    run = run_tuner(land, TOTAL, 0, "plan", keep_state=True, **switches)
    state = run["state"]
    trained = [
        (rec["start_step"], min(rec["curve_from"], rec["curve_to"]))
        for rec in state["segments"]
        if rec["phase"] == "train" and not rec["rolled_back"]
    ]
    return Tuner.recover(state), trained, run["final"]


def test_on_the_quadratic_every_fall_pays_and_the_plan_falls_as_far_as_without_the_check() -> None:
    checked, _, final = play(0.0)
    _, _, free = play(0.0, verify_fall=False)
    o = checked.dump()["online"]
    assert o["low"] < o["trusted"] / 100  # it fell a hundredfold, a step at a time
    assert o["floor"] < o["low"]  # never held
    assert final <= 1.01 * free


def test_a_fall_that_does_not_drop_the_loss_as_predicted_holds_the_plan_until_its_tail() -> None:
    checked, trained, final = play(0.1)
    _, unchecked, free = play(0.1, verify_fall=False)
    o = checked.dump()["online"]
    assert o["floor"] == o["low"] and 0.1 / FALL_GROWTH <= o["low"] <= 0.1  # held where falls stopped paying
    tail = TOTAL * (1 - TAIL)
    below = [step for step, lr in trained if step < tail - 100 and lr < o["low"] * (1 - 1e-9)]
    assert len(below) == 1  # the fall that was checked; after it the plan held until the tail
    assert min(lr for step, lr in unchecked if step < tail - 100) < o["low"] / FALL_GROWTH  # unchecked, it fell on
    assert final < 0.6 * free  # and paid for it at the end


def test_a_trusted_rise_lifts_the_floor_so_the_fall_from_it_is_checked_too() -> None:
    _, lifted, final = play(0.0)
    _, fixed, unlifted = play(0.0, lift_floor=False)
    peak = max(range(len(lifted)), key=lambda i: lifted[i][1])  # the line rose, checked, before it fell
    assert lifted[:peak] == fixed[:peak] and lifted[peak][1] > 2 * lifted[0][1]
    top = lifted[peak][1]
    assert lifted[peak + 1][1] >= top / FALL_GROWTH * (1 - 1e-9)  # at most the floor's factor below the risen LR
    assert fixed[peak + 1][1] < top / FALL_GROWTH * 0.9  # without the lift, the floor stayed under the sweep's LR
    assert final <= 1.01 * unlifted  # where every fall pays, checking them costs nothing


def test_the_check_is_on_by_default_and_its_state_round_trips() -> None:
    tuner, _, _ = play(0.1)
    state = json.loads(json.dumps(tuner.dump()))
    assert {"low", "floor"} <= set(state["online"]) and tuner.settings.lift_floor
    assert Tuner.recover(state).dump() == tuner.dump()
    off, _, _ = play(0.1, verify_fall=False)
    assert not {"low", "floor"} & set(off.dump()["online"])
