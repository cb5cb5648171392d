"""Per-client limits: how many running jobs a client may have, and how fast it may send requests.

The job quota is on by default (``LRTUNE_MAX_JOBS_PER_CLIENT=100``; job creation needs no token, so it is what
keeps one client from filling the store), the rate limit is off (``LRTUNE_RATE_LIMIT_PER_S=0``); both answer 429
with a ``Retry-After`` header when a client goes over. A *client* is the network address the request came from
(behind a reverse proxy on the same machine, uvicorn takes it from the proxy's ``X-Forwarded-For``); requests
that carry the admin key are never limited. Addresses are kept only as truncated SHA-256 hashes.

* The **job quota** counts, per client, the jobs it created that are still running, and the deleted ones the
  store still holds (for ``LRTUNE_DELETED_RETENTION_S``), so that create-and-delete loops cannot grow the store
  either. It lives in the store's backend (a Redis sorted set per client, or process memory for the embedded
  store), so every process of a deployment enforces the same count. Finished and stalled jobs free their slot
  (lazily, when a client reaches its limit), deleted ones once the store dropped them, and a purged job
  :data:`RESERVATION_GRACE_S` after its creation.
* The **rate limit** is a moving window per client (:class:`RateLimiter`): ``rate_limit_per_s`` requests per
  second on average, ``rate_limit_burst`` at once. With Redis configured the windows live there, so every
  process of a deployment enforces one limit; with the embedded store, in process memory. Health, readiness
  and metrics probes are exempt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import Request
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from lrtune.server.deps import Runtime
from lrtune.server.errors import TooManyJobsError
from lrtune.server.settings import Settings
from lrtune.server.store import JobNotFoundError, JobStore, StoreUnavailableError
from lrtune.server.store.keys import Keys

log = logging.getLogger("lrtune.server")

#: Paths never rate-limited: probes must see the service as it is, not as a busy client made it.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Seconds a client's quota entries live in Redis after its last job creation.
QUOTA_KEY_TTL_S = 30 * 86_400
#: Seconds an admitted job may take to appear in the store before its missing record frees its slot.
RESERVATION_GRACE_S = 10.0
#: Statuses whose jobs no longer take a slot (deleted jobs do until the store drops them).
_FREE = frozenset({"done", "stalled"})


def client_key(address: str | None) -> str:
    """An opaque key for a client address (the first 24 hex characters of its SHA-256)."""
    return hashlib.sha256((address or "unknown").encode()).hexdigest()[:24]


def is_admin(authorization: str | None, settings: Settings) -> bool:
    """Tell whether an ``Authorization`` header value carries the configured admin key (constant-time)."""
    key = settings.admin_key_value
    if key is None or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


class RateLimiter:
    """A moving-window request limit per client, in process memory or shared by every process on one Redis.

    At most ``limit`` requests of one client are admitted in any window of ``window_s`` seconds. The window is
    ``burst / rate_per_s`` rounded up to whole seconds (at least 1), and ``limit`` is ``burst``, raised when
    rounding made the window longer so that the sustained rate stays ``rate_per_s``: ``rate_per_s=1, burst=6``
    admits 6 requests in any 6 seconds, ``rate_per_s=100`` (burst 1000) 1000 in any 10 seconds. The windows
    are kept by the ``limits`` library: in Redis (one Lua script per request, atomic across processes) when
    ``redis_url`` is given, so that N service processes enforce one limit and not N times it; in this process's
    memory otherwise. A Redis that cannot be reached admits the request (the store then answers for itself) and
    is logged at most once a minute.

    Args:
        rate_per_s: Sustained requests per second; must be positive and finite.
        burst: Requests admitted at once; 0 means ``10 * rate_per_s`` (at least 1).
        redis_url: The store's Redis URL; None keeps the windows in process memory.
        prefix: The deployment's Redis key prefix (the windows live under ``<prefix>:ratelimit:``).
        timeout_s: Redis connect and read timeout in seconds.

    Raises:
        ValueError: ``rate_per_s`` is not a positive finite number.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 0,
        redis_url: str | None = None,
        prefix: str = "lrtune",
        timeout_s: float = 1.0,
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be positive and finite, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        burst = burst or max(1, math.ceil(10 * rate_per_s))
        self.window_s = max(1, math.ceil(burst / rate_per_s - 1e-9))
        self.limit = max(burst, math.floor(rate_per_s * self.window_s + 1e-9))
        self.shared = redis_url is not None
        storage: Storage
        if redis_url is not None:
            uri = "redis+unix://" + redis_url.removeprefix("unix://") if redis_url.startswith("unix://") else redis_url
            storage = RedisStorage(
                uri,
                key_prefix=Keys(prefix).rate_limit(),
                wrap_exceptions=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._item = RateLimitItemPerSecond(self.limit, self.window_s)
        self._windows = MovingWindowRateLimiter(storage)
        self._warned_at = -math.inf

    def acquire(self, client: str) -> float:
        """Count one request of ``client`` (blocks on Redis when shared: call it off the event loop then).

        Returns:
            0.0 when the request may go ahead, else the seconds until it would be admitted (nothing is counted).
        """
        try:
            if self._windows.hit(self._item, client):
                return 0.0
            reset_at = self._windows.get_window_stats(self._item, client).reset_time
        except StorageError as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limit: redis unreachable, admitting requests meanwhile: %s", exc)
            return 0.0
        return max(0.001, reset_at - time.time())

    def close(self) -> None:
        """Release the Redis connection, if any."""
        conn = getattr(self._storage, "storage", None)
        close = getattr(conn, "close", None)
        if self.shared and callable(close):
            close()


class JobLedger(ABC):
    """Which jobs each client created that may still be running (the job quota's bookkeeping).

    Each entry is a job id with the Unix time it was admitted. An entry stops counting once its job is done or
    stalled, or once its job cannot be found and was admitted more than :data:`RESERVATION_GRACE_S` ago (the job
    was purged or expired, or its creation failed after admission); younger missing entries are creations in
    flight. A deleted job counts until the store drops it.
    """

    def close(self) -> None:  # noqa: B027 - a no-op unless the ledger holds a connection
        """Release the ledger's connection, if it has one."""

    def admit(self, client: str, job_id: str, limit: int, status: Callable[[str], str | None], now: float) -> bool:
        """Record ``job_id`` as a running job of ``client`` unless the client has ``limit`` of them already.

        The new id is added first and taken back when the count goes over the limit, so that two processes
        admitting the last free slot at once cannot both get it (both may be refused: the count is never over).

        Args:
            client: The client's key (:func:`client_key`).
            job_id: The job about to be created.
            limit: Most running jobs the client may have (positive).
            status: The stored status of a job (one of ``lrtune.client.protocol.JOB_STATUSES``), None when it does
                not exist.
            now: Unix time in seconds.

        Returns:
            True when the job was admitted.

        Raises:
            StoreUnavailableError: The backend cannot be reached.
        """
        if self._add(client, job_id, now) <= limit:
            return True
        ended = []
        for other, admitted_at in self._entries(client):
            if other == job_id:
                continue
            state = status(other)
            vanished = state is None and admitted_at < now - RESERVATION_GRACE_S
            if vanished or state in _FREE:
                ended.append(other)
        if ended:
            self._remove(client, ended)
        if self._count(client) <= limit:
            return True
        self._remove(client, [job_id])
        return False

    @abstractmethod
    def _add(self, client: str, job_id: str, now: float) -> int:
        """Add ``job_id`` (admitted at ``now``) to the client's entries; return how many it has."""

    @abstractmethod
    def _entries(self, client: str) -> list[tuple[str, float]]:
        """The client's entries: job ids with their admission times."""

    @abstractmethod
    def _remove(self, client: str, job_ids: list[str]) -> None:
        """Drop ``job_ids`` from the client's entries."""

    @abstractmethod
    def _count(self, client: str) -> int:
        """How many entries the client has."""


class MemoryLedger(JobLedger):
    """The job ledger of the embedded store: one process, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, float]] = {}

    def _add(self, client: str, job_id: str, now: float) -> int:
        with self._lock:
            jobs = self._jobs.setdefault(client, {})
            jobs[job_id] = now
            return len(jobs)

    def _entries(self, client: str) -> list[tuple[str, float]]:
        with self._lock:
            return sorted(self._jobs.get(client, {}).items())

    def _remove(self, client: str, job_ids: list[str]) -> None:
        with self._lock:
            jobs = self._jobs.get(client, {})
            for job_id in job_ids:
                jobs.pop(job_id, None)
            if not jobs:
                self._jobs.pop(client, None)

    def _count(self, client: str) -> int:
        with self._lock:
            return len(self._jobs.get(client, {}))


class RedisLedger(JobLedger):
    """The job ledger on Redis, shared by every process of a deployment.

    One sorted set per client under the deployment's prefix: job ids scored by admission time.

    Args:
        url: Redis URL (the store's).
        prefix: Key prefix (the store's).
        timeout_s: Socket connect and read timeout in seconds.
    """

    def __init__(self, url: str, prefix: str, timeout_s: float = 5.0) -> None:
        import redis

        from lrtune.server.store.keys import Keys

        self.keys = Keys(prefix)
        self._r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(f"redis is unreachable (job quota): {exc}") from exc

    def _add(self, client: str, job_id: str, now: float) -> int:
        key = self.keys.quota(client)
        with self._reachable(), self._r.pipeline() as pipe:  # MULTI/EXEC: the count includes this id, atomically
            pipe.zadd(key, {job_id: now})
            pipe.expire(key, QUOTA_KEY_TTL_S)
            pipe.zcard(key)
            return int(pipe.execute()[-1])

    def _entries(self, client: str) -> list[tuple[str, float]]:
        with self._reachable():
            raw: list[tuple[bytes, float]] = self._r.zrange(self.keys.quota(client), 0, -1, withscores=True)  # type: ignore[assignment]
        return [(member.decode(), float(at)) for member, at in raw]

    def _remove(self, client: str, job_ids: list[str]) -> None:
        with self._reachable():
            self._r.zrem(self.keys.quota(client), *job_ids)

    def _count(self, client: str) -> int:
        with self._reachable():
            return int(self._r.zcard(self.keys.quota(client)))

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()


def open_ledger(settings: Settings) -> JobLedger:
    """The job ledger for the store ``settings`` name (Redis, or process memory for the embedded store)."""
    if settings.redis_url:
        return RedisLedger(settings.redis_url, settings.redis_prefix)
    return MemoryLedger()


def stored_status(store: JobStore) -> Callable[[str], str | None]:
    """A ``status`` callback for :meth:`JobLedger.admit` that asks ``store``."""

    def status(job_id: str) -> str | None:
        try:
            return store.get_head(job_id).status
        except JobNotFoundError:
            return None

    return status


def job_gate(
    ledger: JobLedger,
    client: str,
    limit: int,
    store: JobStore,
    retry_after_s: int,
    clock: Callable[[], float] = time.time,
) -> Callable[[str], None]:
    """A callback that admits a new job id for ``client`` or raises :class:`TooManyJobsError`."""
    status = stored_status(store)

    def admit(job_id: str) -> None:
        if not ledger.admit(client, job_id, limit, status, clock()):
            raise TooManyJobsError(
                f"this client has {limit} running jobs, the most allowed (LRTUNE_MAX_JOBS_PER_CLIENT); "
                "finish or delete one, or retry later",
                detail={"limit": limit, "retry_after_s": retry_after_s},
            )

    return admit


def creation_gate(request: Request, runtime: Runtime) -> Callable[[str], None] | None:
    """The job-quota check of a ``POST /v1/jobs`` request, or None when no quota applies to it.

    The app's ledger is opened on first use and kept in ``app.state``.
    """
    settings = runtime.settings
    limit = settings.max_jobs_per_client
    if limit <= 0 or is_admin(request.headers.get("authorization"), settings):
        return None
    ledger: JobLedger | None = getattr(request.app.state, "job_ledger", None)
    if ledger is None:
        ledger = open_ledger(settings)
        request.app.state.job_ledger = ledger
    client = client_key(request.client.host if request.client else None)
    service = runtime.service
    return job_gate(ledger, client, limit, service.store, settings.jobs_retry_after_s, service.clock)
