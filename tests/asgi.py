"""The service in process, as a loopback client on this machine reaches it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from starlette.types import ASGIApp

#: Where in-process test clients say they come from and what they call the service: this machine.
LOOPBACK = "127.0.0.1"


def local_client(app: ASGIApp, address: str = LOOPBACK, port: int = 50_000, **kwargs: Any) -> TestClient:
    """A ``TestClient`` that talks to ``app`` as a client at ``address`` would, through ``http://127.0.0.1``.

    Starlette's defaults (client host ``testclient``, ``Host: testserver``) are neither loopback nor an allowed
    host, so the service treats them as any other remote client would be treated: refused.
    """
    kwargs.setdefault("base_url", f"http://{LOOPBACK}")
    return TestClient(app, client=(address, port), **kwargs)
