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

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from lrtune.tuner.segment import MAX_OFFLINE_PIECES, OfflinePiece, Phase, Piece, Shape, stretch_lr

API_PREFIX = "/v1"

__all__ = ["API_PREFIX", "OfflinePiece", "Phase", "Piece", "Shape"]  # and the models below
#: A job's status, the one definition the service, the client and the dashboard use: ``running`` (a worker
#: trains it), ``stalled`` (no worker reported or polled for ``LRTUNE_STALL_AFTER_LEASES`` lease TTLs; it frees
#: its quota slot and turns ``running`` again when a worker comes back), ``done`` (the budget is spent),
#: ``deleted`` (ended by its owner; takes no more polls or reports).
JobStatus = Literal["running", "stalled", "done", "deleted"]
#: Every status, in the order listings and the dashboard show them.
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)


class JobConfig(BaseModel):
    """A job's tuning configuration; ``null`` fields take the preset's value (see ``lrtune.tuner.TunerConfig``).

    Candidate counts are capped at 64: each candidate adds a point to a GP refitted on every report. Numbers
    must be finite.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_lr: float = Field(gt=0, description="Lower bound of the LR search range.")
    max_lr: float = Field(gt=0, description="Upper bound of the LR search range.")
    total_steps: int = Field(gt=0, le=10**9, description="Gradient-step budget, exploration included.")
    preset: Literal["default", "plan", "greedy", "paper"] = "default"
    strategy: Literal["autolrs", "constant", "cosine", "linear", "wsd", "rex"] = "autolrs"
    seed: int = Field(default=0, ge=0, lt=2**63)
    tau: int | None = Field(default=None, ge=1, le=10**9, description="First stage length in steps.")
    tau_max: int | None = Field(default=None, ge=1, le=10**9, description="Longest stage in steps.")
    k: int | None = Field(default=None, ge=1, le=64, description="Candidates in a cold stage.")
    k_warm: int | None = Field(default=None, ge=1, le=64, description="Candidates in a warm stage.")
    candidate_fraction: float | None = Field(default=None, gt=0, le=1, description="tau' / tau.")
    min_candidate_steps: int | None = Field(default=None, ge=1, le=10**9)
    objective: Literal["train", "val", "auto"] | None = None
    val_samples: int = Field(default=16, ge=2, le=10_000)
    warmup_steps: int = Field(default=0, ge=0, le=10**9)
    warmup_lr: float | None = Field(default=None, gt=0)
    prior_lr: float | None = Field(
        default=None, gt=0, description="An LR a previous job found to work: the first search centres on it."
    )
    explore_cap: float | None = Field(default=None, ge=0, le=1, description="Largest share of steps spent exploring.")
    anneal_fraction: float | None = Field(default=None, ge=0, le=0.9)
    noise_from_forecast: bool | None = None
    carry_observations: bool | None = None
    keep_winner: bool | None = None
    divergence_guard: bool | None = None
    replay_batches: bool | None = None
    power_law: bool | None = None
    loss_floor: float | None = 0.0
    divergence_factor: float = Field(default=2.0, gt=1, lt=1e6)
    trust_region: float = Field(default=0.25, ge=0, le=1)
    max_segment_steps: int | None = Field(default=None, ge=1, le=10**9)
    wsd_decay_fraction: float = Field(default=0.2, ge=0, le=1)
    sweep_fraction: float | None = Field(default=None, ge=0, le=0.5, description="Share spent on an LR range sweep.")
    probe_fraction: float | None = Field(
        default=None, ge=0, le=2, description="Cooldown probe length as a fraction of a candidate's steps."
    )
    replan: bool | None = Field(default=None, description="Re-plan after every training segment (default preset).")
    later_searches: bool | None = Field(default=None, description="Search again when the model says it pays.")
    tied_kernel: bool | None = Field(default=None, description="Tie the loss model's noise response to its progress.")
    plan_shape: Literal["free", "cosine"] | None = Field(default=None, description="Shapes a plan may take.")
    model_window: float | None = Field(
        default=None, ge=1.5, le=1e6, description="Fit only losses below this factor times the lowest one."
    )
    plan_pieces: int | None = Field(default=None, ge=2, le=64, description="Knots of a plan.")
    probe_all: bool | None = Field(default=None, description="A cooldown probe after every candidate of a search.")
    robust_plan: bool | None = Field(default=None, description="Plan against a rival model whose decay pays slowly.")
    probe_judge: bool | None = Field(default=None, description="Pick the search's winner by its cooldown-probe loss.")


class JobCreate(BaseModel):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200, description="A label shown in listings.")
    config: JobConfig


class WireSegment(BaseModel):
    """A segment as sent to workers; see ``lrtune.tuner.segment`` for the meaning of each field.

    ``lease_epoch`` must be echoed in the report; ``lease_expires_in_s`` says how long the lease holds unless
    renewed by a poll or report. ``then`` is the rest of the budget's schedule as the service plans it now: a
    worker that cannot reach the service follows it.
    """

    model_config = ConfigDict(extra="ignore")

    job_id: str
    segment_id: int
    lease_epoch: int = 0
    lease_expires_in_s: float | None = None
    phase: Phase
    start_step: int
    steps: int
    lr: float
    lr_end: float
    shape: Shape = "constant"
    curve_from: float = 0.0
    curve_to: float = 0.0
    curve_start: float = 0.0
    curve_end: float = 1.0
    stage: int | None = None
    candidate: int | None = None
    restore: str | None = None
    snapshot: str | None = None
    keep: str | None = None
    drop: list[str] = Field(default_factory=list)
    eval_every: int | None = None
    abort_above: float | None = None
    guard_window: int = Field(default=5, ge=1, description="Losses averaged when checking abort_above.")
    replay: bool = False
    done: bool = False
    then: list[Piece] = Field(default_factory=list, max_length=10_000)

    @property
    def end_step(self) -> int:
        """Gradient steps the job will have used after this segment."""
        return self.start_step + self.steps

    def lr_at(self, step: int) -> float:
        """Return the LR of 0-based step ``step`` of this segment (``lrtune.tuner.segment.stretch_lr``)."""
        f, t = self.curve_from, self.curve_to
        return float(stretch_lr(self.shape, f, t, self.curve_start, self.curve_end, self.steps, step))


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
