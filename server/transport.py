"""The HTTP protocol uvicorn runs: h11 with Nagle's algorithm off on every connection.

asyncio turns on ``TCP_NODELAY`` only for sockets created with ``proto=IPPROTO_TCP``; the listening socket uvicorn
binds for ``--workers N`` (and any socket handed in) has ``proto=0``, so small responses wait for the peer's
delayed ACK: about 40 ms per request on a kept-alive connection. Setting the option on each connection fixes
that whichever way the socket was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Import path of :class:`NoDelayH11Protocol`, for ``uvicorn.run(http=...)`` in worker processes.
PROTOCOL = "lrtune.server.transport:NoDelayH11Protocol"
#: Seconds the server keeps an idle kept-alive connection open (uvicorn's ``timeout_keep_alive``). Longer than
#: httpx's 5 s pool expiry, so the worker closes an idle connection first: at uvicorn's default of 5 s the two
#: timers race and a request sent as the server closes gets "Server disconnected without sending a response".
KEEP_ALIVE_S = 30


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with ``TCP_NODELAY`` set on the connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set ``TCP_NODELAY`` on TCP connections, then hand over to h11."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a transport that refuses options keeps its default
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # type: ignore[arg-type]
