"""How the service is started: shared by the CLI, the container files and the tests that start it locally.

``docker-compose.yml`` and the ``Dockerfile`` run :data:`CONTAINER_ARGV` with :data:`REDIS_URL_ENV` set, and a
test checks that they do, so what the tests start is what the container runs.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The environment variable naming the Redis store (``redis://host:6379/0``).
REDIS_URL_ENV = "LRTUNE_REDIS_URL"
#: The environment variable of the key prefix in Redis.
REDIS_PREFIX_ENV = "LRTUNE_REDIS_PREFIX"
#: The environment variable of the admin key.
ADMIN_KEY_ENV = "LRTUNE_ADMIN_KEY"
#: Port the container listens on.
CONTAINER_PORT = 8000
#: The Prometheus client's multiprocess folder (see :mod:`lrtune.server.metrics`).
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Names of the files the Prometheus client writes to that folder (``counter_<pid>.db``, ...).
#: A multiprocess metrics file of the Prometheus client: ``<kind>_<pid>.db``.
METRICS_FILE = re.compile(r"^[a-z]+_(\d+)\.db$")


def serve_argv(host: str, port: int, program: str = "lrtune") -> list[str]:
    """Return the command line that starts the service on ``host:port``."""
    return [program, "serve", "--host", host, "--port", str(port)]


#: The container's command.
CONTAINER_ARGV = serve_argv("0.0.0.0", CONTAINER_PORT)  # a container listens on every interface


def prepare_metrics_dir(workers: int) -> str | None:
    """Set up the Prometheus client's multiprocess mode for ``workers`` worker processes, before they start.

    With more than one worker, every worker writes its metrics to files in one folder and a scrape of any of
    them reads them all. The folder is ``PROMETHEUS_MULTIPROC_DIR`` when it is set (created if missing), or a
    new temporary folder removed when this process exits; either way it is emptied of metrics files left by an
    earlier run (whose counters would otherwise be added to this one's). With one worker the variable is
    honoured if set (and emptied) but none is made up.

    Args:
        workers: Worker processes the service will run.

    Returns:
        The folder, now in this process's environment (which the workers inherit); None for one-process mode.
    """
    given = os.environ.get(MULTIPROC_DIR_ENV)
    if not given and workers <= 1:
        return None
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if METRICS_FILE.match(path.name) and path.is_file():
                path.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="lrtune-metrics-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[MULTIPROC_DIR_ENV] = str(folder)
    return str(folder)


def local_program() -> str:
    """Path of the ``lrtune`` script beside this interpreter (what ``pip install`` put there)."""
    return str(Path(sys.executable).with_name("lrtune"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_local(port: int, env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``lrtune serve`` on ``127.0.0.1:port`` as a child process, with ``env`` added to this environment.

    Args:
        port: TCP port.
        env: Extra environment variables (e.g. ``{REDIS_URL_ENV: "redis://127.0.0.1:6379/0"}``).
        log_path: File that receives the process's output (default: discarded).
    """
    full_env = {**os.environ, **env}
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(serve_argv("127.0.0.1", port, local_program()), env=full_env, stdout=out, stderr=out)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def stop_local(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Stop a process from :func:`start_local`: SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 90.0) -> None:
    """Poll ``url/readyz`` until it answers 200.

    Raises:
        RuntimeError: The process exited, or ``timeout_s`` seconds passed.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"lrtune serve exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"lrtune serve at {url} was not ready after {timeout_s} s")
