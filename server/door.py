"""The first thing every request meets: the ``Host`` check, and the store identity on every answer.

* **Host check.** A browser page on another site can reach a service on loopback by pointing its own DNS name at
  ``127.0.0.1`` (DNS rebinding); its requests then carry that site's name in ``Host``. The service answers only
  the names in ``LRTUNE_ALLOWED_HOSTS`` (default: this machine's names for itself) and refuses any other with
  400 ``host_not_allowed``, before any route runs. Health, readiness and metrics probes are exempt, since
  orchestrators send them by address.
* **Store identity.** Every answer carries ``Lrtune-Store-Id``, the id of the store instance behind the service
  (:attr:`lrtune.server.store.JobStore.store_id`). A client whose job is suddenly unknown can tell from it that the
  service came back with a store that never held the job (an embedded service restarted), rather than that the
  job was deleted.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrtune.server.errors import HostNotAllowedError, error_response
from lrtune.server.quotas import EXEMPT_PATHS
from lrtune.server.settings import host_allowed

#: Response header carrying the store's id (lower case, as ASGI wants it).
STORE_ID_HEADER = b"lrtune-store-id"


class DoorMiddleware:
    """Refuses requests whose ``Host`` is not allowed; adds ``Lrtune-Store-Id`` to every answer.

    Args:
        app: The wrapped app.
        allowed_hosts: Patterns of allowed ``Host`` values (``Settings.host_patterns()``).
        store_id: Returns the store's id, or None while it is not known yet (it is read off the event loop at
            start-up and by the janitor, never here).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], store_id: Callable[[], str | None]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.store_id = store_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") not in EXEMPT_PATHS:
            host = ""
            for name, value in scope.get("headers") or []:
                if name == b"host":
                    host = value.decode("latin-1")
                    break
            if not host_allowed(host, self.allowed_hosts):
                exc = HostNotAllowedError(
                    f"this service answers only the host names in LRTUNE_ALLOWED_HOSTS, not {host[:100]!r}; "
                    "add the name clients use to reach it"
                )
                await error_response(400, exc.code, exc.message)(scope, receive, send)
                return
        store_id = self.store_id()
        if store_id is None:
            await self.app(scope, receive, send)
            return
        stamp = store_id.encode("latin-1")

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (STORE_ID_HEADER, stamp)]}
            await send(message)

        await self.app(scope, receive, stamped)
