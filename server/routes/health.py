"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from lrtune.server.deps import RuntimeDep
from lrtune.server.errors import error_response
from lrtune.server.store import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (answered on the event loop, never blocked by tuner work)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(rt: RuntimeDep) -> Response | dict[str, str]:
    """The store answers; 503 ``store_unavailable`` otherwise."""
    try:
        await rt.light(rt.service.store.ping)
    except StoreError as exc:
        return error_response(503, "store_unavailable", str(exc))
    return {"status": "ready"}


@router.get("/metrics")
async def metrics(rt: RuntimeDep) -> Response:
    """Prometheus text exposition."""
    body = await rt.light(rt.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
