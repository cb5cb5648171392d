from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.server.helpers import FakeClock

REDIS_URL = os.environ.get("LRTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; in CI a Redis that does not answer fails the tests instead of skipping them."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {REDIS_URL} does not answer ({exc}); CI must run the Redis tests")
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc})")
    return REDIS_URL


def purged_prefix(redis_url: str, kind: str) -> Iterator[str]:
    """Yield a fresh Redis key prefix ``lrtune-{kind}-...``; delete every key under it afterwards."""
    from lrtune.server.store.redis import RedisStore

    prefix = f"lrtune-{kind}-{uuid.uuid4().hex[:12]}"
    yield prefix
    store = RedisStore(redis_url, prefix)
    store.purge()
    store.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    yield from purged_prefix(redis_url, "test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url=None, admin_key=None, lease_ttl_s=60.0)


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    """The service on the in-memory store with a fake clock."""
    with local_client(create_app(settings, store=MemoryStore(), clock=clock)) as c:
        yield c
