"""Redis job store: the production backend; several service processes can share one Redis.

Each job is one hash (see :mod:`lrtune.server.store.keys`) holding the encoded head and tuner state and a version
counter. Every read-modify-write runs under ``WATCH`` on the job's key and commits with ``MULTI``/``EXEC``;
a write by anyone else in between aborts the transaction and the update is retried on fresh data. Listing
uses sorted sets scored by creation time, one for all jobs and one per status.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from lrtune.server.store import keys
from lrtune.server.store.base import (
    MAX_RETRIES,
    HeadPage,
    JobExistsError,
    JobNotFoundError,
    JobStore,
    StoreBusyError,
    StoreUnavailableError,
    bump,
)
from lrtune.server.store.records import (
    JOB_STATUSES,
    JobHead,
    JobRecord,
    JobStatus,
    decode_head,
    decode_tuner,
    encode_head,
    encode_tuner,
)

T = TypeVar("T")
_STATUSES: tuple[JobStatus, ...] = JOB_STATUSES
#: Seconds past ``expires_at`` at which Redis itself deletes a job's hash, should no service drop it first.
EXPIRY_SLACK_S = 3600


@contextmanager
def _reachable(url_hint: str) -> Iterator[None]:
    """Turn connection failures into :class:`StoreUnavailableError`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnavailableError(f"redis at {url_hint} is unreachable: {exc}") from exc


class RedisStore(JobStore):
    """A store on Redis; see :mod:`lrtune.server.store.base` for the contract.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS).
        prefix: Key prefix, see :class:`lrtune.server.store.keys.Keys`.
        timeout_s: Socket connect and read timeout in seconds.
        client: An existing client to use instead of connecting to ``url`` (tests).
    """

    def __init__(
        self, url: str, prefix: str = "lrtune", timeout_s: float = 5.0, client: redis.Redis | None = None
    ) -> None:
        self.keys = keys.Keys(prefix)
        self._store_id: str | None = None
        self._hint = _redact(url)
        self._r: redis.Redis = client or redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )

    def create(self, record: JobRecord) -> None:
        """See :meth:`JobStore.create`."""
        h = record.head
        key = self.keys.job(h.job_id)
        with _reachable(self._hint), self._r.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                if pipe.exists(key):
                    raise JobExistsError(f"a job with id {h.job_id!r} exists")
                pipe.multi()
                pipe.hset(key, mapping=self._fields(record))
                pipe.zadd(self.keys.jobs(), {h.job_id: h.created_at})
                pipe.zadd(self.keys.status(h.status), {h.job_id: h.created_at})
                self._retention(pipe, key, h)
                pipe.execute()
            except WatchError as exc:
                raise JobExistsError(f"a job with id {h.job_id!r} was created concurrently") from exc

    def get(self, job_id: str) -> JobRecord:
        """See :meth:`JobStore.get`."""
        with _reachable(self._hint):
            head, tuner = self._r.hmget(self.keys.job(job_id), [keys.HEAD, keys.TUNER])
        if head is None or tuner is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return JobRecord(decode_head(head), decode_tuner(tuner))

    def get_head(self, job_id: str) -> JobHead:
        """See :meth:`JobStore.get_head`."""
        with _reachable(self._hint):
            head = self._r.hget(self.keys.job(job_id), keys.HEAD)
        if head is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return decode_head(head)

    def update(self, job_id: str, fn: Callable[[JobRecord], T], now: float) -> tuple[JobRecord, T]:
        """See :meth:`JobStore.update`."""
        key = self.keys.job(job_id)
        with _reachable(self._hint), self._r.pipeline() as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    head_raw, tuner_raw, version = pipe.hmget(key, [keys.HEAD, keys.TUNER, keys.VERSION])
                    if head_raw is None or tuner_raw is None:
                        raise JobNotFoundError(f"no job with id {job_id!r}")
                    record = JobRecord(decode_head(head_raw), decode_tuner(tuner_raw))
                    before = record.head.status
                    out = fn(record)
                    record.head.job_id = job_id
                    record.head.version = int(version or 0)
                    bump(record, now)
                    pipe.multi()
                    pipe.hset(key, mapping=self._fields(record))
                    if record.head.status != before:
                        pipe.zrem(self.keys.status(before), job_id)
                        pipe.zadd(self.keys.status(record.head.status), {job_id: record.head.created_at})
                        self._retention(pipe, key, record.head)  # retention follows status changes only
                    pipe.execute()
                except WatchError:
                    continue
                return record, out
        raise StoreBusyError(f"job {job_id!r} is being written by others; retry")

    def update_head(self, job_id: str, fn: Callable[[JobHead], T], now: float) -> tuple[JobHead, T]:
        """See :meth:`JobStore.update_head`."""
        key = self.keys.job(job_id)
        with _reachable(self._hint), self._r.pipeline() as pipe:
            for _ in range(MAX_RETRIES):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    head_raw, version = pipe.hmget(key, [keys.HEAD, keys.VERSION])
                    if head_raw is None:
                        raise JobNotFoundError(f"no job with id {job_id!r}")
                    head = decode_head(head_raw)
                    before = head.status
                    out = fn(head)
                    head.job_id = job_id
                    head.version = int(version or 0) + 1
                    head.updated_at = now
                    pipe.multi()
                    pipe.hset(key, mapping={keys.HEAD: encode_head(head), keys.VERSION: head.version})
                    if head.status != before:
                        pipe.zrem(self.keys.status(before), job_id)
                        pipe.zadd(self.keys.status(head.status), {job_id: head.created_at})
                        self._retention(pipe, key, head)
                    pipe.execute()
                except WatchError:
                    continue
                return head, out
        raise StoreBusyError(f"job {job_id!r} is being written by others; retry")

    def delete(self, job_id: str) -> None:
        """See :meth:`JobStore.delete`."""
        key = self.keys.job(job_id)
        with _reachable(self._hint), self._r.pipeline() as pipe:
            pipe.multi()
            pipe.delete(key)
            self._unindex(pipe, job_id)
            removed = pipe.execute()[0]
        if not removed:
            raise JobNotFoundError(f"no job with id {job_id!r}")

    def expire(self, now: float, limit: int = 1000) -> int:
        """See :meth:`JobStore.expire` (an expired job leaves no key and no index entry behind)."""
        with _reachable(self._hint):
            due = cast(list[bytes], self._r.zrangebyscore(self.keys.expiry(), "-inf", now, start=0, num=max(limit, 0)))
            if not due:
                return 0
            with self._r.pipeline() as pipe:
                pipe.multi()
                for raw in due:
                    job_id = raw.decode()
                    pipe.delete(self.keys.job(job_id))
                    self._unindex(pipe, job_id)
                pipe.execute()
        return len(due)

    @property
    def store_id(self) -> str:
        """See :attr:`JobStore.store_id`: kept in Redis, so every process on this prefix has the same one."""
        if self._store_id is None:
            with _reachable(self._hint):
                self._r.set(self.keys.store_id(), f"redis-{uuid.uuid4().hex}", nx=True)
                raw = self._r.get(self.keys.store_id())
            self._store_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        return self._store_id

    def _unindex(self, pipe: Any, job_id: str) -> None:
        """Queue the removal of ``job_id`` from every index."""
        pipe.zrem(self.keys.jobs(), job_id)
        for status in _STATUSES:
            pipe.zrem(self.keys.status(status), job_id)
        pipe.zrem(self.keys.expiry(), job_id)

    def _retention(self, pipe: Any, key: str, head: JobHead) -> None:
        """Queue the expiry bookkeeping of a write: the expiry index, and a key TTL as a safety net."""
        if head.expires_at is None:
            pipe.zrem(self.keys.expiry(), head.job_id)
            pipe.persist(key)
        else:
            pipe.zadd(self.keys.expiry(), {head.job_id: head.expires_at})
            pipe.expireat(key, int(head.expires_at) + EXPIRY_SLACK_S)

    def list_heads(
        self, offset: int = 0, limit: int = 100, status: JobStatus | None = None, newest_first: bool = False
    ) -> HeadPage:
        """See :meth:`JobStore.list_heads` (members with equal scores are ordered by id, as the contract wants)."""
        index = self.keys.jobs() if status is None else self.keys.status(status)
        offset, limit = max(offset, 0), max(limit, 0)
        with _reachable(self._hint):
            total = int(self._r.zcard(index))
            stop = offset + limit - 1
            ids = cast(list[bytes], self._r.zrange(index, offset, stop, desc=newest_first)) if limit else []
            if not ids:
                return HeadPage([], total)
            with self._r.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(self.keys.job(job_id.decode()), keys.HEAD)
                raws = pipe.execute()
        return HeadPage([decode_head(raw) for raw in raws if raw is not None], total)

    def count(self, status: JobStatus) -> int:
        """See :meth:`JobStore.count`."""
        with _reachable(self._hint):
            return int(self._r.zcard(self.keys.status(status)))

    def ping(self) -> None:
        """See :meth:`JobStore.ping`."""
        with _reachable(self._hint):
            self._r.ping()

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()

    def purge(self) -> int:
        """Delete every key under this store's prefix; return how many (tests and maintenance only)."""
        with _reachable(self._hint):
            found = list(self._r.scan_iter(match=self.keys.pattern(), count=500))
            return int(self._r.delete(*found)) if found else 0

    @staticmethod
    def _fields(record: JobRecord) -> dict[Any, Any]:
        return {
            keys.HEAD: encode_head(record.head),
            keys.TUNER: encode_tuner(record.tuner),
            keys.VERSION: record.head.version,
        }


def _redact(url: str) -> str:
    """Drop credentials from a Redis URL before it appears in a message."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
