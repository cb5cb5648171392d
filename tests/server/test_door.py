"""Loopback is not the internet: the Host allow-list, no trust in a client's name, the open-mode notice."""

from __future__ import annotations

from typing import Any

import pytest

from lrtune.client.protocol import JOB_STATUSES
from lrtune.server.app import create_app
from lrtune.server.settings import Settings, host_allowed
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.server.helpers import SMALL_CONFIG


def app_for(**settings: Any) -> Any:
    return create_app(Settings(redis_url=None, **settings), store=MemoryStore())


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST."])
def test_this_machines_names_are_answered(host: str) -> None:
    with local_client(app_for()) as c:
        assert c.get("/v1/jobs", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "10.0.0.5"])
def test_a_rebound_name_is_refused_before_any_route(host: str) -> None:
    """A page whose own name resolves to 127.0.0.1 (DNS rebinding) reads nothing, creates nothing."""
    store = MemoryStore()
    with local_client(create_app(Settings(redis_url=None), store=store)) as c:
        listing = c.get("/v1/jobs", headers={"host": host})
        created = c.post("/v1/jobs", json={"config": SMALL_CONFIG}, headers={"host": host})
        page = c.get("/", headers={"host": host})
    for resp in (listing, created, page):
        assert resp.status_code == 400
        assert resp.json()["code"] == "host_not_allowed" and "LRTUNE_ALLOWED_HOSTS" in resp.json()["message"]
    assert len(store) == 0


def test_probes_answer_any_host() -> None:
    with local_client(app_for()) as c:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path, headers={"host": "10.1.2.3:8000"}).status_code == 200


def test_allowed_hosts_are_configurable_and_include_the_bound_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRTUNE_ALLOWED_HOSTS", "lrtune.internal, *.corp.example")
    settings = Settings(redis_url=None, host="10.0.0.5")
    assert settings.host_patterns() == ["lrtune.internal", "*.corp.example", "10.0.0.5"]
    with local_client(create_app(settings, store=MemoryStore())) as c:
        ok = [c.get("/healthz?x", headers={"host": h}).status_code for h in ("lrtune.internal:80", "a.corp.example")]
        assert ok == [200, 200]
        assert c.get("/v1/jobs/0123456789abcdef", headers={"host": "10.0.0.5:8000"}).status_code == 401
        assert c.get("/v1/jobs/0123456789abcdef", headers={"host": "localhost"}).json()["code"] == "host_not_allowed"
    assert host_allowed("anything", ["*"]) and not host_allowed("corp.example", ["*.corp.example"])


def test_no_client_name_is_trusted_as_local() -> None:
    """Only a loopback address lists jobs without a key: not a client that calls itself ``testclient``."""
    app = app_for()
    for address in ("testclient", "192.0.2.7"):
        with local_client(app, address) as c:
            resp = c.get("/v1/jobs", headers={"X-Forwarded-For": "testclient"})
            assert (resp.status_code, resp.json()["code"]) == (403, "forbidden"), address
    with local_client(app) as c:
        assert c.get("/v1/jobs", headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 200


def test_every_answer_names_the_store_instance() -> None:
    first, second = app_for(), app_for()
    with local_client(first) as a, local_client(second) as b:
        ids = {a.get("/healthz").headers["lrtune-store-id"], a.post("/v1/jobs", json={}).headers["lrtune-store-id"]}
        assert len(ids) == 1  # one store, one id, on success and error alike
        assert b.get("/healthz").headers["lrtune-store-id"] not in ids  # another in-memory store: another id


def test_the_dashboard_says_when_it_is_open_and_lists_every_status() -> None:
    with local_client(app_for()) as c:
        page = c.get("/").text
    assert 'id="open-mode"' in page and "no admin key" in page and "LRTUNE_ADMIN_KEY" in page
    assert f'content="{",".join(JOB_STATUSES)}"' in page and "stalled" in JOB_STATUSES
    with local_client(app_for(admin_key="k" * 32)) as c:
        assert 'id="open-mode"' not in c.get("/").text
