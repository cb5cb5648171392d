"""Schedule views: the realized schedule, its LambdaLR export, CSV, and the GP posterior of a stage."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from lrtune.client.protocol import API_PREFIX, ErrorBody
from lrtune.server.deps import JobCredential, RuntimeDep
from lrtune.server.routes import JobId

router = APIRouter(prefix=f"{API_PREFIX}/jobs/{{job_id}}", tags=["schedule"])
_ERRORS: dict[int | str, dict[str, object]] = {c: {"model": ErrorBody} for c in (401, 403, 404, 422, 503)}

#: Columns of ``?format=csv``, one row per realized segment.
CSV_COLUMNS = ("segment_id", "start_step", "steps", "phase", "stage", "candidate", "lr", "lr_end", "rolled_back")


def schedule_csv(schedule: dict[str, Any]) -> str:
    """Render the realized segments of a schedule as CSV (header row first)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for seg in schedule["segments"]:
        writer.writerow(["" if seg.get(c) is None else seg.get(c) for c in CSV_COLUMNS])
    return buf.getvalue()


@router.get("/schedule", responses={**_ERRORS, 200: {"content": {"application/json": {}, "text/csv": {}}}})
async def schedule(
    job_id: JobId,
    cred: JobCredential,
    rt: RuntimeDep,
    fmt: Annotated[Literal["json", "lambdalr", "csv"], Query(alias="format")] = "json",
) -> Response:
    """The realized schedule (``json``), its replayable export (``lambdalr``), or its segments as ``csv``."""
    if fmt == "lambdalr":
        return JSONResponse(await rt.light(lambda: rt.service.export(job_id, cred)))
    sched = await rt.light(lambda: rt.service.schedule(job_id, cred))
    if fmt == "csv":
        return Response(schedule_csv(sched), media_type="text/csv")
    return JSONResponse(sched)


@router.get("/posterior", responses=_ERRORS)
async def posterior(
    job_id: JobId,
    cred: JobCredential,
    rt: RuntimeDep,
    stage: Annotated[int | None, Query(ge=0, lt=10**6)] = None,
    points: Annotated[int, Query(ge=2, le=512)] = 64,
) -> JSONResponse:
    """GP posterior (mean and std of the forecast loss) over log10-LR for a stage (default: the latest).

    ``null`` fields when the stage has no observations yet.
    """
    out = await rt.heavy(lambda: rt.service.posterior(job_id, stage, points, cred))
    if out is None:
        out = {"stage": stage, "lr": None, "mean": None, "std": None}
    out["job_id"] = job_id
    return JSONResponse(out)
