"""A small typed client for lrtune's HTTP API (v1) over an injectable ``httpx.Client``.

Each method makes exactly one request and either returns a :mod:`lrtune.client.protocol` model or raises one of the
typed errors of :mod:`lrtune.client.errors`; it never retries and never sleeps (retrying is the caller's policy, see
:mod:`lrtune.client.remote`). Transient failures (no connection, timeouts, 5xx, 429, an unreadable answer) all become
:class:`~lrtune.client.errors.ServiceUnavailableError`.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from lrtune.client.errors import (
    AuthError,
    ConfigRejectedError,
    JobGoneError,
    LrtuneHTTPError,
    ReportRejectedError,
    SegmentLeasedError,
    ServiceUnavailableError,
    StaleLeaseError,
)
from lrtune.client.protocol import (
    API_PREFIX,
    JobConfig,
    JobCreate,
    JobCreated,
    JobInfo,
    LeaseRequest,
    WireReport,
    WireSegment,
)

M = TypeVar("M")  # a pydantic model or (pydantic) dataclass
#: How a route's answer is returned: parsed JSON, text, or the raw bytes.
Body = Literal["json", "text", "bytes"]


class HTTPClient(Protocol):
    """What this module needs of an HTTP client: ``httpx.Client`` and compatible ones.

    (Starlette's ``TestClient`` derives from ``httpx2.Client``, a compatible fork, when that is installed.)
    """

    def request(
        self, method: str, url: str, *, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        """Send one request and return its response."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


#: Longest wait for a TCP connection, in seconds.
CONNECT_TIMEOUT_S = 2.0
#: Default read timeout of a request, in seconds. A report waits for the service's BO step (tens of
#: milliseconds); the callback never waits this long on a training step (see ``max_stall_s``), it only bounds
#: how long one attempt against a hung service occupies the client's background thread.
DEFAULT_TIMEOUT_S = 10.0
#: Response header naming the store instance that answered (``lrtune.server.door``): a different id for a job this
#: client saw means the service came back with a store that never held it (an embedded service restarted).
STORE_ID_HEADER = "lrtune-store-id"
#: Error codes that mean the job no longer exists.
_GONE_CODES = frozenset({"job_not_found", "job_deleted", "job_gone"})
#: Statuses worth retrying later.
_TRANSIENT_STATUS = frozenset({408, 425, 429})


class ServiceClient:
    """Typed access to one lrtune service.

    Args:
        server_url: Base URL of the service (``http://127.0.0.1:8000``); None to use ``http_client``'s own
            ``base_url`` (e.g. a ``fastapi.testclient.TestClient``).
        http_client: The ``httpx.Client`` (or compatible client) to send requests with; None creates one
            (closed by :meth:`close`).
        timeout_s: Per-request read timeout in seconds (connecting: at most ``CONNECT_TIMEOUT_S``), used only when
            this object creates the client. A report waits for the service's BO step (tens of ms).
        api_key: Admin key sent when creating jobs, if the service requires one.

    Raises:
        ValueError: Neither a URL nor a client, or a URL that is not http(s).
        TypeError: ``http_client`` is not an HTTP client.
    """

    def __init__(
        self,
        server_url: str | None,
        *,
        http_client: HTTPClient | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
    ) -> None:
        check_http_client(http_client)
        if server_url is None and http_client is None:
            raise ValueError("give server_url, or an http_client with a base_url")
        if server_url is not None and not server_url.startswith(("http://", "https://")):
            raise ValueError(f"server_url must start with http:// or https://, got {server_url!r}")
        self.base = server_url.rstrip("/") if server_url is not None else ""
        self._owned = http_client is None
        # A short connect timeout: a retry against an unreachable host blocks the training loop only that long.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self._http: HTTPClient = http_client if http_client is not None else httpx.Client(timeout=timeout)
        self._transport_errors = _transport_errors(self._http)
        self._api_key = api_key
        self.store_id: str | None = None  # the store instance of the last successful answer

    @property
    def where(self) -> str:
        """The service's address, for messages."""
        return self.base or str(getattr(self._http, "base_url", "the service"))

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owned:
            self._http.close()

    # ------------------------------------------------------------------ routes

    def create_job(self, config: JobConfig, name: str | None = None) -> JobCreated:
        """``POST /v1/jobs``: create a job.

        Raises:
            ConfigRejectedError: The service refused the config.
            AuthError: The service wants an admin key.
            ServiceUnavailableError: Transient failure.
        """
        body = JobCreate(name=name, config=config)
        data = self._call("POST", f"{API_PREFIX}/jobs", self._api_key, body, on_4xx=ConfigRejectedError)
        return _parse(JobCreated, data)

    def lease(self, job_id: str, token: str, worker_id: str) -> WireSegment:
        """``POST /v1/jobs/{job_id}/lease``: lease the open segment to ``worker_id`` and return it.

        Raises:
            SegmentLeasedError: Another worker holds a live lease.
            JobGoneError: The job does not exist (any more).
            AuthError: Wrong token.
            ServiceUnavailableError: Transient failure.
        """
        path = f"{API_PREFIX}/jobs/{job_id}/lease"
        data = self._call("POST", path, token, LeaseRequest(worker_id=worker_id), on_4xx=LrtuneHTTPError)
        return _parse(WireSegment, data)

    def report(self, job_id: str, token: str, segment_id: int, report: WireReport) -> WireSegment:
        """``POST /v1/jobs/{job_id}/segments/{segment_id}/report``: report losses, get the next segment.

        Raises:
            StaleLeaseError: The lease epoch is outdated (nothing was applied).
            ReportRejectedError: The report does not fit the open segment.
            JobGoneError: The job does not exist (any more).
            AuthError: Wrong token.
            ServiceUnavailableError: Transient failure.
        """
        path = f"{API_PREFIX}/jobs/{job_id}/segments/{segment_id}/report"
        data = self._call("POST", path, token, report, on_4xx=ReportRejectedError)
        return _parse(WireSegment, data)

    def job(self, job_id: str, token: str) -> JobInfo:
        """``GET /v1/jobs/{job_id}``: the job's status and progress."""
        return _parse(JobInfo, self._call("GET", f"{API_PREFIX}/jobs/{job_id}", token, None, on_4xx=LrtuneHTTPError))

    def delete_job(self, job_id: str, token: str, purge: bool = False) -> None:
        """``DELETE /v1/jobs/{job_id}``: end the job (``purge``: remove it entirely)."""
        path = f"{API_PREFIX}/jobs/{job_id}" + ("?purge=true" if purge else "")
        self._call("DELETE", path, token, None, on_4xx=LrtuneHTTPError)

    def get(self, path: str, token: str | None, params: dict[str, Any] | None = None, as_: Body = "json") -> Any:
        """``GET path`` (any read route: listings, the dashboard's job views, exports).

        Args:
            path: Route, with its leading slash.
            token: Bearer token (admin key or job token), or None.
            params: Query parameters.
            as_: ``json`` (parsed), ``text`` or ``bytes`` (the raw body).

        Raises:
            LrtuneHTTPError: Its typed subclasses as for every route (``JobGoneError``, ``AuthError``, ...).
        """
        query = "" if not params else "?" + urlencode(params)
        return self._call("GET", path + query, token, None, LrtuneHTTPError, as_=as_)

    def schedule(self, job_id: str, token: str, fmt: str = "json") -> Any:
        """``GET /v1/jobs/{job_id}/schedule``: the realized schedule, its export, or its segments as CSV text.

        Args:
            job_id: The job.
            token: Its token.
            fmt: ``json`` (the schedule, parsed), ``lambdalr`` (the replay form, parsed) or ``csv`` (text).
        """
        path = f"{API_PREFIX}/jobs/{job_id}/schedule?format={fmt}"
        return self._call("GET", path, token, None, LrtuneHTTPError, as_="text" if fmt == "csv" else "json")

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: str,
        path: str,
        token: str | None,
        body: BaseModel | None,
        on_4xx: type[LrtuneHTTPError],
        as_: Body = "json",
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # A report without offline steps leaves the field out: services older than it refuse unknown fields.
        skip = {"offline"} if isinstance(body, WireReport) and body.offline is None else None
        content = body.model_dump_json(exclude=skip).encode() if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = self._http.request(method, self.base + path, content=content, headers=headers)
        except self._transport_errors as exc:  # connect/read/write timeouts, refused connections, broken streams
            raise ServiceUnavailableError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if resp.is_success:
            self.store_id = _header(resp, STORE_ID_HEADER) or self.store_id
            if as_ == "bytes":
                return resp.content
            if resp.status_code == 204 or not resp.content:
                return None
            if as_ == "text":
                return resp.text
            try:
                return resp.json()
            except ValueError as exc:
                raise ServiceUnavailableError(
                    f"{method} {path}: the answer is not JSON", status=resp.status_code
                ) from exc
        raise _error(method, path, resp, on_4xx)


def check_http_client(http_client: object) -> None:
    """Raise TypeError unless ``http_client`` is None or looks like an ``httpx.Client``."""
    if http_client is not None and not (
        callable(getattr(http_client, "request", None)) and callable(getattr(http_client, "close", None))
    ):
        raise TypeError(f"http_client must be an httpx.Client (or compatible), got {type(http_client).__name__}")


def _transport_errors(http_client: object) -> tuple[type[Exception], ...]:
    """The transport errors of ``httpx`` and of the package the client comes from (``httpx2`` ...)."""
    errors: list[type[Exception]] = [httpx.TransportError]
    package = sys.modules.get(type(http_client).__module__.split(".")[0])
    other = getattr(package, "TransportError", None)
    if isinstance(other, type) and issubclass(other, Exception) and other not in errors:
        errors.append(other)
    return tuple(errors)


def _error(method: str, path: str, resp: Any, on_4xx: type[LrtuneHTTPError]) -> LrtuneHTTPError:
    """Map an error response to a typed error (by the body's ``code`` first, then the status)."""
    status = resp.status_code
    code: str | None = None
    message = resp.reason_phrase
    detail: Any = None
    try:
        data = resp.json()
        if isinstance(data, dict):
            code = data.get("code") if isinstance(data.get("code"), str) else None
            message = str(data.get("message", message))
            detail = data.get("detail")
    except ValueError:
        pass
    text = f"{method} {path}: {status} {code or ''} {message}".replace("  ", " ")
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "detail": detail,
        "retry_after_s": retry_after(_header(resp, "retry-after")),
        "store_id": _header(resp, STORE_ID_HEADER),
        "reason": message,
    }
    if status >= 500 or status in _TRANSIENT_STATUS:
        return ServiceUnavailableError(text, **kw)
    if code == "stale_lease":
        return StaleLeaseError(text, **kw)
    if code == "segment_leased":
        return SegmentLeasedError(text, **kw)
    if code in _GONE_CODES or status == 410 or (status == 404 and "/jobs/" in path):
        return JobGoneError(text, **kw)
    if status in (401, 403):
        return AuthError(text, **kw)
    if status == 404:
        return LrtuneHTTPError(f"{text} (is this an lrtune service?)", **kw)
    return on_4xx(text, **kw)


def _header(resp: Any, name: str) -> str | None:
    """A response header's value, or None (also for responses without headers)."""
    headers = getattr(resp, "headers", None)
    value = headers.get(name) if headers is not None else None
    return value if isinstance(value, str) and value else None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        import time

        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds == float("inf"):  # NaN or inf
        return None
    return max(0.0, seconds)


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(model: type[M]) -> TypeAdapter[M]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def _parse(model: type[M], data: Any) -> M:
    try:
        return _adapter(model).validate_python(data)
    except ValidationError as exc:
        raise ServiceUnavailableError(f"unexpected answer, not a {model.__name__}: {exc}") from exc
