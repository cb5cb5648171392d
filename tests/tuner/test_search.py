import numpy as np

from lrtune.tuner.search import Observation, Surrogate, from_unit, to_unit


def quadratic_obs(xs: list[float], center: float = 0.63) -> list[Observation]:
    return [Observation(x, (x - center) ** 2 * 4 + 1.0, 1e-4) for x in xs]


def test_unit_mapping_round_trips_on_a_log_scale() -> None:
    assert to_unit(1e-4, 1e-4, 1e-1) == 0.0
    assert abs(to_unit(1e-1, 1e-4, 1e-1) - 1.0) < 1e-12
    assert abs(to_unit(10**-2.5, 1e-4, 1e-1) - 0.5) < 1e-12
    assert abs(from_unit(0.5, 1e-4, 1e-1) - 10**-2.5) < 1e-15


def test_bo_closes_in_on_the_minimum_of_a_quadratic() -> None:
    xs = [0.1, 0.5, 0.9]
    for _ in range(6):
        xs.append(Surrogate(quadratic_obs(xs)).suggest(avoid=xs))
    model = Surrogate(quadratic_obs(xs))
    grid = np.linspace(0, 1, 101)
    mean, _ = model.predict(grid)
    assert abs(grid[int(np.argmin(mean))] - 0.63) < 0.05
    assert min(abs(x - 0.63) for x in xs) < 0.05


def test_suggestions_are_deterministic_and_stay_in_the_region() -> None:
    obs = quadratic_obs([0.2, 0.4, 0.45])
    a = Surrogate(obs).suggest(0.3, 0.6, avoid=[o.x for o in obs])
    b = Surrogate(obs).suggest(0.3, 0.6, avoid=[o.x for o in obs])
    assert a == b
    assert 0.3 <= a <= 0.6
    assert min(abs(a - o.x) for o in obs) >= 0.02


def test_noisy_points_count_less_than_precise_ones() -> None:
    precise = [Observation(0.2, 1.0, 1e-6), Observation(0.8, 2.0, 1e-6)]
    noisy = [Observation(0.2, 1.0, 1e-6), Observation(0.8, 2.0, 4.0)]
    m_precise, _ = Surrogate(precise).predict([0.8])
    m_noisy, _ = Surrogate(noisy).predict([0.8])
    assert abs(m_precise[0] - 2.0) < abs(m_noisy[0] - 2.0)


def test_reference_mode_explores_where_the_posterior_is_widest() -> None:
    obs = [Observation(x, 1.0 + x, 0.0) for x in (0.0, 0.1, 0.2, 0.3)]
    assert Surrogate(obs, learn_noise=True).suggest(acquisition="explore") > 0.7
