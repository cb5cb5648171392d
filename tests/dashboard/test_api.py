"""The dashboard's routes and assets, and the job listing's sorting and paging, in process."""

from __future__ import annotations

import fnmatch
import re
import time
import tomllib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lrtune.client.protocol import JobConfig, JobCreate
from lrtune.server import service as service_module
from lrtune.server.app import create_app
from lrtune.server.dashboard import STATIC_DIR
from lrtune.server.service import JobService
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.dashboard.conftest import ADMIN_KEY
from tests.dashboard.helpers import ROOT
from tests.server.helpers import SMALL_CONFIG, FakeClock, run_segment

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def create(client: TestClient, name: str = "t", config: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    resp = client.post("/v1/jobs", json={"name": name, "config": config or SMALL_CONFIG})
    assert resp.status_code == 201, resp.text
    return resp.json()["job_id"], {"Authorization": f"Bearer {resp.json()['token']}"}


def run(client: TestClient, job: str, auth: dict[str, str], segments: int | None = None) -> None:
    seg = client.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth).json()
    n = 0
    while not seg["done"] and (segments is None or n < segments):
        body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
        resp = client.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        seg = resp.json()
        n += 1


# ------------------------------------------------------------------------------------------ shell and assets


def test_the_shell_is_served_at_root_and_job_paths_with_a_strict_policy(client: TestClient) -> None:
    for path in ("/", "/jobs/0123456789abcdef"):
        resp = client.get(path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert re.search(r'src="/dashboard/static/app\.js\?v=[0-9a-f]{12}"', resp.text)
        assert "{{" not in resp.text


def test_every_asset_the_shell_and_scripts_name_is_served(client: TestClient) -> None:
    html = client.get("/").text
    urls = re.findall(r'(?:src|href)="(/dashboard/static/[^"?]+)', html)
    assert {u.rsplit("/", 1)[1] for u in urls} == {"app.js", "app.css", "favicon.svg"}
    for path in STATIC_DIR.glob("*.js"):  # module imports are relative to the static folder
        for name in re.findall(r'from "\./([\w.-]+)"', path.read_text()):
            assert (STATIC_DIR / name).is_file(), (path.name, name)
            urls.append(f"/dashboard/static/{name}")
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for url in urls:
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert resp.headers["content-type"].startswith(types[url[url.rindex(".") :]]), url
        assert resp.headers["cache-control"] == "no-cache"
    assert client.get("/dashboard/static/nothing.js").status_code == 404


def test_assets_load_nothing_from_elsewhere() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text) if u != SVG_NAMESPACE]
        assert not urls, (path.name, urls)
        assert "@import" not in text and 'fetch("http' not in text


def test_the_package_ships_every_static_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["lrtune.server"]
    for path in STATIC_DIR.iterdir():
        rel = path.relative_to(STATIC_DIR.parents[1]).as_posix()  # relative to the lrtune.server package
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


# ------------------------------------------------------------------------------------------ read-only views


def test_views_answer_what_the_token_routes_answer(client: TestClient) -> None:
    job, auth = create(client)
    run(client, job, auth)
    for suffix in ("", "/schedule", "/schedule?format=csv", "/schedule?format=lambdalr", "/posterior?stage=1"):
        mine = client.get(f"/dashboard/api/jobs/{job}{suffix}")
        theirs = client.get(f"/v1/jobs/{job}{suffix}", headers=auth)
        assert mine.status_code == theirs.status_code == 200, suffix
        assert mine.headers["content-type"] == theirs.headers["content-type"]
        assert mine.content == theirs.content, suffix
    assert client.get("/dashboard/api/jobs/0123456789abcdef").json()["code"] == "job_not_found"
    assert client.get("/dashboard/api/jobs/not-an-id").status_code == 422


def test_views_need_the_admin_key_when_one_is_set(admin_client: TestClient) -> None:
    job, auth = create(admin_client, name="secret-job-name")
    page = admin_client.get(f"/jobs/{job}")
    assert page.status_code == 200 and "secret-job-name" not in page.text  # the shell holds no data
    for path in (f"/dashboard/api/jobs/{job}", f"/dashboard/api/jobs/{job}/schedule", "/v1/jobs"):
        assert admin_client.get(path).status_code == 401, path
        assert admin_client.get(path, headers=auth).status_code == 403, path  # a job token is not the admin key
        ok = admin_client.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert ok.status_code == 200, path


def test_views_refuse_other_machines_without_an_admin_key(clock: FakeClock) -> None:
    store = MemoryStore()
    with local_client(create_app(Settings(redis_url=None), store=store, clock=clock)) as local:
        job, _ = create(local)
    with local_client(create_app(Settings(redis_url=None), store=store, clock=clock), "192.0.2.7", 5000) as far:
        assert far.get("/").status_code == 200
        resp = far.get(f"/dashboard/api/jobs/{job}")
        assert (resp.status_code, resp.json()["code"]) == (403, "forbidden")


# ------------------------------------------------------------------------------------------ the job listing


def names(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [j["name"] for j in resp.json()["jobs"]]


def test_listing_sorts_by_every_column_and_filters(client: TestClient, clock: FakeClock) -> None:
    jobs = {}
    for i, name in enumerate(["bravo", "alpha", "delta", "Charlie"]):
        jobs[name] = create(client, name=name, config={**SMALL_CONFIG, "seed": i})
        clock.advance(1)
    run(client, *jobs["alpha"], segments=6)
    run(client, *jobs["delta"], segments=2)
    run(client, *jobs["Charlie"])  # done: no LR
    get = client.get
    assert names(get("/v1/jobs")) == ["bravo", "alpha", "delta", "Charlie"]  # the default stays oldest first
    assert names(get("/v1/jobs?order=desc")) == ["Charlie", "delta", "alpha", "bravo"]
    assert names(get("/v1/jobs?sort=name")) == ["alpha", "bravo", "Charlie", "delta"]
    assert names(get("/v1/jobs?sort=name&order=desc")) == ["delta", "Charlie", "bravo", "alpha"]
    assert names(get("/v1/jobs?sort=progress&order=desc")) == ["Charlie", "alpha", "delta", "bravo"]
    assert names(get("/v1/jobs?sort=status"))[0] == "Charlie"  # done < running
    assert names(get("/v1/jobs?sort=updated&order=desc"))[0] == "Charlie"
    for order in ("asc", "desc"):  # jobs without a value come last either way
        assert names(get(f"/v1/jobs?sort=lr&order={order}"))[-1] == "Charlie"
        assert names(get(f"/v1/jobs?sort=loss&order={order}"))[-1] == "bravo"
    by_loss = get("/v1/jobs?sort=loss").json()["jobs"]
    losses = [j["last_loss"] for j in by_loss if j["last_loss"] is not None]
    assert losses == sorted(losses) and len(losses) == 3
    assert names(get("/v1/jobs?q=LPH")) == ["alpha"]
    assert names(get(f"/v1/jobs?q={jobs['delta'][0][:6]}")) == ["delta"]
    page = get("/v1/jobs?sort=name&offset=1&limit=2").json()
    assert ([j["name"] for j in page["jobs"]], page["total"], page["offset"], page["limit"]) == (
        ["bravo", "Charlie"],
        4,
        1,
        2,
    )
    assert names(get("/v1/jobs?status=done&sort=name")) == ["Charlie"]
    assert get("/v1/jobs?sort=colour").json()["code"] == "invalid_request"
    assert get("/v1/jobs?order=sideways").status_code == 422


def test_sorted_listings_scan_past_any_page_size(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorting and filtering read the store page by page: the order is the same whatever the page size."""
    monkeypatch.setattr(service_module, "SCAN_BATCH", 2)
    for name in "xzywv":  # not hex digits: a name filter also matches id prefixes
        create(client, name=name)
    assert names(client.get("/v1/jobs?sort=name")) == list("vwxyz")
    assert names(client.get("/v1/jobs?sort=name&order=desc&offset=1&limit=3")) == list("yxw")
    assert names(client.get("/v1/jobs?q=w")) == ["w"]
    assert client.get("/v1/jobs?sort=name&limit=2").json()["total"] == 5


def test_a_thousand_jobs_list_and_sort_quickly(clock: FakeClock) -> None:
    store = MemoryStore()
    service = JobService(store, 60.0, clock)
    config = JobConfig.from_dict(SMALL_CONFIG)
    for i in range(1000):
        service.create(JobCreate(name=f"job-{i:04d}", config=config))
        clock.advance(0.01)
    with local_client(create_app(Settings(redis_url=None), store=store, clock=clock)) as client:
        client.get("/v1/jobs?limit=1")  # warm up
        for query, first in [
            ("order=desc&limit=50", "job-0999"),
            ("order=desc&offset=950&limit=50", "job-0049"),
            ("sort=name&order=desc&offset=100&limit=50", "job-0899"),
            ("sort=progress&limit=50&q=job-09", "job-0900"),
        ]:
            started = time.perf_counter()
            resp = client.get(f"/v1/jobs?{query}")
            elapsed = time.perf_counter() - started
            assert resp.status_code == 200
            assert resp.json()["jobs"][0]["name"] == first, query
            assert elapsed < 1.0, (query, elapsed)
        assert client.get("/v1/jobs?limit=50").json()["total"] == 1000
