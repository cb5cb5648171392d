"""The job store: the one abstraction every storage backend implements.

Invariants every backend keeps (``tests/server/test_store_contract.py`` checks each of them on each backend):

* **Atomic read-modify-write per job.** :meth:`JobStore.update` (and :meth:`JobStore.update_head`) reads a
  job, calls ``fn`` on a private copy, and writes the result only if no other writer (thread or process)
  wrote the job in between; otherwise it re-reads and calls ``fn`` again (optimistic concurrency), so ``fn``
  must be a pure function of the record it is given. Every write bumps ``head.version`` by one and sets
  ``head.updated_at``.
* **Pass-by-value.** Every record handed out or taken in is a copy: mutating it changes nothing stored, and a
  later write does not change a record already handed out.
* **Persisted state is data.** Records hold the tuner's ``dump()`` (observations), never fitted models, and
  are encoded as versioned JSON (:mod:`lrtune.server.store.records`).
* **Listing order.** :meth:`JobStore.list_heads` returns jobs oldest first (by ``created_at``, then id), or in
  exactly the reverse order with ``newest_first``.
* **Retention.** A job whose ``head.expires_at`` has passed is dropped by :meth:`JobStore.expire` as if
  :meth:`JobStore.delete` had been called (the Redis backend also sets a key TTL a little later, so the data goes
  even when no service runs); until then it reads as usual.
* **Identity.** :attr:`JobStore.store_id` names the store instance: the same for every process sharing one
  Redis prefix, a fresh one for each in-memory store. The service sends it with every answer, so a client can
  tell "this store never held my job" (a restarted embedded service) from "my job was deleted".

Errors: :class:`JobNotFoundError` for an unknown id, :class:`JobExistsError` when creating an id that exists,
:class:`StoreBusyError` when ``update`` keeps losing races, :class:`StoreUnavailableError` when the backend cannot be
reached, :class:`~lrtune.server.store.records.RecordDecodeError` for a stored document this code cannot read. An
exception raised by ``fn`` propagates unchanged and nothing is written.

Methods are synchronous and thread-safe: the service calls them from worker threads, never from the event
loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lrtune.server.store.records import JobHead, JobRecord, JobStatus

T = TypeVar("T")

#: How many times :meth:`JobStore.update` retries after losing a race before giving up with StoreBusyError.
MAX_RETRIES = 64


class StoreError(Exception):
    """Root of the errors a store raises on purpose."""

    code = "store_error"


class JobNotFoundError(StoreError, LookupError):
    """No job has this id."""

    code = "job_not_found"


class JobExistsError(StoreError, ValueError):
    """A job with this id exists already."""

    code = "job_exists"


class StoreBusyError(StoreError):
    """An update lost the race for a job too many times in a row."""

    code = "store_busy"


class StoreUnavailableError(StoreError, ConnectionError):
    """The backend cannot be reached."""

    code = "store_unavailable"


@dataclass(frozen=True)
class HeadPage:
    """One page of a listing.

    Attributes:
        heads: The jobs on this page, in the listing's order.
        total: Number of jobs matching the listing's filter, over all pages.
    """

    heads: list[JobHead]
    total: int


class JobStore(ABC):
    """Where jobs live. See the module docstring for the invariants."""

    @abstractmethod
    def create(self, record: JobRecord) -> None:
        """Store a new job; its ``head.version`` is stored as given (1 for a new job).

        Raises:
            JobExistsError: A job with this id exists.
        """

    @abstractmethod
    def get(self, job_id: str) -> JobRecord:
        """Return a copy of a whole job.

        Raises:
            JobNotFoundError: Unknown id.
        """

    @abstractmethod
    def get_head(self, job_id: str) -> JobHead:
        """Return a copy of a job's head only (cheap: no tuner state is decoded).

        Raises:
            JobNotFoundError: Unknown id.
        """

    @abstractmethod
    def update(self, job_id: str, fn: Callable[[JobRecord], T], now: float) -> tuple[JobRecord, T]:
        """Atomically apply ``fn`` to a job.

        Args:
            job_id: The job.
            fn: Called with a private copy of the record; it mutates it in place and returns any value. It may
                be called more than once (after a lost race) and must not have other side effects.
            now: Unix time in seconds stored as ``head.updated_at``.

        Returns:
            A copy of the record as written, and what the successful call of ``fn`` returned.

        Raises:
            JobNotFoundError: Unknown id.
            StoreBusyError: Lost the race ``MAX_RETRIES`` times.
        """

    @abstractmethod
    def update_head(self, job_id: str, fn: Callable[[JobHead], T], now: float) -> tuple[JobHead, T]:
        """Atomically apply ``fn`` to a job's head only, leaving its tuner state untouched (cheap).

        Same contract as :meth:`update`: ``fn`` gets a private copy, may run more than once, and the write
        bumps the version; it conflicts with concurrent :meth:`update` calls on the same job like any write.

        Raises:
            JobNotFoundError: Unknown id.
            StoreBusyError: Lost the race ``MAX_RETRIES`` times.
        """

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove a job and everything stored for it.

        Raises:
            JobNotFoundError: Unknown id.
        """

    @abstractmethod
    def list_heads(
        self, offset: int = 0, limit: int = 100, status: JobStatus | None = None, newest_first: bool = False
    ) -> HeadPage:
        """Return a page of job heads, oldest first, optionally only those with ``status``.

        Args:
            offset: Jobs to skip, in the listing's order.
            limit: Most jobs to return.
            status: Only jobs with this status; None for all.
            newest_first: Reverse the order: newest first (by ``created_at``, then id, both descending).
        """

    @abstractmethod
    def count(self, status: JobStatus) -> int:
        """Return the number of jobs with this status."""

    @abstractmethod
    def expire(self, now: float, limit: int = 1000) -> int:
        """Drop up to ``limit`` jobs whose ``head.expires_at`` is at or before ``now``; return how many."""

    @property
    @abstractmethod
    def store_id(self) -> str:
        """A random id of this store instance (see the module docstring)."""

    @abstractmethod
    def ping(self) -> None:
        """Check that the backend answers.

        Raises:
            StoreUnavailableError: It does not.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""


def bump(record: JobRecord, now: float) -> None:
    """Advance a record's version and update time (what every backend does on a successful write)."""
    record.head.version += 1
    record.head.updated_at = now
