"""The container files start the service the way the tests start it locally."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from server.launch import CONTAINER_ARGV, CONTAINER_PORT, REDIS_PREFIX_ENV, REDIS_URL_ENV
from server.settings import env_names

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_runs_the_serve_command_with_redis_wired() -> None:
    services = compose()["services"]
    svc = services["lrtune"]
    assert svc["command"] == CONTAINER_ARGV
    env = svc["environment"]
    assert env[REDIS_URL_ENV] == "redis://redis:6379/0"
    assert REDIS_PREFIX_ENV in env  # the variables the multi-process test sets to start `lrtune serve`
    assert set(env) <= env_names(), set(env) - env_names()
    assert f"{CONTAINER_PORT}:{CONTAINER_PORT}" in svc["ports"]
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_redis_persists_and_has_a_healthcheck() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
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

    from server.cli import app

    result = CliRunner().invoke(app, [*CONTAINER_ARGV[1:], "--workers", "2"], env={REDIS_URL_ENV: ""})
    assert result.exit_code == 2
    assert "--workers > 1 needs --redis-url" in result.output


def test_serve_takes_settings_from_the_environment_and_the_command_line(monkeypatch: Any) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from server.cli import app

    for name in env_names():
        monkeypatch.delenv(name, raising=False)  # and whatever serve exports is removed afterwards
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append({"target": target, **kw}))
    env = {REDIS_URL_ENV: "redis://127.0.0.1:6379/0", "LRTUNE_WORKERS": "3", "LRTUNE_PORT": "9001"}
    result = CliRunner().invoke(app, ["serve", "--port", "9002"], env=env)
    assert result.exit_code == 0, result.output
    call = calls[0]
    assert call["target"] == "server.app:app_from_env" and call["factory"] is True
    assert (call["host"], call["port"], call["workers"]) == ("127.0.0.1", 9002, 3)
    assert "LRTUNE_ADMIN_KEY" in result.output  # the warning about running without an admin key


def test_serve_warns_loudly_on_a_public_interface_without_admin_key(monkeypatch: Any) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from server.cli import app

    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: None)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0
    assert "!!!" in result.output and "0.0.0.0" in result.output
    quiet = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"LRTUNE_ADMIN_KEY": "k" * 32})
    assert "!!!" not in quiet.output and "k" * 32 not in quiet.output
