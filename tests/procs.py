"""Real ``lrtune serve`` processes for tests that start, kill and restart the service."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from lrtune.server.launch import free_port, start_local, stop_local, wait_ready


class Service:
    """One ``lrtune serve`` on a loopback port that the test starts, SIGKILLs and restarts at will.

    Each incarnation logs to its own file ``<log_dir>/server<n>.log``.

    Args:
        env: ``LRTUNE_*`` variables (store, prefix, lease TTL, ...).
        log_dir: Where the logs go.
        port: TCP port (default: a free one, kept across restarts).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        self.env = {"LRTUNE_LOG_LEVEL": "warning", "LRTUNE_TUNER_THREADS": "2", **env}
        self.log_dir = log_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnations = 0
        self.kills = 0

    def start(self, wait: bool = True) -> None:
        """Start a new incarnation (and wait until ``/readyz`` answers 200)."""
        self.proc = start_local(self.port, self.env, self.log_dir / f"server{self.incarnations}.log")
        self.incarnations += 1
        if wait:
            wait_ready(self.url, self.proc, timeout_s=90.0)

    def kill(self) -> None:
        """SIGKILL the running incarnation: no shutdown, no flushing, in-flight requests die with it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        """Stop the running incarnation, if any (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            stop_local(self.proc)

    def logs(self) -> str:
        """Everything every incarnation wrote."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("server*.log")))
