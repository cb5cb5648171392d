"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import torch
from fastapi import FastAPI

from lrtune.server import apidocs, dashboard, errors
from lrtune.server.deps import Runtime
from lrtune.server.door import DoorMiddleware
from lrtune.server.limits import BodyLimitMiddleware
from lrtune.server.metrics import LatencyMiddleware, ServiceMetrics
from lrtune.server.routes import health, jobs, schedule, segments
from lrtune.server.service import JobService
from lrtune.server.settings import Settings, is_loopback
from lrtune.server.store import JobStore, StoreError, open_store

log = logging.getLogger("lrtune.server")
#: The service's log line format.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: Longest pause between two janitor passes (stalled jobs, retention), in seconds.
JANITOR_MAX_INTERVAL_S = 30.0


#: How to make an admin key, for the messages that ask for one.
KEY_RECIPE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def public_bind_error(settings: Settings) -> str | None:
    """Why these settings must not start a service, or None when they may.

    Binding anything but loopback without an admin key would let every machine that reaches the port create
    jobs (job creation needs no token), so ``lrtune serve`` refuses it.
    """
    if settings.admin_key_value is not None or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host} without an admin key: anyone who can reach this port could create "
        f"jobs. Set LRTUNE_ADMIN_KEY to a long random secret (e.g. the output of {KEY_RECIPE}), "
        "or listen on loopback only (--host 127.0.0.1)."
    )


def security_warnings(settings: Settings) -> list[str]:
    """Return what a start-up with these settings should warn about (empty when nothing)."""
    out = []
    if settings.admin_key_value is None and is_loopback(settings.host):
        out.append("no LRTUNE_ADMIN_KEY set: job listing is open to clients on this machine")
    if not is_loopback(settings.host) and "*" not in settings.allowed_hosts:
        out.append(
            f"bound to {settings.host}: only the host names {', '.join(settings.host_patterns())} are answered "
            "(LRTUNE_ALLOWED_HOSTS); add the names other machines use to reach this service"
        )
    return out


def janitor_interval_s(settings: Settings) -> float:
    """Seconds between janitor passes: a quarter of the stall time, at most :data:`JANITOR_MAX_INTERVAL_S`."""
    return min(JANITOR_MAX_INTERVAL_S, max(0.05, settings.stall_after_s / 4))


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
    service = JobService(
        job_store,
        settings.lease_ttl_s,
        clock,
        stall_after_s=settings.stall_after_s,
        deleted_retention_s=settings.deleted_retention_s,
        done_retention_s=settings.done_retention_s,
    )
    metrics = ServiceMetrics(lambda: job_store.count("running"))
    identity: dict[str, str] = {}

    def learn_store_id() -> None:
        if "id" not in identity:
            identity["id"] = job_store.store_id

    async def janitor(runtime: Runtime) -> None:
        """Mark idle jobs stalled and drop expired ones, forever (each pass in a worker thread)."""
        while True:
            try:
                await runtime.light(learn_store_id)
                outcome = await runtime.light(service.sweep)
                if outcome.stalled or outcome.expired:
                    log.info("janitor: %d jobs stalled, %d expired jobs dropped", outcome.stalled, outcome.expired)
            except StoreError as exc:
                log.debug("janitor: store unavailable: %s", exc)
            except Exception:  # keep sweeping whatever one pass hit
                log.exception("janitor pass failed")
            await asyncio.sleep(janitor_interval_s(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in security_warnings(settings):
            log.warning(warning)
        backend = "redis" if settings.redis_url else "in-memory (embedded; jobs are lost on exit)"
        log.info("lrtune store: %s", backend)
        runtime = Runtime(
            settings=settings,
            service=service,
            metrics=metrics,
            tuner_limiter=anyio.CapacityLimiter(settings.tuner_threads),
            light_limiter=anyio.CapacityLimiter(32),
        )
        app.state.runtime = runtime
        with contextlib.suppress(StoreError):
            await runtime.light(learn_store_id)
        sweeper = asyncio.create_task(janitor(runtime), name="lrtune-janitor")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if owned:
                job_store.close()
            ledger = getattr(app.state, "job_ledger", None)  # the job quota's connection, opened on first use
            if ledger is not None:
                ledger.close()
            limiter = getattr(app.state, "rate_limiter", None)  # the rate limit's, made on the first request
            if limiter is not None:
                limiter.close()

    app = FastAPI(
        title="lrtune",
        version="1",
        summary="Online automatic learning-rate tuning (AutoLRS-style Bayesian optimization).",
        lifespan=lifespan,
        docs_url=None,  # served by server.apidocs, from local assets
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(segments.router)
    app.include_router(schedule.router)
    app.include_router(health.router)
    dashboard.install(app)
    apidocs.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(DoorMiddleware, allowed_hosts=settings.host_patterns(), store_id=lambda: identity.get("id"))
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Uvicorn factory: ``uvicorn --factory lrtune.server.app:app_from_env`` (settings from the environment).

    Being the whole process's app, it also moves every object alive after start-up (torch, botorch and their
    modules: about a million objects) out of the garbage collector's sight, so that full collections take a
    millisecond instead of stalling every request for a hundred, and it shortens the GIL switch interval.
    """
    settings = Settings()
    if not logging.getLogger().handlers:  # a worker process of `lrtune serve --workers N`: log as the first one
        logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    # Tuner threads hold the GIL for long stretches of Python; a shorter switch interval lets the event loop
    # (health checks, polls) in sooner.
    sys.setswitchinterval(0.001)
    return app
