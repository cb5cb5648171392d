"""The container files start the service the way the tests start it locally."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lrtune.server.app import create_app, public_bind_error
from lrtune.server.launch import CONTAINER_ARGV, CONTAINER_PORT, MULTIPROC_DIR_ENV, REDIS_PREFIX_ENV, REDIS_URL_ENV
from lrtune.server.settings import Settings, env_names
from lrtune.server.store import MemoryStore
from tests.asgi import local_client
from tests.server.helpers import SMALL_CONFIG

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "compose-admin-key-" + "x" * 24


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (an unset or empty VAR with ``:?`` raises)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def container_settings(host_env: dict[str, str]) -> Settings:
    """The settings the compose service starts with, given the host's environment (what `lrtune serve` reads)."""
    svc = compose()["services"]["lrtune"]
    env = {name: interpolate(str(value), host_env) for name, value in svc["environment"].items()}
    argv = svc["command"]
    host, port = argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]
    fields = {name.removeprefix("LRTUNE_").lower(): value for name, value in env.items()}
    return Settings(**{**fields, "host": host, "port": port})


def test_compose_runs_the_serve_command_with_redis_wired() -> None:
    services = compose()["services"]
    svc = services["lrtune"]
    assert svc["command"] == CONTAINER_ARGV
    env = svc["environment"]
    assert env[REDIS_URL_ENV] == "redis://redis:6379/0"
    assert REDIS_PREFIX_ENV in env  # the variables the multi-process test sets to start `lrtune serve`
    assert set(env) <= env_names(), set(env) - env_names()
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_publishes_on_loopback_and_requires_an_admin_key() -> None:
    (port,) = compose()["services"]["lrtune"]["ports"]
    assert interpolate(port, {}) == f"127.0.0.1:{CONTAINER_PORT}:{CONTAINER_PORT}"  # not every interface
    assert interpolate(port, {"LRTUNE_PUBLISH": "0.0.0.0"}) == f"0.0.0.0:{CONTAINER_PORT}:{CONTAINER_PORT}"
    with pytest.raises(ValueError, match="LRTUNE_ADMIN_KEY"):  # `docker compose up` stops and says what to set
        container_settings({})
    with pytest.raises(ValueError, match="LRTUNE_ADMIN_KEY"):
        container_settings({"LRTUNE_ADMIN_KEY": ""})
    settings = container_settings({"LRTUNE_ADMIN_KEY": ADMIN})
    assert settings.host == "0.0.0.0" and public_bind_error(settings) is None
    # Without the key the service in the container would refuse to start on its own too.
    assert public_bind_error(settings.model_copy(update={"admin_key": None})) is not None


def test_the_dashboard_works_from_the_hosts_browser_through_compose() -> None:
    """In the container the host's browser arrives from the bridge network, with the Host it typed."""
    settings = container_settings({"LRTUNE_ADMIN_KEY": ADMIN}).model_copy(update={"redis_url": None})
    app = create_app(settings, store=MemoryStore())
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with local_client(app, "172.18.0.1", 51000) as browser:
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
            page = browser.get("/", headers={"host": host})
            assert page.status_code == 200 and "Open mode" not in page.text, host
            assert browser.get("/dashboard/static/app.js", headers={"host": host}).status_code == 200
            assert browser.get("/v1/jobs", headers={"host": host}).status_code == 401  # the page asks for the key
            assert browser.get("/v1/jobs", headers={"host": host, **admin}).status_code == 200
        created = browser.post("/v1/jobs", json={"config": SMALL_CONFIG}, headers={"host": "localhost:8000"})
        job_id = created.json()["job_id"]
        view = browser.get(f"/dashboard/api/jobs/{job_id}", headers={"host": "localhost:8000", **admin})
        assert view.status_code == 200 and view.json()["job_id"] == job_id
        assert browser.get("/", headers={"host": "evil.example:8000"}).json()["code"] == "host_not_allowed"


def test_compose_redis_persists_and_has_a_healthcheck() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    # An acknowledged report must survive a Redis crash: every write on disk before Redis answers.
    assert redis["command"][redis["command"].index("--appendfsync") + 1] == "always"
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_dockerfile_cmd_user_and_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None and json.loads(cmd.group(1)) == CONTAINER_ARGV
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "download.pytorch.org/whl/cpu" in text


def test_serve_command_parses(tmp_path: Path) -> None:
    """The container's command line is one the CLI accepts (checked without starting a server)."""
    from typer.testing import CliRunner

    from lrtune.server.cli import app

    env = {REDIS_URL_ENV: "", "LRTUNE_ADMIN_KEY": "k" * 32}
    result = CliRunner().invoke(app, [*CONTAINER_ARGV[1:], "--workers", "2"], env=env)
    assert result.exit_code == 2
    assert "--workers > 1 needs --redis-url" in result.output


def test_serve_takes_settings_from_the_environment_and_the_command_line(monkeypatch: Any) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from lrtune.server.cli import app

    for name in [*env_names(), MULTIPROC_DIR_ENV]:
        monkeypatch.delenv(name, raising=False)  # and whatever serve exports is removed afterwards
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append({"target": target, **kw}))
    env = {REDIS_URL_ENV: "redis://127.0.0.1:6379/0", "LRTUNE_WORKERS": "3", "LRTUNE_PORT": "9001"}
    result = CliRunner().invoke(app, ["serve", "--port", "9002"], env=env)
    assert result.exit_code == 0, result.output
    call = calls[0]
    assert call["target"] == "lrtune.server.app:app_from_env" and call["factory"] is True
    assert (call["host"], call["port"], call["workers"]) == ("127.0.0.1", 9002, 3)
    assert "LRTUNE_ADMIN_KEY" in result.output  # the warning about running without an admin key


def test_serve_refuses_a_public_interface_without_admin_key(monkeypatch: Any) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from lrtune.server.cli import app

    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    calls: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append(target))
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        result = CliRunner().invoke(app, ["serve", "--host", host])
        assert result.exit_code == 2 and not calls
        assert f"refusing to listen on {host} without an admin key" in result.output
        assert "Set LRTUNE_ADMIN_KEY" in result.output
    with_key = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"LRTUNE_ADMIN_KEY": "k" * 32})
    assert with_key.exit_code == 0 and calls == ["lrtune.server.app:app_from_env"]
    assert "refusing" not in with_key.output and "k" * 32 not in with_key.output
    for loopback in ("127.0.0.1", "localhost", "::1"):  # open on this machine only: starts, and says so
        result = CliRunner().invoke(app, ["serve", "--host", loopback])
        assert result.exit_code == 0 and "no LRTUNE_ADMIN_KEY set" in result.output


def dev_image(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``./dev image`` with only ``tools`` (name -> shell script body) as container tools on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "CALLS": str(tmp_path / "calls")}
    return subprocess.run([str(ROOT / "dev"), "image"], env=env, capture_output=True, text=True, timeout=60)


def test_dev_image_says_clearly_when_no_builder_works(tmp_path: Path) -> None:
    down = 'if [ "$1" = info ]; then echo "Cannot connect to the Docker daemon. Is it running?" >&2; exit 1; fi'
    result = dev_image(tmp_path, {"docker": down})
    assert result.returncode == 1
    assert "neither podman nor docker works" in result.stderr
    assert "podman: not installed" in result.stderr
    assert "docker: installed, but its engine does not answer (Cannot connect to the Docker daemon" in result.stderr


def test_dev_image_builds_with_the_first_builder_that_works(tmp_path: Path) -> None:
    working = 'echo "$@" >> "$CALLS"'
    down = 'echo "$@" >> "$CALLS"; [ "$1" = info ] && exit 1; exit 0'
    result = dev_image(tmp_path, {"podman": down, "docker": working})
    assert result.returncode == 0, result.stderr
    assert "building lrtune:latest with docker" in result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["info", "info", "build -t lrtune:latest ."]
