"""Health, readiness, metrics, and tuner work staying off the event loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import JobRecord, MemoryStore, StoreUnavailableError
from tests.asgi import local_client
from tests.server.helpers import SMALL_CONFIG, run_segment
from tests.server.test_jobs_api import create, run_to_end

T = TypeVar("T")


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


class DownStore(MemoryStore):
    def ping(self) -> None:
        raise StoreUnavailableError("redis at redis://db:6379 is unreachable")


def test_readyz_is_503_when_the_store_is_down() -> None:
    with local_client(create_app(Settings(redis_url=None), store=DownStore())) as c:
        resp = c.get("/readyz")
        assert (resp.status_code, resp.json()["code"]) == (503, "store_unavailable")
        assert c.get("/healthz").status_code == 200


def test_readyz_on_an_unreachable_redis() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    with local_client(create_app(settings)) as c:
        assert c.get("/readyz").status_code == 503
        resp = c.post("/v1/jobs", json={"config": SMALL_CONFIG})
        assert (resp.status_code, resp.json()["code"]) == (503, "store_unavailable")


def test_metrics_expose_latency_bo_time_jobs_and_leases(client: TestClient) -> None:
    job, auth = create(client)
    create(client)
    run_to_end(client, job, auth)
    text = client.get("/metrics").text
    assert 'lrtune_request_duration_seconds_count{method="POST",route="/v1/jobs/{job_id}/lease",status="200"}' in text
    assert 'route="/v1/jobs/{job_id}/segments/{segment_id}/report"' in text
    assert "lrtune_active_jobs 1.0" in text  # one finished, one running
    count = next(line for line in text.splitlines() if line.startswith("lrtune_bo_suggest_seconds_count"))
    assert float(count.split()[-1]) > 0
    assert "lrtune_lease_expiries_total 0.0" in text
    assert "lrtune_stale_reports_refused_total 0.0" in text


def test_metrics_label_static_files_by_route_and_add_process_metrics(client: TestClient) -> None:
    for name in ("app.js", "app.css", "no-such-file.js"):
        client.get(f"/dashboard/static/{name}")
    client.get("/docs")
    client.get("/no/such/route")
    text = client.get("/metrics").text
    routes = {line.split('route="')[1].split('"')[0] for line in text.splitlines() if 'route="' in line}
    assert "/dashboard/static/{path}" in routes and "/docs" in routes and "unmatched" in routes
    assert not any("app.js" in r or "no-such" in r or "/no/such" in r for r in routes)  # the label set is bounded
    assert 'route="/dashboard/static/{path}",status="404"' in text
    assert "process_resident_memory_bytes " in text and "process_cpu_seconds_total " in text
    assert "_created" not in text


def test_the_log_has_one_line_per_job_created_stage_decided_and_job_finished(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lrtune.server")
    created = client.post("/v1/jobs", json={"name": "logged", "config": {**SMALL_CONFIG, "preset": "plan"}}).json()
    job, auth = created["job_id"], {"Authorization": f"Bearer {created['token']}"}
    run_to_end(client, job, auth)
    lines = [r.getMessage() for r in caplog.records if job in r.getMessage()]
    assert lines[0].startswith(f"job {job} created: name='logged', preset=plan, total_steps=240")
    schedule = client.get(f"/v1/jobs/{job}/schedule", headers=auth).json()
    decided = [ln for ln in lines if " decided: " in ln]
    assert len(decided) == len([s for s in schedule["stages"] if s["winner_lr"] is not None]) >= 1
    assert all("plan from step" in ln and "predicted final loss" in ln for ln in decided)  # the plan chosen
    assert lines[-1].startswith(f"job {job} finished: 240 steps, exploration share")
    assert len(lines) == 2 + len(decided)


def test_reports_that_ran_bo_say_so_in_server_timing(client: TestClient) -> None:
    job, auth = create(client)
    seg = client.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w1"}, headers=auth).json()
    timings = []
    while not seg["done"]:
        body = {"worker_id": "w1", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
        resp = client.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body, headers=auth)
        timings.append(dict(part.strip().split(";dur=") for part in resp.headers["server-timing"].split(",")))
        seg = resp.json()
    assert all(float(t["app"]) > 0 for t in timings)
    with_bo = [t for t in timings if "suggest" in t]
    assert with_bo and len(with_bo) < len(timings)
    assert all(0 < float(t["suggest"]) <= float(t["app"]) for t in with_bo)


class GatedStore(MemoryStore):
    """A store whose updates block until released: a report that takes as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gate = False

    def update(self, job_id: str, fn: Callable[[JobRecord], T], now: float) -> tuple[JobRecord, T]:
        if self.gate:
            self.entered.set()
            self.release.wait(timeout=30)
        return super().update(job_id, fn, now)


@pytest.mark.anyio
async def test_healthz_answers_while_a_report_is_in_flight() -> None:
    store = GatedStore()
    app = create_app(Settings(redis_url=None), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            created = (await http.post("/v1/jobs", json={"config": SMALL_CONFIG})).json()
            auth = {"Authorization": f"Bearer {created['token']}"}
            jobs = f"/v1/jobs/{created['job_id']}"
            seg = (await http.post(f"{jobs}/lease", json={"worker_id": "w"}, headers=auth)).json()
            store.gate = True
            body: dict[str, Any] = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
            result: dict[str, Any] = {}

            async def slow_report() -> None:
                resp = await http.post(f"{jobs}/segments/{seg['segment_id']}/report", json=body, headers=auth)
                result["status"] = resp.status_code

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_report)
                await anyio.to_thread.run_sync(store.entered.wait, 10.0)
                started = time.perf_counter()
                health = await http.get("/healthz")
                elapsed = time.perf_counter() - started
                assert "status" not in result  # the report is still in flight
                store.release.set()
            assert health.status_code == 200
            assert elapsed < 0.5
            assert result["status"] == 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
