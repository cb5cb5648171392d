"""Too many jobs per client, too many requests per client: 429 with ``Retry-After``, configurable.

The job quota is on by default (100 jobs per client), the rate limit off.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lrtune.server.app import create_app
from lrtune.server.launch import wait_ready
from lrtune.server.quotas import RESERVATION_GRACE_S, MemoryLedger, RateLimiter
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from lrtune.server.store.redis import RedisStore
from tests.asgi import local_client
from tests.reliability.harness import Service, serve_env
from tests.server.helpers import SMALL_CONFIG, FakeClock, run_segment

ADMIN = "the-admin-key-" + "a" * 20


def client_for(settings: Settings, address: str = "127.0.0.1", store: Any = None) -> TestClient:
    app = create_app(settings, store=store if store is not None else MemoryStore())
    return local_client(app, address, 40000)


def create(c: TestClient, headers: dict[str, str] | None = None) -> httpx.Response:
    return c.post("/v1/jobs", json={"config": SMALL_CONFIG}, headers=headers)


def assert_429(resp: httpx.Response, code: str) -> int:
    assert (resp.status_code, resp.json()["code"]) == (429, code), resp.text
    retry_after = int(resp.headers["Retry-After"])
    assert retry_after >= 1 and resp.json()["detail"]["retry_after_s"] > 0
    return retry_after


def test_the_job_quota_is_on_and_the_rate_limit_off_by_default() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.max_jobs_per_client == 100 and defaults.rate_limit_per_s == 0
    with client_for(Settings(redis_url=None)) as c:
        assert all(create(c).status_code == 201 for _ in range(30))
        assert all(c.get("/v1/jobs").status_code == 200 for _ in range(100))


def test_job_quota_per_client_frees_slots_when_jobs_end() -> None:
    settings = Settings(redis_url=None, max_jobs_per_client=2, jobs_retry_after_s=30, admin_key=SecretStr(ADMIN))
    store = MemoryStore()
    clock = FakeClock()
    app = create_app(settings, store=store, clock=clock)
    with local_client(app, "10.0.0.1", 1) as c, local_client(app, "10.0.0.2", 1) as other:
        first, second = create(c).json(), create(c).json()
        assert assert_429(create(c), "too_many_jobs") == 30
        assert store.list_heads(0, 0).total == 2  # the refused job was never stored
        assert create(other).status_code == 201  # another client has its own quota
        assert create(c, {"Authorization": f"Bearer {ADMIN}"}).status_code == 201  # the admin is not limited
        # A deleted job keeps its slot while the store holds it (so create-and-delete loops cannot grow the store);
        # once its retention is over and the store dropped it, the slot is free. Finishing a job frees it at once.
        auth = {"Authorization": f"Bearer {first['token']}"}
        assert c.delete(f"/v1/jobs/{first['job_id']}", headers=auth).status_code == 200
        assert_429(create(c), "too_many_jobs")
        clock.advance(settings.deleted_retention_s + 1)
        assert app.state.runtime.service.sweep().expired == 1
        third = create(c)
        assert third.status_code == 201
        assert_429(create(c), "too_many_jobs")
        auth = {"Authorization": f"Bearer {second['token']}"}
        seg = c.post(f"/v1/jobs/{second['job_id']}/lease", json={"worker_id": "w"}, headers=auth).json()
        while not seg["done"]:
            body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
            seg = c.post(
                f"/v1/jobs/{second['job_id']}/segments/{seg['segment_id']}/report", json=body, headers=auth
            ).json()
        assert create(c).status_code == 201
        assert_429(create(c), "too_many_jobs")


def test_ledger_frees_slots_of_ended_and_vanished_jobs_but_not_of_creations_in_flight() -> None:
    statuses: dict[str, str] = {}
    ledger = MemoryLedger()
    t0 = 1_000.0
    assert ledger.admit("c", "a", 2, statuses.get, t0) and ledger.admit("c", "b", 2, statuses.get, t0)
    # Neither is stored yet (their creations are in flight): they count.
    assert not ledger.admit("c", "x", 2, statuses.get, t0 + 1)
    statuses.update(a="running", b="running")
    assert not ledger.admit("c", "x", 2, statuses.get, t0 + 2)
    statuses["a"] = "done"
    assert ledger.admit("c", "x", 2, statuses.get, t0 + 3)  # a finished job frees its slot
    statuses["x"] = "running"
    del statuses["b"]  # purged
    assert not ledger.admit("c", "y", 2, statuses.get, t0 + 4)  # within the grace it may be a creation in flight
    assert ledger.admit("c", "y", 2, statuses.get, t0 + RESERVATION_GRACE_S + 1)
    assert ledger.admit("d", "z", 2, statuses.get, t0)  # clients are counted apart


def test_job_quota_is_shared_by_processes_on_one_redis(redis_url: str) -> None:
    """Two apps on one Redis prefix stand for two service processes: one count, never exceeded, even in a race."""
    prefix = f"lrtune-quota-{uuid.uuid4().hex[:10]}"
    settings = Settings(redis_url=redis_url, redis_prefix=prefix, max_jobs_per_client=3)
    stores = [RedisStore(redis_url, prefix), RedisStore(redis_url, prefix)]
    apps = [create_app(settings, store=s) for s in stores]
    try:
        with local_client(apps[0], "10.0.0.9", 1) as a, local_client(apps[1], "10.0.0.9", 2) as b:
            with ThreadPoolExecutor(max_workers=8) as pool:
                racing = list(pool.map(lambda i: create(a if i % 2 else b).status_code, range(8)))
            admitted = racing.count(201)
            assert 1 <= admitted <= 3 and racing.count(429) == 8 - admitted  # never over the quota
            while admitted < 3:  # one at a time, the remaining slots fill up exactly
                assert create(a if admitted % 2 else b).status_code == 201
                admitted += 1
            assert_429(create(a), "too_many_jobs")
            assert_429(create(b), "too_many_jobs")
            assert stores[0].count("running") == 3
    finally:
        stores[0].purge()
        for s in stores:
            s.close()


def test_rate_limiter_window_admits_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=2)
    assert (limiter.window_s, limiter.limit) == (1, 2)
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    wait_s = limiter.acquire("a")
    assert 0 < wait_s <= 1.0  # the oldest of the two leaves the window within a second
    assert limiter.acquire("b") == 0.0  # clients do not share windows
    time.sleep(wait_s + 0.05)
    assert limiter.acquire("a") == 0.0
    # The window is burst / rate, in whole seconds; the count keeps the sustained rate when rounding lengthened it.
    assert (RateLimiter(1.0, 6).window_s, RateLimiter(1.0, 6).limit) == (6, 6)
    assert (RateLimiter(100.0).window_s, RateLimiter(100.0).limit) == (10, 1000)
    assert (RateLimiter(100.0, 5).window_s, RateLimiter(100.0, 5).limit) == (1, 100)
    assert (RateLimiter(0.5, 4).window_s, RateLimiter(0.5, 4).limit) == (8, 4)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0.0)


def test_rate_limiters_on_one_redis_share_the_windows(redis_url: str, redis_prefix: str) -> None:
    """Two limiters on one Redis prefix stand for two processes: one count, even when they race."""
    limiters = [RateLimiter(1.0, 10, redis_url, redis_prefix) for _ in range(2)]
    other = RateLimiter(1.0, 10, redis_url, redis_prefix + "-other")
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            waits = list(pool.map(lambda i: limiters[i % 2].acquire("c"), range(16)))
        assert waits.count(0.0) == 10  # exactly the burst, over both
        assert all(0 < w <= 10.0 for w in waits if w)
        assert other.acquire("c") == 0.0  # another deployment's prefix has its own windows
        # The windows live under the deployment's prefix, so purging the prefix drops them.
        assert any(limiters[0]._storage.storage.scan_iter(f"{redis_prefix}:ratelimit:*"))  # type: ignore[attr-defined]
    finally:
        for limiter in [*limiters, other]:
            limiter.close()
        db = redis.Redis.from_url(redis_url)
        for key in db.scan_iter(f"{redis_prefix}-other:*"):
            db.delete(key)
        db.close()


def test_rate_limit_admits_requests_when_redis_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(1.0, 1, "redis://127.0.0.1:1/0", "lrtune-down", timeout_s=0.2)
    assert [limiter.acquire("c") for _ in range(3)] == [0.0] * 3  # fails open: the store answers 503 itself
    assert sum("rate limit: redis unreachable" in r.message for r in caplog.records) == 1  # warned once


def test_rate_limit_per_client_with_exempt_probes_and_admin() -> None:
    settings = Settings(redis_url=None, rate_limit_per_s=0.5, rate_limit_burst=4, admin_key=SecretStr(ADMIN))
    app = create_app(settings, store=MemoryStore())
    with local_client(app, "10.0.0.3", 1) as c, local_client(app, "10.0.0.4", 1) as other:
        answers = [c.get("/v1/jobs/0123456789abcdef", headers={"Authorization": "Bearer x"}) for _ in range(4)]
        assert [r.status_code for r in answers] == [404] * 4
        assert assert_429(create(c), "rate_limited") >= 1  # before the body is read, before any store access
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        assert create(other).status_code == 201


@pytest.fixture
def limited_service(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Service]:
    env = serve_env(redis_url, redis_prefix, LRTUNE_MAX_JOBS_PER_CLIENT="2", LRTUNE_RATE_LIMIT_PER_S="1")
    service = Service({**env, "LRTUNE_RATE_LIMIT_BURST": "6"}, tmp_path)
    service.start()
    yield service
    service.stop()


def test_limits_from_the_environment_on_a_real_process(limited_service: Service) -> None:
    url = limited_service.url
    with httpx.Client(base_url=url, timeout=30.0) as http:
        codes = [http.post("/v1/jobs", json={"config": SMALL_CONFIG}).status_code for _ in range(3)]
        assert codes == [201, 201, 429]
        answers = [http.get("/v1/jobs") for _ in range(12)]  # the burst of 6 is spent within these
        limited = next(r for r in answers if r.status_code != 200)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert http.get("/healthz").status_code == 200


@pytest.fixture
def two_limited_services(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[list[Service]]:
    env = serve_env(redis_url, redis_prefix, LRTUNE_RATE_LIMIT_PER_S="0.5", LRTUNE_RATE_LIMIT_BURST="10")
    services = [Service(env, tmp_path / f"s{i}") for i in range(2)]
    for service in services:
        service.log_dir.mkdir()
        service.start(wait=False)
    try:
        for service in services:
            assert service.proc is not None
            wait_ready(service.url, service.proc)
        yield services
    finally:
        for service in services:
            service.stop()


def test_two_processes_on_one_redis_share_one_rate_limit(two_limited_services: list[Service]) -> None:
    """A client alternating between two service processes gets the limit once, not twice."""
    clients = [httpx.Client(base_url=s.url, timeout=30.0) for s in two_limited_services]
    try:
        answers = [clients[i % 2].get("/v1/jobs") for i in range(16)]
        codes = [r.status_code for r in answers]
        assert codes.count(200) == 10, codes  # the burst of 10 over both processes (per process it would be 16)
        refused = [r for r in answers if r.status_code == 429]
        assert {r.json()["code"] for r in refused} == {"rate_limited"}
        assert all(1 <= int(r.headers["Retry-After"]) <= 20 for r in refused)  # the window is 20 s
        assert {r.url.port for r in refused} == {s.port for s in two_limited_services}  # both refuse
        assert all(c.get("/healthz").status_code == 200 for c in clients)  # probes stay exempt
    finally:
        for c in clients:
            c.close()
