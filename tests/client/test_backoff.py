"""Retries honour the service's ``Retry-After`` and never lag training by more than a couple of segments."""

from __future__ import annotations

from typing import Any

import httpx

from lrtune.client import RetryPolicy, ServiceUnavailableError
from lrtune.client.http import ServiceClient, retry_after
from lrtune.client.protocol import JobConfig
from lrtune.client.remote import RemoteSource

CONFIG = JobConfig(min_lr=1e-3, max_lr=1.0, total_steps=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Down:
    """An API whose job creation always fails as the service says (``Retry-After`` or not)."""

    where = "http://down"

    def __init__(self, clock: Clock, retry_after_s: float | None = None) -> None:
        self.clock, self.retry_after_s = clock, retry_after_s
        self.attempts: list[float] = []

    def create_job(self, *args: Any) -> Any:
        self.attempts.append(self.clock.now)
        raise ServiceUnavailableError("429 too_many_jobs", status=429, retry_after_s=self.retry_after_s)

    def close(self) -> None:
        pass


def attempts(api: Down, clock: Clock, seconds: float, source: RemoteSource) -> list[float]:
    source.start()
    for _ in range(int(seconds / 0.01)):
        clock.now += 0.01
        source.poll()
    return [b - a for a, b in zip(api.attempts, api.attempts[1:], strict=False)]


def test_a_429_retry_after_is_honoured() -> None:
    clock = Clock()
    api = Down(clock, retry_after_s=7.0)
    src = RemoteSource(api, config=CONFIG, job_id=None, token=None, worker_id="w", clock=clock, seed=0)  # type: ignore[arg-type]
    gaps = attempts(api, clock, 30.0, src)
    assert gaps and all(g >= 7.0 - 0.011 for g in gaps)  # never sooner than the service asked


def test_backoff_is_capped_at_twice_a_segments_duration() -> None:
    clock = Clock()
    api = Down(clock)
    policy = RetryPolicy(initial_s=0.1, max_s=60.0, jitter=0.0)
    src = RemoteSource(api, config=CONFIG, job_id=None, token=None, worker_id="w", retry=policy, clock=clock)  # type: ignore[arg-type]
    src.segment_s = 0.5  # the worker runs a segment every half second
    gaps = attempts(api, clock, 20.0, src)
    assert max(gaps) <= 1.0 + 0.011  # 2 x 0.5 s, not the 60 s of the policy's ceiling
    assert gaps[0] < gaps[-1]  # it still backs off up to that cap


def test_the_http_client_reads_retry_after_from_429_and_503() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        status = 429 if request.url.path == "/v1/jobs" else 503
        body = {"code": "too_many_jobs" if status == 429 else "store_unavailable", "message": "later"}
        return httpx.Response(status, json=body, headers={"Retry-After": "7", "Lrtune-Store-Id": "memory-1"})

    api = ServiceClient("http://svc", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    for call in (lambda: api.create_job(CONFIG), lambda: api.lease("0123456789abcdef", "t", "w")):
        try:
            call()
        except ServiceUnavailableError as exc:
            assert exc.retry_after_s == 7.0 and exc.store_id == "memory-1"
        else:
            raise AssertionError("expected a ServiceUnavailableError")
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and retry_after("soon") is None
