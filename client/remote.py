"""Segments from the lrtune service, failing open.

:class:`RemoteSource` never lets a service failure reach the training loop once training runs:

* transient failures (no connection, timeouts, 5xx, 429, another worker's live lease) keep the request pending
  (a report stays buffered), and :meth:`RemoteSource.poll` retries it when due, with exponential backoff and
  jitter; the callback trains at its fallback LR meanwhile. One warning per outage, one info line on recovery;
* a report refused as stale (409 ``stale_lease``) makes it poll the open segment: if that is still the segment
  it ran, the report is sent again under the new lease, else it continues with the open segment;
* a report refused for its content is dropped with one warning, and the open segment is polled;
* a job that is gone (404/410) or a refused token, once training runs, detaches the source with one warning:
  the callback finishes the step budget on its fallback LR and makes no more requests.

At construction (:meth:`RemoteSource.start`) a refused config, a missing job or a wrong token raise instead:
those are mistakes the user must fix. Retries happen only when the callback calls :meth:`RemoteSource.poll`
(every step or every few steps, never sleeping); a retry costs one request with the client's timeout.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from client.errors import (
    AuthError,
    JobGoneError,
    LrtuneHTTPError,
    ReportRejectedError,
    SegmentLeasedError,
    ServiceUnavailableError,
    StaleLeaseError,
)
from client.http import ServiceClient
from client.protocol import JobConfig, WireReport, WireSegment

log = logging.getLogger("lrtune.client")

Op = Literal["create", "lease", "report"]
_MAX_LEASE_CHASES = 3  # stale-lease re-polls per report before treating it as transient


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Attributes:
        initial_s: Delay before the first retry, in seconds.
        max_s: Longest delay between retries, in seconds.
        factor: Growth of the delay after each failed retry.
        jitter: Each delay is drawn uniformly from ``[(1 - jitter) * d, d]``.
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        """Validate the numbers."""
        if not (self.initial_s > 0 and self.max_s >= self.initial_s and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid retry policy {self}: need 0 < initial_s <= max_s, factor >= 1, jitter in [0, 1]")


@dataclass
class _Pending:
    op: Op
    segment: WireSegment | None = None
    report: WireReport | None = None


class RemoteSource:
    """Segments of one job on the service.

    Args:
        api: The typed HTTP client.
        config: Config of the job to create (None when attaching to ``job_id``).
        job_id: An existing job to attach to, or None to create one.
        token: That job's token.
        worker_id: This worker's id in leases.
        name: Label of a created job.
        retry: Backoff policy for transient failures.
        clock: Monotonic clock in seconds (injectable for tests).
        seed: Seed of the jitter (its own generator: the global ones training uses are never touched).
    """

    def __init__(
        self,
        api: ServiceClient,
        *,
        config: JobConfig | None,
        job_id: str | None,
        token: str | None,
        worker_id: str,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if job_id is None and config is None:
            raise ValueError("give a config to create a job, or the job_id and token of an existing one")
        self.api = api
        self.config = config
        self.job_id = job_id
        self.token = token
        self.worker_id = worker_id
        self.name = name
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.created = False  # this object created the job
        self.reported = 0  # reports accepted since then
        self.requests = 0  # requests attempted (for tests and logs)
        self._rng = random.Random(seed)
        self._pending: _Pending | None = None
        self._detached = False
        self._next_try = 0.0
        self._delay = self.retry.initial_s
        self._outage_since: float | None = None
        self._warned: set[str] = set()
        self._leased_at = 0.0
        self._lease_ttl_s: float | None = None

    @property
    def detached(self) -> bool:
        """True once the job is gone or the service refuses this worker for good."""
        return self._detached

    @property
    def pending(self) -> Op | None:
        """The request waiting for a retry, or None."""
        return None if self._pending is None else self._pending.op

    # ------------------------------------------------------------------ SegmentSource

    def start(self) -> WireSegment | None:
        """Create (or attach to) the job and lease its open segment.

        Returns:
            The open segment, or None when the service is unreachable (the request stays pending).

        Raises:
            ConfigRejectedError: The service refused the config.
            JobGoneError: ``job_id`` does not exist.
            AuthError: Wrong token or admin key.
            LrtuneHTTPError: Another permanent refusal (e.g. the URL is not an lrtune service).
        """
        pending = _Pending("create" if self.job_id is None else "lease")
        try:
            return self._run(pending)
        except (ServiceUnavailableError, SegmentLeasedError) as exc:
            self._failed(pending, exc)
            return None

    def report(
        self, segment: WireSegment, losses: Sequence[float | None], val_losses: Sequence[float | None] | None
    ) -> WireSegment | None:
        """Report ``segment``'s losses; None when the report could not be delivered (it stays buffered)."""
        rep = WireReport(
            worker_id=self.worker_id,
            lease_epoch=segment.lease_epoch,
            losses=list(losses),
            val_losses=None if val_losses is None else list(val_losses),
        )
        if self._detached:
            return None
        return self._attempt(_Pending("report", segment, rep))

    def poll(self) -> WireSegment | None:
        """Retry the pending request if its time has come; return the segment it brought."""
        if self._pending is None or self._detached or self.clock() < self._next_try:
            return None
        return self._attempt(self._pending)

    def flush(self) -> None:
        """Try once, now, to deliver a buffered report, whatever the backoff says (end of training)."""
        if self._pending is not None and self._pending.op == "report" and not self._detached:
            self._attempt(self._pending)

    def keepalive(self, segment: WireSegment) -> int | None:
        """Renew the lease once half its time has passed; return the new epoch when it changed.

        Failures are ignored (logged at debug level): the report will deal with a lost lease.
        """
        ttl = self._lease_ttl_s
        if ttl is None or self._pending is not None or self._detached or self.job_id is None:
            return None
        now = self.clock()
        if now - self._leased_at < 0.5 * ttl:
            return None
        self._leased_at = now
        try:
            self.requests += 1
            seg = self.api.lease(self.job_id, self._token(), self.worker_id)
        except LrtuneHTTPError as exc:
            log.debug("lease renewal failed: %s", exc)
            return None
        self._lease_ttl_s = seg.lease_expires_in_s
        if seg.segment_id == segment.segment_id and seg.lease_epoch != segment.lease_epoch:
            return seg.lease_epoch
        return None

    def state_dict(self) -> dict[str, Any]:
        """Return the job id, token, worker id and any buffered request (JSON-safe; holds the job token)."""
        p = self._pending
        return {
            "kind": "remote",
            "server": self.api.where,
            "job_id": self.job_id,
            "token": self.token,
            "worker_id": self.worker_id,
            "detached": self._detached,
            "pending": None
            if p is None
            else {
                "op": p.op,
                "segment": None if p.segment is None else p.segment.model_dump(),
                "report": None if p.report is None else p.report.model_dump(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the job of ``state``; a job this object created and never reported to is deleted.

        Raises:
            ValueError: ``state`` is not a remote source's state.
        """
        if state.get("kind") != "remote":
            raise ValueError(f"cannot resume a service job from a {state.get('kind')!r} source's state")
        if self.created and not self.reported and self.job_id and self.job_id != state.get("job_id"):
            try:  # the job created at construction is superseded by the resumed one
                self.api.delete_job(self.job_id, self._token())
            except LrtuneHTTPError as exc:
                log.debug("could not delete the superseded job %s: %s", self.job_id, exc)
        self.job_id = state["job_id"]
        self.token = state["token"]
        self.worker_id = state["worker_id"]
        self._detached = bool(state.get("detached", False))
        self.created = False
        p = state.get("pending")
        self._pending = None
        if p is not None:
            seg = None if p.get("segment") is None else WireSegment.model_validate(p["segment"])
            rep = None if p.get("report") is None else WireReport.model_validate(p["report"])
            self._pending = _Pending(p["op"], seg, rep)
        self._next_try = 0.0
        self._delay = self.retry.initial_s

    def close(self) -> None:
        """Close the HTTP client if the source created it."""
        self.api.close()

    # ------------------------------------------------------------------ internals

    def _token(self) -> str:
        if self.token is None:
            raise AuthError("no job token")
        return self.token

    def _attempt(self, pending: _Pending) -> WireSegment | None:
        """Run a request; on failure keep it pending (transient) or detach (permanent)."""
        try:
            return self._run(pending)
        except (ServiceUnavailableError, SegmentLeasedError) as exc:
            self._failed(pending, exc)
        except (JobGoneError, AuthError, LrtuneHTTPError) as exc:
            self._detach(exc)
        return None

    def _run(self, p: _Pending) -> WireSegment:
        if p.op == "create":
            assert self.config is not None
            self.requests += 1
            created = self.api.create_job(self.config, self.name)
            self.job_id, self.token, self.created = created.job_id, created.token, True
            log.info("lrtune: created job %s on %s", self.job_id, self.api.where)
        if p.op in ("create", "lease"):
            return self._got(self._lease())
        assert p.segment is not None and p.report is not None
        return self._got(self._send(p.segment, p.report))

    def _lease(self) -> WireSegment:
        assert self.job_id is not None
        self.requests += 1
        return self.api.lease(self.job_id, self._token(), self.worker_id)

    def _send(self, segment: WireSegment, report: WireReport) -> WireSegment:
        assert self.job_id is not None
        for _ in range(_MAX_LEASE_CHASES):
            try:
                self.requests += 1
                nxt = self.api.report(self.job_id, self._token(), segment.segment_id, report)
                self.reported += 1
                return nxt
            except StaleLeaseError:
                current = self._lease()
                if current.segment_id != segment.segment_id:
                    self._warn_once(
                        "moved",
                        f"lrtune: segment {segment.segment_id} was handed to another worker; continuing with the "
                        f"open segment {current.segment_id}",
                    )
                    return current
                report = report.model_copy(update={"lease_epoch": current.lease_epoch})
            except ReportRejectedError as exc:
                self._warn_once(
                    "rejected",
                    f"lrtune: the service refused the report of segment {segment.segment_id} ({exc}); "
                    "continuing with the open segment",
                )
                return self._lease()
        raise ServiceUnavailableError("the lease kept changing while reporting; will retry")

    def _got(self, segment: WireSegment) -> WireSegment:
        """Bookkeeping after a segment arrived."""
        now = self.clock()
        if self._outage_since is not None:
            log.info("lrtune: service at %s is back after %.1f s", self.api.where, now - self._outage_since)
        self._outage_since = None
        self._pending = None
        self._delay = self.retry.initial_s
        self._leased_at = now
        self._lease_ttl_s = segment.lease_expires_in_s
        return segment

    def _failed(self, pending: _Pending, exc: LrtuneHTTPError) -> None:
        now = self.clock()
        if pending.op == "create" and self.job_id is not None:
            pending = _Pending("lease")  # the job exists: only the lease is left to do
        self._pending = pending
        delay = self._delay
        if isinstance(exc, SegmentLeasedError) and isinstance(exc.detail, dict):
            wait = exc.detail.get("expires_in_s")
            if isinstance(wait, int | float) and wait > 0:
                delay = min(max(delay, float(wait)), self.retry.max_s)
        self._next_try = now + delay * self._rng.uniform(1.0 - self.retry.jitter, 1.0)
        self._delay = min(self._delay * self.retry.factor, self.retry.max_s)
        if self._outage_since is None:
            self._outage_since = now
            what = (
                "another worker holds the open segment's lease"
                if isinstance(exc, SegmentLeasedError)
                else f"service at {self.api.where} unavailable"
            )
            log.warning(
                "lrtune: %s (%s); training goes on at the fallback LR, the %s is kept and retried with backoff "
                "(logged once per outage)",
                what,
                exc,
                pending.op,
            )
        else:
            log.debug("lrtune: retry failed: %s", exc)

    def _detach(self, exc: LrtuneHTTPError) -> None:
        self._detached = True
        self._pending = None
        self._warn_once(
            "detached",
            f"lrtune: giving up on job {self.job_id} ({exc}); training finishes the step budget at the fallback LR",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
        else:
            log.debug(message)
