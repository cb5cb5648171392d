"""A hung service, a hung store, a lost final report, an idle job: no training step waits for long.

Every test here runs a real ``lrtune serve`` process on loopback (and, for the store, a ``redis-server`` of its
own) and the real client callback, and times every callback call.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from lrtune.client import AutoLRSCallback
from tests.client.conftest import one_thread  # noqa: F401 - the same autouse fixture: one torch thread
from tests.client.helpers import SMALL, make_batches, make_model
from tests.reliability.harness import RedisServer, Service, record_result, serve_env, wait_for

#: The callback's default bound on any one call (``max_stall_s``).
BOUND_S = 2.0
#: Simulated compute per training step, in seconds: a run of a few hundred steps lasts a few seconds.
STEP_S = 0.02
#: How long each fault lasts, in seconds: longer than the bound, shorter than the client's read timeout.
FAULT_S = 2.5


class Timed:
    """A training loop that times every callback call (``on_train_batch_end`` and ``on_train_end``)."""

    def __init__(self, cb: AutoLRSCallback, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.cb, self.model, self.optimizer = cb, model, optimizer
        self.calls_s: list[float] = []
        self.end_s = 0.0

    def run(self, before_step: Callable[[int], None] | None = None, max_steps: int = 5000) -> None:
        data = make_batches()
        steps = 0
        while not self.cb.done and steps < max_steps:
            for _, x, y in data:
                if before_step is not None:
                    before_step(self.cb.step)
                loss = torch.nn.functional.mse_loss(self.model(x), y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                time.sleep(STEP_S)  # the rest of a real step's compute
                started = time.monotonic()
                self.cb.on_train_batch_end(loss)
                self.calls_s.append(time.monotonic() - started)
                steps += 1
                if self.cb.done:
                    break
        started = time.monotonic()
        self.cb.on_train_end()
        self.end_s = time.monotonic() - started

    @property
    def longest_s(self) -> float:
        return max([*self.calls_s, self.end_s])


def make_callback(url: str, total: int, **kw: Any) -> tuple[AutoLRSCallback, torch.nn.Module, torch.optim.Optimizer]:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AutoLRSCallback(model, opt, url, 1e-3, 1.0, total, config=SMALL, **kw)
    return cb, model, opt


class Pause:
    """SIGSTOP a process at a chosen step, SIGCONT it ``FAULT_S`` seconds later (checked at every step)."""

    def __init__(self, proc: Any, at_step: int) -> None:
        self.proc, self.at_step = proc, at_step
        self.stopped_at: float | None = None
        self.resumed = False

    def __call__(self, step: int) -> None:
        if self.stopped_at is None and step >= self.at_step:
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped_at = time.monotonic()
        elif self.stopped_at is not None and not self.resumed and time.monotonic() - self.stopped_at > FAULT_S:
            self.resume()

    def resume(self) -> None:
        if self.stopped_at is not None and not self.resumed:
            self.proc.send_signal(signal.SIGCONT)
            self.resumed = True


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One ``lrtune serve`` on the embedded store for the tests that pause it (each resumes it before it ends)."""
    service = Service({"LRTUNE_REDIS_URL": ""}, tmp_path_factory.mktemp("embedded"))
    service.start()
    yield service
    if service.proc is not None:
        service.proc.send_signal(signal.SIGCONT)
    service.stop()


def job_info(url: str, cb: AutoLRSCallback) -> dict[str, Any]:
    src: Any = cb.source
    resp = httpx.get(f"{url}/v1/jobs/{src.job_id}", headers={"Authorization": f"Bearer {src.token}"}, timeout=10)
    out: dict[str, Any] = resp.json()
    return out


def train_through_a_pause(
    url: str, proc: Any, caplog: pytest.LogCaptureFixture
) -> tuple[AutoLRSCallback, Timed, Pause, dict[str, Any]]:
    """Train 200 steps against ``url`` with ``proc`` SIGSTOPped from step 10 for ``FAULT_S``; time every call."""
    cb, model, opt = make_callback(url, total=200)
    pause = Pause(proc, at_step=10)
    loop = Timed(cb, model, opt)
    with caplog.at_level(logging.INFO, logger="lrtune.client"):
        loop.run(before_step=pause)
    pause.resume()
    return cb, loop, pause, job_info(url, cb)


def test_a_sigstopped_service_never_stalls_a_step_past_the_bound(
    embedded: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service = embedded
    try:
        assert service.proc is not None
        cb, loop, pause, info = train_through_a_pause(service.url, service.proc, caplog)
    finally:
        if service.proc is not None:
            service.proc.send_signal(signal.SIGCONT)
    assert pause.stopped_at is not None and pause.resumed, "the fault happened while training ran"
    assert loop.longest_s < BOUND_S, f"a callback call took {loop.longest_s:.2f} s with the service stopped"
    assert cb.offline_steps > 0  # training went on at the fallback LR meanwhile
    assert any("is back" in r.getMessage() for r in caplog.records)  # and resumed the job afterwards
    assert info["steps_used"] > 0
    record_result("sigstopped_service", longest_call_s=round(loop.longest_s, 3), stopped_s=FAULT_S)


def test_a_hung_redis_never_stalls_a_step_past_the_bound(
    tmp_path: Path, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    service = Service(serve_env(redis_server.url, redis_prefix), tmp_path)
    try:
        service.start()
        cb, loop, pause, info = train_through_a_pause(service.url, redis_server.proc, caplog)
    finally:
        if redis_server.proc is not None:
            redis_server.proc.send_signal(signal.SIGCONT)
        service.stop()
        redis_server.close()
    assert pause.stopped_at is not None and pause.resumed
    assert loop.longest_s < BOUND_S, f"a callback call took {loop.longest_s:.2f} s with Redis stopped"
    assert cb.offline_steps > 0 and info["steps_used"] > 0
    record_result("sigstopped_redis", longest_call_s=round(loop.longest_s, 3), stopped_s=FAULT_S)


def test_the_final_report_is_retried_within_the_bound_then_left_resumable(
    embedded: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service = embedded
    try:
        total = 80
        cb, model, opt = make_callback(service.url, total=total)
        assert service.proc is not None
        proc = service.proc

        def hang_at_the_end(step: int) -> None:
            if step == total - 1:  # the service hangs while the last segment is reported, and stays hung
                proc.send_signal(signal.SIGSTOP)

        loop = Timed(cb, model, opt)
        with caplog.at_level(logging.WARNING, logger="lrtune.client"):
            loop.run(before_step=hang_at_the_end)
        state = cb.state_dict()
        proc.send_signal(signal.SIGCONT)
        info = job_info(service.url, cb)
    finally:
        if service.proc is not None:
            service.proc.send_signal(signal.SIGCONT)
    assert loop.end_s < BOUND_S and loop.longest_s < BOUND_S
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    about_the_end = [m for m in warnings if "did not take the last report" in m]
    assert len(about_the_end) == 1 and "resumable" in about_the_end[0]
    assert state["source"]["pending"]["op"] == "report"  # the checkpointable state still holds the report
    assert info["status"] in ("running", "done")  # never lost: it is the service's to finish or to resume
    record_result("final_flush", on_train_end_s=round(loop.end_s, 3))


def test_an_idle_job_is_marked_stalled_frees_its_slot_and_resumes(tmp_path: Path) -> None:
    ttl_s, leases = 0.4, 2
    env = {
        "LRTUNE_REDIS_URL": "",
        "LRTUNE_LEASE_TTL_S": str(ttl_s),
        "LRTUNE_STALL_AFTER_LEASES": str(leases),
        "LRTUNE_MAX_JOBS_PER_CLIENT": "1",
    }
    service = Service(env, tmp_path)
    service.start()
    try:
        config = {**SMALL, "min_lr": 1e-3, "max_lr": 1.0, "total_steps": 200}
        created = httpx.post(f"{service.url}/v1/jobs", json={"config": config})
        job, token = created.json()["job_id"], created.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        lease = httpx.post(f"{service.url}/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth)
        assert lease.status_code == 200
        small = {"config": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 50}}
        assert httpx.post(f"{service.url}/v1/jobs", json=small).status_code == 429  # one running job at most
        started = time.monotonic()

        def status() -> str:
            return str(httpx.get(f"{service.url}/v1/jobs/{job}", headers=auth).json()["status"])

        wait_for(lambda: status() == "stalled", 15.0, "the idle job to be marked stalled", every_s=0.05)
        stalled_after_s = time.monotonic() - started
        # Its quota slot is free again; the worker that comes back resumes it: it runs again.
        other = httpx.post(f"{service.url}/v1/jobs", json=small)
        assert other.status_code == 201
        again = httpx.post(f"{service.url}/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth)
        assert again.status_code == 200 and again.json()["segment_id"] == lease.json()["segment_id"]
        assert status() == "running"
        listed = httpx.get(f"{service.url}/v1/jobs?status=stalled").json()
    finally:
        service.stop()
    assert stalled_after_s >= ttl_s * leases - 0.1
    assert listed["total"] == 0
    record_result("stalled", stalled_after_s=round(stalled_after_s, 2), stall_after_s=ttl_s * leases)
