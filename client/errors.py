"""Errors the client raises on purpose.

Every error derives from :class:`LrtuneClientError`; each subclass also inherits the builtin that fits, so a
caller that does not know this package can still catch ``ValueError``, ``LookupError``, ``ConnectionError`` or
``PermissionError``. Only construction (job creation, attaching to a job) and programming mistakes raise into
the caller; once training runs, service failures become a single logged warning (the callback fails open).
"""

from __future__ import annotations

from typing import Any


class LrtuneClientError(Exception):
    """Root of every error this package raises on purpose."""


class LrtuneHTTPError(LrtuneClientError):
    """The service answered with an error, or could not be reached.

    Attributes:
        status: HTTP status code, or None when no response arrived.
        code: The stable error code of the service's JSON error body (``stale_lease``, ...), or None.
        detail: The body's ``detail`` field, if any.
        retry_after_s: The answer's ``Retry-After`` in seconds (429 and 503 carry one), or None.
        store_id: The ``Lrtune-Store-Id`` header of the answer: which store instance answered, or None.
        reason: The service's own message (the error body's ``message``), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: Any = None,
        retry_after_s: float | None = None,
        store_id: str | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.store_id = store_id


class ServiceUnavailableError(LrtuneHTTPError, ConnectionError):
    """Transient: no connection, a timeout, a 5xx, a 429 or an unreadable answer. Worth retrying later."""


class JobGoneError(LrtuneHTTPError, LookupError):
    """The job does not exist (any more): deleted, expired, or the store lost it. Retrying will not help."""


class AuthError(LrtuneHTTPError, PermissionError):
    """The job token or admin key is missing or wrong (401/403)."""


class ConfigRejectedError(LrtuneHTTPError, ValueError):
    """The service refused the job configuration (4xx on job creation)."""


class ReportRejectedError(LrtuneHTTPError, ValueError):
    """The service refused a report: it does not fit the open segment (wrong segment, length, content)."""


class StaleLeaseError(LrtuneHTTPError):
    """409 ``stale_lease``: the report's lease epoch is outdated; poll the open segment again."""


class SegmentLeasedError(LrtuneHTTPError):
    """409 ``segment_leased``: another worker holds the open segment's lease; retry after it lapses."""
