"""Jobs, auth and the poll/report cycle, through the HTTP routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.server.helpers import SMALL_CONFIG, FakeClock, reference_schedule, run_segment


def create(client: TestClient, config: dict[str, Any] | None = None, name: str = "t") -> tuple[str, dict[str, str]]:
    resp = client.post("/v1/jobs", json={"name": name, "config": config or SMALL_CONFIG})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["job_id"], {"Authorization": f"Bearer {body['token']}"}


def poll(client: TestClient, job: str, auth: dict[str, str], worker: str = "w1") -> Any:
    return client.post(f"/v1/jobs/{job}/lease", json={"worker_id": worker}, headers=auth)


def report(
    client: TestClient, job: str, auth: dict[str, str], seg: dict[str, Any], worker: str = "w1", **kw: Any
) -> Any:
    body = {"worker_id": worker, "lease_epoch": seg["lease_epoch"], **run_segment(seg), **kw}
    return client.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body, headers=auth)


def run_to_end(client: TestClient, job: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    seg = poll(client, job, auth).json()
    seen = []
    while not seg["done"]:
        seen.append(seg)
        resp = report(client, job, auth, seg)
        assert resp.status_code == 200, resp.text
        seg = resp.json()
    return seen


def test_create_show_and_token(client: TestClient) -> None:
    resp = client.post("/v1/jobs", json={"name": "resnet", "config": SMALL_CONFIG})
    assert resp.status_code == 201
    body = resp.json()
    assert len(body["token"]) >= 40
    job = body["job_id"]
    assert body["job"]["status"] == "running" and body["job"]["name"] == "resnet"
    shown = client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {body['token']}"})
    assert shown.status_code == 200
    assert shown.json()["config"]["total_steps"] == SMALL_CONFIG["total_steps"]
    assert "token" not in shown.json()


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer not-the-token"}, 403, "forbidden"),
    ],
)
def test_job_routes_need_the_job_token(client: TestClient, headers: dict[str, str], status: int, code: str) -> None:
    job, _ = create(client)
    for method, path, body in [
        ("GET", f"/v1/jobs/{job}", None),
        ("POST", f"/v1/jobs/{job}/lease", {"worker_id": "w"}),
        ("GET", f"/v1/jobs/{job}/schedule", None),
        ("DELETE", f"/v1/jobs/{job}", None),
    ]:
        resp = client.request(method, path, json=body, headers=headers)
        assert (resp.status_code, resp.json()["code"]) == (status, code), (method, path)
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"


def test_token_of_one_job_does_not_open_another(client: TestClient) -> None:
    a, _ = create(client)
    _, auth_b = create(client)
    assert client.get(f"/v1/jobs/{a}", headers=auth_b).status_code == 403


def test_unknown_and_malformed_job_ids(client: TestClient) -> None:
    _, auth = create(client)
    resp = client.get("/v1/jobs/0123456789abcdef", headers=auth)
    assert (resp.status_code, resp.json()["code"]) == (404, "job_not_found")
    resp = client.get("/v1/jobs/..%2F..%2Fetc", headers=auth)
    assert resp.status_code in (404, 422)
    assert client.get("/v1/nothing-here").json()["code"] == "not_found"


def test_listing_is_open_on_loopback_without_admin_key(client: TestClient, clock: FakeClock) -> None:
    create(client, name="a")
    clock.advance(1)
    create(client, name="b")
    resp = client.get("/v1/jobs")
    assert resp.status_code == 200
    body = resp.json()
    assert body["total"] == 2 and [j["name"] for j in body["jobs"]] == ["a", "b"]
    assert client.get("/v1/jobs?limit=1&offset=1").json()["jobs"][0]["name"] == "b"


@pytest.fixture
def admin_client(clock: FakeClock) -> Iterator[TestClient]:
    settings = Settings(redis_url=None, admin_key=SecretStr("the-admin-key"))
    with local_client(create_app(settings, store=MemoryStore(), clock=clock)) as c:
        yield c


def test_admin_key_guards_listing_and_opens_every_job(admin_client: TestClient) -> None:
    job, _ = create(admin_client)
    assert admin_client.get("/v1/jobs").status_code == 401
    assert admin_client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 403
    admin = {"Authorization": "Bearer the-admin-key"}
    assert admin_client.get("/v1/jobs", headers=admin).json()["total"] == 1
    assert admin_client.get(f"/v1/jobs/{job}", headers=admin).status_code == 200


def test_listing_from_another_machine_needs_an_admin_key(settings: Settings, clock: FakeClock) -> None:
    app = create_app(settings, store=MemoryStore(), clock=clock)
    with local_client(app, "192.0.2.7", 5000) as remote:
        resp = remote.get("/v1/jobs")
    assert (resp.status_code, resp.json()["code"]) == (403, "forbidden")
    assert "LRTUNE_ADMIN_KEY" in resp.json()["message"]


def test_poll_report_cycle_matches_the_tuner(client: TestClient) -> None:
    job, auth = create(client)
    seen = run_to_end(client, job, auth)
    assert [s["segment_id"] for s in seen] == list(range(len(seen)))
    info = client.get(f"/v1/jobs/{job}", headers=auth).json()
    assert info["status"] == "done" and info["steps_used"] == SMALL_CONFIG["total_steps"]
    schedule = client.get(f"/v1/jobs/{job}/schedule", headers=auth).json()
    schedule.pop("job_id")
    assert schedule == reference_schedule(SMALL_CONFIG)
    done = poll(client, job, auth, worker="anyone").json()
    assert done["done"] is True and done["steps"] == 0


def test_poll_by_the_same_worker_returns_the_same_segment(client: TestClient, clock: FakeClock) -> None:
    job, auth = create(client)
    first = poll(client, job, auth).json()
    clock.advance(10)
    again = poll(client, job, auth).json()
    assert again["segment_id"] == first["segment_id"] and again["lease_epoch"] == first["lease_epoch"]
    assert again["lease_expires_in_s"] == pytest.approx(60.0)


def test_repeated_report_is_applied_once(client: TestClient) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth).json()
    first = report(client, job, auth, seg)
    second = report(client, job, auth, seg)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    info = client.get(f"/v1/jobs/{job}", headers=auth).json()
    assert info["steps_used"] == seg["steps"]


def test_report_errors(client: TestClient) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth).json()
    short = report(client, job, auth, seg, losses=[1.0])
    assert (short.status_code, short.json()["code"]) == (422, "invalid_report")
    assert "losses" in short.json()["message"]
    future = dict(seg, segment_id=seg["segment_id"] + 5)
    resp = report(client, job, auth, future)
    assert (resp.status_code, resp.json()["code"]) == (409, "unknown_segment")
    assert report(client, job, auth, seg).status_code == 200
    other = report(client, job, auth, seg, losses=[9.0] * seg["steps"])
    assert (other.status_code, other.json()["code"]) == (409, "conflicting_report")


def test_lease_is_exclusive_until_it_lapses(client: TestClient, clock: FakeClock) -> None:
    job, auth = create(client)
    mine = poll(client, job, auth, worker="a").json()
    taken = poll(client, job, auth, worker="b")
    assert (taken.status_code, taken.json()["code"]) == (409, "segment_leased")
    assert taken.json()["detail"]["expires_in_s"] == pytest.approx(60.0)
    clock.advance(61)
    theirs = poll(client, job, auth, worker="b").json()
    assert theirs["segment_id"] == mine["segment_id"]
    assert theirs["lease_epoch"] == mine["lease_epoch"] + 1
    stale = report(client, job, auth, mine, worker="a")
    assert (stale.status_code, stale.json()["code"]) == (409, "stale_lease")
    assert client.get(f"/v1/jobs/{job}", headers=auth).json()["steps_used"] == 0  # nothing applied
    ok = report(client, job, auth, theirs, worker="b")
    assert ok.status_code == 200 and ok.json()["lease_epoch"] == theirs["lease_epoch"]
    metrics = client.get("/metrics").text
    assert "lrtune_lease_expiries_total 1.0" in metrics
    assert "lrtune_stale_reports_refused_total 1.0" in metrics


def test_lapsed_lease_still_lets_its_holder_report_until_taken_over(client: TestClient, clock: FakeClock) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth, worker="a").json()
    clock.advance(500)
    assert report(client, job, auth, seg, worker="a").status_code == 200


def test_report_needs_a_lease(client: TestClient) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth, worker="a").json()
    resp = report(client, job, auth, seg, worker="b")
    assert (resp.status_code, resp.json()["code"]) == (409, "stale_lease")
    job2, auth2 = create(client)
    body = {"worker_id": "a", "lease_epoch": 0, "losses": [1.0]}
    resp = client.post(f"/v1/jobs/{job2}/segments/0/report", json=body, headers=auth2)
    assert (resp.status_code, resp.json()["code"]) == (409, "stale_lease")
    assert "poll" in resp.json()["message"]


def test_repeat_of_last_report_after_takeover_is_refused(client: TestClient, clock: FakeClock) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth, worker="a").json()
    nxt = report(client, job, auth, seg, worker="a").json()
    clock.advance(61)
    taken = poll(client, job, auth, worker="b").json()
    assert taken["segment_id"] == nxt["segment_id"]
    again = report(client, job, auth, seg, worker="a")
    assert again.json()["code"] == "stale_lease"


def test_delete_then_purge(client: TestClient) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth).json()
    deleted = client.delete(f"/v1/jobs/{job}", headers=auth)
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    gone = poll(client, job, auth)
    assert (gone.status_code, gone.json()["code"]) == (410, "job_deleted")
    assert report(client, job, auth, seg).status_code == 410
    assert client.get(f"/v1/jobs/{job}/schedule", headers=auth).status_code == 200
    assert client.get("/v1/jobs?status=running").json()["total"] == 0
    assert client.delete(f"/v1/jobs/{job}?purge=true", headers=auth).status_code == 204
    assert client.get(f"/v1/jobs/{job}", headers=auth).status_code == 404
