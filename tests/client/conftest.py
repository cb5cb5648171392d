from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from tests.asgi import local_client
from tests.client.helpers import Link


@pytest.fixture
def app_client() -> Iterator[TestClient]:
    """The real service on the in-memory store."""
    with local_client(create_app(Settings(redis_url=None, admin_key=None, lease_ttl_s=60.0))) as c:
        yield c


@pytest.fixture
def link(app_client: TestClient) -> Link:
    """A switchable link to the real service."""
    return Link(app_client)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and do not fight other processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
