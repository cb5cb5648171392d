import math

import numpy as np
import pytest

from lrtune.tuner import forecast_loss


def exp_series(seed: int, n: int = 100, noise_frac: float = 0.05) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    rng = np.random.default_rng(seed)
    a, c, r = rng.uniform(0.2, 2.0), rng.uniform(0.1, 2.0), 10 ** rng.uniform(-3, -1)
    t = np.arange(1, n + 1, dtype=float)
    y = a * np.exp(-r * t) + c + rng.normal(0.0, noise_frac * (a + c), n)
    return t, y, (a, r, c)


def test_recovers_the_parameters_of_a_clean_exponential() -> None:
    t = np.arange(1, 201, dtype=float)
    rng = np.random.default_rng(0)
    y = 1.5 * np.exp(-0.02 * t) + 0.4 + rng.normal(0, 0.002, t.size)
    f = forecast_loss(t, y, 2000, families=("exp",))
    assert f.family == "exp"
    assert f.rate == pytest.approx(0.02, rel=0.1)
    assert f.a == pytest.approx(1.5, rel=0.1)
    assert f.c == pytest.approx(0.4, abs=0.02)
    assert f.mean == pytest.approx(0.4, abs=0.02)


@pytest.mark.parametrize("families", [("exp",), ("exp", "power")])
def test_the_90_percent_band_holds_the_truth_about_90_percent_of_the_time(families: tuple[str, ...]) -> None:
    hits = []
    for seed in range(300):
        t, y, (a, r, c) = exp_series(seed)
        lo, hi = forecast_loss(t, y, 1000, families=families, floor=0.0).interval(0.9)
        hits.append(lo <= a * math.exp(-r * 1000) + c <= hi)
    assert 0.82 <= float(np.mean(hits)) <= 0.97


def test_slow_decay_gets_a_wide_band_and_fast_decay_a_narrow_one() -> None:
    t = np.arange(1, 101, dtype=float)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, t.size)
    slow = forecast_loss(t, 1.0 * np.exp(-0.001 * t) + 1.0 + noise, 1000)
    fast = forecast_loss(t, 1.0 * np.exp(-0.1 * t) + 1.0 + noise, 1000)
    assert slow.std > 5 * fast.std
    assert fast.mean == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    "series",
    [
        [1.0] * 50,
        [0.0] * 50,
        list(np.linspace(1.0, 2.0, 50)),
        list(np.random.default_rng(0).normal(3.0, 1.0, 50)),
        [2.0, 1.9],
        [5.0],
        [1e30, 9e29, 8e29, 7e29, 6.5e29],
        [1e-30, 9e-31, 8e-31, 7e-31],
        [1.0, math.nan, 0.9, math.inf, 0.8, 0.7, -math.inf, 0.65],
    ],
)
def test_never_raises_and_returns_finite_numbers(series: list[float]) -> None:
    t = np.arange(1, len(series) + 1)
    f = forecast_loss(t, series, 10 * len(series))
    assert math.isfinite(f.mean) and math.isfinite(f.std) and f.std > 0


def test_an_empty_or_all_nan_series_has_no_forecast() -> None:
    assert math.isnan(forecast_loss([], [], 10).mean)
    assert math.isnan(forecast_loss([1, 2], [math.nan, math.nan], 10).mean)


def test_a_rising_series_forecasts_a_higher_loss() -> None:
    t = np.arange(1, 51, dtype=float)
    f = forecast_loss(t, 1.0 + 0.01 * t, 500)
    assert f.mean > 1.5


def test_outliers_barely_move_the_forecast() -> None:
    t = np.arange(1, 101, dtype=float)
    rng = np.random.default_rng(3)
    clean = 1.0 * np.exp(-0.05 * t) + 0.5 + rng.normal(0, 0.01, t.size)
    spiky = clean.copy()
    spiky[[20, 50, 80]] += 3.0
    a, b = forecast_loss(t, clean, 1000), forecast_loss(t, spiky, 1000)
    assert abs(a.mean - b.mean) < 0.05


def test_floor_keeps_forecasts_of_a_nonnegative_loss_nonnegative() -> None:
    t = np.arange(1, 51, dtype=float)
    y = 1.0 - 0.015 * t  # a straight fall that would cross zero within the horizon
    assert forecast_loss(t, y, 500, floor=0.0).mean >= 0.0


def test_validation_series_with_sparse_steps() -> None:
    t = np.arange(50, 801, 50, dtype=float)
    y = 2.0 * np.exp(-0.004 * t) + 0.3
    f = forecast_loss(t, y, 8000, families=("exp",))
    assert f.mean == pytest.approx(0.3, abs=0.05)
