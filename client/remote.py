"""Segments from the lrtune service, failing open, never stalling a training step for long.

:class:`RemoteSource` never lets a service failure reach the training loop once training runs, and never makes
the loop wait more than ``max_stall_s`` for the service:

* every request runs on one background thread; a call waits for its answer at most ``0.9 * max_stall_s``
  (then the request goes on in the background, the callback trains at its fallback LR, and a later
  :meth:`RemoteSource.poll` picks the answer up). A hung service, a hung store or a slow network therefore cost
  each training step at most that wait, once per request;
* transient failures (no connection, timeouts, 5xx, 429, another worker's live lease) keep the request pending
  (a report stays buffered), and :meth:`RemoteSource.poll` retries it when due, with exponential backoff and
  jitter, capped at ``RetryPolicy.segment_multiple`` times a segment's measured duration and never sooner than
  the answer's ``Retry-After``. One warning per outage, one info line on recovery;
* a report refused as stale (409 ``stale_lease``) makes it poll the open segment: if that is still the segment
  it ran, the report is sent again under the new lease, else it continues with the open segment;
* a report refused for its content is dropped with one warning, and the open segment is polled;
* a job that the service's store no longer holds because the service came back with another store (an
  embedded, in-memory service restarted: the 404 comes from a store instance other than the one that held the
  job) is replaced by a fresh job with the same config and the steps not yet run as its budget, with one warning;
* a job that is gone otherwise (deleted, purged: 404/410) or a refused token, once training runs, detaches the
  source with one warning: the callback finishes the step budget on its fallback LR and makes no more requests.

At construction (:meth:`RemoteSource.start`) a refused config, a missing job or a wrong token raise instead:
those are mistakes the user must fix (construction waits for the first answer up to the request timeout).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from lrtune.client.errors import (
    AuthError,
    JobGoneError,
    LrtuneHTTPError,
    ReportRejectedError,
    SegmentLeasedError,
    ServiceUnavailableError,
    StaleLeaseError,
)
from lrtune.client.http import ServiceClient
from lrtune.client.protocol import JobConfig, OfflinePiece, WireReport, WireSegment
from lrtune.client.summary import run_log

log = logging.getLogger("lrtune.client")

Op = Literal["create", "lease", "report"]
T = TypeVar("T")
_MAX_LEASE_CHASES = 3  # stale-lease re-polls per report before treating it as transient
#: Default bound on how long one callback call may wait for the service, in seconds.
DEFAULT_MAX_STALL_S = 2.0
#: Share of ``max_stall_s`` a call spends waiting for an answer (the rest is left for the call's own work).
_WAIT_SHARE = 0.9
#: Pause between the final flush's attempts, in seconds (the flush as a whole stays within ``max_stall_s``).
_FLUSH_RETRY_S = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped by the pace of training and by the service's ``Retry-After``.

    Attributes:
        initial_s: Delay before the first retry, in seconds.
        max_s: Longest delay between retries, in seconds.
        factor: Growth of the delay after each failed retry.
        jitter: Each delay is drawn uniformly from ``[(1 - jitter) * d, d]``.
        segment_multiple: Delays are also capped at this many times the wall time of the last segment the
            worker ran (never below ``initial_s``), so that a worker back online is at most a couple of
            segments late. A ``Retry-After`` from the service still wins (up to ``max_s``).
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    segment_multiple: float = 2.0

    def __post_init__(self) -> None:
        """Validate the numbers."""
        if not (
            self.initial_s > 0
            and self.max_s >= self.initial_s
            and self.factor >= 1
            and 0 <= self.jitter <= 1
            and self.segment_multiple > 0
        ):
            raise ValueError(
                f"invalid retry policy {self}: need 0 < initial_s <= max_s, factor >= 1, jitter in [0, 1], "
                "segment_multiple > 0"
            )


@dataclass
class _Pending:
    op: Op
    segment: WireSegment | None = None
    report: WireReport | None = None


class _Worker:
    """One daemon thread that runs the source's requests in order; callers wait on futures with a bound."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="lrtune-client", daemon=True)
            self._thread.start()
        self._jobs.put((fn, future))
        return future

    def _loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever reads the future
                future.set_exception(exc)

    def stop(self) -> None:
        """Let the thread end after what it runs now (it is a daemon: it never holds the process up)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None


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
        clock: Monotonic clock in seconds, for backoff (injectable for tests).
        seed: Seed of the jitter (its own generator: the global ones training uses are never touched).
        max_stall_s: Longest a call (:meth:`report`, :meth:`poll`, :meth:`keepalive`, :meth:`flush`) may take,
            in seconds, whatever the service does; it waits at most 90% of it for an answer.
        start_timeout_s: Longest :meth:`start` waits for its first answer, in seconds (None: ``max_stall_s``).
        steps_done: Returns the optimizer steps the worker has run so far (for the budget of a replacement job).
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
        max_stall_s: float = DEFAULT_MAX_STALL_S,
        start_timeout_s: float | None = None,
        steps_done: Callable[[], int] | None = None,
    ) -> None:
        if job_id is None and config is None:
            raise ValueError("give a config to create a job, or the job_id and token of an existing one")
        if not max_stall_s > 0:
            raise ValueError(f"max_stall_s must be positive, got {max_stall_s!r}")
        self.api = api
        self.config = config
        self.job_id = job_id
        self.token = token
        self.worker_id = worker_id
        self.name = name
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.max_stall_s = float(max_stall_s)
        self.start_timeout_s = start_timeout_s
        self.steps_done = steps_done
        self.segment_s: float | None = None  # wall time of the last segment the worker ran (set by the callback)
        self.created = False  # this object created the job
        self.reported = 0  # reports accepted since then
        self.requests = 0  # requests attempted (for tests and logs)
        self.replaced = 0  # jobs replaced after the service came back without them
        self.job_base = 0  # the worker's step at which the job's step 0 sits (later for a replacement job)
        self.outages = 0  # times the service stopped answering
        self.answer: WireSegment | None = None  # the last segment the service handed this worker
        self._rng = random.Random(seed)
        self._worker = _Worker()
        self._pending: _Pending | None = None
        self._inflight: Future[WireSegment] | None = None  # the pending request, running in the background
        self._renewal: Future[WireSegment] | None = None  # a lease renewal running in the background
        self._renewing: WireSegment | None = None
        self._detached = False
        self._next_try = 0.0
        self._delay = self.retry.initial_s
        self._outage_since: float | None = None
        self._warned: set[str] = set()
        self._leased_at = 0.0
        self._lease_ttl_s: float | None = None
        self._job_store_id: str | None = None  # the store instance that answered for this job

    @property
    def detached(self) -> bool:
        """True once the job is gone or the service refuses this worker for good."""
        return self._detached

    @property
    def pending(self) -> Op | None:
        """The request waiting for a retry (or still running in the background), or None."""
        return None if self._pending is None else self._pending.op

    @property
    def in_flight(self) -> bool:
        """True while a request runs in the background past the wait of the call that sent it."""
        return self._inflight is not None

    # ------------------------------------------------------------------ SegmentSource

    def start(self) -> WireSegment | None:
        """Create (or attach to) the job and lease its open segment.

        Returns:
            The open segment, or None when the service did not answer in time (the request stays pending).

        Raises:
            ConfigRejectedError: The service refused the config.
            JobGoneError: ``job_id`` does not exist.
            AuthError: Wrong token or admin key.
            LrtuneHTTPError: Another permanent refusal (e.g. the URL is not an lrtune service).
        """
        pending = _Pending("create" if self.job_id is None else "lease")
        wait = self.start_timeout_s if self.start_timeout_s is not None else self._wait_s()
        return self._attempt(pending, wait, permanent_raises=True)

    def report(
        self,
        segment: WireSegment,
        losses: Sequence[float | None],
        val_losses: Sequence[float | None] | None,
        offline: Sequence[OfflinePiece] | None = None,
        wait_s: float | None = None,
    ) -> WireSegment | None:
        """Report ``segment``'s losses (or, with ``offline``, the steps run instead of it).

        Returns None when no answer came within ``wait_s`` (default ``0.9 * max_stall_s``): the report stays
        buffered, retried later.
        """
        rep = WireReport(
            worker_id=self.worker_id,
            lease_epoch=segment.lease_epoch,
            losses=list(losses),
            val_losses=None if val_losses is None else list(val_losses),
            offline=None if offline is None else list(offline),
        )
        if self._detached:
            return None
        return self._attempt(_Pending("report", segment, rep), self._wait_s() if wait_s is None else wait_s)

    def poll(self) -> WireSegment | None:
        """Pick up the answer of a request running in the background, or retry the pending one when due.

        Never waits for a request sent by an earlier call; a retry waits at most ``0.9 * max_stall_s``.
        """
        if self._detached:
            return None
        if self._inflight is not None:
            return self._settle(0.0)
        if self._pending is None or self.clock() < self._next_try:
            return None
        return self._attempt(self._pending, self._wait_s())

    def flush(self, deadline: float | None = None, warn: bool = True) -> bool:
        """Deliver a buffered report before training ends, retrying for at most ``max_stall_s`` in all.

        Args:
            deadline: ``time.monotonic()`` to give up at (default: ``0.9 * max_stall_s`` from now).
            warn: Log the warning below when the report stays undelivered.

        Returns:
            True when nothing is left undelivered. Otherwise one warning says so; the job stays on the service,
            resumable from this source's :meth:`state_dict` (or by a worker attaching to it).
        """
        deadline = time.monotonic() + self._wait_s() if deadline is None else deadline
        while self._pending is not None and self._pending.op == "report" and not self._detached:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._inflight is None:
                self._submit(self._pending)
            self._settle(left)
            if self._pending is None or self._inflight is not None:
                continue
            time.sleep(min(_FLUSH_RETRY_S, max(0.0, deadline - time.monotonic())))
        if self._pending is not None and self._pending.op == "report" and not self._detached:
            if not warn:
                return False
            seg = self._pending.segment
            log.warning(
                "lrtune: the service at %s did not take the last report (segment %s of job %s) within %.1f s; "
                "the job stays there, resumable: attach a worker to it (job_id and token, or this callback's "
                "state_dict(), which holds the report)",
                self.api.where,
                None if seg is None else seg.segment_id,
                self.job_id,
                self.max_stall_s,
            )
            return False
        return True

    def keepalive(self, segment: WireSegment) -> int | None:
        """Renew the lease once half its time has passed; return the new epoch when it changed.

        The renewal runs in the background; its answer is picked up by this call (within the stall bound) or a
        later one. Failures are ignored (logged at debug level): the report will deal with a lost lease.
        """
        if self._renewal is not None:
            return self._renewed(0.0)
        ttl = self._lease_ttl_s
        if ttl is None or self._pending is not None or self._detached or self.job_id is None:
            return None
        now = self.clock()
        if now - self._leased_at < 0.5 * ttl:
            return None
        self._leased_at = now
        job_id, token = self.job_id, self._token()
        self.requests += 1
        self._renewing = segment
        self._renewal = self._worker.submit(lambda: self.api.lease(job_id, token, self.worker_id))
        return self._renewed(self._wait_s())

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
            "job_base": self.job_base,
            "pending": None
            if p is None
            else {
                "op": p.op,
                "segment": None if p.segment is None else p.segment.to_dict(),
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
        self._forget_inflight()
        if self.created and not self.reported and self.job_id and self.job_id != state.get("job_id"):
            superseded, token = self.job_id, self._token()
            try:  # the job created at construction is superseded by the resumed one
                self._call(lambda: self.api.delete_job(superseded, token), self._wait_s())
            except (LrtuneHTTPError, TimeoutError) as exc:
                log.debug("could not delete the superseded job %s: %s", superseded, exc)
        self.job_id = state["job_id"]
        self.token = state["token"]
        self.worker_id = state["worker_id"]
        self._detached = bool(state.get("detached", False))
        self.job_base = int(state.get("job_base", 0))
        self.created = False
        self._job_store_id = None
        p = state.get("pending")
        self._pending = None
        if p is not None:
            seg = None if p.get("segment") is None else WireSegment.from_dict(p["segment"])
            rep = None if p.get("report") is None else WireReport.model_validate(p["report"])
            self._pending = _Pending(p["op"], seg, rep)
        self._next_try = 0.0
        self._delay = self.retry.initial_s

    def close(self) -> None:
        """Stop the background thread and close the HTTP client if the source created it."""
        self._worker.stop()
        self.api.close()

    # ------------------------------------------------------------------ internals

    def _wait_s(self) -> float:
        return _WAIT_SHARE * self.max_stall_s

    def _token(self) -> str:
        if self.token is None:
            raise AuthError("no job token")
        return self.token

    def _call(self, fn: Callable[[], T], wait_s: float) -> T:
        """Run ``fn`` on the background thread and wait up to ``wait_s`` for it (TimeoutError past that)."""
        future = self._worker.submit(fn)
        done = _wait(future, wait_s)
        if not done:
            raise TimeoutError(f"no answer within {wait_s:.2f} s")
        return future.result()

    def _submit(self, pending: _Pending) -> None:
        self._pending = pending
        self._inflight = self._worker.submit(lambda: self._run(pending))

    def _forget_inflight(self) -> None:
        """Let a background request finish unread (its answer is stale once the job changes)."""
        self._inflight = None
        self._renewal = None

    def _attempt(self, pending: _Pending, wait_s: float, permanent_raises: bool = False) -> WireSegment | None:
        """Send a request and wait up to ``wait_s`` for it; on failure keep it pending or detach."""
        self._submit(pending)
        return self._settle(wait_s, permanent_raises)

    def _settle(self, wait_s: float, permanent_raises: bool = False) -> WireSegment | None:
        """Take the in-flight request's outcome if it arrives within ``wait_s``; None while it runs on."""
        future, pending = self._inflight, self._pending
        assert future is not None and pending is not None
        deadline = time.monotonic() + wait_s
        if not _wait(future, wait_s):
            if self._outage_since is None:
                self._outage_since = self.clock()
                self.outages += 1
                log.warning(
                    "lrtune: the service at %s has not answered within %.1f s; training goes on at the fallback LR, "
                    "the %s is kept and retried in the background (logged once per outage)",
                    self.api.where,
                    wait_s,
                    pending.op,
                )
            return None
        self._inflight = None
        try:
            return self._got(future.result())
        except (ServiceUnavailableError, SegmentLeasedError) as exc:
            self._failed(pending, exc)
        except JobGoneError as exc:
            if permanent_raises:
                raise
            if not self._replace(exc):
                self._detach(exc)
            else:  # create the fresh job now, so that no step runs between counting what is left and it
                assert self._pending is not None
                return self._attempt(self._pending, max(0.0, deadline - time.monotonic()))
        except LrtuneHTTPError as exc:
            if permanent_raises:
                raise
            self._detach(exc)
        return None

    def _run(self, p: _Pending) -> WireSegment:
        """One attempt at a pending request (on the background thread)."""
        if p.op == "create":
            assert self.config is not None
            self.requests += 1
            created = self.api.create_job(self.config, self.name)
            self.job_id, self.token, self.created = created.job_id, created.token, True
            log.info("lrtune: created job %s on %s", self.job_id, self.api.where)
            run_log.warning("lrtune: job %s; watch it at %s/jobs/%s", self.job_id, self.api.where, self.job_id)
        if p.op in ("create", "lease"):
            return self._lease()
        assert p.segment is not None and p.report is not None
        return self._send(p.segment, p.report)

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
        self._job_store_id = getattr(self.api, "store_id", None) or self._job_store_id
        self.answer = segment
        return segment

    def _renewed(self, wait_s: float) -> int | None:
        """The new lease epoch from a finished renewal, if it changed for the segment being run."""
        future, segment = self._renewal, self._renewing
        assert future is not None and segment is not None
        if not _wait(future, wait_s):
            return None
        self._renewal = self._renewing = None
        try:
            seg = future.result()
        except LrtuneHTTPError as exc:
            log.debug("lease renewal failed: %s", exc)
            return None
        self._lease_ttl_s = seg.lease_expires_in_s
        if seg.segment_id == segment.segment_id and seg.lease_epoch != segment.lease_epoch:
            return seg.lease_epoch
        return None

    def _backoff_cap(self) -> float:
        cap = self.retry.max_s
        if self.segment_s is not None:
            cap = min(cap, max(self.retry.initial_s, self.retry.segment_multiple * self.segment_s))
        return cap

    def _failed(self, pending: _Pending, exc: LrtuneHTTPError) -> None:
        now = self.clock()
        if pending.op == "create" and self.job_id is not None:
            pending = _Pending("lease")  # the job exists: only the lease is left to do
        self._pending = pending
        delay = min(self._delay, self._backoff_cap())
        if isinstance(exc, SegmentLeasedError) and isinstance(exc.detail, dict):
            wait = exc.detail.get("expires_in_s")
            if isinstance(wait, int | float) and wait > 0:
                delay = min(max(delay, float(wait)), self.retry.max_s)
        delay *= self._rng.uniform(1.0 - self.retry.jitter, 1.0)
        if exc.retry_after_s is not None:  # the service says when: never sooner
            delay = max(delay, min(exc.retry_after_s, self.retry.max_s))
        self._next_try = now + delay
        self._delay = min(self._delay * self.retry.factor, self._backoff_cap())
        if self._outage_since is None:
            self._outage_since = now
            self.outages += 1
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

    def _replace(self, exc: JobGoneError) -> bool:
        """Start a fresh job when the service came back with a store that never held this one.

        The fresh job has this job's config with the steps not yet run as its budget (and what is left of the
        warmup). Returns False when this is not that case (the job was deleted or purged, or this source
        attached to a job whose config it does not know): the caller then detaches.
        """
        if exc.status != 404 or exc.store_id is None or self._job_store_id is None:
            return False
        if exc.store_id == self._job_store_id or self.config is None:
            if exc.store_id != self._job_store_id:
                self._warn_once(
                    "forgotten",
                    f"lrtune: the service at {self.api.where} restarted with an empty store and no longer knows job "
                    f"{self.job_id}; this worker attached to it by id, so it cannot recreate it",
                )
            return False
        done = self.steps_done() if self.steps_done is not None else 0
        since = done - self.job_base  # steps run since this job's step 0
        left = self.config.total_steps - since
        if left < 1:
            return False
        old = self.job_id
        self.job_base = done
        self.config = dataclasses.replace(
            self.config, total_steps=left, warmup_steps=max(0, self.config.warmup_steps - since)
        )
        self.job_id, self.token, self.created, self.reported = None, None, False, 0
        self._job_store_id = None
        self.replaced += 1
        self._pending = _Pending("create")
        self._next_try = 0.0
        self._delay = self.retry.initial_s
        log.warning(
            "lrtune: the service at %s came back without job %s (its embedded in-memory store was restarted); "
            "continuing on a fresh job with the same config and the %d steps not yet run",
            self.api.where,
            old,
            left,
        )
        return True

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


def _wait(future: Future[Any], wait_s: float) -> bool:
    """Wait up to ``wait_s`` seconds for ``future``; tell whether it is done."""
    if future.done():
        return True
    if wait_s <= 0:
        return False
    try:
        future.exception(timeout=wait_s)
    except TimeoutError:
        return False
    return True
