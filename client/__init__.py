"""lrtune trainer-side client: wire protocol, HTTP client and training-loop callback.

``import lrtune.client`` needs only torch, httpx and pydantic; the in-process tuner (``server_url=None``) is imported
when a callback first needs it, and the Lightning and Hugging Face adapters live in :mod:`lrtune.client.lightning` and
:mod:`lrtune.client.hf`. The errors are imported here at once; the names that need torch or httpx
(:class:`AutoLRSCallback`, :class:`ServiceClient`, ...) on first access, so that ``import lrtune.client.protocol``
(the wire models, all the service itself needs of this package) loads neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lrtune.client.errors import (
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
from lrtune.client.prior import prior_config

if TYPE_CHECKING:
    from lrtune.client.callback import AutoLRSCallback
    from lrtune.client.http import ServiceClient
    from lrtune.client.remote import RetryPolicy
    from lrtune.client.replay import ReplayLoader
    from lrtune.client.snapshot import SnapshotStore

#: Names imported on first access, and the module each lives in.
_LAZY = {
    "AutoLRSCallback": "lrtune.client.callback",
    "ServiceClient": "lrtune.client.http",
    "RetryPolicy": "lrtune.client.remote",
    "ReplayLoader": "lrtune.client.replay",
    "SnapshotStore": "lrtune.client.snapshot",
}

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
    "prior_config",
]


def __getattr__(name: str) -> Any:
    """Import a heavy name on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
