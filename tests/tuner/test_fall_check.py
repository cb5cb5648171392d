"""The fall check (``verify_fall``): a plan falls below the LRs the model has seen work only as far as falls pay."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.nqm import Landscape
from lrtune.tuner import Tuner, TunerConfig
from lrtune.tuner.online import FALL_GROWTH

LAND = Landscape("test", dims=50)
TOTAL = 4000
TAIL = 0.2


def play(stuck: float, **switches: Any) -> tuple[Tuner, list[tuple[int, float]], float]:
    """Drive a ``plan`` job on the quadratic; below ``stuck`` a lower LR still slows progress but no longer lowers the
    gradient noise's equilibrium (as on a network where the model reads progress as noise).

    Returns:
        The tuner, the kept line's training segments as ``(start step, lowest LR)`` and the final expected loss.
    """
    rng = np.random.default_rng(0)
    tuner = Tuner(TunerConfig(min_lr=1e-3, max_lr=10.0, total_steps=TOTAL, seed=0, preset="plan", **switches))
    h = LAND.h
    m = LAND.start()
    snaps: dict[str, NDArray[np.float64]] = {}
    trained: list[tuple[int, float]] = []
    seg = tuner.next_segment()
    while not seg.done:
        if seg.restore is not None:
            m = snaps[seg.restore].copy()
        for name in seg.drop:
            snaps.pop(name, None)
        if seg.snapshot is not None:
            snaps[seg.snapshot] = m.copy()
        losses = []
        for j in range(seg.steps):
            lr = seg.lr_at(j)
            noise_lr = max(lr, stuck)
            m = (1.0 - lr * h) ** 2 * m + noise_lr * noise_lr * LAND.sigma2 * h
            value = float(0.5 * (h * m).sum())
            losses.append(value * (1.0 + LAND.noise * float(rng.standard_normal())) if value < 1e30 else math.inf)
        if seg.keep is not None:
            snaps[seg.keep] = m.copy()
        if seg.phase == "train":
            trained.append((seg.start_step, min(seg.lr_at(0), seg.lr_at(seg.steps - 1))))
        seg = tuner.report(seg.segment_id, losses)
    return tuner, trained, float(0.5 * (h * m).sum())


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


def test_the_check_is_on_by_default_and_its_state_round_trips() -> None:
    tuner, _, _ = play(0.1)
    state = json.loads(json.dumps(tuner.dump()))
    assert {"low", "floor"} <= set(state["online"])
    assert Tuner.recover(state).dump() == tuner.dump()
    off, _, _ = play(0.1, verify_fall=False)
    assert not {"low", "floor"} & set(off.dump()["online"])
