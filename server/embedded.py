"""Run the service inside this process, in a background thread, on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.transport import KEEP_ALIVE_S, NoDelayH11Protocol


class BackgroundServer:
    """A uvicorn server on ``127.0.0.1`` in a daemon thread; a context manager.

    Args:
        settings: Service settings (default: the embedded in-memory store, no admin key).
        log_level: Uvicorn log level.
        port: Loopback port to listen on (0: any free port).

    Example:
        >>> with BackgroundServer() as srv:  # doctest: +SKIP
        ...     httpx.get(f"{srv.url}/healthz")
    """

    def __init__(self, settings: Settings | None = None, log_level: str = "warning", port: int = 0) -> None:
        self.settings = settings or Settings(redis_url=None)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.settings),
            log_level=log_level,
            lifespan="on",
            http=NoDelayH11Protocol,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        """Start serving; return once the server accepts requests.

        Raises:
            RuntimeError: It did not start within ``timeout_s`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded lrtune server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
