"""Dashboard routes: the page shell at ``/`` and ``/jobs/{job_id}``, static assets, and read-only job views.

The shell is public (it holds no data). Job data comes from the JSON routes, which the browser calls with the
admin key as a bearer token when the service has one:

* ``GET /v1/jobs?sort=&order=&offset=&limit=&status=&q=``: the job list (the API's own listing route);
* ``GET /dashboard/api/jobs/{job_id}``, ``.../schedule[?format=json|csv|lambdalr]``, ``.../posterior``: one
  job's info, schedule, exports and GP posterior, under the same rule as listing: the admin key when one is
  configured, otherwise loopback clients only. They answer exactly what the token-scoped ``/v1/jobs/{job_id}``
  routes answer, so that the dashboard (and ``lrtune jobs``) can open any job without its token.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from lrtune.client.protocol import JOB_STATUSES, ErrorBody, JobInfo
from lrtune.server.deps import Admin, RuntimeDep
from lrtune.server.routes import JobId, schedule
from lrtune.server.service import Credential

#: Folder of the dashboard's static assets (shipped as package data).
STATIC_DIR = Path(__file__).with_name("static")
#: URL prefix of the static assets.
STATIC_URL = "/dashboard/static"
#: URL prefix of the dashboard's read-only job views.
API_URL = "/dashboard/api"

#: Every dashboard view reads jobs as the admin would; the ``Admin`` dependency has admitted the caller.
_ADMIN = Credential(token="", admin=True)
_ERRORS: dict[int | str, dict[str, object]] = {c: {"model": ErrorBody} for c in (401, 403, 404, 422, 503)}

#: Headers of the HTML shell: only this origin's scripts, styles and connections; never framed.
SHELL_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """Static files that browsers revalidate on every load (304 when unchanged), so an upgrade is never stale."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        """See ``StaticFiles.file_response``; adds ``Cache-Control: no-cache`` and ``nosniff``."""
        resp = super().file_response(*args, **kwargs)
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


pages = APIRouter(include_in_schema=False)
views = APIRouter(prefix=f"{API_URL}/jobs/{{job_id}}", tags=["dashboard"], dependencies=[Admin])


#: What the page says, above everything, when the service has no admin key (its data is open to this machine).
OPEN_MODE_NOTICE = (
    '<div id="open-mode" class="notice" role="note"><strong>Open mode:</strong> this service has no admin key '
    "(<code>LRTUNE_ADMIN_KEY</code>), so every program and user on this machine can read every job here, "
    "without a key. Set one before sharing the machine or exposing the port.</div>"
)


@cache
def _shell(open_mode: bool) -> str:
    """The page shell, with asset URLs carrying a digest of the assets (a new release busts caches).

    Args:
        open_mode: The service has no admin key: the page says so (:data:`OPEN_MODE_NOTICE`).
    """
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return (
        html.replace("{{static}}", STATIC_URL)
        .replace("{{version}}", digest.hexdigest()[:12])
        .replace("{{statuses}}", ",".join(JOB_STATUSES))
        .replace("{{open_mode}}", OPEN_MODE_NOTICE if open_mode else "")
    )


@pages.get("/", response_class=HTMLResponse)
async def job_list_page(rt: RuntimeDep) -> HTMLResponse:
    """The job list (the data is fetched by the page)."""
    return HTMLResponse(_shell(rt.settings.admin_key_value is None), headers=SHELL_HEADERS)


@pages.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: str, rt: RuntimeDep) -> HTMLResponse:
    """One job's page (the same shell: the script reads the id from the address)."""
    return HTMLResponse(_shell(rt.settings.admin_key_value is None), headers=SHELL_HEADERS)


@views.get("", response_model=JobInfo, responses=_ERRORS)
async def view_job(job_id: JobId, rt: RuntimeDep) -> JobInfo:
    """A job's status and progress, as ``GET /v1/jobs/{job_id}`` shows it."""
    return await rt.light(lambda: rt.service.info(job_id, _ADMIN))


@views.get("/schedule", responses={**_ERRORS, 200: {"content": {"application/json": {}, "text/csv": {}}}})
async def view_schedule(
    job_id: JobId,
    rt: RuntimeDep,
    fmt: Annotated[Literal["json", "lambdalr", "csv"], Query(alias="format")] = "json",
) -> Response:
    """A job's schedule, export or CSV, as ``GET /v1/jobs/{job_id}/schedule`` answers them."""
    return await schedule.schedule(job_id, _ADMIN, rt, fmt)


@views.get("/posterior", responses=_ERRORS)
async def view_posterior(
    job_id: JobId,
    rt: RuntimeDep,
    stage: Annotated[int | None, Query(ge=0, lt=10**6)] = None,
    points: Annotated[int, Query(ge=2, le=512)] = 64,
) -> JSONResponse:
    """A stage's GP posterior, as ``GET /v1/jobs/{job_id}/posterior`` answers it."""
    return await schedule.posterior(job_id, _ADMIN, rt, stage, points)


def install(app: FastAPI) -> None:
    """Add the dashboard's pages, assets and views to ``app``."""
    app.include_router(pages)
    app.include_router(views)
    app.mount(STATIC_URL, _Assets(directory=STATIC_DIR), name="dashboard-static")
