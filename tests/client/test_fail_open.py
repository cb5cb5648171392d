"""Fail-open: service outages, slow answers, lost jobs and stolen leases never stop training."""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from lrtune.client import AutoLRSCallback, ReplayLoader, RetryPolicy
from lrtune.client.remote import RemoteSource
from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.client.helpers import SMALL, Link, make_batches, make_model, prescribed_lrs, steps_by_segment, train

FAST_RETRY = RetryPolicy(initial_s=1e-4, max_s=1e-3)


def _cb(link: Link, total: int = 200, **kw: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer, AutoLRSCallback]:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw.setdefault("retry", FAST_RETRY)
    cb = AutoLRSCallback(model, opt, None, 1e-3, 1.0, total, config=SMALL, http_client=link.client(), **kw)
    return model, opt, cb


def _job(app_client: TestClient, cb: AutoLRSCallback) -> dict[str, Any]:
    src: Any = cb.source
    auth = {"Authorization": f"Bearer {src.token}"}
    out: dict[str, Any] = app_client.get(f"/v1/jobs/{src.job_id}/schedule", headers=auth).json()
    return out


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "lrtune.client"]


@pytest.mark.parametrize("mode", ["down", "timeout", "503"])
def test_an_outage_mid_run_buffers_the_report_and_the_job_completes(
    link: Link, app_client: TestClient, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    model, opt, cb = _cb(link)
    outage = range(36, 60)  # spans the end of a segment

    def before_step(step: int) -> None:
        link.mode = mode if step in outage else "up"

    with caplog.at_level(logging.INFO, logger="lrtune.client"):
        run = train(cb, model, opt, make_batches(), before_step=before_step)
    cb.on_train_end()

    sched = _job(app_client, cb)
    assert cb.done and sched["done"] and sched["steps_used"] == 200  # every segment reported
    assert cb.offline_steps > 0 and len(run.lrs) == 200  # the budget is the user's, outage or not
    assert cb.offline_reported == cb.offline_steps  # every offline step was reported once the service was back
    assert len(_warnings(caplog)) == 1  # one warning for the whole outage, not one per step or retry
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert link.failed > 1  # it did retry
    # While offline it followed the plan the last segment it ran carried, step for step.
    first = run.segment_ids.index(None)
    ended = next(s for s in cb.history if s.segment_id == run.segment_ids[first - 1])
    assert ended.then and ended.then[0].start_step == first
    offline = [(g, lr) for g, (lr, sid) in enumerate(zip(run.lrs, run.segment_ids, strict=True)) if sid is None]
    planned = {g: p.lr_at(g - p.start_step) for p in ended.then for g in range(p.start_step, p.end_step)}
    assert offline and all(lr == planned[g] for g, lr in offline)
    # The job counts the offline steps as segments of their own, with the LRs they ran at.
    records = [r for r in sched["segments"] if r["phase"] == "offline"]
    assert sum(r["steps"] for r in records) == len(offline)
    assert all(r["lr"] == planned[r["start_step"]] for r in records)
    # Every step that ran inside a segment used that segment's LR.
    steps = steps_by_segment(sched)
    tuned = [lr for lr, sid in zip(run.lrs, run.segment_ids, strict=True) if sid is not None]
    assert tuned == prescribed_lrs(cb.history, steps)


def test_service_down_at_start_trains_at_the_fallback_then_joins(
    link: Link, app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    link.mode = "down"
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        model, opt, cb = _cb(link, fallback=lambda step: 0.02)
        assert cb.segment is None and cb.job_id is None and opt.param_groups[0]["lr"] == 0.02

        def before_step(step: int) -> None:
            if step == 25:
                link.mode = "up"

        run = train(cb, model, opt, make_batches(), before_step=before_step)
    assert run.lrs[:25] == [0.02] * 25
    assert cb.done and _job(app_client, cb)["steps_used"] == 200
    assert len(_warnings(caplog)) == 1


def test_never_back_finishes_the_budget_on_the_planned_continuation(
    link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    model, opt, cb = _cb(link, total=120, fallback="cosine")

    def before_step(step: int) -> None:
        if step == 45:
            link.mode = "down"

    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        run = train(cb, model, opt, make_batches(), before_step=before_step)
    assert cb.done and cb.step == 120 and len(run.lrs) == 120
    first = run.segment_ids.index(None)
    ended = next(s for s in cb.history if s.segment_id == run.segment_ids[first - 1])
    planned = [p.lr_at(j) for p in ended.then for j in range(p.steps)]
    offline = [lr for lr, sid in zip(run.lrs, run.segment_ids, strict=True) if sid is None]
    assert offline == planned and offline[-1] < offline[0] / 2  # the plan's decay, not a held LR
    assert len(_warnings(caplog)) == 1
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        cb.on_train_end()  # one last try to deliver the report
    assert "did not take the last report" in _warnings(caplog)[-1]


def test_without_a_plan_yet_the_fallback_cosine_runs_to_the_end_of_the_budget(
    link: Link, app_client: TestClient
) -> None:
    link.mode = "down"
    model, opt, cb = _cb(link, total=120, fallback="cosine")

    def before_step(step: int) -> None:
        if step == 40:
            link.mode = "up"

    run = train(cb, model, opt, make_batches(), before_step=before_step)
    cb.on_train_end()
    head = run.lrs[:40]
    assert all(a > b for a, b in zip(head, head[1:], strict=False))  # the cosine from the middle of the range
    assert head[0] == pytest.approx(math.sqrt(1e-3 * 1.0))
    sched = _job(app_client, cb)
    assert cb.done and sched["done"] and sched["steps_used"] == 120 and len(run.lrs) == 120
    records = [r for r in sched["segments"] if r["phase"] == "offline"]
    assert records and records[0]["start_step"] == 0 and records[0]["shape"] == "cosine"


def test_a_deleted_job_detaches_with_one_warning_and_no_more_requests(
    link: Link, app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    model, opt, cb = _cb(link)
    src: Any = cb.source
    deleted_at: list[int] = []

    def before_step(step: int) -> None:
        if step == 30:
            app_client.delete(f"/v1/jobs/{src.job_id}", headers={"Authorization": f"Bearer {src.token}"})
            deleted_at.append(len(link.requests))

    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        train(cb, model, opt, make_batches(), before_step=before_step)
    assert cb.done and cb.step == 200 and src.detached
    assert len(link.requests) == deleted_at[0] + 1  # the refused report, nothing after
    assert len(_warnings(caplog)) == 1 and "giving up" in _warnings(caplog)[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_segment_taken_over_by_another_worker_is_left_to_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    app = create_app(Settings(redis_url=None, admin_key=None, lease_ttl_s=10.0), store=MemoryStore(), clock=clock)
    with local_client(app) as app_client:
        link = Link(app_client)
        model, opt, cb = _cb(link, worker_id="slow")
        src: Any = cb.source
        auth = {"Authorization": f"Bearer {src.token}"}
        taken: list[int] = []

        def before_step(step: int) -> None:
            seg = cb.segment
            if step == 15 and seg is not None:
                clock.now += 11  # our lease lapses; another worker takes the segment and runs it
                other = app_client.post(f"/v1/jobs/{src.job_id}/lease", json={"worker_id": "fast"}, headers=auth)
                body = other.json()
                taken.append(body["segment_id"])
                report = {"worker_id": "fast", "lease_epoch": body["lease_epoch"], "losses": [1.0] * body["steps"]}
                app_client.post(
                    f"/v1/jobs/{src.job_id}/segments/{body['segment_id']}/report", json=report, headers=auth
                )
            if step == 25:
                clock.now += 11  # the other worker's lease on the next segment lapses in turn

        with caplog.at_level(logging.WARNING, logger="lrtune.client"):
            train(cb, model, opt, make_batches(), before_step=before_step)
        sched = _job(app_client, cb)
    assert cb.done and sched["done"] and sched["steps_used"] == 200
    ids = [s.segment_id for s in cb.history]
    assert taken and ids.count(taken[0]) == 1 and ids[ids.index(taken[0]) + 1] > taken[0]
    record = next(r for r in sched["segments"] if r["segment_id"] == taken[0])
    assert {p[1] for p in record["curve"]} == {1.0}  # the other worker's report stands, ours was dropped
    msgs = _warnings(caplog)
    assert any("handed to another worker" in m for m in msgs)


def test_retries_back_off_exponentially_with_jitter_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    attempts: list[float] = []

    class Down:
        where = "http://nowhere"

        def create_job(self, *a: Any) -> Any:
            from lrtune.client.errors import ServiceUnavailableError

            attempts.append(clock.now)
            raise ServiceUnavailableError("refused")

        def close(self) -> None:
            pass

    from lrtune.client.protocol import JobConfig

    state = random.getstate()
    src = RemoteSource(
        Down(),  # type: ignore[arg-type]
        config=JobConfig(min_lr=1e-3, max_lr=1.0, total_steps=100),
        job_id=None,
        token=None,
        worker_id="w",
        retry=RetryPolicy(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.5),
        clock=clock,
        seed=0,
    )
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        assert src.start() is None
        for _ in range(4000):  # a training loop polling every 10 ms for 40 s
            clock.now += 0.01
            assert src.poll() is None
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    bounds = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for gap, d in zip(gaps, bounds, strict=False):
        assert 0.5 * d - 0.011 <= gap <= d + 0.011
    assert len(attempts) < 12 and len(set(round(g, 2) for g in gaps)) > 2  # backed off, jittered
    assert len(caplog.records) == 1
    assert random.getstate() == state  # the global generator training uses was never touched


def test_replay_survives_an_outage(link: Link, app_client: TestClient) -> None:
    data = ReplayLoader(make_batches(n_batches=7))
    model, opt, cb = _cb(link, loader=data, preset="greedy")  # a search of several candidates from step 0

    def before_step(step: int) -> None:
        link.mode = "down" if 9 <= step < 14 else "up"  # the end of stage 0's first candidate

    run = train(cb, model, opt, data, before_step=before_step)
    cands = [s.segment_id for s in cb.history if s.phase == "explore" and s.stage == 0 and (s.restore or s.snapshot)]
    firsts = [run.batch_ids[run.segment_ids.index(sid)] for sid in cands]
    assert len(cands) > 1 and len(set(firsts)) == 1
    assert _job(app_client, cb)["done"]


def test_long_segments_renew_their_lease_halfway() -> None:
    clock = FakeClock()
    leases: list[float] = []
    seg = {
        "job_id": "j",
        "segment_id": 4,
        "lease_epoch": 1,
        "lease_expires_in_s": 10.0,
        "phase": "train",
        "start_step": 0,
        "steps": 1000,
        "lr": 0.1,
        "lr_end": 0.1,
    }

    class Api:
        where = "http://lrtune.test"

        def lease(self, job_id: str, token: str, worker_id: str) -> Any:
            from lrtune.client.protocol import WireSegment

            leases.append(clock.now)
            epoch = 1 if len(leases) < 3 else 2  # the third poll finds the lease lapsed and re-granted
            return WireSegment.from_dict({**seg, "lease_epoch": epoch})

        def close(self) -> None:
            pass

    src = RemoteSource(Api(), config=None, job_id="j", token="t", worker_id="w", clock=clock)  # type: ignore[arg-type]
    first = src.start()
    assert first is not None and len(leases) == 1
    clock.now += 4.9
    assert src.keepalive(first) is None and len(leases) == 1  # not yet: less than half the lease has passed
    clock.now += 0.2
    assert src.keepalive(first) is None and len(leases) == 2  # renewed, same epoch
    clock.now += 5.1
    assert src.keepalive(first) == 2 and len(leases) == 3  # the new epoch goes into the report


def test_a_service_back_only_at_the_end_gets_the_offline_steps_in_the_final_flush(
    link: Link, app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    model, opt, cb = _cb(link, total=120)

    def before_step(step: int) -> None:
        if step == 45:
            link.mode = "down"

    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        run = train(cb, model, opt, make_batches(), before_step=before_step)
        assert cb.done and len(run.lrs) == 120
        link.mode = "up"
        started = time.monotonic()
        cb.on_train_end()
        assert time.monotonic() - started < cb.max_stall_s
    sched = _job(app_client, cb)
    assert sched["done"] and sched["steps_used"] == 120  # the job is finished, not left running
    offline = [r for r in sched["segments"] if r["phase"] == "offline"]
    assert sum(r["steps"] for r in offline) == cb.offline_steps == cb.offline_reported > 0
    assert not any("did not take" in m for m in _warnings(caplog))
