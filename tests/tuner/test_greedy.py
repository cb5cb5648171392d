"""The ``greedy`` preset (the first default): each improvement is a switch, and the budget is respected."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrtune.tuner import Tuner, TunerConfig
from tests.tuner.driver import drive, toy_step

# The forecast-driven search on its own: no LR range sweep, no cooldown probes (both are tested in test_sweep_probe).
CLASSIC = {"sweep_fraction": 0.0, "probe_fraction": 0.0}


def run(**kw: object) -> tuple[Tuner, object]:
    config = {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 4000, "seed": 0, "preset": "greedy"}
    config.update(kw)
    tuner = Tuner(TunerConfig(**config))  # type: ignore[arg-type]
    _, log = drive(tuner, {"loss": 3.0}, toy_step)
    return tuner, log


@settings(max_examples=8, deadline=None)
@given(total=st.integers(min_value=30, max_value=12_000), warmup=st.integers(min_value=0, max_value=20))
def test_budget_is_spent_exactly_and_exploration_stays_under_the_cap(total: int, warmup: int) -> None:
    tuner, log = run(total_steps=total, warmup_steps=min(warmup, total - 1))
    assert len(log.lrs) == total  # type: ignore[attr-defined]
    assert tuner.done and tuner.steps_used == total
    schedule = tuner.schedule()
    assert schedule["explore_share"] <= 0.25 + 1e-9
    assert schedule["segments"][-1]["start_step"] + schedule["segments"][-1]["steps"] == total


def test_continues_from_the_winner_instead_of_rolling_it_back() -> None:
    tuner, log = run()
    schedule = tuner.schedule()
    assert schedule["wasted_steps"] < schedule["explore_steps"]
    firsts = [s for s in log.segments if s.phase == "train" and s.restore]  # type: ignore[attr-defined]
    assert firsts and all(s.restore.startswith("cand-") for s in firsts)
    # At most the stage snapshot, two kept candidates and the one just finished are held at once.
    assert log.peak_snapshots <= 4  # type: ignore[attr-defined]


def test_rolling_back_can_be_switched_on_again() -> None:
    tuner, log = run(keep_winner=False)
    schedule = tuner.schedule()
    assert schedule["wasted_steps"] == schedule["explore_steps"]
    firsts = [s for s in log.segments if s.phase == "train" and s.restore]  # type: ignore[attr-defined]
    assert firsts and all(s.restore.startswith("stage-") for s in firsts)


def test_later_stages_start_warm_from_the_last_winner_with_fewer_candidates() -> None:
    tuner, _ = run(**CLASSIC, tau=200)
    stages = tuner.schedule()["stages"]
    assert len(stages[0]["candidates"]) == 6 and not stages[0]["warm"]
    assert any(s["warm"] and s["candidates"] for s in stages[1:])
    for prev, stage in zip(stages, stages[1:], strict=False):
        if not stage["candidates"]:
            continue
        assert stage["warm"]
        assert len(stage["candidates"]) <= 4
        assert stage["candidates"][0]["lr"] == pytest.approx(prev["winner_lr"])
        lo, hi = stage["search_range"]
        assert hi - lo <= 0.5 + 1e-9


def test_without_carrying_observations_every_stage_starts_cold() -> None:
    tuner, _ = run(carry_observations=False)
    assert all(not s["warm"] for s in tuner.schedule()["stages"])


def test_diverging_candidates_stop_early_with_a_finite_penalty_and_never_win() -> None:
    tuner, log = run(seed=1, **CLASSIC)
    stages = tuner.schedule()["stages"]
    diverged = [c for s in stages for c in s["candidates"] if c["diverged"]]
    assert diverged, "the landscape diverges above lr=0.5, so some candidate should have"
    for c in diverged:
        assert c["lr"] > 0.5
        assert c["steps"] < stages[0]["cand_steps"]
        assert not c["winner"]
    guarded = [s for s in log.segments if s.phase == "explore" and s.candidate > 0]  # type: ignore[attr-defined]
    assert all(s.abort_above is not None and math.isfinite(s.abort_above) for s in guarded)
    posterior = tuner.posterior(0)
    assert posterior is not None and all(math.isfinite(v) for v in posterior["mean"])


def test_guard_off_means_no_early_stop_threshold() -> None:
    tuner = Tuner(TunerConfig(min_lr=1e-3, max_lr=0.4, total_steps=2000, divergence_guard=False, preset="greedy"))
    assert tuner.next_segment().abort_above is None


def test_the_end_of_the_budget_anneals_linearly_from_the_last_winner() -> None:
    tuner, log = run(total_steps=5000)
    anneal = [s for s in log.segments if s.phase == "anneal"]  # type: ignore[attr-defined]
    assert sum(s.steps for s in anneal) == 1000
    lrs = log.lrs[-1000:]  # type: ignore[attr-defined]
    assert lrs[0] == pytest.approx(tuner.schedule()["winner_lr"])
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < lrs[0] * 0.01


def test_explore_cap_is_a_switch() -> None:
    tuner, _ = run(explore_cap=0.1)
    assert tuner.schedule()["explore_share"] <= 0.1 + 1e-9


def noisy_small_loss(state: dict[str, float], lr: float) -> float:
    """A loss that settles near 0.005 with batch noise of the same size: nothing ever diverges."""
    state["t"] = state.get("t", 0) + 1
    state["loss"] = 0.005 + (state.get("loss", 1.0) - 0.005) * (1.0 - min(lr, 0.5) * 0.2)
    return state["loss"] + 0.004 * math.sin(state["t"] * 7.77)


def test_a_near_zero_noisy_loss_is_not_taken_for_divergence() -> None:
    tuner = Tuner(TunerConfig(min_lr=1e-3, max_lr=0.4, total_steps=4000, seed=0, preset="greedy"))
    drive(tuner, {"loss": 1.0}, noisy_small_loss)
    cands = [c for s in tuner.schedule()["stages"] for c in s["candidates"]]
    assert cands and not any(c["diverged"] for c in cands)


def paired_landscape(state: dict[str, float], lr: float) -> float:
    """Progress grows with the LR up to 0.1; the same batch noise at the same step for every candidate."""
    state["t"] = state.get("t", 0) + 1
    state["loss"] = 0.2 + (state.get("loss", 2.0) - 0.2) * (1.0 - 0.03 * min(lr, 0.1) / 0.1)
    return state["loss"] * (1.0 + 0.2 * math.sin(state["t"] * 12.9898))


def test_a_consistently_better_challenger_replaces_the_incumbent() -> None:
    tuner = Tuner(TunerConfig(min_lr=1e-4, max_lr=0.1, total_steps=3000, seed=0, tau=150, preset="greedy", **CLASSIC))  # type: ignore[arg-type]
    drive(tuner, {"loss": 2.0}, paired_landscape)
    stages = tuner.schedule()["stages"]
    assert any(s["warm"] and s["winner"] not in (None, 0) for s in stages)
    assert stages[-1]["winner_lr"] > 1e-2  # it climbs to the top of the useful range


def flat_landscape(state: dict[str, float], lr: float) -> float:
    """A saturated loss: no LR does better, and each candidate's noise is its own."""
    state["t"] = state.get("t", 0) + 1
    return 1.0 + 0.01 * math.sin(state["t"] * 12.9898 + lr * 7919.0)


def test_ties_keep_the_incumbent() -> None:
    flat = Tuner(TunerConfig(min_lr=1e-4, max_lr=0.1, total_steps=3000, seed=0, tau=150, preset="greedy", **CLASSIC))  # type: ignore[arg-type]
    drive(flat, {"loss": 1.0}, flat_landscape)
    warm = [s for s in flat.schedule()["stages"] if s["warm"] and s["candidates"]]
    assert warm and all(s["winner"] == 0 for s in warm)
