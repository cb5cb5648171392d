"""Limits applied at the door, before a route runs: the request rate per client and the body size.

The body limit is enforced on the declared length and on the bytes actually received. Only reports may be
large (``LRTUNE_MAX_BODY_BYTES``); every other request body is capped at :data:`SMALL_BODY_BYTES`, so that no
route parses a large body on the event loop (the report route parses its body in a worker thread, after checking
its size against the open segment, see :mod:`lrtune.server.routes.segments`). The rate limit (off unless
``LRTUNE_RATE_LIMIT_PER_S`` is set, see :mod:`lrtune.server.quotas`; shared through Redis when the store is there) is
checked first, so a client over its rate costs the service no body reading and no store access.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrtune.server.errors import BodyTooLargeError, RateLimitedError, error_response
from lrtune.server.quotas import EXEMPT_PATHS, RateLimiter, client_key, is_admin
from lrtune.server.settings import Settings

#: Largest body of any request but a report, in bytes (a job config or a lease request is well under 4 KiB).
SMALL_BODY_BYTES = 64 * 1024


def body_limit(path: str, max_bytes: int) -> int:
    """The largest body accepted on ``path``: ``max_bytes`` for a report, :data:`SMALL_BODY_BYTES` otherwise."""
    if path.endswith("/report") and "/segments/" in path:
        return max_bytes
    return min(max_bytes, SMALL_BODY_BYTES)


class BodyLimitMiddleware:
    """Answers 429 to a client over its request rate, and 413 to a request whose body exceeds ``max_bytes``.

    A ``Content-Length`` above the limit is refused before reading; a body within its declared length goes to
    the app as it arrives (the HTTP parser never hands over more than was declared); a chunked body is read
    and counted up to the limit before the app sees it. The limit is :func:`body_limit` of the path.

    The rate limit comes from ``rate_limiter``, or else from the settings of the app being served
    (``app.state.runtime.settings``, set by its lifespan), read on the first request.

    Args:
        app: The wrapped app.
        max_bytes: Largest body accepted, in bytes.
        rate_limiter: The per-client rate limit; None to take it from the app's settings (on the store's Redis
            when there is one).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, rate_limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.rate_limiter = rate_limiter
        self._settings: Settings | None = None

    def _limits(self, scope: Scope) -> tuple[RateLimiter | None, Settings | None]:
        if self._settings is None:
            runtime: Any = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
            settings = getattr(runtime, "settings", None)
            if not isinstance(settings, Settings):
                return self.rate_limiter, None  # no lifespan yet: nothing configured to enforce
            self._settings = settings
            if self.rate_limiter is None and settings.rate_limit_per_s > 0:
                self.rate_limiter = RateLimiter(
                    settings.rate_limit_per_s, settings.rate_limit_burst, settings.redis_url, settings.redis_prefix
                )
                scope["app"].state.rate_limiter = self.rate_limiter  # the lifespan closes it
        return self.rate_limiter, self._settings

    async def _rate_limited(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer 429 and return True when the client is over its rate."""
        limiter, settings = self._limits(scope)
        if limiter is None or scope.get("path") in EXEMPT_PATHS:
            return False
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if settings is not None and is_admin(auth, settings):
            return False
        client = scope.get("client")
        key = client_key(client[0] if client else None)
        # In memory the count is a few microseconds; on Redis it is a round trip, kept off the event loop.
        wait_s = await anyio.to_thread.run_sync(limiter.acquire, key) if limiter.shared else limiter.acquire(key)
        if wait_s <= 0:
            return False
        exc = RateLimitedError(
            f"too many requests from this client (LRTUNE_RATE_LIMIT_PER_S={limiter.rate_per_s:g}); "
            f"retry in {wait_s:.2f} s",
            detail={"retry_after_s": round(wait_s, 3)},
        )
        await error_response(429, exc.code, exc.message, exc.detail)(scope, receive, send)
        return True

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        exc = BodyTooLargeError(f"request body exceeds the limit of {limit} bytes on this route; send less per request")
        response = error_response(413, exc.code, exc.message)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http" and await self._rate_limited(scope, receive, send):
            return
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = body_limit(str(scope.get("path", "")), self.max_bytes)
        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._refuse(scope, receive, send, limit)
                    return
        if declared is not None and declared >= 0:
            await self.app(scope, receive, send)  # the server delivers exactly the declared bytes, no more
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
