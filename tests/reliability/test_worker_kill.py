"""A worker process SIGKILLed mid-segment: its lease lapses, the segment is handed out again, the resumed worker
finishes the job, and a late report from the killed worker's lease epoch is refused and changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from lrtune.server.store.keys import Keys
from tests.reliability.conftest import SHARED_LEASE_TTL_S
from tests.reliability.harness import (
    DEADLINE_S,
    Ack,
    Service,
    create_job,
    fetch,
    losses_digest,
    record_result,
    replay,
    wait_for,
)
from tests.server.helpers import SMALL_CONFIG, reference_schedule, run_segment

ROOT = Path(__file__).resolve().parents[2]
CONFIG: dict[str, Any] = {**SMALL_CONFIG, "seed": 300}
HOLD = 4  # the segment the first worker is killed in


def start_worker(
    service: Service, job: str, token: str, worker: str, log: Path, release: Path
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.reliability.sim_worker", "--url", service.url, "--job", job]
    argv += ["--worker", worker, "--log", str(log), "--hold", str(HOLD), "--release", str(release)]
    env = {**os.environ, "LRTUNE_SIM_TOKEN": token}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def events(log: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    return [r for r in rows if kind is None or r["event"] == kind]


def acks(log: Path) -> list[Ack]:
    out = []
    for e in events(log, "ack"):
        body = e["body"]
        digest = losses_digest(body["losses"], body["val_losses"])
        out.append(Ack(e["segment_id"], e["lease_epoch"], len(body["losses"]), digest, body))
    return out


def stored(db: redis.Redis, key: str) -> dict[bytes, bytes]:
    """The job's record as Redis holds it (not as the service describes it)."""
    raw: dict[bytes, bytes] = db.hgetall(key)  # type: ignore[assignment]
    return raw


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_killed_worker_is_replaced_and_its_late_report_refused(
    shared_service: Service, shared_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    url = shared_service.url
    job, token = create_job(url, CONFIG, "worker-kill")
    key = Keys(shared_prefix).job(job)
    db = redis.Redis.from_url(redis_url)
    expiries0 = metric(url, "lrtune_lease_expiries_total")
    stale0 = metric(url, "lrtune_stale_reports_refused_total")
    log1, log2 = tmp_path / "w1.jsonl", tmp_path / "w2.jsonl"
    never, go = tmp_path / "never", tmp_path / "go"
    w1 = start_worker(shared_service, job, token, "w1", log1, never)
    w2: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: bool(events(log1, "holding")) or w1.poll() is not None, DEADLINE_S, "w1 to reach the hold")
        assert w1.poll() is None, w1.stderr.read() if w1.stderr else ""
        held = events(log1, "holding")[0]["segment"]
        w1.send_signal(signal.SIGKILL)  # mid-segment: leased, trained partly, never reported
        w1.wait(timeout=30)
        killed_at = time.monotonic()

        w2 = start_worker(shared_service, job, token, "w2", log2, go)
        wait_for(lambda: bool(events(log2, "holding")) or w2.poll() is not None, DEADLINE_S, "w2 to take over")
        took_over_s = time.monotonic() - killed_at
        taken = events(log2, "holding")[0]["segment"]
        assert taken["segment_id"] == held["segment_id"] == HOLD
        assert taken["lease_epoch"] == held["lease_epoch"] + 1
        assert took_over_s >= SHARED_LEASE_TTL_S * 0.5  # it had to wait for the lapse (minus w1's start-up)

        # The killed worker's report arrives late, under its old lease epoch: refused, and nothing changes.
        before = stored(db, key)
        late = {"worker_id": "w1", "lease_epoch": held["lease_epoch"], **run_segment(held)}
        auth = {"Authorization": f"Bearer {token}"}
        resp = httpx.post(f"{url}/v1/jobs/{job}/segments/{HOLD}/report", json=late, headers=auth, timeout=30.0)
        assert (resp.status_code, resp.json()["code"]) == (409, "stale_lease"), resp.text
        poll = httpx.post(f"{url}/v1/jobs/{job}/lease", json={"worker_id": "w1"}, headers=auth, timeout=30.0)
        assert (poll.status_code, poll.json()["code"]) == (409, "segment_leased")
        assert stored(db, key) == before

        go.touch()
        assert w2.wait(timeout=DEADLINE_S) == 0, w2.stderr.read() if w2.stderr else ""
    finally:
        for proc in (w1, w2):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    # Worker-side accounting: what the two workers saw acknowledged is exactly what the service recorded.
    seen = acks(log1) + acks(log2)
    assert [a.segment_id for a in acks(log1)] == list(range(HOLD))
    schedule = fetch(url, f"/v1/jobs/{job}/schedule", token)
    assert [(s["segment_id"], s["steps"]) for s in schedule["segments"]] == [(a.segment_id, a.steps) for a in seen]
    schedule.pop("job_id")
    assert schedule == replay(CONFIG, seen) == reference_schedule(CONFIG)
    assert metric(url, "lrtune_lease_expiries_total") == expiries0 + 1
    assert metric(url, "lrtune_stale_reports_refused_total") == stale0 + 1
    record_result(
        "worker_sigkill",
        lease_ttl_s=SHARED_LEASE_TTL_S,
        takeover_after_s=round(took_over_s, 2),
        late_report="409 stale_lease, stored record byte-identical",
        reports_acknowledged=len(seen),
        reports_lost=0,
    )
