"""The ``paper`` preset reproduces the reference AutoLRS behaviour; these tests pin its numbers."""

from collections import defaultdict

import pytest

from lrtune.tuner import Tuner, TunerConfig
from tests.tuner.driver import drive, toy_step

TOTAL = 2 * (1000 + 2000 + 4000 + 8000)  # four full stages: k * tau' (= tau) of search plus tau of training


@pytest.fixture(scope="module")
def run() -> tuple[Tuner, object]:
    tuner = Tuner(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=TOTAL, preset="paper", seed=3))
    _, log = drive(tuner, {"loss": 3.0}, toy_step, val_fn=lambda s: s["loss"] + 0.05)
    return tuner, log


def test_tau_doubles_from_1000_to_8000_with_ten_candidates_of_tau_over_ten(run: tuple[Tuner, object]) -> None:
    _, log = run
    by_stage = defaultdict(list)
    for seg in log.segments:  # type: ignore[attr-defined]
        if seg.phase == "explore":
            by_stage[seg.stage].append(seg)
    assert sorted(by_stage) == [0, 1, 2, 3]
    for stage, tau in zip(range(4), (1000, 2000, 4000, 8000), strict=True):
        cands = by_stage[stage]
        assert len(cands) == 10
        assert all(c.steps == tau // 10 for c in cands)
        assert len({c.lr for c in cands}) == 10
        assert all(1e-4 <= c.lr <= 1e-1 for c in cands)


def test_every_candidate_starts_from_the_stage_snapshot_and_nothing_is_kept(run: tuple[Tuner, object]) -> None:
    _, log = run
    for seg in log.segments:  # type: ignore[attr-defined]
        if seg.phase != "explore":
            continue
        name = f"stage-{seg.stage}"
        if seg.candidate == 0:
            assert (seg.snapshot, seg.restore) == (name, None)
        else:
            assert (seg.snapshot, seg.restore) == (None, name)
        assert seg.keep is None and seg.abort_above is None


def test_winner_is_the_lowest_forecast_and_trains_tau_steps_from_the_stage_start(run: tuple[Tuner, object]) -> None:
    tuner, log = run
    schedule = tuner.schedule()
    for stage in schedule["stages"]:
        cands = stage["candidates"]
        best = min(cands, key=lambda c: c["forecast"])
        assert stage["winner"] == best["index"]
        train = [s for s in log.segments if s.phase == "train" and s.stage == stage["index"]]  # type: ignore[attr-defined]
        assert train[0].restore == f"stage-{stage['index']}"
        assert all(s.lr == best["lr"] for s in train)
        assert sum(s.steps for s in train) == stage["tau"]


def test_training_loss_first_then_validation_loss_sampled_16_times_once_tau_reaches_tau_max(
    run: tuple[Tuner, object],
) -> None:
    tuner, log = run
    objectives = [s["objective"] for s in tuner.schedule()["stages"]]
    assert objectives == ["train", "train", "train", "val"]
    for seg in log.segments:  # type: ignore[attr-defined]
        if seg.phase == "explore":
            assert seg.eval_every == (50 if seg.stage == 3 else None)


def test_half_of_all_steps_are_search_and_the_budget_ends_exactly(run: tuple[Tuner, object]) -> None:
    tuner, log = run
    schedule = tuner.schedule()
    assert schedule["explore_share"] == pytest.approx(0.5)
    assert schedule["wasted_share"] == pytest.approx(0.5)  # every exploration step is rolled back
    assert len(log.lrs) == TOTAL  # type: ignore[attr-defined]
    assert tuner.done and tuner.steps_used == TOTAL
