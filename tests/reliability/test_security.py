"""Nobody gets in: job tokens open only their own job on every route, admin routes refuse job tokens, tokens are
random, stored hashed, compared in constant time, never logged nor shown twice; a public bind without an admin
key refuses to start; the deployment documentation covers every setting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lrtune.client.protocol import LeaseRequest, WireReport
from lrtune.server.apidocs import all_routes
from lrtune.server.apidocs import dependency_calls as dependencies
from lrtune.server.app import create_app
from lrtune.server.deps import require_admin
from lrtune.server.launch import free_port, local_program
from lrtune.server.settings import Settings, env_names
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.reliability.harness import Service, create_job, wait_for
from tests.server.helpers import SMALL_CONFIG, run_segment

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-" + "k" * 40
VICTIM_NAME = "victim-job-name-0451"


def body_model(route: Any) -> Any:
    """The model a route's body is: its declared body parameter, or the schema it documents (a raw-body route)."""
    field = getattr(route, "body_field", None)
    if field is not None:
        return field.field_info.annotation
    extra = getattr(route, "openapi_extra", None) or {}
    schema = extra.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return {"WireReport": WireReport}.get(schema.get("title"))


@pytest.fixture
def secured() -> Iterator[tuple[TestClient, MemoryStore]]:
    store = MemoryStore()
    app = create_app(Settings(redis_url=None, admin_key=SecretStr(ADMIN), lease_ttl_s=60.0), store=store)
    with local_client(app) as client:
        yield client, store


def make_job(client: TestClient, name: str) -> tuple[str, str, dict[str, Any]]:
    created = client.post("/v1/jobs", json={"name": name, "config": SMALL_CONFIG})
    assert created.status_code == 201
    job, token = created.json()["job_id"], created.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    seg = client.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth).json()
    body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
    seg = client.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body, headers=auth).json()
    return job, token, seg


def request_for(route: Any, method: str, job: str, seg: dict[str, Any]) -> tuple[str, str, Any]:
    """A well-formed request to ``route`` about ``job``: path parameters filled in, a valid body if it takes one."""
    values = {"job_id": job, "segment_id": str(seg["segment_id"])}
    path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "0"), route.path)
    model = body_model(route)
    bodies: dict[Any, dict[str, Any]] = {
        LeaseRequest: {"worker_id": "intruder"},
        WireReport: {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)},
    }
    if model is not None and model not in bodies:
        pytest.fail(f"{method} {route.path} takes a {model.__name__}: give this test a valid example of it")
    return method, path, bodies.get(model)


def job_routes(app: FastAPI) -> list[tuple[Any, str]]:
    out = []
    for route in all_routes(app):
        if "{job_id}" in (route.path or ""):
            out += [(route, m) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_a_job_token_opens_no_other_job_on_any_route(secured: tuple[TestClient, MemoryStore]) -> None:
    client, store = secured
    victim, victim_token, victim_seg = make_job(client, VICTIM_NAME)
    _, intruder_token, _ = make_job(client, "intruder")
    routes = job_routes(client.app)  # type: ignore[arg-type]
    assert len(routes) >= 6
    probed = []
    for route, method in routes:
        _, path, body = request_for(route, method, victim, victim_seg)
        before = store.get(victim)
        as_intruder = client.request(method, path, json=body, headers={"Authorization": f"Bearer {intruder_token}"})
        anonymous = client.request(method, path, json=body)
        assert store.get(victim) == before, f"{method} {route.path} changed another job"
        if as_intruder.status_code in (401, 403):
            assert as_intruder.json()["code"] in ("unauthorized", "forbidden")
        else:  # a public route (the dashboard's page shell): it answers everyone alike and holds no job data
            assert anonymous.status_code == as_intruder.status_code == 200, (method, route.path, as_intruder.text)
            assert anonymous.content == as_intruder.content
            assert VICTIM_NAME not in as_intruder.text and victim_token not in as_intruder.text
        probed.append((method, route.path, as_intruder.status_code))
    # The probes were not refused for some other reason: the victim's own token (or the admin key) gets in.
    for route, method in sorted(routes, key=lambda rm: rm[1] == "DELETE"):
        _, path, body = request_for(route, method, victim, victim_seg)
        admin_only = require_admin in set(dependencies(route))
        token = ADMIN if admin_only else victim_token
        resp = client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code < 400 or resp.json()["code"] not in ("unauthorized", "forbidden"), (
            route.path,
            resp.text,
        )
        assert victim_token not in resp.text  # a token is shown once, at creation
        assert hashlib.sha256(victim_token.encode()).hexdigest() not in resp.text
    assert sum(1 for _, _, status in probed if status == 403) >= 6, probed


def test_admin_only_routes_refuse_job_tokens(secured: tuple[TestClient, MemoryStore]) -> None:
    client, _ = secured
    job, token, seg = make_job(client, "someone")
    admin_routes = [(r, m) for r in all_routes(client.app) if require_admin in set(dependencies(r)) for m in r.methods]  # type: ignore[arg-type]
    assert any(r.path == "/v1/jobs" for r, _ in admin_routes)
    for route, method in admin_routes:
        if method == "HEAD":
            continue
        _, path, body = request_for(route, method, job, seg)
        with_job_token = client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert (with_job_token.status_code, with_job_token.json()["code"]) == (403, "forbidden"), route.path
        assert client.request(method, path, json=body).status_code == 401
        admin = client.request(method, path, json=body, headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 200, (route.path, admin.text)
        assert token not in admin.text and hashlib.sha256(token.encode()).hexdigest() not in admin.text


def test_tokens_are_random_and_compared_in_constant_time(
    secured: tuple[TestClient, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = secured
    tokens = [client.post("/v1/jobs", json={"config": SMALL_CONFIG}).json()["token"] for _ in range(64)]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128
    assert len({t[:6] for t in tokens}) == len(tokens)  # no common prefix or counter
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    job, token, _ = make_job(client, "timing")
    assert client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {tokens[0]}"}).status_code == 403
    assert client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert any(digest in (a, b) for a, b in compared)  # the job token's hash went through compare_digest
    assert any(ADMIN.encode() in (a, b) for a, b in compared)  # and so did the admin key check


def test_redis_holds_no_token_and_logs_show_none(shared_service: Service, shared_prefix: str, redis_url: str) -> None:
    url = shared_service.url
    jobs = [create_job(url, SMALL_CONFIG, f"secret-{i}") for i in range(3)]
    for job, token in jobs:
        auth = {"Authorization": f"Bearer {token}"}
        seg = httpx.post(f"{url}/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth).json()
        body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
        assert httpx.post(f"{url}/v1/jobs/{job}/segments/0/report", json=body, headers=auth).status_code == 200
        # Failures get logged by some services with their request: wrong job, bad body, unknown route.
        other = jobs[0][0] if job != jobs[0][0] else jobs[1][0]
        assert httpx.get(f"{url}/v1/jobs/{other}", headers=auth).status_code == 403
        assert httpx.post(f"{url}/v1/jobs/{job}/lease", content=b"{", headers=auth).status_code in (400, 422)
        assert httpx.get(f"{url}/v1/nowhere", headers=auth).status_code == 404
        assert httpx.get(f"{url}/v1/jobs", headers=auth).status_code == 200  # loopback listing, no admin key
    db = redis.Redis.from_url(redis_url)
    dump = []
    for key in db.scan_iter(match=f"{shared_prefix}:*"):
        kind = db.type(key)
        if kind == b"hash":
            dump += [k + b"=" + v for k, v in db.hgetall(key).items()]  # type: ignore[union-attr]
        elif kind == b"zset":
            dump += db.zrange(key, 0, -1)  # type: ignore[arg-type]
        elif kind == b"set":
            dump += db.smembers(key)  # type: ignore[arg-type]
        else:
            dump.append(db.dump(key) or b"")  # type: ignore[arg-type]
    stored = b"\n".join(dump)
    logs = shared_service.logs()
    assert "DEBUG" in logs and "/lease" in logs  # the log is there, verbose, with every request
    for _, token in jobs:
        assert token.encode() not in stored and token[:12].encode() not in stored
        assert hashlib.sha256(token.encode()).hexdigest().encode() in stored  # what is kept instead
        assert token not in logs and token[:12] not in logs


def serve_output(env: dict[str, str], until: Callable[[str], bool], timeout_s: float = 90.0) -> str:
    """Run ``lrtune serve --host 0.0.0.0`` on a free port until ``until(output so far)``; return the output."""
    port = free_port()
    argv = [local_program(), "serve", "--host", "0.0.0.0", "--port", str(port), "--log-level", "info"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    proc = subprocess.Popen(argv, env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = b""

    def done() -> bool:
        nonlocal out
        out += proc.stdout.read() or b""  # type: ignore[union-attr]
        return until(out.decode(errors="replace")) or proc.poll() is not None

    try:
        wait_for(done, timeout_s, "lrtune serve's start-up output", every_s=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return out.decode(errors="replace")


def test_public_bind_without_admin_key_refuses_to_start_and_with_one_starts_quietly() -> None:
    refused = serve_output({}, lambda text: False)  # until it exits
    line = next(line for line in refused.splitlines() if "refusing" in line)
    assert "0.0.0.0" in line and "LRTUNE_ADMIN_KEY" in line and "127.0.0.1" in line  # what to set, or to bind
    assert "Uvicorn running" not in refused and "startup" not in refused
    key = "k3y-" + "z" * 40
    quiet = serve_output({"LRTUNE_ADMIN_KEY": key}, lambda text: "Uvicorn running" in text or "startup" in text)
    assert "refusing" not in quiet and key not in quiet
    assert "Uvicorn running" in quiet or "startup" in quiet


def test_deployment_docs_cover_every_setting_and_the_safety_steps() -> None:
    doc = (ROOT / "docs" / "service.md").read_text()
    missing = sorted(name for name in env_names() if name not in doc)
    assert not missing, f"docs/service.md does not document {missing}"
    safety = doc[doc.index("## Deploying safely") :]
    for needed in ("LRTUNE_ADMIN_KEY", "TLS", "reverse proxy", "LRTUNE_MAX_JOBS_PER_CLIENT", "LRTUNE_RATE_LIMIT_PER_S"):
        assert needed in safety, needed
