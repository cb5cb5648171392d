"""Segments: workers poll for the open segment and report the losses of the one they ran.

A report's body is the one large body the service takes (one loss per step). It is never parsed on the event
loop: its size is checked first (against what any valid report of the open segment could weigh, when it is
large enough to matter), and it is parsed in the worker thread that runs the tuner.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from lrtune.client.protocol import API_PREFIX, ErrorBody, LeaseRequest, WireReport, WireSegment
from lrtune.server.deps import JobCredential, RuntimeDep
from lrtune.server.errors import ReportTooLargeError, StaleLeaseError
from lrtune.server.parsing import parse_report
from lrtune.server.routes import JobId
from lrtune.tuner.segment import MAX_OFFLINE_PIECES

router = APIRouter(prefix=f"{API_PREFIX}/jobs/{{job_id}}", tags=["segments"])
_ERRORS: dict[int | str, dict[str, object]] = {
    c: {"model": ErrorBody} for c in (401, 403, 404, 409, 410, 413, 422, 503)
}
#: Reports up to this size are parsed without looking at the open segment first.
PRECHECK_BYTES = 256 * 1024
#: Bytes a report may spend per loss: the longest JSON float (``-2.2250738585072014e-308``) with a separator
#: and some whitespace.
BYTES_PER_LOSS = 32
#: Bytes a report of offline steps may spend per piece (a piece's JSON is under 300 bytes).
BYTES_PER_PIECE = 400
#: Bytes a report may spend on everything but its losses.
REPORT_OVERHEAD_BYTES = 64 * 1024
_REPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WireReport.model_json_schema()}},
    }
}


def report_limit_bytes(open_segment: dict[str, Any]) -> int:
    """The most bytes a valid report of ``open_segment`` can take, generously.

    Its losses and validation losses, or (a report of offline steps run instead of it) one loss per step left in
    the budget and the pieces those steps ran on.
    """
    steps = max(int(open_segment.get("steps") or 0), 0)
    every = open_segment.get("eval_every")
    val = steps // every + 1 if isinstance(every, int) and every > 0 else 0
    start = int(open_segment.get("start_step") or 0)
    then = open_segment.get("then") or []
    left = max(int(then[-1]["start_step"]) + int(then[-1]["steps"]) - start, steps) if then else steps
    offline = BYTES_PER_LOSS * left + BYTES_PER_PIECE * MAX_OFFLINE_PIECES
    return REPORT_OVERHEAD_BYTES + max(BYTES_PER_LOSS * (steps + val), offline)


@router.post("/lease", response_model=WireSegment, responses=_ERRORS)
async def poll(job_id: JobId, body: LeaseRequest, cred: JobCredential, rt: RuntimeDep) -> WireSegment:
    """Lease the open segment to the calling worker and return it (the same one until it is reported)."""
    out = await rt.light(lambda: rt.service.poll(job_id, body.worker_id, cred))
    if out.took_over_lapsed:
        rt.metrics.lease_expiries.inc()
    return out.segment


async def _drain(request: Request) -> None:
    """Read and discard a body that will not be parsed, so the client gets the answer, not a reset."""
    async for _ in request.stream():
        pass


@router.post(
    "/segments/{segment_id}/report",
    response_model=WireSegment,
    responses=_ERRORS,
    openapi_extra=_REPORT_BODY,
)
async def report(
    job_id: JobId,
    segment_id: Annotated[int, Path(ge=0, lt=2**53)],
    request: Request,
    cred: JobCredential,
    rt: RuntimeDep,
    response: Response,
) -> WireSegment:
    """Report a segment's losses (a ``WireReport`` body); the response is the next segment, leased to the same worker.

    A body larger than :data:`PRECHECK_BYTES` is first compared with what a valid report of the open segment can
    weigh (:func:`report_limit_bytes`): a larger one is refused with 422 ``invalid_report`` without being parsed.
    When choosing the next segment ran a BO suggestion, the ``Server-Timing`` header says how long it took
    (``suggest;dur=<ms>``).
    """
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    raw: bytes | None = None
    if size is None:  # chunked: the door has read and counted it already
        raw = await request.body()
        size = len(raw)
    if size > PRECHECK_BYTES:
        head = await rt.light(lambda: rt.service.open_segment(job_id, cred))
        limit = report_limit_bytes(head)
        if size > limit:
            if raw is None:
                await _drain(request)
            raise ReportTooLargeError(
                f"the open segment {head.get('segment_id')} has {head.get('steps')} steps, so a report of it takes "
                f"at most {limit} bytes; this one has {size}: send one loss per step of the segment that ran",
                detail={"limit_bytes": limit, "body_bytes": size},
            )
    body = raw if raw is not None else await request.body()

    def work() -> Any:
        return rt.service.report(job_id, segment_id, lambda: parse_report(body), cred)

    try:
        out = await rt.heavy(work)
    except StaleLeaseError:
        rt.metrics.stale_reports.inc()
        raise
    if out.suggest_s > 0:
        rt.metrics.suggest_seconds.observe(out.suggest_s)
        response.headers["Server-Timing"] = f"suggest;dur={1000 * out.suggest_s:.2f}"
    rt.metrics.reports.labels("bo" if out.suggest_s > 0 else "plain").inc()
    segment: WireSegment = out.segment
    return segment
