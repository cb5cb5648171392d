"""Soak: 100 jobs trained at once by simulated workers against one `lrtune serve` on Redis, for ten minutes.

Each worker thread runs one job at a time (poll, "train" a segment for about ``--think-ms``, report; a new job
when one is done, whose schedule it reads first; one finished job in ten is purged), so about ``--workers``
jobs are always running and finished ones pile up in Redis as they would in use. Every ``--every-s`` seconds
it samples the server's RSS, Redis's memory, the jobs so far, and the latency percentiles and errors of the
requests of that window. Nothing is retried silently: every non-2xx answer and transport error is counted.

Run: ``.venv/bin/python -m benchmarks.soak [--workers 100] [--minutes 10] [--think-ms 2000]``; results go to
``benchmarks/results/soak.{json,png}`` and the summary is printed (``benchmarks/results/reliability.md`` quotes
it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from benchmarks.service_load import lr_at, pct, server_usage, sim_loss
from lrtune.server.launch import REDIS_PREFIX_ENV, REDIS_URL_ENV, free_port, start_local, stop_local, wait_ready
from lrtune.server.store.redis import RedisStore

RESULTS = Path(__file__).resolve().parent / "results"
JOB_CONFIG: dict[str, Any] = {"min_lr": 1e-4, "max_lr": 1.0, "warmup_steps": 50}
JOB_STEPS = (1000, 2000, 3000, 4000)
KINDS = ("create", "poll", "report", "schedule", "purge", "healthz")


class Window:
    """Latencies and errors of one sampling window, by request kind."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: Counter[str] = Counter()


class Soak:
    """Shared state of the load generator."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window = Window()
        self.all_ms: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: Counter[str] = Counter()
        self.jobs_created = 0
        self.jobs_done = 0
        self.jobs_purged = 0
        self.reports = 0

    def timed(self, kind: str, http: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """Send one request; record its latency, or its error (a non-2xx status or a transport error)."""
        t0 = time.perf_counter()
        try:
            resp = http.request(method, path, **kw)
        except httpx.TransportError as exc:
            self._error(kind, type(exc).__name__)
            return None
        ms = 1000 * (time.perf_counter() - t0)
        if resp.status_code >= 300:
            code = resp.json().get("code", "") if "json" in resp.headers.get("content-type", "") else ""
            self._error(kind, f"{resp.status_code} {code}")
            return None
        with self.lock:
            self.window.ms[kind].append(ms)
            self.all_ms[kind].append(ms)
        return resp

    def _error(self, kind: str, what: str) -> None:
        with self.lock:
            self.window.errors[f"{kind}: {what}"] += 1
            self.errors[f"{kind}: {what}"] += 1

    def take_window(self) -> Window:
        with self.lock:
            w, self.window = self.window, Window()
        return w


def worker(i: int, url: str, stop: threading.Event, think_s: float, soak: Soak) -> None:
    rng = random.Random(i)
    if stop.wait(rng.uniform(0, think_s * 2)):  # start at different times
        return
    with httpx.Client(base_url=url, timeout=60.0) as http:
        n = 0
        while not stop.is_set():
            config = {**JOB_CONFIG, "total_steps": rng.choice(JOB_STEPS), "seed": i * 10_000 + n}
            created = soak.timed("create", http, "POST", "/v1/jobs", json={"name": f"soak-{i}-{n}", "config": config})
            n += 1
            if created is None:
                stop.wait(1.0)
                continue
            with soak.lock:
                soak.jobs_created += 1
            job, token = created.json()["job_id"], created.json()["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            resp = soak.timed("poll", http, "POST", f"/v1/jobs/{job}/lease", json={"worker_id": f"w{i}"})
            seg = resp.json() if resp is not None else None
            while seg is not None and not seg["done"] and not stop.is_set():
                losses = [sim_loss(lr_at(seg, j), seg["start_step"] + j) for j in range(seg["steps"])]
                every = seg["eval_every"]
                vals = [losses[k - 1] for k in range(every, len(losses) + 1, every)] if every else None
                if stop.wait(think_s * rng.uniform(0.5, 1.5)):
                    break
                body = {"worker_id": f"w{i}", "lease_epoch": seg["lease_epoch"], "losses": losses, "val_losses": vals}
                path = f"/v1/jobs/{job}/segments/{seg['segment_id']}/report"
                resp = None
                for _attempt in range(5):  # a failed report is counted, then sent again (idempotent)
                    resp = soak.timed("report", http, "POST", path, json=body)
                    if resp is not None or stop.is_set():
                        break
                    stop.wait(1.0)
                if resp is None:
                    break
                with soak.lock:
                    soak.reports += 1
                seg = resp.json()
            if seg is not None and seg["done"]:
                with soak.lock:
                    soak.jobs_done += 1
                soak.timed("schedule", http, "GET", f"/v1/jobs/{job}/schedule")
                purge = rng.random() < 0.1
                if purge and soak.timed("purge", http, "DELETE", f"/v1/jobs/{job}", params={"purge": "true"}):
                    with soak.lock:
                        soak.jobs_purged += 1


def prober(url: str, stop: threading.Event, soak: Soak) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        while not stop.wait(1.0):
            soak.timed("healthz", http, "GET", "/healthz")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99)}


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per minute."""
    if len(ts) < 2:
        return math.nan
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den if den else math.nan


def rss_summary(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Server RSS after the first minute (imports, caches and pools warmed up), at the end, its peak, and its
    least-squares slope from the first minute on and over the second half of the run."""
    warm = [s for s in samples if s["t_s"] >= 60]
    if not warm:
        return {}
    half = [s for s in warm if s["t_s"] >= samples[-1]["t_s"] / 2]
    rss = [s["server_rss_mb"] for s in warm]
    return {
        "after_1_min": rss[0],
        "end": rss[-1],
        "max": max(rss),
        "slope_mb_per_min": round(slope_per_min([s["t_s"] for s in warm], rss), 3),
        "slope_mb_per_min_second_half": round(
            slope_per_min([s["t_s"] for s in half], [s["server_rss_mb"] for s in half]), 3
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"lrtune-soak-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {REDIS_URL_ENV: args.redis_url, REDIS_PREFIX_ENV: prefix, "LRTUNE_LOG_LEVEL": "warning"}
    proc = start_local(port, env)
    db = redis.Redis.from_url(args.redis_url)
    samples: list[dict[str, Any]] = []
    soak = Soak()
    try:
        wait_ready(url, proc)
        ps = psutil.Process(proc.pid)
        redis0 = int(db.info("memory")["used_memory"])
        stop = threading.Event()
        threads = [
            threading.Thread(target=worker, args=(i, url, stop, args.think_ms / 1000, soak), daemon=True)
            for i in range(args.workers)
        ]
        threads.append(threading.Thread(target=prober, args=(url, stop, soak), daemon=True))
        started = time.monotonic()
        cpu0 = server_usage(ps)[0]
        for t in threads:
            t.start()
        end = started + 60 * args.minutes
        while time.monotonic() < end:
            stop.wait(min(args.every_s, max(0.0, end - time.monotonic())))
            window = soak.take_window()
            cpu, rss = server_usage(ps)
            used = int(db.info("memory")["used_memory"])
            with soak.lock:
                created, done, purged, reports = soak.jobs_created, soak.jobs_done, soak.jobs_purged, soak.reports
            samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "server_rss_mb": round(rss / 2**20, 1),
                    "server_cpu_s": round(cpu - cpu0, 1),
                    "redis_used_mb": round(used / 2**20, 2),
                    "jobs_created": created,
                    "jobs_done": done,
                    "jobs_purged": purged,
                    "reports": reports,
                    "load_1min": round(os.getloadavg()[0], 2),
                    "errors": dict(window.errors),
                    "latency_ms": {k: percentiles(v) for k, v in window.ms.items() if v},
                }
            )
            last = samples[-1]
            print(
                f"t={last['t_s']:6.0f}s rss={last['server_rss_mb']}MB redis={last['redis_used_mb']}MB "
                f"jobs={created} done={done} reports={reports} errors={sum(window.errors.values())} "
                f"report p99={last['latency_ms'].get('report', {}).get('p99', math.nan):.0f}ms "
                f"load={last['load_1min']}",
                flush=True,
            )
        stop.set()
        for t in threads:
            t.join(timeout=90)
        wall = time.monotonic() - started
        stored_jobs = int(db.zcard(f"{prefix}:jobs"))
        redis1 = int(db.info("memory")["used_memory"])
        job_bytes = [int(db.memory_usage(k) or 0) for k in db.scan_iter(match=f"{prefix}:job:*", count=1000)]
    finally:
        stop_local(proc, timeout_s=30)
        store = RedisStore(args.redis_url, prefix)
        store.purge()
        store.close()
    return {
        "command": "python -m benchmarks.soak "
        f"--workers {args.workers} --minutes {args.minutes:g} --think-ms {args.think_ms:g} --every-s {args.every_s:g}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; load generator, server and Redis on the same cores",
        "workers": args.workers,
        "seconds": round(wall, 1),
        "jobs_created": soak.jobs_created,
        "jobs_done": soak.jobs_done,
        "jobs_purged": soak.jobs_purged,
        "reports": soak.reports,
        "requests": sum(len(v) for v in soak.all_ms.values()),
        "errors": dict(soak.errors),
        "latency_ms": {k: percentiles(v) for k, v in soak.all_ms.items() if v},
        "server_rss_mb": rss_summary(samples),
        "redis": {
            "used_mb_start": round(redis0 / 2**20, 2),
            "used_mb_end": round(redis1 / 2**20, 2),
            "stored_jobs": stored_jobs,
            "growth_kb_per_stored_job": round((redis1 - redis0) / max(stored_jobs, 1) / 1024, 1),
            "memory_usage_kb_per_job_key": round(statistics.fmean(job_bytes) / 1024, 1) if job_bytes else math.nan,
        },
        "load_average": [s["load_1min"] for s in samples],
        "samples": samples,
    }


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(t, [s["server_rss_mb"] for s in samples], label="server RSS (MB)")
    axes[0].plot(t, [s["redis_used_mb"] for s in samples], label="Redis used memory (MB)")
    axes[0].set_ylabel("MB")
    axes[0].legend()
    for kind in ("report", "poll", "create"):
        for q, style in (("p50", "-"), ("p99", "--")):
            ys = [s["latency_ms"].get(kind, {}).get(q, math.nan) for s in samples]
            axes[1].plot(t, ys, style, label=f"{kind} {q}")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("latency (ms)")
    axes[1].legend(fontsize=7, ncol=3)
    axes[2].plot(t, [sum(s["errors"].values()) for s in samples], label="errors per window")
    axes[2].plot(t, [s["load_1min"] for s in samples], label="machine load (1 min)")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    fig.suptitle(f"Soak: {result['workers']} jobs at once, {result['command']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--think-ms", type=float, default=2000.0, help="mean simulated training time per segment")
    parser.add_argument("--every-s", type=float, default=15.0, help="sampling period")
    parser.add_argument("--redis-url", default=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    summary = {k: v for k, v in result.items() if k not in ("samples", "load_average")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
