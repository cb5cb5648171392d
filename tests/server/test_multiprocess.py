"""Two `lrtune serve` processes on one Redis behave as one service."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.launch import REDIS_PREFIX_ENV, REDIS_URL_ENV, free_port, start_local, wait_ready
from tests.server.helpers import SMALL_CONFIG, reference_schedule, run_segment

WORKERS = 32


@pytest.fixture
def two_servers(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[list[str]]:
    env = {REDIS_URL_ENV: redis_url, REDIS_PREFIX_ENV: redis_prefix, "LRTUNE_TUNER_THREADS": "2"}
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(2):
            port = free_port()
            procs.append(start_local(port, env, tmp_path / f"server{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs, strict=True):
            wait_ready(url, proc)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def job_config(i: int) -> dict[str, Any]:
    return {**SMALL_CONFIG, "seed": i}


def simulated_worker(i: int, urls: list[str]) -> dict[str, Any]:
    """Run job ``i`` to the end, alternating servers on every request and repeating every third report."""
    clients = [httpx.Client(base_url=u, timeout=60.0) for u in urls]
    turn = [i % 2]

    def nxt() -> httpx.Client:
        turn[0] ^= 1
        return clients[turn[0]]

    try:
        created = nxt().post("/v1/jobs", json={"name": f"sim-{i}", "config": job_config(i)})
        assert created.status_code == 201, created.text
        job, token = created.json()["job_id"], created.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        worker = f"worker-{i}"
        resp = nxt().post(f"/v1/jobs/{job}/lease", json={"worker_id": worker}, headers=auth)
        assert resp.status_code == 200, resp.text
        seg = resp.json()
        reported: list[int] = []
        refused_intruders = 0
        while not seg["done"]:
            if i % 4 == 0:  # another worker tries to take the segment on the other server: refused
                intruder = nxt().post(f"/v1/jobs/{job}/lease", json={"worker_id": "intruder"}, headers=auth)
                assert intruder.json()["code"] == "segment_leased"
                refused_intruders += 1
            body = {"worker_id": worker, "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
            path = f"/v1/jobs/{job}/segments/{seg['segment_id']}/report"
            resp = nxt().post(path, json=body, headers=auth)
            assert resp.status_code == 200, resp.text
            if seg["segment_id"] % 3 == 0:  # a retried report, through the other process: same answer
                again = nxt().post(path, json=body, headers=auth)
                assert again.status_code == 200 and again.json() == resp.json()
            reported.append(seg["segment_id"])
            seg = resp.json()
        schedule = nxt().get(f"/v1/jobs/{job}/schedule", headers=auth).json()
        info = nxt().get(f"/v1/jobs/{job}", headers=auth).json()
        return {"i": i, "reported": reported, "schedule": schedule, "info": info, "refused": refused_intruders}
    finally:
        for c in clients:
            c.close()


def test_two_processes_apply_every_report_exactly_once(two_servers: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda i: simulated_worker(i, two_servers), range(WORKERS)))
    for res in results:
        schedule = res["schedule"]
        assert [s["segment_id"] for s in schedule["segments"]] == res["reported"]
        assert res["info"]["status"] == "done"
        assert res["info"]["steps_used"] == SMALL_CONFIG["total_steps"]
        schedule.pop("job_id")
        assert schedule == reference_schedule(job_config(res["i"])), f"job {res['i']} differs from a single process"
    metrics = httpx.get(f"{two_servers[0]}/metrics").text + httpx.get(f"{two_servers[1]}/metrics").text
    assert "lrtune_active_jobs 0.0" in metrics
    jobs = httpx.get(f"{two_servers[1]}/v1/jobs?limit=100").json()
    assert jobs["total"] == WORKERS
