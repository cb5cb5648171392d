"""Whatever a client sends, the answer is a JSON error with a stable code, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.server.helpers import SMALL_CONFIG

JSON = {"Content-Type": "application/json"}


def post_raw(client: TestClient, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(path, content=body, headers={**JSON, **(headers or {})})


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"{not json", "valid JSON"),
        (b"", "body"),
        (b"[]", "body"),
        (b'{"config": {"min_lr": "small", "max_lr": 1, "total_steps": 10}}', "min_lr"),
        (b'{"config": {"min_lr": NaN, "max_lr": 1, "total_steps": 10}}', "min_lr"),
        (b'{"config": {"min_lr": 1e999, "max_lr": 1, "total_steps": 10}}', "min_lr"),
        (b'{"config": {"min_lr": 0.1, "max_lr": 1, "total_steps": 1e400}}', "total_steps"),
        (b'{"config": {"min_lr": 0.1, "max_lr": 1, "total_steps": 10, "k": 100000}}', "k"),
        (b'{"config": {"min_lr": 0.1, "max_lr": 1, "total_steps": 10, "bogus": 1}}', "bogus"),
        (b'{"config": {"min_lr": 0.1, "max_lr": 1, "total_steps": ' + b"9" * 5000 + b"}}", "JSON"),
        (b'{"config": ' + b"[" * 5000 + b"]" * 5000 + b"}", ""),
    ],
)
def test_malformed_job_bodies_get_invalid_request(client: TestClient, body: bytes, what: str) -> None:
    resp = post_raw(client, "/v1/jobs", body)
    assert resp.status_code in (400, 422), resp.text
    err = resp.json()
    assert err["code"] in ("invalid_request", "bad_request")
    assert what in err["message"]


def test_inconsistent_config_names_what_to_fix(client: TestClient) -> None:
    resp = client.post("/v1/jobs", json={"config": {"min_lr": 1.0, "max_lr": 0.1, "total_steps": 10}})
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_config")
    assert "min_lr" in resp.json()["message"] and "max_lr" in resp.json()["message"]


def test_a_switch_the_default_plan_would_ignore_is_an_invalid_config(client: TestClient) -> None:
    config = {"min_lr": 1e-4, "max_lr": 0.1, "total_steps": 2000, "robust_plan": True}
    resp = client.post("/v1/jobs", json={"config": config})
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_config")
    assert "robust_plan only applies with loss_model='power'" in resp.json()["message"]
    assert client.post("/v1/jobs", json={"config": {**config, "loss_model": "power"}}).status_code == 201


@pytest.fixture
def small_body_client() -> Iterator[TestClient]:
    with local_client(create_app(Settings(redis_url=None, max_body_bytes=4096), store=MemoryStore())) as c:
        yield c


def test_oversized_body_is_413(small_body_client: TestClient) -> None:
    big = json.dumps({"config": SMALL_CONFIG, "name": "x" * 10_000}).encode()
    resp = post_raw(small_body_client, "/v1/jobs", big)
    assert (resp.status_code, resp.json()["code"]) == (413, "body_too_large")


def test_oversized_streamed_body_is_413(small_body_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'", "config": {}}'

    resp = small_body_client.post("/v1/jobs", content=chunks(), headers=JSON)  # chunked: no Content-Length
    assert (resp.status_code, resp.json()["code"]) == (413, "body_too_large")


def test_lying_content_length_is_refused(small_body_client: TestClient) -> None:
    resp = post_raw(small_body_client, "/v1/jobs", b"{}", headers={"Content-Length": "999999999"})
    assert resp.status_code in (400, 413)


def _job(client: TestClient, **config: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    created = client.post("/v1/jobs", json={"config": {**SMALL_CONFIG, **config}}).json()
    auth = {"Authorization": f"Bearer {created['token']}"}
    seg = client.post(f"/v1/jobs/{created['job_id']}/lease", json={"worker_id": "w"}, headers=auth).json()
    return created["job_id"], auth, seg


@pytest.mark.parametrize(
    "body",
    [
        {"worker_id": "w", "lease_epoch": 1, "losses": "many"},
        {"worker_id": "w", "lease_epoch": 1, "losses": [{"a": 1}]},
        {"worker_id": "w", "lease_epoch": -1, "losses": [1.0]},
        {"worker_id": "", "lease_epoch": 1, "losses": [1.0]},
        {"worker_id": "w", "losses": [1.0]},
        {"worker_id": "w", "lease_epoch": 1, "losses": [1.0], "extra": True},
    ],
)
def test_malformed_reports_get_invalid_request(client: TestClient, body: dict[str, Any]) -> None:
    job, auth, seg = _job(client)
    resp = client.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body, headers=auth)
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_request")


def test_non_finite_losses_are_a_diverged_candidate_not_an_error(client: TestClient) -> None:
    job, auth, seg = _job(client, preset="greedy")  # its first segment is the LR range sweep
    assert seg["phase"] == "explore"
    body = b'{"worker_id": "w", "lease_epoch": %d, "losses": [1.0, NaN, Infinity]}' % seg["lease_epoch"]
    resp = post_raw(client, f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", body, auth)
    assert resp.status_code == 200, resp.text
    schedule = client.get(f"/v1/jobs/{job}/schedule", headers=auth).json()
    assert schedule["segments"][0]["diverged"] is True and schedule["steps_used"] == 3


def test_huge_segment_id_is_a_4xx(client: TestClient) -> None:
    job, auth, seg = _job(client)
    body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], "losses": [1.0]}
    for sid in ("99999999999999999999999", "-1", "abc"):
        resp = client.post(f"/v1/jobs/{job}/segments/{sid}/report", json=body, headers=auth)
        assert resp.status_code == 422, sid


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
config_like = st.fixed_dictionaries(
    {},
    optional={
        k: json_values | st.sampled_from([0, 1, -1, 0.5, 1e-3, 10**30, None, "x"])
        for k in ("min_lr", "max_lr", "total_steps", "tau", "k", "preset", "strategy", "seed", "warmup_steps")
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, st.fixed_dictionaries({"config": config_like}, optional={"name": json_values})))
def test_fuzzed_job_bodies_never_500(client: TestClient, body: Any) -> None:
    raw = json.dumps(body).encode()  # NaN and Infinity included, as Python's JSON writes them
    resp = post_raw(client, "/v1/jobs", raw)
    assert resp.status_code in (201, 400, 422), resp.text
    assert "code" in resp.json() or resp.status_code == 201


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {"worker_id": st.just("w"), "lease_epoch": st.just(1)},
        optional={"losses": json_values, "val_losses": json_values},
    )
    | json_values
)
def test_fuzzed_reports_never_500(client: TestClient, body: Any) -> None:
    job, auth, seg = _job(client)
    resp = post_raw(client, f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json.dumps(body).encode(), auth)
    assert resp.status_code in (200, 400, 409, 422), resp.text
