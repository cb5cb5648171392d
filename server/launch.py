"""How the service is started: shared by the CLI, the container files and the tests that start it locally.

``docker-compose.yml`` and the ``Dockerfile`` run :data:`CONTAINER_ARGV` with :data:`REDIS_URL_ENV` set, and a
test checks that they do, so what the tests start is what the container runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The environment variable naming the Redis store (``redis://host:6379/0``).
REDIS_URL_ENV = "LRTUNE_REDIS_URL"
#: The environment variable of the key prefix in Redis.
REDIS_PREFIX_ENV = "LRTUNE_REDIS_PREFIX"
#: The environment variable of the admin key.
ADMIN_KEY_ENV = "LRTUNE_ADMIN_KEY"
#: Port the container listens on.
CONTAINER_PORT = 8000


def serve_argv(host: str, port: int, program: str = "lrtune") -> list[str]:
    """Return the command line that starts the service on ``host:port``."""
    return [program, "serve", "--host", host, "--port", str(port)]


#: The container's command.
CONTAINER_ARGV = serve_argv("0.0.0.0", CONTAINER_PORT)  # a container listens on every interface


def local_program() -> str:
    """Path of the ``lrtune`` script beside this interpreter (what ``pip install`` put there)."""
    return str(Path(sys.executable).with_name("lrtune"))
