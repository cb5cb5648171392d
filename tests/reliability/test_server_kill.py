"""The service SIGKILLed at random (seeded) points while 16 jobs train, restarted on the same Redis prefix."""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.reliability.harness import (
    DEADLINE_S,
    AckCounter,
    Service,
    SimWorker,
    create_job,
    fetch,
    record_result,
    serve_env,
)
from tests.server.helpers import SMALL_CONFIG, reference_schedule

JOBS = 16
KILLS = 3
SEED = 20_251_126


def config(i: int) -> dict[str, Any]:
    return {**SMALL_CONFIG, "seed": 100 + i}


def test_sigkill_at_random_points_loses_nothing(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    service = Service(serve_env(redis_url, redis_prefix), tmp_path)
    service.start()
    counter = AckCounter()
    workers: list[SimWorker] = []
    try:
        # Jobs are created before the first kill: creation is not idempotent (see the results document).
        jobs = [create_job(service.url, config(i), f"kill-{i}") for i in range(JOBS)]
        workers += [SimWorker(service.url, job, token, f"w{i}", on_ack=counter) for i, (job, token) in enumerate(jobs)]
        expected_reports = JOBS * 12
        kill_at = sorted(rng.sample(range(8, expected_reports - 30), KILLS))
        offsets_s = [rng.uniform(0.0, 0.03) for _ in kill_at]  # land inside a request, not between two
        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            running = [pool.submit(w.run) for w in workers]
            for n, offset_s in zip(kill_at, offsets_s, strict=True):
                counter.wait_for(n, timeout_s=DEADLINE_S)
                time.sleep(offset_s)  # a deliberate offset, not a wait for something
                service.kill()
                service.start()
            finals = [f.result(timeout=DEADLINE_S) for f in running]
        references = [reference_schedule(config(i)) for i in range(JOBS)]  # the undisturbed runs
        for i, ((job, token), worker, final) in enumerate(zip(jobs, workers, finals, strict=True)):
            assert final["done"]
            info = fetch(service.url, f"/v1/jobs/{job}", token)
            assert info["status"] == "done" and info["steps_used"] == SMALL_CONFIG["total_steps"]
            schedule = fetch(service.url, f"/v1/jobs/{job}/schedule", token)
            # Exactly once: every report the worker saw acknowledged is recorded once, in order, and nothing else.
            recorded = [(s["segment_id"], s["steps"]) for s in schedule["segments"]]
            assert recorded == [(a.segment_id, a.steps) for a in worker.acks], f"job {i}"
            schedule.pop("job_id")
            assert schedule == references[i], f"job {i} differs from its undisturbed run"
    finally:
        service.stop()
        for w in workers:
            w.close()
    assert service.kills == KILLS
    retried = Counter(why.split(": ", 1)[1] for w in workers for why in w.transient)
    assert retried  # the kills were felt
    # A report that got no answer (the connection broke after it was sent) may or may not have been applied
    # before the kill: its retry must get the same answer either way, which the exactly-once check above covers.
    unanswered = sum(1 for w in workers for why in w.transient if why.startswith("report") and "Connect" not in why)
    record_result(
        "server_sigkill",
        jobs=JOBS,
        kills=service.kills,
        kill_after_acks=kill_at,
        reports_acknowledged=counter.count,
        requests_retried=sum(retried.values()),
        retried_by_kind=dict(retried),
        reports_sent_but_unanswered=unanswered,
        jobs_completed=JOBS,
        reports_lost=0,
        reports_applied_twice=0,
        schedules_identical=True,
    )
