"""Segments: workers poll for the open segment and report the losses of the one they ran."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from client.protocol import API_PREFIX, ErrorBody, LeaseRequest, WireReport, WireSegment
from server.deps import JobCredential, RuntimeDep
from server.errors import StaleLeaseError
from server.routes import JobId

router = APIRouter(prefix=f"{API_PREFIX}/jobs/{{job_id}}", tags=["segments"])
_ERRORS: dict[int | str, dict[str, object]] = {
    c: {"model": ErrorBody} for c in (401, 403, 404, 409, 410, 413, 422, 503)
}


@router.post("/lease", response_model=WireSegment, responses=_ERRORS)
async def poll(job_id: JobId, body: LeaseRequest, cred: JobCredential, rt: RuntimeDep) -> WireSegment:
    """Lease the open segment to the calling worker and return it (the same one until it is reported)."""
    out = await rt.light(lambda: rt.service.poll(job_id, body.worker_id, cred))
    if out.took_over_lapsed:
        rt.metrics.lease_expiries.inc()
    return out.segment


@router.post("/segments/{segment_id}/report", response_model=WireSegment, responses=_ERRORS)
async def report(
    job_id: JobId,
    segment_id: Annotated[int, Path(ge=0, lt=2**53)],
    body: WireReport,
    cred: JobCredential,
    rt: RuntimeDep,
    response: Response,
) -> WireSegment:
    """Report a segment's losses; the response is the next segment, leased to the same worker.

    When choosing the next segment ran a BO suggestion, the ``Server-Timing`` header says how long it took
    (``suggest;dur=<ms>``).
    """
    try:
        out = await rt.heavy(lambda: rt.service.report(job_id, segment_id, body, cred))
    except StaleLeaseError:
        rt.metrics.stale_reports.inc()
        raise
    if out.suggest_s > 0:
        rt.metrics.suggest_seconds.observe(out.suggest_s)
        response.headers["Server-Timing"] = f"suggest;dur={1000 * out.suggest_s:.2f}"
    rt.metrics.reports.labels("bo" if out.suggest_s > 0 else "plain").inc()
    return out.segment
