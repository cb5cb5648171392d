"""``/docs`` works offline (Swagger UI from local assets) and can call the API with the bearer token."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lrtune.server.app import create_app
from lrtune.server.dashboard.routes import SHELL_HEADERS
from lrtune.server.launch import ADMIN_KEY_ENV, REDIS_URL_ENV, free_port, start_local, stop_local, wait_ready
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from tests.asgi import local_client

ADMIN = "docs-admin-key-" + "d" * 24


@pytest.fixture
def docs_client() -> Iterator[TestClient]:
    settings = Settings(redis_url=None, admin_key=SecretStr(ADMIN))
    with local_client(create_app(settings, store=MemoryStore())) as c:
        yield c


def test_docs_page_loads_nothing_from_another_origin(docs_client: TestClient) -> None:
    page = docs_client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and not any("//" in u for u in urls), urls  # every asset from this service
    assert "<script>" not in page.text  # no inline script: the policy allows only this origin's scripts
    for url in urls:
        asset = docs_client.get(f"/{url}")
        assert asset.status_code == 200 and asset.content, url
    assert "SwaggerUIBundle" in docs_client.get("/docs/static/swagger-ui-bundle.js").text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "http" not in csp
    assert docs_client.get("/redoc").status_code == 404  # ReDoc needs a CDN: not offered


def test_the_dashboard_keeps_its_own_policy(docs_client: TestClient) -> None:
    shell = docs_client.get("/")
    assert shell.headers["content-security-policy"] == SHELL_HEADERS["Content-Security-Policy"]
    assert "'unsafe-inline'" not in shell.headers["content-security-policy"]


def test_the_spec_declares_the_bearer_token_on_every_route_that_takes_one(docs_client: TestClient) -> None:
    spec = docs_client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    ops = {(m.upper(), p): op for p, methods in spec["paths"].items() for m, op in methods.items()}
    for (method, path), op in ops.items():
        if path.startswith(("/v1/jobs/", "/dashboard/api/")) or (method, path) == ("GET", "/v1/jobs"):
            assert op.get("security") == [{"bearer": []}], (method, path)
        elif path in ("/healthz", "/readyz", "/metrics"):
            assert "security" not in op, path
    assert ops[("POST", "/v1/jobs")]["security"] == [{}, {"bearer": []}]  # open; the admin key lifts the quota


# ------------------------------------------------------------------------------------------------ browser


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_local(port, {ADMIN_KEY_ENV: ADMIN, REDIS_URL_ENV: ""}, tmp_path / "server.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_local(proc)


def wait_for(driver: Any, css: str, timeout_s: float = 30.0) -> list[Any]:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if found and found[0].is_displayed():
            return list(found)
        time.sleep(0.1)
    raise AssertionError(f"{css} did not appear within {timeout_s} s")


@pytest.mark.timeout(180)
def test_docs_render_offline_and_try_it_out_with_the_admin_key(served: str, tmp_path: Path) -> None:
    """Headless Chromium with only the service to reach: the page renders, Authorize + Execute lists the jobs."""
    from tests.dashboard.helpers import chromium_or_skip, close_browser, make_browser, severe_console_errors

    chromium_or_skip()
    driver = make_browser(tmp_path)
    try:
        driver.get(f"{served}/docs")
        assert len(wait_for(driver, ".opblock")) >= 10  # every operation is listed
        wait_for(driver, ".btn.authorize").pop().click()
        wait_for(driver, ".auth-container input").pop().send_keys(ADMIN)
        wait_for(driver, ".auth-btn-wrapper .authorize").pop().click()
        wait_for(driver, ".auth-btn-wrapper .btn-done").pop().click()
        op = "#operations-jobs-list_jobs_v1_jobs_get"
        wait_for(driver, f"{op} .opblock-summary").pop().click()
        wait_for(driver, f"{op} .try-out__btn").pop().click()
        wait_for(driver, f"{op} .execute").pop().click()
        status = wait_for(driver, f"{op} .live-responses-table .response .response-col_status")
        assert status[0].text.strip().startswith("200"), status[0].text
        curl = wait_for(driver, f"{op} .curl")[0].text
        assert f"Authorization: Bearer {ADMIN}" in curl  # the token went with the request
        assert severe_console_errors(driver) == []  # nothing blocked by the policy, nothing failed to load
    finally:
        close_browser(driver)
