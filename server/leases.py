"""Leases on a job's open segment: who may run it, and fencing of stale workers.

Rules (all times are Unix seconds):

* A poll by the holder of a live lease renews it (same epoch, new expiry).
* A poll when there is no lease, or the lease has lapsed, grants a new lease to the poller with the next
  epoch (``last_epoch + 1``); taking over a lapsed lease counts as a lease expiry.
* A poll by anyone else while the lease is live is refused (:class:`~lrtune.server.errors.SegmentLeasedError`).
* A report must come from the lease holder and carry the lease's epoch, else it is refused
  (:class:`~lrtune.server.errors.StaleLeaseError`) and nothing changes. A lapsed lease that nobody took over still
  lets its holder report: lapse only matters once another worker asks for the segment.
* An accepted report leases the next segment to the reporter with the same epoch, so a repeated identical
  report passes the same check and gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from lrtune.server.errors import SegmentLeasedError, StaleLeaseError
from lrtune.server.store.records import JobHead, Lease


@dataclass(frozen=True)
class Grant:
    """Outcome of a poll.

    Attributes:
        lease: The lease now held by the poller.
        took_over_lapsed: The segment was leased to someone whose lease had lapsed.
    """

    lease: Lease
    took_over_lapsed: bool


def acquire(head: JobHead, worker_id: str, now: float, ttl_s: float) -> Grant:
    """Grant or renew the lease for a poll, updating ``head`` in place.

    Raises:
        SegmentLeasedError: Another worker holds a live lease.
    """
    held = head.lease
    if held is not None and held.expires_at > now:
        if held.worker_id != worker_id:
            wait_s = held.expires_at - now
            raise SegmentLeasedError(
                f"the open segment is leased to another worker for {wait_s:.1f} more seconds; poll again then",
                detail={"lease_epoch": held.epoch, "expires_in_s": round(wait_s, 3)},
            )
        lease = Lease(worker_id, held.epoch, now + ttl_s)
        head.lease = lease
        return Grant(lease, False)
    epoch = max(head.last_epoch, held.epoch if held else 0) + 1
    lease = Lease(worker_id, epoch, now + ttl_s)
    head.lease = lease
    head.last_epoch = epoch
    return Grant(lease, held is not None)


def check_report(head: JobHead, worker_id: str, epoch: int) -> Lease:
    """Return the lease a report runs under.

    Raises:
        StaleLeaseError: No lease, another holder, or another epoch.
    """
    held = head.lease
    if held is None:
        raise StaleLeaseError("the open segment is not leased; poll for it before reporting")
    if held.worker_id != worker_id or held.epoch != epoch:
        raise StaleLeaseError(
            f"lease epoch {epoch} of worker {worker_id!r} is not the current lease (epoch {held.epoch}); "
            "the segment was handed to another worker: poll again and run what it returns",
            detail={"lease_epoch": held.epoch},
        )
    return held


def renew(head: JobHead, lease: Lease, now: float, ttl_s: float) -> Lease:
    """Extend ``lease`` (kept by its holder for the next segment) and store it in ``head``."""
    renewed = Lease(lease.worker_id, lease.epoch, now + ttl_s)
    head.lease = renewed
    return renewed
