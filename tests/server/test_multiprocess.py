"""Two `lrtune serve` processes on one Redis behave as one service."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from lrtune.server.launch import (
    MULTIPROC_DIR_ENV,
    REDIS_PREFIX_ENV,
    REDIS_URL_ENV,
    free_port,
    start_local,
    stop_local,
    wait_ready,
)
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


def scrape(url: str) -> dict[tuple[str, str], float]:
    """``/metrics`` on a fresh connection (so the kernel may hand it to either worker), as {(name, labels): value}."""
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=30.0).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            name, _, labels = name_labels.partition("{")
            samples[(name, labels.rstrip("}"))] = float(value)
    return samples


def healthz_count(samples: dict[tuple[str, str], float]) -> float:
    key = ("lrtune_request_duration_seconds_count", 'method="GET",route="/healthz",status="200"')
    return samples.get(key, 0.0)


def per_worker_healthz(folder: Path, tmp_path: Path) -> dict[str, float]:
    """Each worker's own /healthz count, read from its files alone in the multiprocess folder."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    pids = {p.stem.rsplit("_", 1)[1] for p in folder.glob("histogram_*.db")}
    for pid in pids:
        alone = tmp_path / f"alone-{pid}"
        alone.mkdir(exist_ok=True)
        for f in folder.glob(f"*_{pid}.db"):
            shutil.copy(f, alone / f.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        text = generate_latest(registry).decode()
        line = [
            ln
            for ln in text.splitlines()
            if ln.startswith("lrtune_request_duration_seconds_count") and "/healthz" in ln
        ]
        counts[pid] = float(line[0].rsplit(" ", 1)[1]) if line else 0.0
    return counts


def test_two_workers_report_the_sum_of_their_counters_and_never_go_down(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """`lrtune serve --workers 2`: any scrape shows every worker's requests; process metrics per worker."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left over from an earlier run")  # emptied at start
    env = {
        REDIS_URL_ENV: redis_url,
        REDIS_PREFIX_ENV: redis_prefix,
        "LRTUNE_WORKERS": "2",
        "LRTUNE_TUNER_THREADS": "1",
        MULTIPROC_DIR_ENV: str(folder),
    }
    port = free_port()
    proc = start_local(port, env, tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        log = tmp_path / "server.log"
        deadline = time.monotonic() + 120
        while log.read_text(errors="replace").count("Application startup complete") < 2:  # the other worker too
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text(errors="replace")
            time.sleep(0.2)
        assert not (folder / "counter_1.db").exists()

        def hit(_: int) -> int:
            return httpx.get(f"{url}/healthz", headers={"Connection": "close"}, timeout=30.0).status_code

        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(10):  # until both workers have answered some (the kernel picks who accepts)
                assert set(pool.map(hit, range(40))) == {200}
                sent += 40
                by_worker = per_worker_healthz(folder, tmp_path)
                if len(by_worker) == 2 and all(by_worker.values()):
                    break
        # A request is counted once its response has gone out, so the last ones may land just after the client
        # has its answer: poll until every one is counted (and never more: readiness probes hit /readyz).
        deadline = time.monotonic() + 10
        by_worker = per_worker_healthz(folder, tmp_path)
        while sum(by_worker.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
            by_worker = per_worker_healthz(folder, tmp_path)
        assert len(by_worker) == 2 and all(by_worker.values()), by_worker
        assert sum(by_worker.values()) == sent

        previous: dict[tuple[str, str], float] = {}
        pids = set()
        for _ in range(20):
            samples = scrape(url)
            assert healthz_count(samples) == sent  # the sum over both workers, from whichever one answers
            for key, value in samples.items():
                if key[0].endswith(("_total", "_count", "_sum", "_bucket")) and key[0].startswith("lrtune_"):
                    assert value >= previous.get(key, 0.0), key  # counters never go down between scrapes
            previous = samples
            pids |= {labels for name, labels in samples if name == "process_cpu_seconds_total"}
            assert not any(name.endswith("_created") for name, _ in samples)
        assert len(pids) == 2, pids  # the process metrics of each worker
        assert previous[("lrtune_active_jobs", "")] == 0.0

        # Every worker logs the job's life: created, each stage decided, finished.
        result = simulated_worker(0, [url, url])
        job_id = result["info"]["job_id"]
        logs = log.read_text(errors="replace")
        assert f"job {job_id} created: name='sim-0', preset=" in logs
        stages = [s for s in result["schedule"]["stages"] if s["winner_lr"] is not None]
        assert stages
        for stage in stages:
            line = next(ln for ln in logs.splitlines() if f"job {job_id} stage {stage['index']} decided" in ln)
            assert f"winner LR {stage['winner_lr']:.4g}" in line and "INFO lrtune.server" in line
        assert f"job {job_id} finished: {SMALL_CONFIG['total_steps']} steps" in logs
    finally:
        stop_local(proc)
