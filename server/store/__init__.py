"""Job storage: the :class:`JobStore` contract and its backends."""

from lrtune.server.store.base import (
    HeadPage,
    JobExistsError,
    JobNotFoundError,
    JobStore,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
)
from lrtune.server.store.memory import MemoryStore
from lrtune.server.store.records import JobHead, JobRecord, JobStatus, Lease, RecordDecodeError

__all__ = [
    "HeadPage",
    "JobExistsError",
    "JobHead",
    "JobNotFoundError",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "Lease",
    "MemoryStore",
    "RecordDecodeError",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
]


def open_store(redis_url: str | None, redis_prefix: str = "lrtune") -> JobStore:
    """Return the Redis store for ``redis_url``, or a fresh in-memory store when it is None or empty."""
    if not redis_url:
        return MemoryStore()
    from lrtune.server.store.redis import RedisStore

    return RedisStore(redis_url, prefix=redis_prefix)
