"""Standard schedules through the segment API, and the export that replays without the service."""

import math

import pytest
import torch

from lrtune.tuner import Tuner, TunerConfig, export_lr
from tests.tuner.driver import drive, toy_step


def lrs_of(strategy: str, total: int = 1000, warmup: int = 0, **kw: object) -> list[float]:
    tuner = Tuner(
        TunerConfig(min_lr=1e-3, max_lr=0.1, total_steps=total, strategy=strategy, warmup_steps=warmup, **kw)  # type: ignore[arg-type]
    )
    _, log = drive(tuner, {"loss": 3.0}, toy_step)
    assert tuner.done and len(log.lrs) == total
    assert all(s.phase in ("warmup", "schedule") for s in log.segments)
    assert len(log.segments) > 1  # long schedules are served in several segments
    return log.lrs


def test_constant() -> None:
    assert set(lrs_of("constant")) == {0.1}


@pytest.mark.parametrize(
    ("strategy", "g"),
    [
        ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
        ("linear", lambda p: 1 - p),
        ("rex", lambda p: (1 - p) / (1 - 0.5 * p)),
    ],
)
def test_decaying_schedules_follow_their_shape_from_max_to_min(strategy: str, g) -> None:  # type: ignore[no-untyped-def]
    lrs = lrs_of(strategy)
    for step in (0, 250, 500, 999):
        assert lrs[step] == pytest.approx(1e-3 + (0.1 - 1e-3) * g(step / 1000))


def test_warmup_ramps_linearly_to_the_peak_first() -> None:
    lrs = lrs_of("cosine", warmup=100)
    assert lrs[0] == pytest.approx(0.1 / 100)
    assert lrs[99] == pytest.approx(0.1 * 100 / 100 - 0.1 / 100 * 1, rel=0.02)
    assert all(a < b for a, b in zip(lrs[:99], lrs[1:100], strict=True))
    assert lrs[100] == pytest.approx(0.1)


def test_wsd_holds_then_decays_over_the_last_fifth() -> None:
    lrs = lrs_of("wsd")
    assert set(lrs[:800]) == {0.1}
    assert lrs[800] == pytest.approx(0.1)
    assert lrs[900] == pytest.approx(1e-3 + (0.1 - 1e-3) * 0.5)
    assert all(a > b for a, b in zip(lrs[800:], lrs[801:], strict=False))


def test_export_replays_the_final_trajectory_as_a_lambdalr() -> None:
    tuner = Tuner(TunerConfig(min_lr=1e-3, max_lr=1.0, total_steps=3000, warmup_steps=30, seed=2))
    _, log = drive(tuner, {"loss": 3.0}, toy_step)
    kept_lrs: list[float] = []
    rolled = {r["segment_id"] for r in tuner.schedule()["segments"] if r["rolled_back"]}
    schedule = {r["segment_id"]: r for r in tuner.schedule()["segments"]}
    for seg in log.segments:
        if seg.segment_id not in rolled:
            kept_lrs += [seg.lr_at(j) for j in range(schedule[seg.segment_id]["steps"])]
    export = tuner.export()
    assert export["steps"] == len(kept_lrs) == 3000 - tuner.schedule()["wasted_steps"]
    assert [export_lr(export, s) for s in range(export["steps"])] == pytest.approx(kept_lrs)

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=export["base_lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: export_lr(export, s) / export["base_lr"])
    replayed = []
    for _ in range(export["steps"]):
        replayed.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert replayed == pytest.approx(kept_lrs)
