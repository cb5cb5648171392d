"""Wire format of lrtune's HTTP API (v1), shared by the service and the trainer-side client.

It lives in the client package because trainer machines install only the client; it imports nothing but
pydantic and the tuner's pure segment module (:mod:`lrtune.tuner.segment`: phases, shapes, the LR formula and the
continuation pieces; no torch or botorch behind it).

Routes (JSON over HTTP; errors are :class:`ErrorBody` with a stable ``code``)::

    POST   /v1/jobs                                    JobCreate      -> JobCreated (201)
    GET    /v1/jobs                                    (admin key)    -> JobList
    GET    /v1/jobs/{job_id}                           (job token)    -> JobInfo
    DELETE /v1/jobs/{job_id}                           (job token)    -> JobInfo
    POST   /v1/jobs/{job_id}/lease                     LeaseRequest   -> WireSegment  (poll: the open segment)
    POST   /v1/jobs/{job_id}/segments/{segment_id}/report  WireReport -> WireSegment  (the next segment)
    GET    /v1/jobs/{job_id}/schedule[?format=json|csv|lambdalr]     -> schedule
    GET    /v1/jobs/{job_id}/posterior[?stage=&points=]              -> GP posterior over log10-LR of a stage
    GET    /healthz | /readyz | /metrics                             -> liveness, store reachable, Prometheus
    GET    / and /jobs/{job_id}                                      -> the web dashboard (HTML)
    GET    /dashboard/api/jobs/{job_id}[/schedule|/posterior]        -> read-only job views for the dashboard
                                                                        (admin key, or loopback when none is set)

A job-scoped route needs ``Authorization: Bearer <job token>`` (the admin key also opens every job);
``DELETE ...?purge=true`` removes a job entirely (204) instead of marking it deleted.

A steady-state worker makes one round trip per segment: the report's response is the next segment, already
leased to the reporting worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, computed_field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from lrtune.tuner.config import TunerConfig
from lrtune.tuner.segment import GUARD_WINDOW, MAX_OFFLINE_PIECES, OfflinePiece, Phase, Piece, Segment, Shape

API_PREFIX = "/v1"

__all__ = ["API_PREFIX", "JobConfig", "OfflinePiece", "Phase", "Piece", "Shape"]  # and the models below
#: A job's status, the one definition the service, the client and the dashboard use: ``running`` (a worker
#: trains it), ``stalled`` (no worker reported or polled for ``LRTUNE_STALL_AFTER_LEASES`` lease TTLs; it frees
#: its quota slot and turns ``running`` again when a worker comes back), ``done`` (the budget is spent),
#: ``deleted`` (ended by its owner; takes no more polls or reports).
JobStatus = Literal["running", "stalled", "done", "deleted"]
#: Every status, in the order listings and the dashboard show them.
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)


#: A job's tuning configuration: the tuner's own :class:`lrtune.tuner.config.TunerConfig`, one definition of
#: every field, its default, its bounds and its description. pydantic validates it where it travels (unknown
#: fields and non-finite numbers refused, lax about ``"3"`` for 3 as JSON clients expect); ``null`` fields take
#: the preset's value; the tuner's own checks (``min_lr < max_lr`` and the like) run as it is built.
JobConfig = TunerConfig


class JobCreate(BaseModel):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200, description="A label shown in listings.")
    config: JobConfig


@pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="ignore"))
class WireSegment(Segment):
    """A segment as sent to workers: the tuner's own segment plus its lease.

    It is a :class:`lrtune.tuner.segment.Segment` (every field and the LR formula, defined once there).

    ``then`` is the rest of the budget's schedule as the service plans it now: a worker that cannot reach the
    service follows it. Unknown fields (from a newer service) are ignored. ``lr`` and ``lr_end`` are written
    out for readers that do not compute the LR themselves.

    Attributes:
        job_id: The job the segment belongs to.
        lease_epoch: To be echoed in the report.
        lease_expires_in_s: How long the lease holds unless renewed by a poll or report (None when ``done``).
        guard_window: Losses averaged when checking ``abort_above``.
    """

    job_id: str
    lease_epoch: int = 0
    lease_expires_in_s: float | None = None
    guard_window: Annotated[int, Field(ge=1)] = GUARD_WINDOW

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lr(self) -> float:
        """LR at the first step."""
        return self.lr_at(0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lr_end(self) -> float:
        """LR at the last step."""
        return self.lr_at(max(self.steps - 1, 0))

    @classmethod
    def of(cls, segment: Segment | dict[str, Any], job_id: str, **lease: Any) -> WireSegment:
        """The wire form of a tuner segment (or of its ``to_dict``) for ``job_id``, with lease fields ``lease``.

        Raises:
            pydantic.ValidationError: A field does not fit (a ``ValueError``).
        """
        data = segment.to_dict() if isinstance(segment, Segment) else segment
        return cls.from_dict({**data, "job_id": job_id, **lease})


class LeaseRequest(BaseModel):
    """Body of a poll: who asks for the open segment."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(min_length=1, max_length=200)


class WireReport(BaseModel):
    """Body of a report: the losses of the segment that ran.

    ``losses`` has one entry per step (``null`` for a non-finite loss); a candidate may be cut short once it
    diverged. ``val_losses`` has one entry per ``eval_every`` steps when the segment asked for them.

    With ``offline`` the segment did not run: the worker ran these pieces instead while it could not reach the
    service (following the last segment's ``then``, or its fallback), from the step the job had used, and
    ``losses`` are theirs, one per step.
    """

    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(min_length=1, max_length=200)
    lease_epoch: int = Field(ge=0)
    losses: list[float | None] = Field(max_length=1_000_000)
    val_losses: list[float | None] | None = Field(default=None, max_length=1_000_000)
    offline: list[OfflinePiece] | None = Field(default=None, min_length=1, max_length=MAX_OFFLINE_PIECES)


class JobInfo(BaseModel):
    """What ``GET /v1/jobs/{job_id}`` shows."""

    job_id: str
    name: str | None = None
    status: JobStatus
    created_at: float
    updated_at: float
    config: JobConfig
    steps_used: int
    total_steps: int
    phase: Phase
    lr: float | None = None
    stage: int | None = None
    explore_share: float = 0.0
    last_loss: float | None = None


class JobCreated(BaseModel):
    """Response of ``POST /v1/jobs``; the token is shown only here."""

    job_id: str
    token: str
    job: JobInfo


class JobList(BaseModel):
    """Response of ``GET /v1/jobs``."""

    jobs: list[JobInfo]
    total: int
    offset: int = 0
    limit: int = 100


class ErrorBody(BaseModel):
    """Every error response: a stable machine-readable ``code`` and a message that says what to fix."""

    code: str
    message: str
    detail: Any | None = None
