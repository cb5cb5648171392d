"""Jobs: create, list, show, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from lrtune.client.protocol import API_PREFIX, ErrorBody, JobCreate, JobCreated, JobInfo, JobList
from lrtune.server.deps import Admin, JobCredential, RuntimeDep
from lrtune.server.quotas import creation_gate
from lrtune.server.routes import JobId
from lrtune.server.service import SortKey
from lrtune.server.store import JobStatus

router = APIRouter(prefix=f"{API_PREFIX}/jobs", tags=["jobs"])
_ERRORS: dict[int | str, dict[str, object]] = {
    c: {"model": ErrorBody} for c in (401, 403, 404, 409, 410, 413, 422, 429, 503)
}


@router.post("", status_code=201, response_model=JobCreated, responses=_ERRORS)
async def create_job(body: JobCreate, rt: RuntimeDep, request: Request) -> JobCreated:
    """Create a job; the response carries its token, shown only here (429 past the client's job quota)."""
    admit = creation_gate(request, rt)
    token, info = await rt.light(lambda: rt.service.create(body, admit))
    return JobCreated(job_id=info.job_id, token=token, job=info)


@router.get("", response_model=JobList, responses=_ERRORS, dependencies=[Admin])
async def list_jobs(
    rt: RuntimeDep,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: JobStatus | None = None,
    sort: Annotated[SortKey, Query(description="Sort key; anything but 'created' sorts in memory.")] = "created",
    order: Annotated[Literal["asc", "desc"], Query(description="Sort direction.")] = "asc",
    q: Annotated[str | None, Query(max_length=200, description="Name contains (any case), or id prefix.")] = None,
) -> JobList:
    """List jobs, oldest first unless sorted otherwise (admin key, or loopback when none is configured)."""
    limit = min(limit, rt.settings.max_list_limit)
    jobs, total = await rt.light(lambda: rt.service.list(offset, limit, status, sort, order == "desc", q or None))
    return JobList(jobs=jobs, total=total, offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobInfo, responses=_ERRORS)
async def show_job(job_id: JobId, cred: JobCredential, rt: RuntimeDep) -> JobInfo:
    """Show a job's status and progress."""
    return await rt.light(lambda: rt.service.info(job_id, cred))


@router.delete("/{job_id}", response_model=JobInfo, responses=_ERRORS)
async def delete_job(
    job_id: JobId,
    cred: JobCredential,
    rt: RuntimeDep,
    purge: Annotated[bool, Query(description="Remove every trace of the job instead of marking it deleted.")] = False,
) -> JobInfo | Response:
    """End a job: it takes no more polls or reports (its schedule stays readable unless purged)."""
    if purge:
        await rt.light(lambda: rt.service.purge(job_id, cred))
        return Response(status_code=204)
    return await rt.light(lambda: rt.service.delete(job_id, cred))
