"""Service errors, and the one place that maps every domain error to an HTTP status and JSON body.

Every error response is :class:`lrtune.client.protocol.ErrorBody`: ``{"code": ..., "message": ..., "detail": ...}``
with a stable ``code``. Nothing a client sends may produce a 500: bad input is 4xx, and anything unforeseen
is logged and answered with ``internal`` (500) without leaking internals.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrtune.client.protocol import ErrorBody
from lrtune.server.store import StoreError
from lrtune.server.store.records import RecordDecodeError
from lrtune.tuner import InvalidConfigError, TunerError

log = logging.getLogger("lrtune.server")


class ServiceError(Exception):
    """Root of the errors the service raises on purpose.

    Args:
        message: What went wrong and what to do about it.
        detail: Machine-readable extras (JSON-safe), or None.
    """

    code = "service_error"

    def __init__(self, message: str, detail: Any | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UnauthorizedError(ServiceError):
    """No usable credential was sent."""

    code = "unauthorized"


class ForbiddenError(ServiceError):
    """The credential does not open this resource."""

    code = "forbidden"


class SegmentLeasedError(ServiceError):
    """Another worker holds a live lease on the open segment."""

    code = "segment_leased"


class StaleLeaseError(ServiceError):
    """A report's worker or lease epoch is not the current lease's; nothing was applied."""

    code = "stale_lease"


class JobDeletedError(ServiceError):
    """The job was deleted; it takes no polls or reports."""

    code = "job_deleted"


class BodyTooLargeError(ServiceError):
    """The request body exceeds ``max_body_bytes``."""

    code = "body_too_large"


class RateLimitedError(ServiceError):
    """The client sends requests faster than ``rate_limit_per_s`` allows (``detail.retry_after_s``: when to retry)."""

    code = "rate_limited"


class TooManyJobsError(ServiceError):
    """The client has ``max_jobs_per_client`` running jobs already; ``detail.retry_after_s`` says when to retry."""

    code = "too_many_jobs"


class HostNotAllowedError(ServiceError):
    """The request's ``Host`` header is not in ``LRTUNE_ALLOWED_HOSTS`` (DNS rebinding protection)."""

    code = "host_not_allowed"


class ReportTooLargeError(ServiceError):
    """A report body is larger than any valid report of the open segment could be (refused before parsing)."""

    code = "invalid_report"


#: HTTP status of each error code. Codes missing here are 500s.
STATUS: dict[str, int] = {
    # service
    HostNotAllowedError.code: 400,
    UnauthorizedError.code: 401,
    ForbiddenError.code: 403,
    SegmentLeasedError.code: 409,
    StaleLeaseError.code: 409,
    JobDeletedError.code: 410,
    BodyTooLargeError.code: 413,
    RateLimitedError.code: 429,
    TooManyJobsError.code: 429,
    # tuner
    "invalid_config": 422,
    "invalid_report": 422,
    "unknown_segment": 409,
    "conflicting_report": 409,
    # store
    "job_not_found": 404,
    "job_exists": 409,
    "store_busy": 503,
    "store_unavailable": 503,
    # requests
    "invalid_request": 422,
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
}

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: BodyTooLargeError.code,
    429: RateLimitedError.code,
}


#: ``Retry-After`` (seconds) of 503 answers: the store is down or contended, try again shortly.
UNAVAILABLE_RETRY_AFTER_S = 1


def error_response(status: int, code: str, message: str, detail: Any | None = None) -> JSONResponse:
    """Build the JSON response of an error.

    A 401 carries ``WWW-Authenticate: Bearer``; a 429 carries ``Retry-After`` from ``detail["retry_after_s"]``
    and a 503 ``Retry-After: 1``.
    """
    body = ErrorBody(code=code, message=message, detail=detail).model_dump()
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 429:
        wait = detail.get("retry_after_s") if isinstance(detail, dict) else None
        headers["Retry-After"] = str(max(1, math.ceil(wait))) if isinstance(wait, int | float) else "1"
    elif status == 503:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    return JSONResponse(body, status_code=status, headers=headers or None)


def _coded(code: str, message: str, detail: Any | None = None) -> JSONResponse:
    status = STATUS.get(code, 500)
    if status >= 500:
        log.warning("%s: %s", code, message)
    return error_response(status, code, message, detail)


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Summarize pydantic errors as 'where: what' lines, keeping only JSON-safe parts."""
    detail = []
    for err in errors[:20]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        msg = str(err.get("msg", "invalid value"))
        ctx = err.get("ctx") or {}
        if err.get("type") == "json_invalid" and "error" in ctx:
            msg = f"request body is not valid JSON ({ctx['error']})"
        detail.append({"loc": loc, "msg": msg, "type": str(err.get("type", ""))})
    parts = [f"{'.'.join(d['loc']) or 'body'}: {d['msg']}" for d in detail[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, detail


def install(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into an :class:`ErrorBody` response."""

    async def on_service(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return _coded(exc.code, exc.message, exc.detail)

    async def on_tuner(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TunerError)
        return _coded(exc.code, str(exc))

    async def on_store(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StoreError)
        return _coded(exc.code, str(exc))

    async def on_record(_: Request, exc: Exception) -> JSONResponse:
        log.error("unreadable stored record: %s", exc)
        return error_response(500, "corrupt_record", "a stored job record could not be read; see the server log")

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        # The job config is the tuner's TunerConfig: once each field fits its type and range, the tuner's own
        # checks of how the fields fit together run as it is built; what they refuse is an invalid config.
        refused = [e.get("ctx", {}).get("error") for e in errors]
        if errors and all(isinstance(r, InvalidConfigError) for r in refused):
            return _coded("invalid_config", "; ".join(str(r) for r in refused))
        message, detail = _validation_message(errors)
        return error_response(422, "invalid_request", message, detail)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the request body could not be parsed: send UTF-8 JSON without huge numbers or deep nesting"
        return error_response(exc.status_code, code, message)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal", "internal error; see the server log")

    app.add_exception_handler(ServiceError, on_service)
    app.add_exception_handler(TunerError, on_tuner)
    app.add_exception_handler(StoreError, on_store)
    app.add_exception_handler(RecordDecodeError, on_record)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
