"""What the callback tells a tracker: every step once, its LR and loss, and which steps were rolled back."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from lrtune.client import AutoLRSCallback, RetryPolicy
from lrtune.client.tracking import PHASE_CODES, SegmentLog, TensorBoardLog
from tests.client.helpers import SMALL, Link, make_batches, make_model, train


def _run(total: int = 200, **kw: Any) -> tuple[AutoLRSCallback, list[SegmentLog], Any]:
    logs: list[SegmentLog] = []
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    log_fn = kw.pop("log_fn", logs.append)
    cb = AutoLRSCallback(model, opt, kw.pop("server_url", None), 1e-3, 1.0, total, config=SMALL, log_fn=log_fn, **kw)
    run = train(cb, model, opt, make_batches())
    cb.on_train_end()
    return cb, logs, run


def _rolled_back_in_schedule(schedule: dict[str, Any]) -> set[int]:
    return {r["segment_id"] for r in schedule["segments"] if r["rolled_back"]}


def test_every_step_is_logged_once_with_the_lr_and_loss_it_ran_with() -> None:
    cb, logs, run = _run()
    ended = [r for r in logs if not r.rolled_back]
    steps = [s for r in ended for s in r.steps]
    assert steps == list(range(1, 201))  # every step, in order, once
    assert [lr for r in ended for lr in r.lrs] == run.lrs
    losses = [v for r in ended for v in r.losses]
    assert losses == pytest.approx(run.losses, rel=1e-6)
    assert [r.segment_id for r in ended] == [s.segment_id for s in cb.history]
    assert {r.phase for r in ended} >= {"explore", "train"}


def test_rolled_back_segments_are_reported_again_later_and_match_the_jobs_schedule() -> None:
    cb, logs, _ = _run()
    rolled = [r for r in logs if r.rolled_back]
    assert rolled and all(r.explore for r in rolled)  # candidates that lost, their probes
    assert {r.segment_id for r in rolled} == _rolled_back_in_schedule(cb.tuner.schedule())
    order = [(r.segment_id, r.rolled_back) for r in logs]
    for r in rolled:  # reported at its end first, then as rolled back, once
        assert order.index((r.segment_id, False)) < order.index((r.segment_id, True))
        assert order.count((r.segment_id, True)) == 1


def test_offline_steps_are_logged_once_the_service_has_them(link: Link, app_client: TestClient) -> None:
    logs: list[SegmentLog] = []
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AutoLRSCallback(
        model,
        opt,
        None,
        1e-3,
        1.0,
        200,
        config=SMALL,
        http_client=link.client(),
        retry=RetryPolicy(initial_s=1e-4, max_s=1e-3),
        log_fn=logs.append,
    )

    def before_step(step: int) -> None:
        link.mode = "down" if step in range(36, 60) else "up"

    run = train(cb, model, opt, make_batches(), before_step=before_step)
    cb.on_train_end()
    offline = [r for r in logs if r.phase == "offline" and not r.rolled_back]
    assert offline and all(r.segment_id is None for r in offline)
    assert sum(len(r.steps) for r in offline) == cb.offline_steps
    ran_offline = [g + 1 for g, sid in enumerate(run.segment_ids) if sid is None]
    assert [s for r in offline for s in r.steps] == ran_offline
    assert [lr for r in offline for lr in r.lrs] == [run.lrs[s - 1] for s in ran_offline]
    ended = sorted(s for r in logs if not r.rolled_back for s in r.steps)
    assert ended == list(range(1, 201))


def test_a_log_fn_that_is_not_callable_is_refused() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="log_fn"):
        AutoLRSCallback(model, opt, None, 1e-3, 1.0, 50, log_fn="tb")  # type: ignore[arg-type]


def _scalars(logdir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_keeps_rolled_back_steps_out_of_the_loss_curve(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    tb = TensorBoardLog(tmp_path)
    cb, _, run = _run(log_fn=tb)
    tb.close()
    tags = _scalars(tmp_path)
    rolled = _rolled_back_in_schedule(cb.tuner.schedule())
    assert rolled
    segment_of = {g + 1: sid for g, sid in enumerate(run.segment_ids)}
    discarded = {s for s, sid in segment_of.items() if sid in rolled}
    assert set(tags["lrtune/loss_rolled_back"]) == discarded
    assert set(tags["lrtune/loss"]) == set(range(1, 201)) - discarded  # the line the final weights went through
    for step, loss in tags["lrtune/loss"].items():
        assert loss == pytest.approx(run.losses[step - 1], rel=1e-5)
    for step, lr in tags["lrtune/lr"].items():  # the first and last step of constant stretches, every step else
        assert lr == pytest.approx(run.lrs[step - 1], rel=1e-6)
    phase = tags["lrtune/phase"]
    explore = {s.segment_id for s in cb.history if s.phase == "explore"}
    assert all((v == PHASE_CODES["explore"]) == (segment_of[step] in explore) for step, v in phase.items())


def test_a_log_directory_without_tensorboard_installed_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardLog(tmp_path)


def test_a_writer_of_ones_own_gets_the_same_tags() -> None:
    written: list[tuple[str, float, int]] = []

    class Writer:
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

    tb = TensorBoardLog(Writer(), prefix="tuner")
    tb(SegmentLog(0, "explore", 0, 0, (1, 2), (0.1, 0.1), (2.0, math.nan)))
    tb(SegmentLog(0, "explore", 0, 0, (1, 2), (0.1, 0.1), (2.0, math.nan), rolled_back=True))
    tb(SegmentLog(1, "train", 0, None, (3,), (0.05,), (1.5,), val_steps=(3,), val_losses=(1.7,)))
    tb.flush()
    assert ("tuner/loss_rolled_back", 2.0, 1) in written and ("tuner/loss", 1.5, 3) in written
    assert ("tuner/val_loss", 1.7, 3) in written
    assert not any(tag == "tuner/loss" and step < 3 for tag, _, step in written)  # NaN dropped, rolled back apart
    with pytest.raises(TypeError, match="SummaryWriter"):
        TensorBoardLog(object())
