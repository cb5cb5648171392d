"""The FastAPI application factory."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import torch
from fastapi import FastAPI

from server import dashboard, errors
from server.deps import Runtime
from server.limits import BodyLimitMiddleware
from server.metrics import LatencyMiddleware, ServiceMetrics
from server.routes import health, jobs, schedule, segments
from server.service import JobService
from server.settings import Settings, is_loopback
from server.store import JobStore, open_store

log = logging.getLogger("lrtune.server")


def security_warnings(settings: Settings) -> list[str]:
    """Return what a start-up with these settings should warn about (empty when nothing)."""
    if settings.admin_key_value is not None:
        return []
    if is_loopback(settings.host):
        return ["no LRTUNE_ADMIN_KEY set: job listing is open to clients on this machine"]
    return [
        "!!! no LRTUNE_ADMIN_KEY set while bound to "
        f"{settings.host}: anyone who can reach this port can create jobs; listing is refused to non-loopback "
        "clients until an admin key is set. Set LRTUNE_ADMIN_KEY. !!!"
    ]


def create_app(
    settings: Settings | None = None,
    *,
    store: JobStore | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the service.

    Args:
        settings: Configuration (default: read from ``LRTUNE_*`` environment variables).
        store: A store to use instead of opening the one ``settings`` names (the app then does not close it).
        clock: Unix time in seconds, for leases and timestamps (tests inject a fake one).

    Returns:
        The app; its lifespan opens and closes the store.
    """
    settings = settings or Settings()
    torch.set_num_threads(settings.torch_threads)
    owned = store is None
    job_store = store if store is not None else open_store(settings.redis_url, settings.redis_prefix)
    service = JobService(job_store, settings.lease_ttl_s, clock)
    metrics = ServiceMetrics(lambda: job_store.count("running"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in security_warnings(settings):
            log.warning(warning)
        backend = "redis" if settings.redis_url else "in-memory (embedded; jobs are lost on exit)"
        log.info("lrtune store: %s", backend)
        app.state.runtime = Runtime(
            settings=settings,
            service=service,
            metrics=metrics,
            tuner_limiter=anyio.CapacityLimiter(settings.tuner_threads),
            light_limiter=anyio.CapacityLimiter(32),
        )
        try:
            yield
        finally:
            if owned:
                job_store.close()
            ledger = getattr(app.state, "job_ledger", None)  # the job quota's connection, opened on first use
            if ledger is not None:
                ledger.close()

    app = FastAPI(
        title="lrtune",
        version="1",
        summary="Online automatic learning-rate tuning (AutoLRS-style Bayesian optimization).",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(segments.router)
    app.include_router(schedule.router)
    app.include_router(health.router)
    dashboard.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Uvicorn factory: ``uvicorn --factory server.app:app_from_env`` (settings from the environment).

    Being the whole process's app, it also moves every object alive after start-up (torch, botorch and their
    modules: about a million objects) out of the garbage collector's sight, so that full collections take a
    millisecond instead of stalling every request for a hundred, and it shortens the GIL switch interval.
    """
    app = create_app(Settings())
    gc.collect()
    gc.freeze()
    # Tuner threads hold the GIL for long stretches of Python; a shorter switch interval lets the event loop
    # (health checks, polls) in sooner.
    sys.setswitchinterval(0.001)
    return app
