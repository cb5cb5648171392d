"""lrtune trainer-side client: wire protocol, HTTP client and training-loop callback.

``import client`` needs only torch, httpx and pydantic; the in-process tuner (``server_url=None``) is imported
when a callback first needs it, and the Lightning and Hugging Face adapters live in :mod:`client.lightning` and
:mod:`client.hf`.
"""

from client.callback import AutoLRSCallback
from client.errors import (
    AuthError,
    ConfigRejectedError,
    JobGoneError,
    LrtuneClientError,
    LrtuneHTTPError,
    ReportRejectedError,
    SegmentLeasedError,
    ServiceUnavailableError,
    StaleLeaseError,
)
from client.http import ServiceClient
from client.remote import RetryPolicy
from client.replay import ReplayLoader
from client.snapshot import SnapshotStore

__all__ = [
    "AuthError",
    "AutoLRSCallback",
    "ConfigRejectedError",
    "JobGoneError",
    "LrtuneClientError",
    "LrtuneHTTPError",
    "ReplayLoader",
    "ReportRejectedError",
    "RetryPolicy",
    "SegmentLeasedError",
    "ServiceClient",
    "ServiceUnavailableError",
    "SnapshotStore",
    "StaleLeaseError",
]
