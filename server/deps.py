"""Request dependencies: the service, credentials, and running blocking work off the event loop."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request

from lrtune.server.errors import ForbiddenError, UnauthorizedError
from lrtune.server.metrics import ServiceMetrics
from lrtune.server.service import Credential, JobService
from lrtune.server.settings import Settings, is_loopback

T = TypeVar("T")


@dataclass
class Runtime:
    """What one app instance shares between requests (set up by the lifespan).

    Attributes:
        settings: The settings the app was created with.
        service: Job operations over the store.
        metrics: The app's metrics.
        tuner_limiter: Caps concurrent tuner work (GP fits), so that CPU-bound threads cannot starve the
            event loop of the GIL.
        light_limiter: Caps concurrent light store operations (polls, reads).
    """

    settings: Settings
    service: JobService
    metrics: ServiceMetrics
    tuner_limiter: anyio.CapacityLimiter
    light_limiter: anyio.CapacityLimiter

    async def heavy(self, fn: Callable[[], T]) -> T:
        """Run tuner work (a report) in a worker thread."""
        return await anyio.to_thread.run_sync(fn, limiter=self.tuner_limiter)

    async def light(self, fn: Callable[[], T]) -> T:
        """Run a light blocking call (store read, poll) in a worker thread."""
        return await anyio.to_thread.run_sync(fn, limiter=self.light_limiter)


def get_runtime(request: Request) -> Runtime:
    """The app's runtime."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is_admin(token: str, settings: Settings) -> bool:
    key = settings.admin_key_value
    return key is not None and hmac.compare_digest(token.encode(), key.encode())


def job_credential(request: Request, runtime: RuntimeDep) -> Credential:
    """The credential of a job-scoped request (the job token or the admin key).

    Raises:
        UnauthorizedError: No bearer token.
    """
    token = _bearer(request)
    if token is None:
        raise UnauthorizedError("send the job token as 'Authorization: Bearer <token>'")
    return Credential(token, admin=_is_admin(token, runtime.settings))


def require_admin(request: Request, runtime: RuntimeDep) -> None:
    """Admit a request to an admin route.

    With an admin key configured, the request must carry it. Without one, only loopback clients are
    admitted (the service is open on this machine only).

    Raises:
        UnauthorizedError: No token while an admin key is configured.
        ForbiddenError: A wrong token, or a non-loopback client while no admin key is configured.
    """
    settings = runtime.settings
    if settings.admin_key_value is None:
        client = request.client.host if request.client else ""
        if client and not is_loopback(client):  # no address at all: a Unix socket, local by construction
            raise ForbiddenError("listing jobs from another machine needs LRTUNE_ADMIN_KEY to be set on the service")
        return
    token = _bearer(request)
    if token is None:
        raise UnauthorizedError("send the admin key as 'Authorization: Bearer <key>'")
    if not _is_admin(token, settings):
        raise ForbiddenError("this token is not the admin key")


JobCredential = Annotated[Credential, Depends(job_credential)]
Admin = Depends(require_admin)
