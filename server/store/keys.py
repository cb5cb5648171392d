"""Every Redis key the service uses, built in this one place.

Layout, for a prefix ``P`` (``LRTUNE_REDIS_PREFIX``, default ``lrtune``)::

    P:job:{job_id}      hash   head -> JSON head, tuner -> JSON tuner state, version -> int
    P:jobs              zset   job_id scored by created_at (listing order)
    P:status:{status}   set    job ids with that status (counts and filtered listings)
    P:quota:{client}    zset   ids of the jobs a client created that may still be running, by admission time
    P:expiry            zset   ids of jobs that will be dropped, scored by when (``head.expires_at``)
    P:store_id          string a random id of this store, made by the first process that opened it
    P:ratelimit:...     the request rate limit's moving windows, one per client (kept by the ``limits``
                        library, which builds the rest of the key: :meth:`Keys.rate_limit` is its prefix)
"""

from __future__ import annotations

from dataclasses import dataclass

#: Hash fields of a job key.
HEAD = "head"
TUNER = "tuner"
VERSION = "version"


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix.

    Args:
        prefix: Namespace of every key; several deployments (or tests) can share one Redis database with
            different prefixes.
    """

    prefix: str = "lrtune"

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"redis prefix must be non-empty without spaces, got {self.prefix!r}")

    def job(self, job_id: str) -> str:
        """Hash holding one job."""
        return f"{self.prefix}:job:{job_id}"

    def jobs(self) -> str:
        """Sorted set of every job id, scored by creation time."""
        return f"{self.prefix}:jobs"

    def status(self, status: str) -> str:
        """Set of the ids of jobs with ``status``."""
        return f"{self.prefix}:status:{status}"

    def quota(self, client: str) -> str:
        """Sorted set of the ids of jobs created by ``client`` (an opaque hash) that may still be running."""
        return f"{self.prefix}:quota:{client}"

    def expiry(self) -> str:
        """Sorted set of the ids of jobs to drop, scored by the Unix time they expire."""
        return f"{self.prefix}:expiry"

    def store_id(self) -> str:
        """String holding the store's random id (the same for every process sharing this prefix)."""
        return f"{self.prefix}:store_id"

    def rate_limit(self) -> str:
        """Prefix of the request rate limit's keys (the ``limits`` library appends the rest)."""
        return f"{self.prefix}:ratelimit"

    def pattern(self) -> str:
        """Glob matching every key under the prefix (for cleanup tools and tests)."""
        return f"{self.prefix}:*"
