"""Load on a real `lrtune serve` process over loopback, with the Redis store.

N simulated workers (threads with httpx), each running one job at a time: poll, "train" a segment (a
deterministic simulated loss, and about ``--think-ms`` of simulated training time: uniform within +-50%, so
that jobs do not report in lockstep), report, and start a new job when one is done; a prober in a separate
process hits ``/healthz`` every 20 ms throughout. Reports are split into those whose next segment needed a BO
suggestion, a candidate's forecast or the stage winner's GP ranking (``report_bo``), and the others
(``report_plain``: warmup, train and anneal segments, which fit nothing).

Run: ``.venv/bin/python -m benchmarks.service_load [--workers 32] [--seconds 60] [--think-ms 1000 250]
[--server-workers 1]`` (results go to ``benchmarks/results/service_load.{md,json}``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing
import os
import platform
import random
import statistics
import threading
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from lrtune.server.launch import REDIS_PREFIX_ENV, REDIS_URL_ENV, free_port, start_local, stop_local, wait_ready
from lrtune.server.store.redis import RedisStore
from lrtune.tuner.segment import Segment

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS_MS = {"report_bo_p99": 150.0, "report_plain_p99": 20.0, "healthz_p99": 10.0}
TARGET_BYTES_PER_JOB = 1_000_000
JOB_CONFIG: dict[str, Any] = {"min_lr": 1e-4, "max_lr": 1.0, "total_steps": 2000, "warmup_steps": 50}
JOB_STEPS = (1000, 2000, 3000, 4000)  # budgets the workers' jobs draw from


def sim_loss(lr: float, step: int) -> float:
    x = math.log10(lr)
    return 0.1 + 2.0 * math.exp(-0.004 * step) + 0.05 * (x + 1.5) ** 2


def lr_at(seg: dict[str, Any], j: int) -> float:
    return Segment.from_dict(seg).lr_at(j)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = {"poll": [], "report_bo": [], "report_plain": [], "healthz": []}
        self.suggest_ms: list[float] = []
        self.jobs = 0
        self.errors: list[str] = []

        self.server: dict[str, list[float]] = {k: [] for k in self.samples}

    def add(self, kind: str, seconds: float, resp: httpx.Response | None = None) -> None:
        with self.lock:
            self.samples[kind].append(1000 * seconds)
            if resp is not None:
                app = timings(resp).get("app")
                if app is not None:
                    self.server[kind].append(app)


def timings(resp: httpx.Response) -> dict[str, float]:
    """The ``Server-Timing`` entries of a response, in milliseconds."""
    out = {}
    for part in resp.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def worker(i: int, url: str, stop: threading.Event, think_s: float, rec: Recorder) -> None:
    # Jobs are not synchronized: they start at different times, train at different speeds (a mean segment time
    # from half to twice --think-ms, each segment within +-50% of it) and have different budgets.
    rng = random.Random(i)
    think_s *= 2 ** rng.uniform(-1, 1)
    if think_s and stop.wait(rng.uniform(0, 2 * think_s)):
        return
    with httpx.Client(base_url=url, timeout=30.0) as http:
        n = 0
        while not stop.is_set():
            steps = rng.choice(JOB_STEPS)
            created = http.post(
                "/v1/jobs",
                json={"name": f"load-{i}-{n}", "config": {**JOB_CONFIG, "seed": i * 1000 + n, "total_steps": steps}},
            )
            if created.status_code != 201:
                rec.errors.append(created.text)
                return
            job, token = created.json()["job_id"], created.json()["token"]
            with rec.lock:
                rec.jobs += 1
            http.headers["Authorization"] = f"Bearer {token}"
            t0 = time.perf_counter()
            resp = http.post(f"/v1/jobs/{job}/lease", json={"worker_id": f"w{i}"})
            rec.add("poll", time.perf_counter() - t0, resp)
            seg = resp.json()
            while not seg["done"] and not stop.is_set():
                losses = [sim_loss(lr_at(seg, j), seg["start_step"] + j) for j in range(seg["steps"])]
                every = seg["eval_every"]
                vals = [losses[k - 1] for k in range(every, len(losses) + 1, every)] if every else None
                if think_s and stop.wait(think_s * rng.uniform(0.5, 1.5)):
                    break  # the run is over: do not fire every worker's report at the same instant
                body = {"worker_id": f"w{i}", "lease_epoch": seg["lease_epoch"], "losses": losses, "val_losses": vals}
                t0 = time.perf_counter()
                resp = http.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body)
                took = time.perf_counter() - t0
                if resp.status_code != 200:
                    rec.errors.append(resp.text)
                    return
                suggest = timings(resp).get("suggest")
                nxt = resp.json()
                # A report takes part in the search when it reports a candidate (forecast fit, maybe the winner's
                # GP ranking) or asks for one (a BO suggestion); the others (warmup, train, anneal) fit nothing.
                search = suggest is not None or "explore" in (seg["phase"], nxt["phase"])
                rec.add("report_bo" if search else "report_plain", took, resp)
                if suggest is not None:
                    with rec.lock:
                        rec.suggest_ms.append(suggest)
                if seg["segment_id"] % 7 == 3:  # a worker re-polls now and then (e.g. after a restart)
                    t0 = time.perf_counter()
                    again = http.post(f"/v1/jobs/{job}/lease", json={"worker_id": f"w{i}"})
                    rec.add("poll", time.perf_counter() - t0, again)
                seg = nxt
            n += 1


def prober(url: str, seconds: float, out: Connection) -> None:
    """Hit /healthz every 20 ms for ``seconds``; send back (client ms, server ms) pairs.

    It runs in a process of its own, so that the 32 worker threads of the load generator do not delay it.
    """
    samples: list[tuple[float, float]] = []
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=url, timeout=10.0) as http:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            resp = http.get("/healthz")
            samples.append((1000 * (time.perf_counter() - t0), timings(resp).get("app", math.nan)))
            time.sleep(0.02)
    out.send(samples)
    out.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def server_usage(ps: psutil.Process) -> tuple[float, int]:
    """CPU seconds (user + system) and RSS bytes of the server and its worker processes."""
    procs = [ps, *ps.children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in procs), sum(p.memory_info().rss for p in procs)


def run(
    workers: int, seconds: float, think_ms: float, redis_url: str, label: str, server_workers: int = 1
) -> dict[str, Any]:
    prefix = f"lrtune-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {REDIS_URL_ENV: redis_url, REDIS_PREFIX_ENV: prefix, "LRTUNE_LOG_LEVEL": "warning"}
    proc = start_local(port, {**env, "LRTUNE_WORKERS": str(server_workers)})
    r = redis.Redis.from_url(redis_url)
    try:
        wait_ready(url, proc)
        ps = psutil.Process(proc.pid)
        httpx.post(f"{url}/v1/jobs", json={"config": JOB_CONFIG})  # warm the tuner's imports
        cpu0, rss_start = server_usage(ps)
        redis0 = int(r.info("memory")["used_memory"])
        rec = Recorder()
        stop = threading.Event()
        threads = [threading.Thread(target=worker, args=(i, url, stop, think_ms / 1000, rec)) for i in range(workers)]
        receiver, sender = multiprocessing.Pipe(duplex=False)
        probe = multiprocessing.get_context("spawn").Process(target=prober, args=(url, seconds, sender))
        started = time.perf_counter()
        probe.start()
        for t in threads:
            t.start()
        warmup_s = min(10.0, seconds / 4)
        stop.wait(warmup_s)  # memory growth is measured after the allocator and caches warmed up
        rss0 = server_usage(ps)[1]
        stop.wait(seconds - warmup_s)
        stop.set()
        for t in threads:
            t.join()
        for client_ms, server_ms in receiver.recv():
            rec.samples["healthz"].append(client_ms)
            rec.server["healthz"].append(server_ms)
        probe.join()
        wall = time.perf_counter() - started
        cpu1, rss1 = server_usage(ps)
        cpu = cpu1 - cpu0
        redis1 = int(r.info("memory")["used_memory"])
    finally:
        stop_local(proc)
        store = RedisStore(redis_url, prefix)
        store.purge()
        store.close()
    requests = sum(len(v) for v in rec.samples.values())
    out: dict[str, Any] = {
        "label": label,
        "workers": workers,
        "server_processes": server_workers,
        "seconds": round(wall, 1),
        "think_ms": think_ms,
        "jobs": rec.jobs + 1,
        "errors": rec.errors[:5],
        "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "server_cpu_percent": round(100 * cpu / wall, 1),
        "server_rss_start_mb": round(rss_start / 2**20, 1),
        "server_rss_mb": round(rss1 / 2**20, 1),
        "server_rss_growth_per_job_kb": round((rss1 - rss0) / max(rec.jobs, 1) / 1024, 1),
        "redis_bytes_per_job_kb": round((redis1 - redis0) / (rec.jobs + 1) / 1024, 1),
        "bo_suggest_ms": {"p50": pct(rec.suggest_ms, 50), "p99": pct(rec.suggest_ms, 99), "n": len(rec.suggest_ms)},
        "latency_ms": {
            k: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "mean": statistics.fmean(v)}
            for k, v in rec.samples.items()
            if v
        },
        "server_latency_ms": {
            k: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "mean": statistics.fmean(v)}
            for k, v in rec.server.items()
            if v
        },
    }
    return out


def embedded_bytes_per_job(jobs: int = 8) -> float:
    """Bytes the in-memory store holds per finished job (run in this process, without HTTP)."""
    from lrtune.client.protocol import JobConfig, JobCreate, WireReport
    from lrtune.server.service import Credential, JobService
    from lrtune.server.store import MemoryStore

    store = MemoryStore()
    service = JobService(store, lease_ttl_s=120.0)
    for n in range(jobs):
        token, info = service.create(JobCreate(config=JobConfig(**JOB_CONFIG, seed=n)))
        cred = Credential(token)
        seg = service.poll(info.job_id, "w", cred).segment.to_dict()
        while not seg["done"]:
            losses: list[float | None] = [sim_loss(lr_at(seg, j), seg["start_step"] + j) for j in range(seg["steps"])]
            report = WireReport(worker_id="w", lease_epoch=seg["lease_epoch"], losses=losses)
            seg = service.report(info.job_id, seg["segment_id"], report, cred).segment.to_dict()
    sizes = [len(e.head) + len(e.tuner) for e in store._jobs.values()]
    return statistics.fmean(sizes)


def verdicts(run_: dict[str, Any]) -> list[str]:
    lines = []
    for key, target in TARGETS_MS.items():
        kind = key.removesuffix("_p99")
        for where, field in (("client-observed", "latency_ms"), ("server-side", "server_latency_ms")):
            got = run_[field].get(kind, {}).get("p99", float("nan"))
            verdict = "met" if got <= target else f"missed by {got - target:.1f} ms"
            lines.append(f"{kind} p99 ({where}) {got:.1f} ms vs target {target:.0f} ms: {verdict}")
    per_job = max(run_["server_rss_growth_per_job_kb"], 0.0) * 1024
    lines.append(
        f"server RSS growth per job {per_job / 1024:.1f} KB (after warm-up, over every job of the run) vs target 1 MB: "
        + ("met" if per_job <= TARGET_BYTES_PER_JOB else "missed")
    )
    return lines


def markdown(runs: list[dict[str, Any]], command: str, embedded: float, load: str) -> str:
    head = [
        "# Service load benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}; the load "
        "generator runs on the same cores as the server",
        "- store: Redis on 127.0.0.1:6379; `lrtune serve` with the number of uvicorn worker processes each run names",
        f"- job: {json.dumps(JOB_CONFIG)} (default preset) with total_steps drawn from {list(JOB_STEPS)}, "
        "simulated losses",
        f"- load average when the benchmark started: {load}",
        f"- memory per finished job in the embedded store: {embedded / 1024:.1f} KB (target 1 MB: "
        + ("met" if embedded <= TARGET_BYTES_PER_JOB else "missed")
        + ")",
        "",
    ]
    body = []
    for r in runs:
        body += [
            f"## {r['label']}: {r['workers']} workers, think {r['think_ms']:.0f} ms per segment, {r['seconds']} s, "
            f"{r['server_processes']} server process(es)",
            "",
            f"{r['requests']} requests ({r['requests_per_s']}/s), {r['jobs']} jobs, "
            f"server CPU {r['server_cpu_percent']}% (of one core), RSS {r['server_rss_mb']} MB, "
            f"errors: {len(r['errors'])}",
            "",
            "Latency in ms as the workers saw it (client), and as the service measured it from request to answer",
            "(server, `Server-Timing: app`), which leaves out the load generator's own waits on these two cores.",
            "",
            "| request | n | client p50 | client p95 | client p99 | server p50 | server p95 | server p99 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for kind, c in r["latency_ms"].items():
            sv = r["server_latency_ms"].get(kind, {"p50": math.nan, "p95": math.nan, "p99": math.nan})
            body.append(
                f"| {kind} | {c['n']} | {c['p50']:.1f} | {c['p95']:.1f} | {c['p99']:.1f} "
                f"| {sv['p50']:.1f} | {sv['p95']:.1f} | {sv['p99']:.1f} |"
            )
        bo = r["bo_suggest_ms"]
        body += [
            "",
            f"BO suggestion (server side): p50 {bo['p50']:.1f} ms, p99 {bo['p99']:.1f} ms over {bo['n']} suggestions. "
            f"Memory: server RSS growth {r['server_rss_growth_per_job_kb']} KB per job; "
            f"Redis {r['redis_bytes_per_job_kb']} KB per job.",
            "",
            *[f"- {v}" for v in verdicts(r)],
            "",
        ]
    return "\n".join(head + body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn worker processes of the server")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--think-ms", type=float, nargs="+", default=[200.0])
    parser.add_argument("--redis-url", default=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", type=Path, default=RESULTS / "service_load.md")
    args = parser.parse_args()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    embedded = embedded_bytes_per_job()
    print(f"embedded store: {embedded / 1024:.1f} KB per finished job", flush=True)
    runs = []
    for think in args.think_ms:
        label = f"think {think:g} ms" if think else "saturated"
        print(f"running {label}: {args.workers} workers, think {think} ms, {args.seconds} s ...", flush=True)
        res = run(args.workers, args.seconds, think, args.redis_url, label, args.server_workers)
        print(json.dumps(res, indent=1), flush=True)
        runs.append(res)
    command = "python -m benchmarks.service_load " + " ".join(
        [
            f"--workers {args.workers}",
            f"--server-workers {args.server_workers}",
            f"--seconds {args.seconds:g}",
            "--think-ms " + " ".join(f"{t:g}" for t in args.think_ms),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(runs, command, embedded, load))
    doc = {"command": command, "load_average": load, "embedded_bytes_per_job": embedded, "runs": runs}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
