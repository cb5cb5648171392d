"""A job started from a previous job's result: its first search centres on the prior LR, with no range sweep."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lrtune.client import prior_config
from lrtune.tuner import InvalidConfigError, Tuner, TunerConfig
from tests.tuner.driver import drive, toy_step

BASE: dict[str, Any] = {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 1500, "seed": 4}


def first_search(tuner: Tuner) -> list[float]:
    """The LRs of the first stage's candidates, driving the job until that stage is searched."""
    seen: list[float] = []

    def before(t: Tuner, seg: Any, state: Any) -> None:
        if seg.phase == "explore" and seg.stage == 0 and seg.shape == "constant":
            seen.append(seg.lr)

    drive(tuner, {"loss": 3.0}, toy_step, before=before)
    return seen


def test_a_prior_lr_replaces_the_sweep_and_centres_the_first_search() -> None:
    tuner = Tuner(TunerConfig(**BASE, preset="greedy", prior_lr=0.03))
    first = tuner.next_segment()
    assert not (first.phase == "explore" and first.shape == "exp"), "no LR range sweep with a prior"
    lrs = first_search(tuner)
    assert lrs and lrs[0] == pytest.approx(0.03)  # the incumbent: the prior LR
    # The search stays within a few times the prior, as it would around a sweep's suggestion.
    assert all(0.03 / 30 <= lr <= 0.03 * 10 / 3 + 1e-12 for lr in lrs), lrs
    assert tuner.schedule()["sweep"] is None


# The spectral model plans up to 0.75x the bottom a sweep suggesting 0.03 would give (0.3), and a search's candidates
# may try the bottom itself; the power model stays under a third of it.
@pytest.mark.parametrize(("loss_model", "cap"), [("spectral", 0.3), ("power", 0.3 / 3)])
def test_the_plan_preset_trains_at_the_prior_first_and_takes_its_cap_from_it(loss_model: str, cap: float) -> None:
    config = TunerConfig(**{**BASE, "total_steps": 3000}, preset="plan", prior_lr=0.03, loss_model=loss_model)  # type: ignore[arg-type]
    tuner = Tuner(config)
    _, log = drive(tuner, {"loss": 3.0}, toy_step)
    assert tuner.schedule()["sweep"] is None
    trained = [s for s in log.segments if s.phase == "train"]
    assert trained[0].lr == pytest.approx(0.03)  # before any plan: the prior
    # Every LR stays under the bound a sweep suggesting 0.03 would give, and the job leaves 0.03.
    assert max(log.lrs) <= cap + 1e-12 and max(log.lrs) > 0.03
    trained_lrs = [lr for s in trained for lr in (s.curve_from, s.curve_to)]
    if loss_model == "spectral":
        assert max(trained_lrs) <= 0.75 * 0.3 + 1e-12  # what the job trains on stays under the plan's cap


def test_without_a_prior_the_sweep_runs_and_an_explicit_sweep_wins_over_the_prior() -> None:
    plain = Tuner(TunerConfig(**BASE, preset="greedy")).next_segment()
    assert plain.phase == "explore" and plain.shape == "exp"
    both = Tuner(TunerConfig(**BASE, preset="greedy", prior_lr=0.03, sweep_fraction=0.04))
    assert both.next_segment().shape == "exp"
    drive(both, {"loss": 3.0}, toy_step)
    sweep = both.schedule()["sweep"]
    first = next(c for c in both.schedule()["stages"][0]["candidates"])
    assert sweep is not None and first["lr"] == pytest.approx(sweep["lr"])  # the sweep's suggestion, not the prior


@pytest.mark.parametrize("bad", [0.0, 2.0, 1e-4, math.nan, "0.1"])
def test_a_prior_outside_the_range_is_refused(bad: object) -> None:
    with pytest.raises(InvalidConfigError, match="prior_lr"):
        Tuner(TunerConfig(**BASE, prior_lr=bad))  # type: ignore[arg-type]


def test_prior_config_reads_a_finished_jobs_winner_and_a_new_job_starts_there() -> None:
    previous = Tuner(TunerConfig(**BASE, preset="greedy"))
    with pytest.raises(ValueError, match="no winning LR"):
        prior_config(previous.schedule())
    drive(previous, {"loss": 3.0}, toy_step)
    config = prior_config(previous.schedule())
    assert config == {"prior_lr": previous.schedule()["winner_lr"]}
    again = Tuner(TunerConfig(**{**BASE, "seed": 9}, preset="greedy", **config))
    assert first_search(again)[0] == pytest.approx(config["prior_lr"])
