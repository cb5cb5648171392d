"""A real ``lrtune serve`` process killed and restarted mid-run: training goes on and the job completes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from client import AutoLRSCallback, RetryPolicy
from tests.client.helpers import SMALL, make_batches, make_model, train

REDIS_URL = os.environ.get("LRTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LRTUNE = Path(sys.executable).with_name("lrtune")
#: ``lrtune`` as installed next to this interpreter, else the CLI module run by it.
SERVE = [str(LRTUNE)] if LRTUNE.exists() else [sys.executable, "-m", "server.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Service:
    """``lrtune serve`` on a loopback port, started and killed on demand."""

    def __init__(self, port: int, env: dict[str, str], args: list[str]) -> None:
        self.port = port
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        cmd = [*SERVE, "serve", "--port", str(self.port), "--log-level", "warning", *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.proc.stderr.read() if self.proc else ""
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a process that boots
        raise AssertionError("lrtune serve did not get ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
            service.start()
            service.wait_ready()  # the steps meanwhile are slow ones, say

    return cb, train(cb, model, opt, make_batches(), before_step=before_step)


def test_redis_backed_service_killed_mid_run(redis_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    service = Service(_free_port(), redis_env, ["--redis-url", REDIS_URL])
    service.start()
    try:
        service.wait_ready()
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
    # The job's records are complete: every segment the worker ran was recorded, in order, and nothing else.
    assert [r["segment_id"] for r in sched["segments"]] == [s.segment_id for s in cb.history]
    assert sum(r["steps"] for r in sched["segments"]) == 200
    assert len(run.lrs) == 200 + cb.offline_steps
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_in_memory_service_restart_loses_the_job_and_training_still_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    service = Service(_free_port(), env, [])
    service.start()
    try:
        service.wait_ready()
        with caplog.at_level(logging.WARNING, logger="lrtune.client"):
            cb, run = _run(service, total=150, kill_at=40, back_at=50)
    finally:
        service.stop()
    assert cb.done and cb.step == 150 and len(run.lrs) == 150
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # At most one warning for the outage (if a report fell into it), then one for the lost job.
    assert "giving up" in msgs[-1] and len(msgs) <= 2
