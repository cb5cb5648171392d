from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.server.helpers import FakeClock

ADMIN_KEY = "dashboard-admin-key-for-tests"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> Iterator[TestClient]:
    """The service on loopback without an admin key."""
    with local_client(create_app(Settings(redis_url=None), store=MemoryStore(), clock=clock)) as c:
        yield c


@pytest.fixture
def admin_client(clock: FakeClock) -> Iterator[TestClient]:
    """The service with an admin key."""
    settings = Settings(redis_url=None, admin_key=SecretStr(ADMIN_KEY))
    with local_client(create_app(settings, store=MemoryStore(), clock=clock)) as c:
        yield c
