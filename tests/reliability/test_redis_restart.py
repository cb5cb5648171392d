"""Redis (with append-only persistence) stopped and restarted under a running service and its workers."""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.harness import (
    DEADLINE_S,
    AckCounter,
    RedisServer,
    Service,
    SimWorker,
    create_job,
    fetch,
    record_result,
    serve_env,
    wait_for,
)
from tests.server.helpers import SMALL_CONFIG, reference_schedule

JOBS = 8


def config(i: int) -> dict[str, Any]:
    return {**SMALL_CONFIG, "seed": 200 + i}


def readiness(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=5.0).status_code
    except httpx.TransportError:
        return 0


def test_redis_restarts_lose_nothing_acknowledged(tmp_path: Path) -> None:
    """Two outages: a clean restart (SIGTERM), then a crash (SIGKILL), both with the compose file's fsync policy
    (``always``: with ``everysec`` a slow disk lets Redis answer before the write, and a crash loses it)."""
    data = tmp_path / "redis"
    data.mkdir()
    db = RedisServer(data, appendfsync="always")
    db.start()
    service = Service(serve_env(db.url, "lrtune-restart"), tmp_path)
    counter = AckCounter()
    workers: list[SimWorker] = []
    outages: list[dict[str, Any]] = []
    try:
        service.start()
        jobs = [create_job(service.url, config(i), f"redis-{i}") for i in range(JOBS)]
        workers += [SimWorker(service.url, job, token, f"w{i}", on_ack=counter) for i, (job, token) in enumerate(jobs)]
        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            running = [pool.submit(w.run) for w in workers]
            for after_acks, sig in ((20, signal.SIGTERM), (55, signal.SIGKILL)):
                counter.wait_for(after_acks, timeout_s=DEADLINE_S)
                db.stop(sig)
                wait_for(lambda: readiness(service.url) == 503, 10.0, "/readyz to say not ready")
                acked_before = counter.count
                # Down until the workers have felt it: reports and polls fail and are being retried.
                failures = sum(len(w.transient) for w in workers) + 2 * JOBS
                wait_for(lambda n=failures: sum(len(w.transient) for w in workers) >= n, 30.0, "failed requests")
                acked_while_down = counter.count
                wait_for(lambda n=failures + JOBS: sum(len(w.transient) for w in workers) >= n, 30.0, "more failures")
                assert counter.count == acked_while_down  # nothing is acknowledged that could not be stored
                assert readiness(service.url) == 503
                db.start()
                wait_for(lambda: readiness(service.url) == 200, 30.0, "/readyz to recover by itself")
                outages.append({"signal": signal.Signals(sig).name, "acked_before": acked_before})
            finals = [f.result(timeout=DEADLINE_S) for f in running]
        for i, ((job, token), worker, final) in enumerate(zip(jobs, workers, finals, strict=True)):
            assert final["done"]
            schedule = fetch(service.url, f"/v1/jobs/{job}/schedule", token)
            recorded = [(s["segment_id"], s["steps"]) for s in schedule["segments"]]
            assert recorded == [(a.segment_id, a.steps) for a in worker.acks], f"job {i}"
            schedule.pop("job_id")
            assert schedule == reference_schedule(config(i)), f"job {i} differs from its undisturbed run"
        assert service.proc is not None and service.proc.poll() is None  # the service itself never went down
    finally:
        service.stop()
        db.close()
        for w in workers:
            w.close()
    retried = Counter(why.split(": ", 1)[1] for w in workers for why in w.transient)
    assert retried["503 store_unavailable"] > 0
    record_result(
        "redis_restart",
        jobs=JOBS,
        outages=outages,
        appendfsync="always",
        reports_acknowledged=counter.count,
        requests_retried=sum(retried.values()),
        retried_by_kind=dict(retried),
        reports_lost=0,
        schedules_identical=True,
    )
