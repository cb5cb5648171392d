"""The schedule-aware loss model: fitted on what a job ran, it predicts the loss under a schedule it never saw."""

import numpy as np

from benchmarks.nqm import Landscape
from lrtune.tuner.lossmodel import History, Run, band90, final_loss_std, final_losses, fit
from tests.tuner.nqm import binned

LAND = Landscape("test")


def job_runs() -> tuple[list[Run], np.ndarray, list[np.ndarray]]:
    """A main line at a constant LR, then (from its end) a cooldown probe and two other LRs."""
    main = np.full(3000, 0.2)
    curve, m = LAND.curve(LAND.start(), main)
    runs = [Run(None, main, binned(curve, 32))]
    for branch in (np.linspace(0.2, 0.0, 400, endpoint=False), np.full(600, 0.06), np.full(600, 0.5)):
        losses, _ = LAND.curve(m, branch)
        runs.append(Run(0, branch, binned(losses)))
    return runs, m, [main]


def test_predicts_a_decay_it_never_saw_within_its_band() -> None:
    runs, m, path = job_runs()
    f = fit(runs, loss_floor=0.0, window=10.0)
    assert f is not None
    # Held out: from the main line's end, 4,000 steps decaying geometrically from 0.1 to 0.002.
    cont = np.geomspace(0.1, 0.002, 4000)
    truth, _ = LAND.curve(m, cont)
    steps, lrs = np.full(40, 100.0), cont.reshape(40, 100).mean(axis=1)
    history = History.of(path)
    predicted = float(final_losses(f.params, history, steps, lrs[None, :])[0])
    std = final_loss_std(f, history, steps, lrs)
    lo, hi = band90(predicted, std, 0.0)
    assert abs(predicted / truth[-1] - 1) < 0.3, (predicted, truth[-1])
    assert lo <= truth[-1] <= hi
    assert lo >= 0.0


def test_a_larger_lr_has_a_higher_noise_floor() -> None:
    runs, _, path = job_runs()
    f = fit(runs, loss_floor=0.0, window=10.0)
    assert f is not None and f.params.b > 0
    history = History.of(path)
    long = np.array([20_000.0])
    floors = [float(final_losses(f.params, history, long, np.array([[lr]]))[0]) for lr in (0.02, 0.2, 0.8)]
    assert floors[0] < floors[1] < floors[2]


def test_says_so_when_it_cannot_tell_yet() -> None:
    assert fit([Run(None, np.full(20, 0.1), ((10, 1.0), (20, 0.9)))]) is None
    assert fit([Run(None, np.full(100, 0.1), tuple((10 * i, 1.0) for i in range(1, 11)))]) is None  # flat


def test_rolled_back_branches_share_their_parents_prefix() -> None:
    runs, _, _ = job_runs()
    f = fit(runs, loss_floor=0.0, window=10.0)
    # The same branches read as if each had started from the initial weights: their history is wrong and the
    # model cannot fit them nearly as well.
    orphans = fit([runs[0], *(Run(None, r.lrs, r.points) for r in runs[1:])], loss_floor=0.0, window=10.0)
    assert f is not None and orphans is not None
    assert f.rel_noise < 0.5 * orphans.rel_noise


def test_a_held_exponent_is_a_rival_reading_of_the_same_runs() -> None:
    runs, _, _ = job_runs()
    free = fit(runs)
    held = fit(runs, beta=0.5)
    assert free is not None and held is not None
    assert held.params.beta == 0.5
    # It explains the runs nearly as well, and its covariance holds the exponent fixed.
    assert held.rel_noise < 3 * free.rel_noise + 0.01
    assert held.cov is not None and held.cov[6, 6] == 0.0
    again = fit(runs, beta=0.5, start=held.params)
    assert again is not None and again.params.beta == 0.5
