"""The training report says what it can: oracle ratios where grid runs exist, plain test losses where none do."""

from __future__ import annotations

from benchmarks.report import grid_spread, markdown, summarize
from benchmarks.run import RunResult


def _row(method: str, family: str, seed: int, loss: float) -> dict[str, object]:
    return RunResult("digits-mlp", method, family, seed, 100, loss, 0.9, loss, 1.0).to_dict()


def _meta(grid_trials: int) -> dict[str, object]:
    return {
        "command": "test",
        "machine": "test",
        "date": "today",
        "code": "test",
        "runs_now": 0,
        "runs_total": 4,
        "seeds": 2,
        "grid_trials": grid_trials,
    }


def test_without_grid_runs_the_report_gives_losses_and_claims_no_oracle() -> None:
    rows = [_row("lrtune-default", "lrtune", s, 0.10 + s / 100) for s in (5, 6)]
    rows += [_row("range-test-cosine", "range-test", s, 0.20) for s in (5, 6)]
    report = markdown(summarize(rows), _meta(0))
    assert "best of 0" not in report and "no oracle" in report
    assert "relative to the grid-tuned oracle" not in report and "reaches the oracle" not in report
    assert "| lrtune-default | 0.155 |" in report  # the median over the two seeds
    assert "It beats range-test-cosine on 1 of 1 (digits-mlp)." in report


def test_with_grid_runs_the_headline_is_relative_to_the_oracle() -> None:
    rows = [_row("lrtune-default", "lrtune", s, 0.11) for s in (0, 1)]
    rows += [_row("grid-cosine-1e-02", "grid", s, 0.10) for s in (0, 1)]
    report = markdown(summarize(rows), _meta(1))
    assert "relative to the grid-tuned oracle" in report and "best of 1 full trainings" in report
    assert "| lrtune-default | 1.1 |" in report
    assert "reaches the oracle's median test loss (ratio <= 1.00) on 0 of 1" in report


def test_the_report_says_what_the_best_grid_trial_in_hindsight_reaches_and_who_ends_below_it() -> None:
    # The oracle picks by the tuning split (cosine here); the linear trial's test loss is lower, which no run knows.
    def grid(method: str, seed: int, test: float, tune: float) -> dict[str, object]:
        return RunResult("digits-mlp", method, "grid", seed, 100, test, 0.9, tune, 1.0).to_dict()

    rows = [grid("grid-cosine-1e-02", s, 0.10, 0.10) for s in (0, 1)]
    rows += [grid("grid-linear-1e-02", s, 0.09, 0.12) for s in (0, 1)]
    rows += [_row("lrtune-default", "lrtune", s, 0.095) for s in (0, 1)]
    report = markdown(summarize(rows), _meta(2), grid_spread(rows))
    assert "picked in hindsight by its median test loss" in report
    assert "digits-mlp 0.9 (grid-linear-1e-02): geometric mean 0.9 of the oracle" in report
    assert "No method ends below every grid trial" in report
    rows += [_row("schedulefree-adamw", "lr-free", s, 0.085) for s in (0, 1)]
    report = markdown(summarize(rows), _meta(2), grid_spread(rows))
    assert (
        "Below every grid trial (a schedule the grid does not hold, or another optimizer): schedulefree-adamw on "
        "digits-mlp (0.85)." in report
    )
