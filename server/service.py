"""What the routes do: each operation loads a job, applies the tuner, and saves it atomically.

Every method here is synchronous and may take tens of milliseconds of CPU (GP fits): routes run them in a
worker thread, never on the event loop. Authorization is checked inside the same read-modify-write as the
change it guards, so a job costs one store round trip per request.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from lrtune.client.protocol import JobCreate, JobInfo, WireReport, WireSegment
from lrtune.server import leases
from lrtune.server.errors import ForbiddenError, JobDeletedError
from lrtune.server.store import JobHead, JobNotFoundError, JobRecord, JobStatus, JobStore
from lrtune.tuner import Tuner, TunerConfig

log = logging.getLogger("lrtune.server")

#: What a job listing can be sorted by (``GET /v1/jobs?sort=``): ``created`` is the store's own order, the
#: others scan every matching job's head, keeping only the ``offset + limit`` best in memory.
SortKey = Literal["created", "updated", "name", "status", "phase", "progress", "lr", "explore", "loss"]
#: Heads read from the store per page while a sorted or filtered listing scans the jobs.
SCAN_BATCH = 1000


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (what the store keeps)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_job_id() -> str:
    """A fresh random job id (16 lowercase hex characters)."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Credential:
    """The bearer token a request carries.

    Attributes:
        token: The token as sent.
        admin: True when it equals the configured admin key (checked in constant time by the caller).
    """

    token: str
    admin: bool = False

    def opens(self, head: JobHead) -> bool:
        """Tell whether this credential may read and write the job of ``head``."""
        return self.admin or hmac.compare_digest(hash_token(self.token), head.token_sha256)


@dataclass(frozen=True)
class ReportOutcome:
    """What a report did.

    Attributes:
        segment: The next segment, leased to the reporter.
        suggest_s: Seconds the BO suggestion for the next segment took (0 when none ran).
    """

    segment: WireSegment
    suggest_s: float


@dataclass(frozen=True)
class PollOutcome:
    """What a poll did.

    Attributes:
        segment: The open segment, leased to the poller.
        took_over_lapsed: The poller took over a lease that had lapsed.
    """

    segment: WireSegment
    took_over_lapsed: bool


def _finite_any(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_any(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_any(v) for v in obj]
    return obj


def _finite(doc: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats by None, recursively (JSON has no NaN)."""
    return {k: _finite_any(v) for k, v in doc.items()}


@dataclass(frozen=True)
class SweepOutcome:
    """What one janitor pass did.

    Attributes:
        stalled: Running jobs marked ``stalled`` (no poll or report for ``stall_after_s``).
        expired: Deleted or finished jobs dropped from the store after their retention.
    """

    stalled: int
    expired: int


class JobService:
    """Job operations over a store.

    Args:
        store: Where jobs live.
        lease_ttl_s: Seconds a lease holds unless renewed.
        clock: Returns the current Unix time in seconds (tests inject a fake one).
        stall_after_s: Seconds without a poll or report after which :meth:`sweep` marks a running job
            ``stalled`` (None: three lease TTLs).
        deleted_retention_s: Seconds a deleted job is kept before the store drops it (0: forever).
        done_retention_s: Seconds a finished job is kept after its last report (0: forever).
    """

    def __init__(
        self,
        store: JobStore,
        lease_ttl_s: float,
        clock: Callable[[], float] = time.time,
        *,
        stall_after_s: float | None = None,
        deleted_retention_s: float = 300.0,
        done_retention_s: float = 7 * 86_400.0,
    ) -> None:
        self.store = store
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self.stall_after_s = 3 * lease_ttl_s if stall_after_s is None else stall_after_s
        self.deleted_retention_s = deleted_retention_s
        self.done_retention_s = done_retention_s

    def _expiry(self, status: str, now: float) -> float | None:
        """When a job with ``status`` should be dropped (None: kept)."""
        retention = {"deleted": self.deleted_retention_s, "done": self.done_retention_s}.get(status, 0.0)
        return now + retention if retention > 0 else None

    # ------------------------------------------------------------------ jobs

    def create(self, body: JobCreate, admit: Callable[[str], None] | None = None) -> tuple[str, JobInfo]:
        """Create a job; return its token (shown once) and its info.

        Args:
            body: What the job asks for.
            admit: Called with the new job's id once its config is known to be valid, before anything is stored;
                it raises to refuse the job (the job quota).

        Raises:
            InvalidConfigError: The config is rejected by the tuner.
            TooManyJobsError: ``admit`` refused the job.
        """
        config = body.config
        tuner = Tuner(config)
        job_id = new_job_id()
        if admit is not None:
            admit(job_id)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        head = JobHead(
            job_id=job_id,
            name=body.name,
            token_sha256=hash_token(token),
            status="done" if tuner.done else "running",
            created_at=now,
            updated_at=now,
            config=config.to_dict(),
            summary=tuner.summary(),
            open_segment=tuner.next_segment().to_dict(),
        )
        head.expires_at = self._expiry(head.status, now)
        self.store.create(JobRecord(head, tuner.dump()))
        log.info(
            "job %s created: name=%r, preset=%s, total_steps=%d, lr in [%g, %g]",
            job_id,
            (body.name or "")[:80],
            config.preset,
            config.total_steps,
            config.min_lr,
            config.max_lr,
        )
        return token, job_info(head)

    def info(self, job_id: str, cred: Credential) -> JobInfo:
        """Return a job's info."""
        return job_info(self._head(job_id, cred))

    def list(
        self,
        offset: int,
        limit: int,
        status: JobStatus | None,
        sort: SortKey = "created",
        descending: bool = False,
        name_contains: str | None = None,
    ) -> tuple[list[JobInfo], int]:
        """Return a page of jobs and the number of jobs that match.

        Args:
            offset: Jobs to skip.
            limit: Most jobs to return.
            status: Only jobs with this status; None for all.
            sort: Sort key. ``created`` pages through the store's index; any other key (or a name filter)
                scans every matching head in pages of :data:`SCAN_BATCH`, keeping only the ``offset + limit``
                first in memory, so it works at any number of jobs (in time linear in their number). Jobs
                without a value (no LR, no loss yet) come last in either direction; ties keep creation order.
            descending: Largest first (newest first for ``created``).
            name_contains: Only jobs whose name contains this (case-insensitive), or whose id starts with it.
        """
        if sort == "created" and not name_contains:
            page = self.store.list_heads(offset, limit, status, newest_first=descending)
            return [job_info(h) for h in page.heads], page.total
        needle = name_contains.casefold() if name_contains else None
        matched = 0

        def matching() -> Iterator[tuple[tuple[Any, ...], JobInfo]]:
            nonlocal matched
            for head in _scan(self.store, status, descending):
                info = job_info(head)
                if (
                    needle is not None
                    and needle not in (info.name or "").casefold()
                    and not info.job_id.startswith(needle)
                ):
                    continue
                position = matched
                matched += 1
                value = position if sort == "created" else _sort_value(info, sort)
                if value is None:
                    yield (1, 0, position), info
                else:
                    yield (0, _Desc(value) if descending and sort != "created" else value, position), info

        best = heapq.nsmallest(offset + limit, matching(), key=lambda pair: pair[0])
        return [info for _, info in best[offset:]], matched

    def delete(self, job_id: str, cred: Credential) -> JobInfo:
        """Mark a job deleted: it takes no more polls or reports; its schedule stays readable until it expires.

        Deleting a deleted job changes nothing.
        """
        now = self.clock()

        def fn(head: JobHead) -> None:
            authorize(head, cred)
            if head.status != "deleted":
                head.status = "deleted"
                head.expires_at = self._expiry("deleted", now)
            head.lease = None

        head, _ = self.store.update_head(job_id, fn, now)
        return job_info(head)

    def purge(self, job_id: str, cred: Credential) -> None:
        """Remove a job and all its data."""
        self._head(job_id, cred)
        self.store.delete(job_id)

    # ------------------------------------------------------------------ segments

    def poll(self, job_id: str, worker_id: str, cred: Credential) -> PollOutcome:
        """Lease the open segment to ``worker_id`` and return it.

        Raises:
            SegmentLeasedError: Another worker holds a live lease.
            JobDeletedError: The job was deleted.
        """
        now = self.clock()

        def fn(head: JobHead) -> PollOutcome:
            authorize(head, cred)
            _require_live(head)
            _revive(head)
            open_seg = head.open_segment
            if open_seg.get("done"):
                return PollOutcome(_wire(job_id, open_seg, head, now), False)
            grant = leases.acquire(head, worker_id, now, self.lease_ttl_s)
            return PollOutcome(_wire(job_id, open_seg, head, now), grant.took_over_lapsed)

        _, out = self.store.update_head(job_id, fn, now)
        return out

    def report(
        self, job_id: str, segment_id: int, body: WireReport | Callable[[], WireReport], cred: Credential
    ) -> ReportOutcome:
        """Apply a segment's losses and return the next segment, leased to the reporter.

        Args:
            job_id: The job.
            segment_id: The segment the losses are of.
            body: The report, or a function that parses it: called once, only after the credential opened the
                job (so that nobody but the job's owner makes the service parse a large body).
            cred: The request's credential.

        Raises:
            StaleLeaseError: The reporter does not hold the current lease (nothing is applied).
            JobDeletedError: The job was deleted.
            UnknownSegmentError, ConflictingReportError, InvalidReportError: From the tuner.
        """
        now = self.clock()
        parsed: list[WireReport] = [body] if isinstance(body, WireReport) else []
        # (tuner, stage that ended or None, the summary when the report finished the job): for the log
        ended: list[tuple[Tuner, Any, dict[str, Any] | None]] = []

        def fn(rec: JobRecord) -> ReportOutcome:
            head = authorize(rec.head, cred)
            _require_live(head)
            if not parsed:
                assert callable(body)
                parsed.append(body())
            report = parsed[0]
            lease = leases.check_report(head, report.worker_id, report.lease_epoch)
            tuner = Tuner.recover(rec.tuner, copy=False)  # rec is this call's private, freshly decoded copy
            stage_before, was_done = head.summary.get("stage"), head.status == "done"
            nxt = tuner.report(segment_id, report.losses, report.val_losses, report.offline)
            rec.tuner = tuner.dump(copy=False)
            head.summary = tuner.summary()
            head.open_segment = segment = nxt.to_dict()
            status: JobStatus = "done" if tuner.done else "running"
            if status != head.status:  # a repeated report changes nothing, its retention included
                head.status = status
                head.expires_at = self._expiry(status, now)
            leases.renew(head, lease, now, self.lease_ttl_s)
            stage_ended = stage_before if stage_before is not None and head.summary["stage"] != stage_before else None
            ended[:] = [(tuner, stage_ended, head.summary if status == "done" and not was_done else None)]
            return ReportOutcome(_wire(job_id, segment, head, now), tuner.last_suggest_s)

        _, out = self.store.update(job_id, fn, now)
        tuner, stage_ended, finished = ended[0]
        if stage_ended is not None or finished is not None:
            _log_progress(job_id, tuner, stage_ended, finished)
        return out

    def open_segment(self, job_id: str, cred: Credential) -> dict[str, Any]:
        """Return a job's open segment (``Segment.to_dict()``), from its head (cheap)."""
        return dict(self._head(job_id, cred).open_segment)

    # ------------------------------------------------------------------ housekeeping

    def sweep(self, now: float | None = None) -> SweepOutcome:
        """One janitor pass: mark idle running jobs ``stalled``, drop deleted and finished jobs past retention.

        Safe to run in several processes at once: each change is a conditional read-modify-write.
        """
        now = self.clock() if now is None else now
        cutoff = now - self.stall_after_s
        idle = [h.job_id for h in _scan(self.store, "running", False) if h.updated_at < cutoff]

        def stall(head: JobHead) -> bool:
            if head.status != "running" or head.updated_at >= cutoff:
                return False  # a worker came back meanwhile
            head.status = "stalled"
            return True

        stalled = 0
        for job_id in idle:
            try:
                _, changed = self.store.update_head(job_id, stall, now)
            except JobNotFoundError:
                continue
            stalled += int(changed)
        expired = 0
        while (n := self.store.expire(now)) > 0:
            expired += n
        return SweepOutcome(stalled, expired)

    # ------------------------------------------------------------------ reading

    def tuner(self, job_id: str, cred: Credential) -> Tuner:
        """Return a job's tuner, rebuilt from its stored state (for read-only views)."""
        rec = self.store.get(job_id)
        authorize(rec.head, cred)
        return Tuner.recover(rec.tuner, copy=False)

    def schedule(self, job_id: str, cred: Credential) -> dict[str, Any]:
        """Return ``Tuner.schedule()`` with the job id."""
        out = self.tuner(job_id, cred).schedule()
        out["job_id"] = job_id
        return _finite(out)

    def export(self, job_id: str, cred: Credential) -> dict[str, Any]:
        """Return ``Tuner.export()`` (the LambdaLR replay form) with the job id."""
        out = self.tuner(job_id, cred).export()
        out["job_id"] = job_id
        return _finite(out)

    def posterior(self, job_id: str, stage: int | None, points: int, cred: Credential) -> dict[str, Any] | None:
        """Return the GP posterior over log10-LR of a stage, or None when it has no observations."""
        out = self.tuner(job_id, cred).posterior(stage, points)
        return None if out is None else _finite(out)

    def _head(self, job_id: str, cred: Credential) -> JobHead:
        return authorize(self.store.get_head(job_id), cred)


def _log_progress(job_id: str, tuner: Tuner, stage: Any, summary: dict[str, Any] | None) -> None:
    """Log the stage a report ended (its winner LR, and the plan on the plan preset) and the job's end.

    Args:
        job_id: The job.
        tuner: Its tuner after the report.
        stage: Index of the stage the report ended, or None.
        summary: The job's summary (``Tuner.summary()``) when the report finished the job, else None.
    """
    if stage is not None:
        outcome = tuner.stage_outcome(int(stage))
        winner, plan = outcome["winner_lr"], outcome["plan"]
        chosen = ""
        if plan is not None:
            final = plan["final_loss"]
            chosen = (
                f"; plan from step {plan['start']} to {plan['end']}: LR {plan['lr_start']:.4g} -> "
                f"{plan['lr_end']:.4g}, predicted final loss {'?' if final is None else format(final, '.4g')}"
            )
        lr = "none" if winner is None else format(winner, ".4g")
        log.info("job %s stage %s decided: winner LR %s at step %d%s", job_id, stage, lr, outcome["step"], chosen)
    if summary is not None:
        last = summary.get("last_loss")
        log.info(
            "job %s finished: %d steps, exploration share %.0f%%, last loss %s",
            job_id,
            summary["steps_used"],
            100 * summary["explore_share"],
            "none" if last is None else format(last, ".4g"),
        )


def _sort_value(info: JobInfo, key: SortKey) -> Any:
    """The value of ``info`` that ``key`` sorts by, or None when it has none."""
    if key == "updated":
        return info.updated_at
    if key == "name":
        return None if info.name is None else info.name.casefold()
    if key == "status":
        return info.status
    if key == "phase":
        return info.phase
    if key == "progress":
        return info.steps_used / info.total_steps if info.total_steps else 0.0
    if key == "lr":
        return info.lr
    if key == "explore":
        return info.explore_share
    if key == "loss":
        return info.last_loss
    return info.created_at


@functools.total_ordering
class _Desc:
    """A sort value compared in reverse (descending listings of values that cannot be negated, like names)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.value < self.value)

    __hash__ = None  # type: ignore[assignment]


def _scan(store: JobStore, status: JobStatus | None, newest_first: bool) -> Iterator[JobHead]:
    """Every head with ``status``, page by page (a job created meanwhile may be missed or seen twice)."""
    offset = 0
    while True:
        page = store.list_heads(offset, SCAN_BATCH, status, newest_first=newest_first)
        yield from page.heads
        if len(page.heads) < SCAN_BATCH:
            return
        offset += SCAN_BATCH


def _revive(head: JobHead) -> None:
    """A worker is back on a stalled job: it runs again."""
    if head.status == "stalled":
        head.status = "running"


def authorize(head: JobHead, cred: Credential) -> JobHead:
    """Return ``head`` if ``cred`` opens its job.

    Raises:
        ForbiddenError: It does not.
    """
    if not cred.opens(head):
        raise ForbiddenError("this token does not open this job; use the token POST /v1/jobs returned for it")
    return head


def _require_live(head: JobHead) -> None:
    if head.status == "deleted":
        raise JobDeletedError(f"job {head.job_id} was deleted; it takes no more polls or reports")


def _wire(job_id: str, seg: dict[str, Any], head: JobHead, now: float) -> WireSegment:
    lease = head.lease
    return WireSegment.of(
        seg,
        job_id,
        lease_epoch=lease.epoch if lease else 0,
        lease_expires_in_s=None if lease is None or seg.get("done") else round(lease.expires_at - now, 3),
    )


def job_info(head: JobHead) -> JobInfo:
    """Build the wire view of a job from its head."""
    s = head.summary
    return JobInfo(
        job_id=head.job_id,
        name=head.name,
        status=head.status,
        created_at=head.created_at,
        updated_at=head.updated_at,
        config=TunerConfig.from_dict(head.config),
        steps_used=int(s.get("steps_used", 0)),
        total_steps=int(s.get("total_steps", head.config.get("total_steps", 0))),
        phase=s.get("phase", "done"),
        lr=s.get("lr"),
        stage=s.get("stage"),
        explore_share=float(s.get("explore_share") or 0.0),
        last_loss=s.get("last_loss"),
    )
