"""The default preset's LR range sweep and cooldown probes."""

import math

import numpy as np
import pytest

from lrtune.tuner import Tuner, TunerConfig
from lrtune.tuner.errors import InvalidConfigError
from lrtune.tuner.stages import sweep_suggestion
from tests.tuner.driver import drive


def test_sweep_suggestion_is_a_tenth_of_the_lr_at_the_lowest_smoothed_loss() -> None:
    lrs = [float(v) for v in np.logspace(-5, -1, 200)]
    losses = [1.0 + (math.log10(lr) + 2.0) ** 2 for lr in lrs]  # lowest at lr = 1e-2
    lr = sweep_suggestion(losses, lrs)
    assert 1e-3 <= lr <= 2e-3  # the moving average lags a little behind the raw minimum


def test_sweep_suggestion_reads_only_up_to_the_divergence() -> None:
    lrs = [float(v) for v in np.logspace(-5, -1, 100)]
    losses = [2.0 - 0.01 * i for i in range(60)] + [math.nan] + [0.0] * 39  # the zeros come after a NaN
    assert sweep_suggestion(losses, lrs) == pytest.approx(lrs[59] / 10)


def drifting(state: dict[str, float], lr: float) -> float:
    """Progress speeds up with the LR up to 0.1; above 0.3 training blows up."""
    state["loss"] = state.get("loss", 3.0) * (1.0 - 0.2 * min(lr, 0.1) + max(lr - 0.3, 0.0))
    return state["loss"] + 0.1


def test_the_sweep_runs_first_is_rolled_back_and_centres_the_first_stage() -> None:
    config = TunerConfig(min_lr=1e-4, max_lr=10.0, total_steps=2000, warmup_steps=100, seed=0, preset="greedy")
    tuner = Tuner(config)
    first = tuner.next_segment()
    assert first.phase == "explore" and first.shape == "exp" and first.snapshot == "sweep"
    assert first.lr == pytest.approx(1e-4) and first.lr_end == pytest.approx(10.0, rel=0.2)
    _, log = drive(tuner, {}, drifting)
    schedule = tuner.schedule()
    sweep = schedule["sweep"]
    assert sweep["steps"] == 80 and 1e-3 < sweep["lr"] < 0.1
    assert log.restores[0] == (80, "sweep")  # the next segment goes back to the state before the sweep
    warmup = [s for s in log.segments if s.phase == "warmup"]  # type: ignore[attr-defined]
    assert warmup[0].drop == ("sweep",) and warmup[-1].lr_end == pytest.approx(sweep["lr"], rel=0.02)
    stage0 = schedule["stages"][0]
    assert stage0["candidates"][0]["lr"] == pytest.approx(sweep["lr"])
    lo, hi = stage0["search_range"]
    assert hi - lo <= 0.5 + 1e-9
    # Up to a third of the LR where the sweep's loss bottomed out (ten times its suggestion), no further.
    assert hi == pytest.approx(math.log10(sweep["lr"] * 10 / 3 / 1e-4) / 5)
    assert all(c["lr"] <= sweep["lr"] * 10 / 3 * 1.0001 for c in stage0["candidates"])
    record = schedule["segments"][0]
    assert record["rolled_back"] and schedule["wasted_steps"] >= 80 and schedule["explore_steps"] >= 80
    assert tuner.export()["steps"] == 2000 - schedule["wasted_steps"]


def test_sweep_divisor_moves_where_the_plan_starts_but_not_its_stability_cap() -> None:
    runs = {}
    for divisor in (10.0, 4.0):
        config = TunerConfig(min_lr=1e-4, max_lr=10.0, total_steps=2000, warmup_steps=100, sweep_divisor=divisor)
        tuner = Tuner(config)
        _, log = drive(tuner, {}, drifting)
        train = next(s for s in log.segments if s.phase == "train")  # type: ignore[attr-defined]
        runs[divisor] = (tuner.schedule()["sweep"]["lr"], train.lr, tuner._bounds())
    (lr10, first10, bounds10), (lr4, first4, bounds4) = runs[10.0], runs[4.0]
    assert lr4 == pytest.approx(lr10 * 10 / 4)  # the same sweep, read 2.5 times higher
    assert first10 == pytest.approx(lr10) and first4 == pytest.approx(lr4)  # the first training LR follows
    assert bounds4 == pytest.approx(bounds10)  # the cap and the edge come from the bottom itself


def test_a_sweep_divisor_below_one_is_refused_with_its_range() -> None:
    with pytest.raises(InvalidConfigError, match=r"sweep_divisor must be a finite number in \[1, 1000\], got 0.5"):
        TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=2000, sweep_divisor=0.5)


def test_a_sweep_that_diverges_may_stop_early_and_its_steps_go_to_training() -> None:
    tuner = Tuner(TunerConfig(min_lr=1e-4, max_lr=10.0, total_steps=2000, seed=0, preset="greedy"))
    seg = tuner.next_segment()
    nxt = tuner.report(seg.segment_id, [1.0] * 30 + [math.inf])
    assert nxt.restore == "sweep" and nxt.start_step == 31
    sweep = tuner.schedule()["sweep"]
    assert sweep["steps"] == 31 and 1e-4 <= sweep["lr"] <= seg.lr_at(30) / 10


def test_the_sweep_is_off_for_the_paper_preset_standard_schedules_and_tiny_budgets() -> None:
    for config in (
        TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=2000, preset="paper"),
        TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=2000, strategy="cosine"),
        TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=100),
        TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=2000, sweep_fraction=0.0),
    ):
        assert Tuner(config).next_segment().shape != "exp"


def annealing(state: dict[str, float], lr: float) -> float:
    """A slow loss that a larger LR (up to 0.1) removes faster, plus a noise floor that follows the LR.

    At a constant LR the smaller LR looks better (its noise floor is lower); once the LR is annealed the floor
    goes and the larger LR's progress shows.
    """
    state["slow"] = state.get("slow", 1.0) * (1.0 - 0.5 * min(lr, 0.1))
    state["floor"] = 0.8 * state.get("floor", 0.0) + 0.2 * 10.0 * lr
    return state["slow"] + state["floor"]


def stage0_winner(**kw: object) -> tuple[float, Tuner, object]:
    config = {"min_lr": 1e-3, "max_lr": 0.1, "total_steps": 3000, "seed": 0, "sweep_fraction": 0.0, "tau": 300}
    config.setdefault("preset", "greedy")
    config.update(kw)
    tuner = Tuner(TunerConfig(**config))  # type: ignore[arg-type]
    _, log = drive(tuner, {}, annealing)
    return float(tuner.schedule()["stages"][0]["winner_lr"]), tuner, log


def test_cooldown_probes_remove_the_small_lr_annealing_bonus() -> None:
    probed, tuner, _ = stage0_winner()
    plain, _, _ = stage0_winner(probe_fraction=0.0)
    assert probed > 2 * plain  # without probes the constant-LR loss favours the small LR
    assert probed > 0.05
    stage = tuner.schedule()["stages"][0]
    assert all(c["probe_loss"] is not None for c in stage["candidates"])
    best = min(stage["candidates"], key=lambda c: c["probe_loss"])
    assert best["winner"]


def test_a_probe_follows_each_candidate_decays_to_zero_and_is_rolled_back() -> None:
    _, tuner, log = stage0_winner()
    segs = log.segments  # type: ignore[attr-defined]
    explore = [s for s in segs if s.phase == "explore" and s.stage == 0]
    cands, probes = explore[0::2], explore[1::2]
    assert len(cands) == len(probes) == 6
    for cand, probe in zip(cands, probes, strict=True):
        assert probe.candidate == cand.candidate and probe.start_step == cand.end_step
        assert probe.shape == "linear" and probe.lr == pytest.approx(cand.lr) and probe.curve_to == 0.0
        assert probe.restore is None and probe.snapshot is None and probe.keep is None and probe.replay
        assert probe.steps == round(0.5 * cand.steps)
    records = {r["segment_id"]: r for r in tuner.schedule()["segments"]}
    assert all(records[p.segment_id]["rolled_back"] for p in probes)
    assert tuner.schedule()["explore_share"] <= 0.25 + 1e-9
