"""Fixtures of the reliability tests: the test Redis (shared with the service tests), a shared server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import Service, serve_env
from tests.server.conftest import REDIS_URL, purged_prefix, redis_prefix, redis_url

__all__ = ["REDIS_URL", "redis_prefix", "redis_url"]

#: Lease TTL of the shared server: short, so that lapses happen within a test.
SHARED_LEASE_TTL_S = 2.0


@pytest.fixture(scope="session")
def shared_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix for the shared server; every key under it is deleted at the end."""
    yield from purged_prefix(redis_url, "rel")


@pytest.fixture(scope="session")
def shared_service(redis_url: str, shared_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One ``lrtune serve`` on Redis for the tests that do not kill it: short leases, debug logs kept."""
    log_dir: Path = tmp_path_factory.mktemp("shared-service")
    env = serve_env(redis_url, shared_prefix, LRTUNE_LEASE_TTL_S=str(SHARED_LEASE_TTL_S), LRTUNE_LOG_LEVEL="debug")
    service = Service(env, log_dir)
    service.start()
    yield service
    service.stop()
