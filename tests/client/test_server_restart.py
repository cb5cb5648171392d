"""A real ``lrtune serve`` process killed and restarted mid-run: training goes on and the job completes."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from lrtune.client import AutoLRSCallback, RetryPolicy
from lrtune.server.launch import REDIS_URL_ENV
from tests.client.helpers import SMALL, make_batches, make_model, train
from tests.procs import Service

REDIS_URL = os.environ.get("LRTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {REDIS_URL} does not answer ({exc})")
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc})")
    prefix = f"lrtune-client-test-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    env["LRTUNE_REDIS_PREFIX"] = prefix
    yield env
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def _run(service: Service, total: int, kill_at: int, back_at: int) -> tuple[AutoLRSCallback, Any]:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AutoLRSCallback(
        model,
        opt,
        service.url,
        1e-3,
        1.0,
        total,
        config=SMALL,
        timeout_s=5.0,
        retry=RetryPolicy(initial_s=0.01, max_s=0.05),
    )

    def before_step(step: int) -> None:
        if step == kill_at:
            service.kill()
        if step == back_at:
            service.start()  # and wait until it answers: the steps meanwhile are slow ones, say

    return cb, train(cb, model, opt, make_batches(), before_step=before_step)


def test_redis_backed_service_killed_mid_run(
    redis_env: dict[str, str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    service = Service({**redis_env, REDIS_URL_ENV: REDIS_URL}, tmp_path)
    service.start()
    try:
        with caplog.at_level(logging.WARNING, logger="lrtune.client"):
            cb, run = _run(service, total=200, kill_at=40, back_at=60)
        cb.on_train_end()
        src: Any = cb.source
        auth = {"Authorization": f"Bearer {src.token}"}
        sched = httpx.get(f"{service.url}/v1/jobs/{src.job_id}/schedule", headers=auth).json()
    finally:
        service.stop()
    assert cb.done and cb.offline_steps > 0
    assert sched["done"] and sched["steps_used"] == 200
    # The job's records are complete: every segment the worker ran was recorded, in order, and so was every step
    # it ran while the service was down, at the LR it ran at.
    online = [r for r in sched["segments"] if r["phase"] != "offline"]
    assert [r["segment_id"] for r in online] == [s.segment_id for s in cb.history]
    assert sum(r["steps"] for r in sched["segments"]) == 200 == len(run.lrs)  # the budget is the user's
    offline = [r for r in sched["segments"] if r["phase"] == "offline"]
    assert sum(r["steps"] for r in offline) == cb.offline_steps == cb.offline_reported
    for r in offline:  # each at the LRs those steps really ran at
        first, last = r["start_step"], r["start_step"] + r["steps"] - 1
        assert run.segment_ids[first] is None and (r["lr"], r["lr_end"]) == (run.lrs[first], run.lrs[last])
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "lrtune.client"]) == 1


def test_in_memory_service_restart_continues_on_a_fresh_job_with_the_steps_left(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The restarted embedded service never held the job: the worker says so once and tunes the rest afresh."""
    service = Service({REDIS_URL_ENV: ""}, tmp_path)
    service.start()
    try:
        with caplog.at_level(logging.WARNING, logger="lrtune.client"):
            cb, run = _run(service, total=150, kill_at=40, back_at=50)
            src: Any = cb.source
            first_job = cb.history[0].job_id
            auth = {"Authorization": f"Bearer {src.token}"}
            fresh = httpx.get(f"{service.url}/v1/jobs/{src.job_id}", headers=auth).json()
            requests_after = src.requests
            cb.on_train_end()
    finally:
        service.stop()
    assert cb.done and cb.step == 150 and len(run.lrs) == 150  # the budget is the user's, restart or not
    assert src.replaced == 1 and src.job_id != first_job
    # The budget was spent by the fresh job's own last segment (not by training on at the fallback LR): it got
    # exactly the steps not run before it, and ran to its end.
    assert cb.segment is not None and cb.segment.done and cb.segment.job_id == src.job_id
    assert fresh["status"] == "done" and fresh["steps_used"] == fresh["total_steps"] < 150
    assert src.requests == requests_after  # no 404 loop: nothing more was asked of the service
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "lrtune.client"]
    # At most one warning for the outage (if a report fell into it), then one saying what happened.
    assert "came back without job" in msgs[-1] and "fresh job" in msgs[-1] and len(msgs) <= 2
