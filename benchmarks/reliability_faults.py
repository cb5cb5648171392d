"""The reliability faults of issue 12, injected into real processes on loopback, and what the run noticed.

Each fault runs against a real ``lrtune serve`` (embedded store, or a ``redis-server`` of this script's own on a
free port; the shared Redis on 6379 is never touched) and the real client callback on a tiny model:

* ``service_stopped``: the service is SIGSTOPped for ``--fault-s`` seconds mid-run; the longest callback call.
* ``redis_stopped``: the service's Redis is SIGSTOPped the same way; the longest callback call.
* ``final_flush``: the service hangs while the last segment is reported; how long ``on_train_end`` takes.
* ``poison``: reports with losses ``[1e155] + [0.5] * 9``, all 1e308, all -1e308, one 1e300, all 1e200 (the first
  two reports of a job each), then valid ones to the end: server errors, later valid reports taken and refused,
  huge values stored.
* ``create_delete``: 10,000 job create/delete cycles on the embedded store (the service's own objects, a 60 s
  deletion retention, 10 cycles per simulated second): jobs and bytes the store holds at the peak and after.
* ``service_killed``: a 4,000-step job whose service is SIGKILLed 6 s into the run and started again 3 s later, on
  its Redis (the job survives) and on the embedded store (it does not): steps run against the budget, the job's
  status and steps at the end, and whether the job's records hold the LR every step really ran at.
* ``probe_after_outage``: the service hangs for ``--fault-s`` seconds just as a candidate with a cooldown probe
  to come ends: whether that probe then ran on weights with the offline steps on them.
* ``large_bodies``: ``/healthz`` p50/p99 idle and while a client process sends 8 MB bodies back to back (at
  niceness 19, then 0: see :data:`FLOOD_NICE`), probed by a plain socket (the service's latency) and by httpx in
  turn; what a body costs the service and the sender in CPU; the time to refuse a report of 10^6 losses; the
  slowest ``/healthz`` while a valid report of 10^6 losses is taken.

Run: ``.venv/bin/python -m benchmarks.reliability_faults [--fault-s 3]``; it prints a Markdown table and
writes ``benchmarks/results/reliability_faults.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from lrtune.server.launch import REDIS_PREFIX_ENV, REDIS_URL_ENV, free_port, start_local, stop_local, wait_ready

RESULTS = Path(__file__).resolve().parent / "results"
#: A small job: a few stages with search, segments of at most 40 steps.
SMALL: dict[str, Any] = {"tau": 20, "k": 3, "k_warm": 2, "max_segment_steps": 40}
#: Simulated compute per step of the training loop, in seconds.
STEP_S = 0.02
#: The same for the runs of thousands of steps (4,000 of them last about 20 s).
FAST_STEP_S = 0.004
POISONS: dict[str, list[float]] = {
    "[1e155] + [0.5] * 9": [1e155] + [0.5] * 9,
    "all 1e308": [1e308],
    "all -1e308": [-1e308],
    "one 1e300": [1e300] + [0.5] * 9,
    "all 1e200": [1e200],
}


class Server:
    """One ``lrtune serve`` on a free loopback port."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = start_local(self.port, {"LRTUNE_LOG_LEVEL": "warning", **env}, log_dir / f"server-{self.port}.log")
        wait_ready(self.url, self.proc)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        stop_local(self.proc)


class Redis:
    """A ``redis-server`` of this script's own (no persistence) on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", ""]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


class Tiny:
    """What every fault trains: a tiny model, its optimizer and one batch (seeded)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.x, self.y = torch.randn(16, 8), torch.randn(16, 1)

    def step(self, compute_s: float) -> torch.Tensor:
        """One optimizer step, then ``compute_s`` seconds of the rest of a real step's compute."""
        loss = torch.nn.functional.mse_loss(self.model(self.x), self.y)
        self.opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        self.opt.step()
        time.sleep(compute_s)
        return loss


def timed_run(url: str, total: int, fault: Any, fault_at: int, fault_s: float, resume: bool = True) -> dict[str, Any]:
    """Train a tiny model with the callback; SIGSTOP ``fault`` at step ``fault_at`` for ``fault_s`` seconds."""
    from lrtune.client import AutoLRSCallback

    tiny = Tiny()
    model, opt = tiny.model, tiny.opt
    cb = AutoLRSCallback(model, opt, url, 1e-3, 1.0, total, config=SMALL)
    calls: list[float] = []
    stopped_at: float | None = None
    resumed = False
    while not cb.done:
        if stopped_at is None and cb.step >= fault_at:
            fault.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
        elif resume and stopped_at is not None and not resumed and time.monotonic() - stopped_at > fault_s:
            fault.send_signal(signal.SIGCONT)
            resumed = True
        loss = tiny.step(STEP_S)
        started = time.monotonic()
        cb.on_train_batch_end(loss)
        calls.append(time.monotonic() - started)
    started = time.monotonic()
    cb.on_train_end()
    end_s = time.monotonic() - started
    fault.send_signal(signal.SIGCONT)
    return {
        "steps": cb.step,
        "offline_steps": cb.offline_steps,
        "longest_step_call_s": round(max(calls), 3),
        "on_train_end_s": round(end_s, 3),
        "fault_s": fault_s if resume else None,
    }


def poison(url: str) -> dict[str, Any]:
    """Poisoned reports, then valid ones, on one job per pattern."""
    import math

    out: dict[str, Any] = {}
    config = {"min_lr": 1e-4, "max_lr": 1.0, "total_steps": 480, **SMALL, "k": 2, "k_warm": 2, "seed": 7}
    for name, pattern in POISONS.items():
        created = httpx.post(f"{url}/v1/jobs", json={"config": config}).json()
        auth = {"Authorization": f"Bearer {created['token']}"}
        job = created["job_id"]
        errors = refused_later = later_ok = 0
        with httpx.Client(base_url=url, headers=auth, timeout=30.0) as http:
            seg = http.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w"}).json()
            for i in range(200):
                if seg["done"]:
                    break
                path = f"/v1/jobs/{job}/segments/{seg['segment_id']}/report"
                good = [0.1 + 2.0 * math.exp(-0.02 * (seg["start_step"] + j)) for j in range(seg["steps"])]
                body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], "losses": good}
                if i < 2:  # the first two reports are poisoned, every later one is valid
                    bad = {**body, "losses": [pattern[j % len(pattern)] for j in range(len(good))]}
                    status, answer = _post(http, path, bad)
                    errors += status >= 500
                    if status == 200:
                        seg = answer
                        continue
                status, answer = _post(http, path, body)
                errors += status >= 500
                if status != 200:
                    refused_later += 1
                    break
                later_ok += 1
                seg = answer
            try:
                stored = http.get(f"/v1/jobs/{job}/schedule").text
            except httpx.TransportError:
                stored = ""
        huge = any(s in stored for s in ("e+155", "e+308", "e+300", "e+200"))
        out[name] = {"server_errors": errors, "later_valid_ok": later_ok, "later_valid_refused": refused_later,
                     "done": bool(seg["done"]), "huge_value_stored": huge}  # fmt: skip
    return out


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST; a broken connection (the server choked on the body) counts as a 599."""
    try:
        resp = http.post(path, json=body)
    except httpx.TransportError:
        return 599, None
    return resp.status_code, resp.json() if resp.status_code == 200 else None


def create_delete(cycles: int) -> dict[str, Any]:
    """Create and delete jobs on the embedded store with the service's own objects and a simulated clock."""
    import psutil

    from lrtune.client.protocol import JobConfig, JobCreate
    from lrtune.server.service import Credential, JobService
    from lrtune.server.store import MemoryStore

    now = [1_800_000_000.0]
    store = MemoryStore()
    service = JobService(store, 120.0, lambda: now[0], deleted_retention_s=60.0)
    body = JobCreate(config=JobConfig(min_lr=1e-4, max_lr=1.0, total_steps=2000))
    rss_before = psutil.Process().memory_info().rss
    peak_jobs = peak_bytes = 0
    started = time.perf_counter()
    for i in range(cycles):
        token, info = service.create(body)
        service.delete(info.job_id, Credential(token))
        now[0] += 0.1
        if i % 100 == 99:
            service.sweep()
            peak_jobs, peak_bytes = max(peak_jobs, len(store)), max(peak_bytes, store.nbytes)
    elapsed = time.perf_counter() - started
    held_jobs = len(store)
    now[0] += 61
    service.sweep()
    return {
        "cycles": cycles,
        "retention_s": 60.0,
        "cycles_per_simulated_s": 10,
        "peak_jobs_held": peak_jobs,
        "peak_kib_held": round(peak_bytes / 1024),
        "jobs_held_at_end": held_jobs,
        "jobs_held_after_retention": len(store),
        "rss_growth_mib": round((psutil.Process().memory_info().rss - rss_before) / 2**20, 1),
        "wall_s": round(elapsed, 1),
    }


#: A client process that sends 8 MB bodies back to back (to the report route and to job creation) for a while, at
#: the niceness it is given. Arguments: url, report path, token, seconds, niceness; it prints the status codes.
FLOOD = """
import os, sys, time, httpx
url, report_path, token, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
os.nice(int(sys.argv[5]))
body = b'{"worker_id":"w","lease_epoch":1,"losses":[' + b"0.5, " * 1599987 + b"0.5]}"
headers = {"Authorization": "Bearer " + token, "content-type": "application/json"}
statuses = []
with httpx.Client(base_url=url, timeout=30.0) as http:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in (report_path, "/v1/jobs"):
            statuses.append(http.post(path, content=body, headers=headers).status_code)
print(" ".join(map(str, statuses)))
"""
#: Niceness of the flood's sender by default. Clients of the service run on other machines; here the sender shares
#: this machine's cores with the service and spends about as much CPU per body as the service does (see
#: ``flood_cpu_ms_per_body``), so at the same priority it delays the service by taking its core, not by anything
#: the service does. At niceness 19 it takes the CPU the service and the probe leave, and still sends about as
#: many bodies.
FLOOD_NICE = 19


class HealthProbe:
    """``GET /healthz`` on one kept-alive connection, written and read on a plain socket.

    A full HTTP client spends a millisecond or more of its own CPU on each request, and a loaded machine stretches
    that into the tail it reports; this one writes a fixed request and reads the answer by its ``Content-Length``,
    so what it times is the service (its event loop, the loopback and the scheduler), not itself.

    Args:
        url: The service, ``http://host:port``.
        timeout_s: Longest wait for any answer.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        self.request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get(self) -> int:
        """Send one probe and read its whole answer; return the status code."""
        self.sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (x.partition(b":") for x in lines[1:]) if k.lower() == b"content-length")
        while len(body) < length:
            body += self._recv()
        return int(lines[0].split()[1])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the service closed the probe's connection")
        return chunk

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def probe(clients: dict[str, Callable[[], int]], seconds: float) -> dict[str, list[float]]:
    """Latencies of ``/healthz`` probes, one every 10 ms for ``seconds``, the clients taking turns.

    Args:
        clients: Name to a call that sends one probe and returns its status code.
        seconds: How long to probe.

    Returns:
        Name to the latencies of that client's probes, in seconds each.

    Raises:
        RuntimeError: A probe did not answer 200.
    """
    out: dict[str, list[float]] = {name: [] for name in clients}
    turns = list(clients.items())
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        name, send = turns[i % len(turns)]
        started = time.perf_counter()
        status = send()
        out[name].append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"/healthz answered {status} to the {name} probe")
        i += 1
        time.sleep(0.01)
    return out


def percentile_ms(xs: list[float], p: int) -> float:
    """The ``p``-th percentile of latencies ``xs`` (seconds), in milliseconds, rounded to 0.01."""
    return round(1000 * statistics.quantiles(xs, n=100, method="inclusive")[p - 1], 2)


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds used by this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Flood:
    """What one flood of 8 MB bodies did, and what the probes saw meanwhile.

    Attributes:
        latencies: Probe client name to its ``/healthz`` latencies during the flood, in seconds.
        statuses: The status code of every body sent.
        seconds: How long the flood ran.
        server_cpu_s: CPU seconds the service used meanwhile (0 when its process id was not given).
        sender_cpu_s: CPU seconds the sending process used.
        load_average: This machine's 1, 5 and 15 minute load averages at its end.
    """

    latencies: dict[str, list[float]]
    statuses: list[int]
    seconds: float
    server_cpu_s: float
    sender_cpu_s: float
    load_average: list[float]


def flood(
    url: str,
    report_path: str,
    token: str,
    clients: dict[str, Callable[[], int]],
    seconds: float,
    nice: int = FLOOD_NICE,
    server_pid: int | None = None,
) -> Flood:
    """Probe ``/healthz`` with ``clients`` for ``seconds`` while a process sends 8 MB bodies back to back.

    Args:
        url: The service.
        report_path: The report route of an open segment (its bodies are refused 422 before parsing, job creations
            413 on their declared length).
        token: That job's token.
        clients: The probes (see :func:`probe`).
        seconds: How long to probe; the flood starts 0.3 s before and ends 0.2 s after.
        nice: The sender's niceness (see :data:`FLOOD_NICE`).
        server_pid: The service's process id, to measure its CPU time.
    """
    argv = [sys.executable, "-c", FLOOD, url, report_path, token, str(seconds + 0.5), str(nice)]
    server_cpu = cpu_s(server_pid) if server_pid else 0.0
    sender_cpu = children_cpu_s()
    started = time.monotonic()
    sender = subprocess.Popen(argv, stdout=subprocess.PIPE)
    time.sleep(0.3)  # the first bodies are on their way
    latencies = probe(clients, seconds)
    statuses = [int(s) for s in sender.communicate(timeout=120)[0].split()]
    return Flood(
        latencies=latencies,
        statuses=statuses,
        seconds=time.monotonic() - started,
        server_cpu_s=cpu_s(server_pid) - server_cpu if server_pid else 0.0,
        sender_cpu_s=children_cpu_s() - sender_cpu,
        load_average=[round(v, 2) for v in os.getloadavg()],
    )


def latency_figures(xs: list[float], idle: list[float]) -> dict[str, Any]:
    """p50, p99 and max of ``xs`` in ms, with the p50 and p99 over those of ``idle``."""
    p50, p99 = percentile_ms(xs, 50), percentile_ms(xs, 99)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": round(1000 * max(xs), 2),
        "p50_over_idle": round(p50 / percentile_ms(idle, 50), 2),
        "p99_over_idle": round(p99 / percentile_ms(idle, 99), 2),
        "probes": len(xs),
    }


#: A client process that posts the body in file ``argv[3]`` to ``argv[1]`` with token ``argv[2]``; it prints the status
#: code and the seconds the answer took.
POST_FILE = """
import sys, time, httpx
body = open(sys.argv[3], "rb").read()
headers = {"Authorization": "Bearer " + sys.argv[2], "content-type": "application/json"}
started = time.perf_counter()
resp = httpx.post(sys.argv[1], content=body, headers=headers, timeout=120.0)
print(resp.status_code, time.perf_counter() - started)
"""


def valid_report(url: str, tmp: Path, reports: int = 3) -> dict[str, Any]:
    """``/healthz`` (socket probe, every 5 ms) while the service takes valid reports of 10^6 losses, one at a time.

    Each report is the first segment of a job of its own: 10^6 steps (a warmup that long, no sweep), about 7.8 MB,
    sent by a process of its own. The first is sent before probing starts (it also starts the service's parsing
    helper); the probe's latencies over the other ``reports`` are pooled. Also the same probe idle
    (``idle_p99_ms``), for comparison on a loaded machine.
    """
    config = {"min_lr": 1e-4, "max_lr": 1.0, "total_steps": 3_000_000, "warmup_steps": 1_000_000,
              "max_segment_steps": 1_000_000, "sweep_fraction": 0}  # fmt: skip
    losses = [round(0.5 + 0.4 * ((i * 7919) % 1000) / 1000, 4) for i in range(1_000_000)]
    raw = HealthProbe(url)
    raw.get()
    idle = probe({"socket": raw.get}, 2.0)["socket"]
    latencies: list[float] = []
    statuses, took = [], []
    for k in range(reports + 1):
        created = httpx.post(f"{url}/v1/jobs", json={"config": config}).json()
        token, job = created["token"], created["job_id"]
        auth = {"Authorization": f"Bearer {token}"}
        seg = httpx.post(f"{url}/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth).json()
        path = tmp / "valid_report.json"
        body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], "losses": losses[: seg["steps"]]}
        path.write_bytes(json.dumps(body).encode())
        target = f"{url}/v1/jobs/{job}/segments/{seg['segment_id']}/report"
        sender = subprocess.Popen([sys.executable, "-c", POST_FILE, target, token, str(path)], stdout=subprocess.PIPE)
        while sender.poll() is None:
            started = time.perf_counter()
            raw.get()
            if k > 0:
                latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
        status, took_s = sender.communicate()[0].split()
        statuses.append(int(status))
        took.append(float(took_s))
    raw.close()
    return {
        "losses": len(body["losses"]),
        "report_bytes": path.stat().st_size,
        "reports": reports,
        "status": next((x for x in statuses if x != 200), 200),
        "first_report_s": round(took[0], 2),
        "report_s": round(statistics.median(took[1:]), 2),
        "healthz_p50_ms": percentile_ms(latencies, 50),
        "healthz_p99_ms": percentile_ms(latencies, 99),
        "healthz_max_ms": round(1000 * max(latencies), 1),
        "probes": len(latencies),
        "idle_p99_ms": percentile_ms(idle, 99),
    }


def large_bodies(
    url: str, seconds: float, server_pid: int | None = None, nices: tuple[int, ...] = (19, 0)
) -> dict[str, Any]:
    """``/healthz`` idle and under floods of 8 MB bodies, from a socket probe and an httpx probe in turn.

    The headline ``healthz_*`` figures are the socket probe's (the service's own latency) under the flood sent at
    ``nices[0]``; ``idle``, ``floods`` and ``healthz_httpx_*`` hold every probe's figures, and what a body cost the
    service and its sender in CPU, for each sender niceness in ``nices``.
    """
    config = {"min_lr": 1e-4, "max_lr": 1.0, "total_steps": 160, **SMALL}
    created = httpx.post(f"{url}/v1/jobs", json={"config": config}).json()
    token, job = created["token"], created["job_id"]
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    seg = httpx.post(f"{url}/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth).json()
    path = f"/v1/jobs/{job}/segments/{seg['segment_id']}/report"
    million = json.dumps({"worker_id": "w", "lease_epoch": seg["lease_epoch"], "losses": [0.5] * 10**6}).encode()
    load_before = [round(v, 2) for v in os.getloadavg()]
    raw = HealthProbe(url)
    with httpx.Client(base_url=url, timeout=30.0) as http:
        clients: dict[str, Callable[[], int]] = {"socket": raw.get, "httpx": lambda: http.get("/healthz").status_code}
        for send in clients.values():
            send()
        idle = probe(clients, seconds)
        floods = {nice: flood(url, path, token, clients, seconds, nice, server_pid) for nice in nices}
        refusals = []
        for _ in range(7):
            started = time.perf_counter()
            resp = http.post(path, content=million, headers=auth)
            refusals.append(time.perf_counter() - started)
            assert resp.status_code == 422, resp.text
    raw.close()
    per_flood: dict[str, Any] = {}
    for nice, f in floods.items():
        per_flood[f"sender_nice_{nice}"] = {
            **{name: latency_figures(f.latencies[name], idle[name]) for name in clients},
            "bodies_8mb": len(f.statuses),
            "bodies_per_s": round(len(f.statuses) / f.seconds, 1),
            "body_statuses": sorted(set(f.statuses)),
            "server_cpu_ms_per_body": round(1000 * f.server_cpu_s / len(f.statuses), 2) if server_pid else None,
            "sender_cpu_ms_per_body": round(1000 * f.sender_cpu_s / len(f.statuses), 2),
            "load_average_at_end": f.load_average,
        }
    head = per_flood[f"sender_nice_{nices[0]}"]
    return {
        "healthz_idle_p50_ms": percentile_ms(idle["socket"], 50),
        "healthz_idle_p99_ms": percentile_ms(idle["socket"], 99),
        "healthz_p50_ms": head["socket"]["p50_ms"],
        "healthz_p99_ms": head["socket"]["p99_ms"],
        "healthz_p99_over_idle": head["socket"]["p99_over_idle"],
        "healthz_httpx_idle_p99_ms": percentile_ms(idle["httpx"], 99),
        "healthz_httpx_p99_ms": head["httpx"]["p99_ms"],
        "bodies_8mb": head["bodies_8mb"],
        "body_statuses": head["body_statuses"],
        "refuse_1e6_losses_median_ms": round(1000 * statistics.median(refusals), 1),
        "report_bytes_1e6_losses": len(million),
        "probe_s": seconds,
        "idle": {
            name: {"p50_ms": percentile_ms(xs, 50), "p99_ms": percentile_ms(xs, 99), "probes": len(xs)}
            for name, xs in idle.items()
        },
        "floods": per_flood,
        "load_average_before": load_before,
    }


def _lr_run(optimizer: torch.optim.Optimizer) -> list[float]:
    """Record the LR of param group 0 at every optimizer step (a step pre-hook)."""
    lrs: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(float(opt.param_groups[0]["lr"])))
    return lrs


def _recorded_lrs(schedule: dict[str, Any]) -> list[float]:
    """The LR of every step the job's records hold, in the order they ran (one worker: the order reported)."""
    from lrtune.tuner import export_lr

    out: list[float] = []
    for r in schedule["segments"]:
        keys = ("shape", "curve_from", "curve_to", "curve_start", "planned_steps")
        piece = {"start": 0, "steps": r["steps"], "curve_end": r["curve_end_planned"], **{k: r[k] for k in keys}}
        out += [export_lr({"pieces": [piece], "base_lr": 1.0}, j) for j in range(r["steps"])]
    return out


def killed_run(env: dict[str, str], tmp: Path, total: int, kill_at_s: float, down_s: float) -> dict[str, Any]:
    """Train ``total`` steps against a service that is SIGKILLed ``kill_at_s`` into the run, back ``down_s`` later."""
    from lrtune.client import AutoLRSCallback

    server = Server(env, tmp)
    port = server.port
    tiny = Tiny()
    model, opt = tiny.model, tiny.opt
    lrs = _lr_run(opt)
    cb = AutoLRSCallback(model, opt, server.url, 1e-3, 1.0, total, config=SMALL)
    first_job = cb.job_id
    started = time.monotonic()
    killed_at: float | None = None
    back = False
    try:
        while not cb.done and cb.step < 3 * total:
            now = time.monotonic() - started
            if killed_at is None and now >= kill_at_s:
                server.proc.kill()
                server.proc.wait()
                killed_at = now
            elif killed_at is not None and not back and now - killed_at >= down_s:
                server.proc = start_local(port, {"LRTUNE_LOG_LEVEL": "warning", **env}, tmp / f"server-{port}-2.log")
                back = True
            loss = tiny.step(FAST_STEP_S)
            cb.on_train_batch_end(loss)
        steps_when_done = cb.step
        cb.on_train_end()
        src: Any = cb.source
        auth = {"Authorization": f"Bearer {src.token}"}
        wait_ready(server.url, server.proc)
        info = httpx.get(f"{server.url}/v1/jobs/{src.job_id}", headers=auth, timeout=10).json()
        sched = httpx.get(f"{server.url}/v1/jobs/{src.job_id}/schedule", headers=auth, timeout=10).json()
        if "segments" not in sched:  # the job is not on the service (any more)
            info, sched = {"status": info.get("code"), "steps_used": None, "total_steps": None}, {"segments": []}
    finally:
        server.stop()
    recorded = _recorded_lrs(sched)
    ran = lrs[-len(recorded) :] if src.job_id != first_job else lrs  # a fresh job holds the steps after its start
    return {
        "total_steps": total,
        "steps_run": steps_when_done,
        "fresh_job": src.job_id != first_job,
        "job_status": info["status"],
        "job_steps_used": info["steps_used"],
        "job_total_steps": info["total_steps"],
        "offline_steps": cb.offline_steps,
        "offline_reported": getattr(cb, "offline_reported", 0),
        "recorded_steps": len(recorded),
        "recorded_lr_mismatches": sum(a != b for a, b in zip(ran, recorded, strict=False))
        + abs(len(ran) - len(recorded)),
        "last_step_lr": lrs[-1],
    }


def service_killed(tmp: Path) -> dict[str, Any]:
    """The issue's run: 4,000 steps, the service SIGKILLed at 6 s and back 3 s later; on Redis and embedded."""
    store = Redis(tmp)
    try:
        on_redis = killed_run({REDIS_URL_ENV: store.url, REDIS_PREFIX_ENV: "killed"}, tmp, 4000, 6.0, 3.0)
    finally:
        store.stop()
    embedded = killed_run({REDIS_URL_ENV: ""}, tmp, 4000, 6.0, 3.0)
    return {"redis": on_redis, "embedded": embedded}


def probe_after_outage(url: str, fault: Any, fault_s: float) -> dict[str, Any]:
    """Hang the service as a candidate ends whose cooldown probe comes next; did the probe run on other weights?"""
    from lrtune.client import AutoLRSCallback

    tiny = Tiny()
    model, opt = tiny.model, tiny.opt
    cb = AutoLRSCallback(model, opt, url, 1e-3, 1.0, 1500, preset="greedy", config=SMALL)
    stopped_at: float | None = None
    resumed = False
    cut: dict[str, Any] | None = None  # the candidate the outage cut off, and what ran after it
    foreign = 0
    after: list[str] = []
    while not cb.done:
        seg = cb.segment
        if seg is not None and cut is not None and seg.segment_id != cut["segment_id"] and not after:
            is_probe = seg.phase == "explore" and seg.shape == "linear" and seg.restore is None
            after.append("its probe" if is_probe and seg.candidate == cut["candidate"] else seg.phase)
            if is_probe and cb.offline_steps > cut["offline_before"]:
                foreign += 1
        is_candidate = (
            seg is not None and seg.phase == "explore" and seg.shape == "constant" and seg.candidate is not None
        )
        if stopped_at is None and is_candidate and seg is not None and cb.step == seg.start_step + seg.steps - 1:
            cut = {"segment_id": seg.segment_id, "candidate": seg.candidate, "offline_before": cb.offline_steps}
            fault.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
        elif stopped_at is not None and not resumed and time.monotonic() - stopped_at > fault_s:
            fault.send_signal(signal.SIGCONT)
            resumed = True
        loss = tiny.step(FAST_STEP_S)
        cb.on_train_batch_end(loss)
    cb.on_train_end()
    fault.send_signal(signal.SIGCONT)
    return {
        "offline_steps_after_the_candidate": cb.offline_steps - (cut or {}).get("offline_before", 0),
        "next_segment_after_the_outage": after[0] if after else None,
        "probes_run_on_other_weights": foreign,
        "steps_run": cb.step,
    }


def machine() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


FAULTS = (
    "service_stopped",
    "final_flush",
    "poison",
    "large_bodies",
    "redis_stopped",
    "create_delete",
    "service_killed",
    "probe_after_outage",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fault-s", type=float, default=3.0, help="how long each SIGSTOP lasts")
    ap.add_argument("--cycles", type=int, default=10_000, help="job create/delete cycles")
    ap.add_argument("--probe-s", type=float, default=6.0, help="seconds of /healthz probing, idle and under load")
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {', '.join(FAULTS)}")
    ap.add_argument("--out", type=Path, default=RESULTS / "reliability_faults.json", help="where the JSON goes")
    args = ap.parse_args()
    chosen = [f for f in FAULTS if f in args.faults.split(",")]
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="lrtune-faults-"))
    command = " ".join(["python -m benchmarks.reliability_faults", *sys.argv[1:]])
    results: dict[str, Any] = {"machine_before": machine(), "command": command}
    if {"service_stopped", "final_flush", "poison", "large_bodies", "probe_after_outage"} & set(chosen):
        embedded = Server({REDIS_URL_ENV: ""}, tmp)
        try:
            if "service_stopped" in chosen:
                print("service SIGSTOPped ...", flush=True)
                results["service_stopped"] = timed_run(embedded.url, 200, embedded.proc, 10, args.fault_s)
            if "final_flush" in chosen:
                print("final flush with the service hung ...", flush=True)
                results["final_flush"] = timed_run(embedded.url, 80, embedded.proc, 79, args.fault_s, resume=False)
            if "probe_after_outage" in chosen:
                print("service hung as a candidate ends ...", flush=True)
                results["probe_after_outage"] = probe_after_outage(embedded.url, embedded.proc, args.fault_s)
            if "poison" in chosen:
                print("poisoned reports ...", flush=True)
                results["poison"] = poison(embedded.url)
            if "large_bodies" in chosen:
                print("8 MB bodies ...", flush=True)
                results["large_bodies"] = large_bodies(embedded.url, args.probe_s, embedded.proc.pid)
                results["large_bodies"]["valid_report_1e6_losses"] = valid_report(embedded.url, tmp)
        finally:
            embedded.stop()
    if "redis_stopped" in chosen:
        store = Redis(tmp)
        on_redis = Server({REDIS_URL_ENV: store.url, REDIS_PREFIX_ENV: "faults"}, tmp)
        try:
            print("Redis SIGSTOPped ...", flush=True)
            results["redis_stopped"] = timed_run(on_redis.url, 200, store.proc, 10, args.fault_s)
        finally:
            on_redis.stop()
            store.stop()
    if "service_killed" in chosen:
        print("service SIGKILLed and restarted ...", flush=True)
        results["service_killed"] = service_killed(tmp)
    if "create_delete" in chosen:
        print("create/delete cycles ...", flush=True)
        results["create_delete"] = create_delete(args.cycles)
    results["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| fault | figure |\n|---|---|")
    for name, value in summary(results, args.fault_s):
        print(f"| {name} | {value} |")
    print(f"\nmachine: {results['machine_before']}")
    print(f"wrote {args.out}")


def summary(results: dict[str, Any], fault_s: float) -> list[tuple[str, str]]:
    """One line per fault that ran."""
    rows = []
    for key, what in (("service_stopped", "service"), ("redis_stopped", "Redis")):
        if key in results:
            rows.append((f"longest callback call, {what} SIGSTOPped", f"{results[key]['longest_step_call_s']} s"))
    if "final_flush" in results:
        rows.append(("on_train_end with the service hung", f"{results['final_flush']['on_train_end_s']} s"))
    for store, k in results.get("service_killed", {}).items():
        rows.append(
            (
                f"service SIGKILLed and restarted ({store}): steps run / budget; job; LRs recorded wrong",
                f"{k['steps_run']} / {k['total_steps']}; {k['job_status']} at {k['job_steps_used']} of "
                f"{k['job_total_steps']}{' (a fresh job)' if k['fresh_job'] else ''}; {k['recorded_lr_mismatches']}",
            )
        )
    if "probe_after_outage" in results:
        p = results["probe_after_outage"]
        rows.append(
            (
                "outage as a candidate ends: next segment; probes run on other weights",
                f"{p['next_segment_after_the_outage']}; {p['probes_run_on_other_weights']}",
            )
        )
    if "poison" in results:
        p = results["poison"].values()
        errors, refused = sum(x["server_errors"] for x in p), sum(x["later_valid_refused"] for x in p)
        ok = sum(x["later_valid_ok"] for x in p)
        rows.append(("poisoned reports: 5xx / later valid reports taken / refused", f"{errors} / {ok} / {refused}"))
    if "create_delete" in results:
        c = results["create_delete"]
        rows.append(
            (
                f"store after {c['cycles']} create/delete cycles",
                f"peak {c['peak_jobs_held']} jobs, {c['peak_kib_held']} KiB; {c['jobs_held_after_retention']} after",
            )
        )
    if "large_bodies" in results:
        b = results["large_bodies"]
        rows.append(("/healthz p99 idle / under 8 MB bodies", f"{b['healthz_idle_p99_ms']} / {b['healthz_p99_ms']} ms"))
        idle = b.get("idle", {})
        if idle:
            rows.append(
                (
                    "/healthz p50 / p99 idle: socket probe; httpx probe",
                    f"{idle['socket']['p50_ms']} / {idle['socket']['p99_ms']} ms; "
                    f"{idle['httpx']['p50_ms']} / {idle['httpx']['p99_ms']} ms",
                )
            )
        for name, f in b.get("floods", {}).items():
            raw, lib = f["socket"], f["httpx"]
            rows.append(
                (
                    f"/healthz p50 / p99 under 8 MB bodies, {name.replace('_', ' ')}: socket probe; httpx probe",
                    f"{raw['p50_ms']} / {raw['p99_ms']} ms ({raw['p99_over_idle']}x idle p99); "
                    f"{lib['p50_ms']} / {lib['p99_ms']} ms ({lib['p99_over_idle']}x); {f['bodies_per_s']} bodies/s, "
                    f"{f['server_cpu_ms_per_body']} ms service CPU and {f['sender_cpu_ms_per_body']} ms sender CPU "
                    "per body",
                )
            )
        rows.append(("refusing a 10^6-loss report", f"{b['refuse_1e6_losses_median_ms']} ms"))
        if "valid_report_1e6_losses" in b:
            v = b["valid_report_1e6_losses"]
            rows.append(
                (
                    f"/healthz while a valid 10^6-loss report ({v['report_bytes'] / 1e6:.1f} MB) is taken",
                    f"p50 {v['healthz_p50_ms']} ms, max {v['healthz_max_ms']} ms over {v['report_s']} s",
                )
            )
    return rows


if __name__ == "__main__":
    main()
