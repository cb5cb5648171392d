"""Fault-injection harness: real ``lrtune serve`` processes, a Redis of the test's own, simulated workers.

Simulated workers speak the wire protocol over httpx, compute their losses as a deterministic function of LR
and step (:func:`tests.server.helpers.run_segment`), retry what is transient (no connection, 5xx, 429) with a
bounded backoff, and keep their own log of every report the service acknowledged: the tests compare that log
with what the service recorded instead of trusting the service's word.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from lrtune.server.launch import REDIS_PREFIX_ENV, REDIS_URL_ENV, free_port
from tests.procs import Service  # noqa: F401 - the reliability tests import it from here
from tests.server.helpers import run_segment

#: Longest any single test waits for a process or a run, in seconds: everything here is bounded.
DEADLINE_S = 150.0


def in_ci() -> bool:
    """True on CI, where missing infrastructure fails a test instead of skipping it."""
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, why: str) -> None:
    """Skip (locally) or fail (on CI) when ``condition`` does not hold."""
    if not condition:
        if in_ci():
            pytest.fail(f"{why}; CI must run the reliability tests")
        pytest.skip(why)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.02) -> None:
    """Poll ``predicate`` until it holds.

    Raises:
        AssertionError: It did not hold within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def losses_digest(losses: list[float | None], val: list[float | None] | None) -> str:
    """A short fingerprint of a report's losses (what worker logs keep)."""
    return hashlib.sha256(json.dumps([losses, val]).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- processes


class RedisServer:
    """A ``redis-server`` of the test's own on a loopback port, with append-only persistence in ``data_dir``.

    Args:
        data_dir: Where the AOF lives (kept across restarts).
        appendfsync: ``everysec`` (Redis's default and the compose file's) or ``always``.
    """

    def __init__(self, data_dir: Path, appendfsync: str = "everysec") -> None:
        self.binary = shutil.which("redis-server")
        require(self.binary is not None, "redis-server is not installed")
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def start(self) -> None:
        """Start it and wait until it answers PING (after loading its AOF)."""
        assert self.binary is not None
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        finally:
            log.close()
        wait_for(self.answers, 30.0, "redis-server to answer PING")

    def answers(self) -> bool:
        """Whether it answers PING now."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it with ``sig`` (SIGTERM: a clean shutdown that flushes the AOF; SIGKILL: a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def close(self) -> None:
        """Stop it for good."""
        self.stop(signal.SIGKILL)
        self.client.close()


def serve_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a ``lrtune serve`` on Redis with key prefix ``prefix``."""
    return {REDIS_URL_ENV: redis_url, REDIS_PREFIX_ENV: prefix, **extra}


def port_is_closed(port: int) -> bool:
    """Whether nothing accepts connections on ``127.0.0.1:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------------------------------------- workers


class RefusedError(Exception):
    """The service answered a request with a definite (non-transient) error.

    Attributes:
        status: HTTP status.
        code: The error body's ``code``.
        body: The whole error body.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('code')}: {body.get('message')}")
        self.status = status
        self.code = str(body.get("code"))
        self.body = body


@dataclass(frozen=True)
class Ack:
    """One acknowledged report, as the worker logged it.

    Attributes:
        segment_id: The segment reported.
        lease_epoch: Lease epoch the report carried.
        steps: Losses reported.
        digest: :func:`losses_digest` of the losses and validation losses.
        body: The report body, for replaying.
        sent_at: ``time.monotonic()`` when the attempt that got the acknowledgement was sent.
    """

    segment_id: int
    lease_epoch: int
    steps: int
    digest: str
    body: dict[str, Any] = field(compare=False, repr=False)
    sent_at: float = field(default=0.0, compare=False)


def create_job(url: str, config: dict[str, Any], name: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """Create a job (once: creation is not idempotent, so it is never retried); return its id and token."""
    resp = httpx.post(f"{url}/v1/jobs", json={"name": name, "config": config}, headers=headers, timeout=30.0)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["job_id"], body["token"]


class SimWorker:
    """Trains one job with simulated losses over HTTP and logs what the service acknowledged.

    Args:
        url: The service.
        job_id: The job.
        token: The job's token.
        worker_id: This worker's id.
        deadline_s: Longest the whole run may take, retries included.
        on_ack: Called after each acknowledged report (from the worker's thread).
    """

    def __init__(
        self,
        url: str,
        job_id: str,
        token: str,
        worker_id: str,
        deadline_s: float = DEADLINE_S,
        on_ack: Callable[[Ack], None] | None = None,
    ) -> None:
        self.url = url
        self.job_id = job_id
        self.worker_id = worker_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.deadline = time.monotonic() + deadline_s
        self.on_ack = on_ack
        self.acks: list[Ack] = []
        self.last_sent_at = 0.0
        self.transient: list[str] = []  # every failure that was retried, as "what: why"
        self.http = httpx.Client(base_url=url, headers=self.headers, timeout=httpx.Timeout(60.0, connect=2.0))

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def _call(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST until a definite answer: return a 2xx body, raise :class:`RefusedError` for a 4xx (but 429)."""
        backoff_s = 0.02
        while True:
            self.last_sent_at = time.monotonic()
            try:
                resp = self.http.post(path, json=body)
                if resp.status_code < 300:
                    out: dict[str, Any] = resp.json()
                    return out
                if resp.status_code < 500 and resp.status_code != 429:
                    raise RefusedError(resp.status_code, resp.json())
                self.transient.append(f"{what}: {resp.status_code} {resp.json().get('code')}")
            except httpx.TransportError as exc:
                self.transient.append(f"{what}: {type(exc).__name__}")
            if time.monotonic() > self.deadline:
                raise AssertionError(f"{self.worker_id}: {what} still failing at the deadline: {self.transient[-3:]}")
            time.sleep(backoff_s)  # backing off from a failing service: nothing to poll
            backoff_s = min(0.5, backoff_s * 2)

    def poll(self, wait_for_lease: bool = False) -> dict[str, Any]:
        """Lease the open segment; with ``wait_for_lease``, wait out another worker's live lease."""
        while True:
            try:
                return self._call("poll", f"/v1/jobs/{self.job_id}/lease", {"worker_id": self.worker_id})
            except RefusedError as exc:
                if not (wait_for_lease and exc.code == "segment_leased"):
                    raise
                left_s = float(exc.body["detail"]["expires_in_s"])
                if time.monotonic() + left_s > self.deadline:
                    raise
                time.sleep(min(max(left_s, 0.01), 0.25))  # the lease says when it lapses

    def report_body(self, seg: dict[str, Any]) -> dict[str, Any]:
        """The report of a segment: its simulated losses, under this worker's id and the segment's lease."""
        return {"worker_id": self.worker_id, "lease_epoch": seg["lease_epoch"], **run_segment(seg)}

    def report(self, seg: dict[str, Any]) -> dict[str, Any]:
        """Report ``seg`` (retrying what is transient), log the acknowledgement, return the next segment."""
        body = self.report_body(seg)
        nxt = self._call(
            f"report {seg['segment_id']}", f"/v1/jobs/{self.job_id}/segments/{seg['segment_id']}/report", body
        )
        ack = Ack(
            seg["segment_id"],
            seg["lease_epoch"],
            len(body["losses"]),
            losses_digest(body["losses"], body["val_losses"]),
            body,
            self.last_sent_at,
        )
        self.acks.append(ack)
        if self.on_ack is not None:
            self.on_ack(ack)
        return nxt

    def run(
        self,
        seg: dict[str, Any] | None = None,
        stop: Callable[[dict[str, Any]], bool] | None = None,
        before: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Train until the job is done; return the last segment.

        Args:
            seg: The segment to start with (default: poll for it, waiting out another worker's lease).
            stop: Says, before a segment is run, to stop there instead.
            before: Called before each report, with the segment about to be reported.
        """
        seg = seg if seg is not None else self.poll(wait_for_lease=True)
        while not seg["done"] and not (stop is not None and stop(seg)):
            if before is not None:
                before(seg)
            seg = self.report(seg)
        return seg


class AckCounter:
    """Counts acknowledgements across workers; lets a test wait for the n-th."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def __call__(self, ack: Ack) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout_s: float) -> None:
        """Block until ``n`` acknowledgements were counted."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= n, timeout=timeout_s):
                raise AssertionError(f"only {self.count} reports acknowledged after {timeout_s} s, waiting for {n}")


def fetch(url: str, path: str, token: str) -> Any:
    """GET a job-scoped resource (no retries: the service is expected up)."""
    resp = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
    assert resp.status_code == 200, resp.text
    return resp.json()


def replay(config: dict[str, Any], acks: list[Ack]) -> dict[str, Any]:
    """The schedule an in-process tuner records from exactly the acknowledged reports, in order (JSON form).

    Raises:
        AssertionError: The acknowledged reports do not form one valid run of the job (a gap, a repeat).
    """
    import torch

    from lrtune.tuner import Tuner, TunerConfig

    torch.set_num_threads(1)
    tuner = Tuner(TunerConfig.from_dict(config))
    for ack in acks:
        seg = tuner.next_segment()
        assert seg.segment_id == ack.segment_id, f"acknowledged segment {ack.segment_id}, the run had {seg.segment_id}"
        tuner.report(ack.segment_id, ack.body["losses"], ack.body["val_losses"])
    out: dict[str, Any] = json.loads(json.dumps(tuner.schedule(), allow_nan=True).replace("NaN", "null"))
    return out


# ---------------------------------------------------------------------------------------------- results


def record_result(name: str, **figures: Any) -> None:
    """Append a test's figures to ``$LRTUNE_RELIABILITY_OUT`` (JSON lines) when set: the results document."""
    out = os.environ.get("LRTUNE_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": name, **figures}) + "\n")
