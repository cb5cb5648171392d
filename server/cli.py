"""The ``lrtune`` command: ``serve`` runs the service, ``demo`` shows it at work, ``jobs`` inspects its jobs."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from lrtune.server.cli_jobs import app as jobs_app
from lrtune.server.launch import ADMIN_KEY_ENV, REDIS_URL_ENV, prepare_metrics_dir
from lrtune.server.settings import ENV_PREFIX, Settings
from lrtune.server.transport import KEEP_ALIVE_S, PROTOCOL

app = typer.Typer(help="lrtune: online learning-rate tuning as a service.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(envvar="LRTUNE_HOST", help="Interface to bind [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(envvar="LRTUNE_PORT", help="TCP port [default: 8000].")] = None,
    redis_url: Annotated[
        str | None, typer.Option(envvar=REDIS_URL_ENV, help="Redis URL; unset: the embedded in-memory store.")
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(envvar=ADMIN_KEY_ENV, help="Admin key (prefer the environment variable: argv is visible)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(envvar="LRTUNE_WORKERS", min=1, help="Worker processes (>1 needs Redis) [default: 1].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(envvar="LRTUNE_LOG_LEVEL", help="Log level [default: info].")] = None,
) -> None:
    """Run the service (every setting is also an LRTUNE_* environment variable, see docs/service.md)."""
    import uvicorn

    from lrtune.server.app import LOG_FORMAT, public_bind_error, security_warnings

    given = {
        "host": host,
        "port": port,
        "workers": workers,
        "log_level": log_level,
        "redis_url": redis_url,
        "admin_key": admin_key,
    }
    overrides = {name: str(value) for name, value in given.items() if value is not None}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.echo(f"lrtune serve: invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    if settings.workers > 1 and not settings.redis_url:
        typer.echo("lrtune serve: --workers > 1 needs --redis-url (the in-memory store is per process)", err=True)
        raise typer.Exit(2)
    refusal = public_bind_error(settings)
    if refusal is not None:
        typer.echo(f"lrtune serve: {refusal}", err=True)
        raise typer.Exit(2)
    for warning in security_warnings(settings):
        typer.echo(warning, err=True)
    for name, value in overrides.items():
        os.environ[ENV_PREFIX + name.upper()] = value  # the app factory (in every worker process) reads these
    prepare_metrics_dir(settings.workers)  # several workers: one set of metrics over all of them
    level = settings.log_level.lower()
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    uvicorn.run(
        "lrtune.server.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=level,
        http=PROTOCOL,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


@app.command()
def demo(
    baseline: Annotated[bool, typer.Option(help="Also train with a constant LR, for comparison.")] = True,
    loop: Annotated[
        str, typer.Option(help="Training loop: callback (client.AutoLRSCallback), httpx (plain requests), auto.")
    ] = "auto",
    serve: Annotated[bool, typer.Option(help="Keep serving afterwards, to look at the job in the dashboard.")] = False,
    port: Annotated[int, typer.Option(help="Loopback port of the service (0: any free port).")] = 0,
) -> None:
    """Start the service in the background, tune a small MLP on digits over HTTP, print the schedule."""
    from lrtune.server.demo import run_demo

    if loop not in ("auto", "callback", "httpx"):
        typer.echo(f"lrtune demo: --loop must be auto, callback or httpx, got {loop!r}", err=True)
        raise typer.Exit(2)
    run_demo(echo=lambda line: typer.echo(line), baseline=baseline, loop=loop, serve=serve, port=port)  # type: ignore[arg-type]


def main() -> None:
    """Entry point of the ``lrtune`` script."""
    app(prog_name="lrtune")


if __name__ == "__main__":
    main()
    sys.exit(0)
