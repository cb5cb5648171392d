"""In-memory job store: the embedded default of ``lrtune serve`` (one process, nothing to install).

Jobs are kept as the same encoded JSON documents the Redis store writes, which makes pass-by-value free and
keeps both backends honest about what survives a round trip. One lock guards the table; ``fn`` of
:meth:`MemoryStore.update` runs outside it, with the same optimistic retry as the Redis store. Jobs with an
``expires_at`` (deleted and finished ones, see the service's retention settings) are dropped by
:meth:`MemoryStore.expire`, which the service's janitor calls, so memory stays bounded by what is live.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lrtune.server.store.base import (
    MAX_RETRIES,
    HeadPage,
    JobExistsError,
    JobNotFoundError,
    JobStore,
    StoreBusyError,
    bump,
)
from lrtune.server.store.records import (
    JobHead,
    JobRecord,
    JobStatus,
    decode_head,
    decode_tuner,
    encode_head,
    encode_tuner,
)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Entry:
    head: bytes
    tuner: bytes
    version: int
    status: JobStatus
    order: tuple[float, str]
    expires_at: float | None = None

    @property
    def nbytes(self) -> int:
        return len(self.head) + len(self.tuner)


class MemoryStore(JobStore):
    """A process-local store; see :mod:`lrtune.server.store.base` for the contract."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Entry] = {}
        self._expiring: dict[str, float] = {}  # job id -> expires_at, for the jobs that have one
        self._id = f"memory-{uuid.uuid4().hex}"

    @property
    def store_id(self) -> str:
        """See :attr:`JobStore.store_id` (fresh for every in-memory store)."""
        return self._id

    def __len__(self) -> int:
        """Number of jobs held."""
        with self._lock:
            return len(self._jobs)

    @property
    def nbytes(self) -> int:
        """Bytes of the encoded documents held (heads and tuner states): what the jobs cost in memory."""
        with self._lock:
            return sum(e.nbytes for e in self._jobs.values())

    @staticmethod
    def _entry(record: JobRecord) -> _Entry:
        h = record.head
        return _Entry(
            encode_head(h), encode_tuner(record.tuner), h.version, h.status, (h.created_at, h.job_id), h.expires_at
        )

    def _put(self, job_id: str, entry: _Entry) -> None:
        """Store ``entry`` (the lock is held)."""
        self._jobs[job_id] = entry
        if entry.expires_at is None:
            self._expiring.pop(job_id, None)
        else:
            self._expiring[job_id] = entry.expires_at

    def _lookup(self, job_id: str) -> _Entry:
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return entry

    def create(self, record: JobRecord) -> None:
        """See :meth:`JobStore.create`."""
        entry = self._entry(record)
        with self._lock:
            if record.job_id in self._jobs:
                raise JobExistsError(f"a job with id {record.job_id!r} exists")
            self._put(record.job_id, entry)

    def get(self, job_id: str) -> JobRecord:
        """See :meth:`JobStore.get`."""
        entry = self._lookup(job_id)
        return JobRecord(decode_head(entry.head), decode_tuner(entry.tuner))

    def get_head(self, job_id: str) -> JobHead:
        """See :meth:`JobStore.get_head`."""
        return decode_head(self._lookup(job_id).head)

    def _swap(self, job_id: str, change: Callable[[_Entry], tuple[_Entry, R]]) -> R:
        """Optimistic read-modify-write: ``change`` builds the new entry outside the lock; retried on a race."""
        for _ in range(MAX_RETRIES):
            entry = self._lookup(job_id)
            new, out = change(entry)
            with self._lock:
                current = self._jobs.get(job_id)
                if current is None:
                    raise JobNotFoundError(f"no job with id {job_id!r}")
                if current.version != entry.version:
                    continue
                self._put(job_id, new)
            return out
        raise StoreBusyError(f"job {job_id!r} is being written by others; retry")

    def update(self, job_id: str, fn: Callable[[JobRecord], T], now: float) -> tuple[JobRecord, T]:
        """See :meth:`JobStore.update`."""

        def change(entry: _Entry) -> tuple[_Entry, tuple[JobRecord, T]]:
            record = JobRecord(decode_head(entry.head), decode_tuner(entry.tuner))
            out = fn(record)
            record.head.job_id = job_id
            record.head.version = entry.version
            bump(record, now)
            return self._entry(record), (record, out)  # a private copy: nothing stored refers to it

        return self._swap(job_id, change)

    def update_head(self, job_id: str, fn: Callable[[JobHead], T], now: float) -> tuple[JobHead, T]:
        """See :meth:`JobStore.update_head`."""

        def change(entry: _Entry) -> tuple[_Entry, tuple[JobHead, T]]:
            head = decode_head(entry.head)
            out = fn(head)
            head.job_id = job_id
            head.version = entry.version + 1
            head.updated_at = now
            new = _Entry(encode_head(head), entry.tuner, head.version, head.status, entry.order, head.expires_at)
            return new, (head, out)

        return self._swap(job_id, change)

    def delete(self, job_id: str) -> None:
        """See :meth:`JobStore.delete`."""
        with self._lock:
            self._expiring.pop(job_id, None)
            if self._jobs.pop(job_id, None) is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")

    def expire(self, now: float, limit: int = 1000) -> int:
        """See :meth:`JobStore.expire`."""
        with self._lock:
            due = [job_id for job_id, at in self._expiring.items() if at <= now][: max(limit, 0)]
            for job_id in due:
                del self._expiring[job_id]
                self._jobs.pop(job_id, None)
        return len(due)

    def list_heads(
        self, offset: int = 0, limit: int = 100, status: JobStatus | None = None, newest_first: bool = False
    ) -> HeadPage:
        """See :meth:`JobStore.list_heads`."""
        with self._lock:
            entries = [e for e in self._jobs.values() if status is None or e.status == status]
        entries.sort(key=lambda e: e.order, reverse=newest_first)
        page = entries[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        return HeadPage([decode_head(e.head) for e in page], len(entries))

    def count(self, status: JobStatus) -> int:
        """See :meth:`JobStore.count`."""
        with self._lock:
            return sum(1 for e in self._jobs.values() if e.status == status)

    def ping(self) -> None:
        """See :meth:`JobStore.ping` (always answers)."""
