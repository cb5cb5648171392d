"""``lrtune jobs``: list, show and export the jobs of a running service, as readable tables.

Every command talks to the service over HTTP (``--url`` or ``LRTUNE_URL``, default ``http://127.0.0.1:8000``)
with ``--key`` or ``LRTUNE_KEY`` as the bearer token: the admin key, or, for ``show`` and ``export``, a job's
own token. Without a key, the commands use the routes that are open to this machine when the service has no
admin key (listing, and the dashboard's read-only job views).

Exit codes: 0 success, 1 the service refused the request, 2 bad usage, 3 the service cannot be reached,
4 a missing or refused key, 5 no such job.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer

from lrtune.client.errors import JobGoneError, LrtuneHTTPError
from lrtune.client.http import ServiceClient
from lrtune.client.protocol import JOB_STATUSES

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5

DEFAULT_URL = "http://127.0.0.1:8000"
#: The narrowest a cut table cell gets, in characters.
_MIN_CELL = 8
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")

app = typer.Typer(help="Inspect the jobs of a running lrtune service.", no_args_is_help=True)

Url = Annotated[str, typer.Option("--url", envvar="LRTUNE_URL", help="Base URL of the service.")]
Key = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="LRTUNE_KEY",
        help="Admin key (or, for show and export, the job's token); prefer the variable: argv is visible.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the service's JSON instead of a table.")]
JobRef = Annotated[str, typer.Argument(help="Job id, id prefix, or exact name.")]


class SortKey(StrEnum):
    """Sort keys of ``lrtune jobs list`` (those of ``GET /v1/jobs?sort=``)."""

    created = "created"
    updated = "updated"
    name = "name"
    status = "status"
    phase = "phase"
    progress = "progress"
    lr = "lr"
    explore = "explore"
    loss = "loss"


class Order(StrEnum):
    """Sort direction."""

    asc = "asc"
    desc = "desc"


if TYPE_CHECKING:

    class Status(StrEnum):
        """Job statuses: the members of ``lrtune.client.protocol.JOB_STATUSES``."""

else:  # the one list of statuses, as choices of ``--status``
    Status = StrEnum("Status", [(s, s) for s in JOB_STATUSES])


class ExportFormat(StrEnum):
    """Export formats of ``GET .../schedule?format=``."""

    json = "json"
    csv = "csv"
    lambdalr = "lambdalr"


class CliError(Exception):
    """A failure to report in one line, with the exit code it deserves."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class JobsClient:
    """The calls the commands make, through the client package's :class:`lrtune.client.http.ServiceClient`.

    Args:
        url: Base URL of the service.
        key: Bearer token (admin key or job token), or None.
        http: The HTTP client (tests inject one); None creates one with short timeouts.
    """

    def __init__(self, url: str, key: str | None, http: httpx.Client | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--url must start with http:// or https://, got {url!r}", EXIT_USAGE)
        self.url = url.rstrip("/")
        self.key = key or None
        self._http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=3.0))
        self.api = ServiceClient(self.url, http_client=self._http)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def job_path(self, job_id: str) -> str:
        """Where one job's views live: the token-scoped API with a key, the open dashboard views without."""
        return f"/v1/jobs/{job_id}" if self.key else f"/dashboard/api/jobs/{job_id}"

    def get(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        """GET ``path``; return the body of a successful answer or raise :class:`CliError`."""
        body: bytes = self._do(lambda: self.api.get(path, self.key, params, as_="bytes"))
        return body

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` and decode its JSON."""
        return self._do(lambda: self.api.get(path, self.key, params))

    def delete(self, job_id: str, purge: bool) -> None:
        """End a job (``purge``: remove it entirely)."""
        self._do(lambda: self.api.delete_job(job_id, self.key or "", purge=purge))

    def _do(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except LrtuneHTTPError as exc:
            raise self._refusal(exc) from exc

    def _refusal(self, exc: LrtuneHTTPError) -> CliError:
        status, code, message = exc.status, exc.code or "", exc.reason or str(exc)
        if status is None:
            return CliError(
                f"cannot reach the lrtune service at {self.url} ({exc}); is `lrtune serve` running there? Set --url "
                "or LRTUNE_URL.",
                EXIT_UNREACHABLE,
            )
        if 200 <= status < 300:
            return CliError(f"{self.url} did not answer JSON: is this an lrtune service? ({exc})", EXIT_REFUSED)
        if status == 401:
            hint = "the key was not accepted" if self.key else "the service wants a key"
            return CliError(
                f"{hint} (401): pass --key or set LRTUNE_KEY to the service's admin key (or, for one job, its token)",
                EXIT_AUTH,
            )
        if status == 403:
            return CliError(f"refused (403 {code}): {message}", EXIT_AUTH)
        if isinstance(exc, JobGoneError):
            return CliError(f"{message} ({status} {code})", EXIT_NOT_FOUND)
        if status == 404:
            return CliError(f"{self.url} answered 404 ({exc}): is it an lrtune service?", EXIT_REFUSED)
        return CliError(f"the service refused the request ({status} {code}): {message}", EXIT_REFUSED)

    def resolve(self, job: str) -> str:
        """Turn a job id, a unique id prefix or an exact name into a job id (listing when it is not an id).

        Raises:
            CliError: No job matches, or several do.
        """
        if _JOB_ID.match(job):
            return job
        page = self.get_json("/v1/jobs", {"q": job, "limit": 100, "sort": "created", "order": "desc"})
        jobs = page.get("jobs", [])
        exact = [j for j in jobs if j.get("name") == job or j["job_id"] == job]
        matches = exact or [j for j in jobs if j["job_id"].startswith(job)]
        if not matches:
            raise CliError(f"no job has the id, id prefix or name {job!r}", EXIT_NOT_FOUND)
        if len(matches) > 1:
            listed = ", ".join(f"{j['job_id']} ({j.get('name') or 'unnamed'})" for j in matches[:10])
            raise CliError(f"{job!r} matches {len(matches)} jobs: {listed}; give the id", EXIT_REFUSED)
        job_id: str = matches[0]["job_id"]
        return job_id


# ---------------------------------------------------------------------------------------------- formatting


def fmt_num(value: float | None, digits: int = 4) -> str:
    """A number in ``digits`` significant digits, or ``-`` when missing."""
    if value is None or not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def fmt_pct(share: float | None) -> str:
    """A share as a percentage with one decimal."""
    return "-" if share is None else f"{100 * share:.1f}%"


def fmt_age(t: float, now: float | None = None) -> str:
    """Time since Unix time ``t``: ``12 s``, ``5 min``, ``3 h``, ``2 d``."""
    s = max(0.0, (time.time() if now is None else now) - t)
    if s < 60:
        return f"{int(s)} s"
    if s < 3600:
        return f"{int(s // 60)} min"
    if s < 86400:
        return f"{int(s // 3600)} h"
    return f"{int(s // 86400)} d"


def terminal_width() -> int | None:
    """Columns to fit tables in: ``COLUMNS``, else the terminal's width; None when output is not a terminal."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: frozenset[int] = frozenset(),
    shrink: Sequence[int] = (),
    width: int | None = None,
) -> str:
    """Render rows as columns aligned under their headers (columns in ``right`` right-aligned).

    Args:
        headers: Column headers.
        rows: Cells, one list per row.
        right: Columns to right-align.
        shrink: Columns that may be cut (with ``…``), in the order they give way, to fit ``width``.
        width: Characters a line may take (None: as wide as the cells need).
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    if width is not None:
        for i in shrink:
            excess = sum(widths) + 2 * (len(widths) - 1) - width
            if excess <= 0:
                break
            widths[i] = max(len(headers[i]), _MIN_CELL, widths[i] - excess)

    def cut(cell: str, w: int) -> str:
        return cell if len(cell) <= w else cell[: w - 1] + "…"

    def line(cells: Sequence[str]) -> str:
        out = [
            cut(c, w).rjust(w) if i in right else cut(c, w).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def jobs_table(jobs: list[dict[str, Any]], now: float | None = None) -> str:
    """The job list as a table."""
    headers = ["ID", "NAME", "STATUS", "PROGRESS", "PHASE", "STAGE", "LR", "EXPLORE", "LAST LOSS", "AGE"]
    rows = []
    for j in jobs:
        used, total = j["steps_used"], j["total_steps"]
        rows.append(
            [
                j["job_id"],
                j.get("name") or "-",
                j["status"],
                f"{used}/{total} {fmt_pct(used / total if total else 0.0):>6}",
                j["phase"],
                "-" if j.get("stage") is None else str(j["stage"]),
                fmt_num(j.get("lr"), 3),
                fmt_pct(j.get("explore_share")),
                fmt_num(j.get("last_loss")),
                fmt_age(j["created_at"], now),
            ]
        )
    # Names give way first, then ids (a prefix still opens the job in show, watch and export).
    return table(headers, rows, right=frozenset({3, 5, 6, 7, 8, 9}), shrink=(1, 0), width=terminal_width())


def fmt_band(band: Sequence[float] | None, floor: float | None = None) -> str:
    """A 90% band as ``lo .. hi`` (``lo`` kept at or above ``floor`` when given), or ``-``."""
    if not band:
        return "-"
    lo = band[0] if floor is None else max(band[0], floor)
    return f"{fmt_num(lo)} .. {fmt_num(band[1])}"


def plan_points(lr: Sequence[Sequence[float]], most: int = 5) -> list[tuple[int, float]]:
    """A few ``(step, lr)`` points of a plan's LR curve: its start, where its hold ends, points of its decay, its end.

    Args:
        lr: The plan's ``[step, lr]`` pairs, in step order.
        most: How many points to keep at most.

    Returns:
        At most ``most`` points, in step order.
    """
    if not lr:
        return []
    last = len(lr) - 1
    hold = 0
    while hold < last and lr[hold + 1][1] >= lr[0][1] * (1 - 1e-9):
        hold += 1
    picks = {0, hold, last}
    spare = max(most - len(picks), 0)
    for i in range(1, spare + 1):
        picks.add(hold + round((last - hold) * i / (spare + 1)))
    return [(int(lr[i][0]), float(lr[i][1])) for i in sorted(picks)]


def plan_pairs(sched: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary lines of a job's current plan (the ``plan`` preset's, which ``default`` stands for), or none.

    Returns:
        ``("plan", ...)``: the plan's steps and a few of its ``step: lr`` points; ``("predicted", ...)``: the loss
        model's final loss under it, with its standard deviation and 90% band.
    """
    plan = sched.get("plan")
    if plan is None:
        # The schedule says whether the job plans: ``default`` in its config may stand for another preset (a job
        # stored before the default changed runs as it began).
        planning = bool(sched.get("planner"))
        return [("plan", "none yet (the first comes once the loss model has enough losses)")] if planning else []
    points = ", ".join(f"{fmt_num(lr, 3)} @{step}" for step, lr in plan_points(plan.get("lr") or []))
    last = " (the last plan)" if sched.get("done") else ""
    pairs = [("plan", f"steps {plan['start']}-{plan['end']}{last}: lr {points or '-'}")]
    if plan.get("final_loss") is None:
        pairs.append(("predicted", "- (the loss model cannot tell the final loss yet)"))
    else:
        band = plan.get("band90")
        pairs.append(
            (
                "predicted",
                f"final loss {fmt_num(plan['final_loss'])} ± {fmt_num(plan.get('final_std'), 2)} at step "
                f"{plan['end']}" + (f" (90% band {fmt_band(band)})" if band else ""),
            )
        )
    return pairs


def candidate_outcome(cand: dict[str, Any]) -> str:
    """A candidate's last column in ``show``: ``winner``, ``diverged``, ``barred`` (it could not win) or empty."""
    if cand["winner"]:
        return "winner"
    if cand["diverged"]:
        return "diverged"
    return "barred" if cand.get("barred") else ""


def job_report(info: dict[str, Any], sched: dict[str, Any], segments: bool = False, now: float | None = None) -> str:
    """One job: its summary and current plan, its stages with their candidates, and optionally every segment."""
    used, total = info["steps_used"], info["total_steps"]
    cfg = {k: v for k, v in info["config"].items() if v is not None}
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["created_at"]))
    pairs = [
        ("job", f"{info['job_id']}  {info.get('name') or ''}".rstrip()),
        ("status", info["status"]),
        ("progress", f"{used} / {total} steps ({fmt_pct(used / total if total else 0.0)})"),
        ("phase", info["phase"] + ("" if info.get("stage") is None else f" (stage {info['stage']})")),
        ("lr", fmt_num(info.get("lr"))),
        ("winner lr", fmt_num(sched.get("winner_lr"))),
        ("last loss", fmt_num(info.get("last_loss"))),
        (
            "exploration",
            f"{fmt_pct(sched['explore_share'])} of the budget ({sched['explore_steps']} steps, "
            f"{sched['wasted_steps']} rolled back)",
        ),
        *plan_pairs(sched),
        ("created", f"{created} ({fmt_age(info['created_at'], now)} ago)"),
        ("config", " ".join(f"{k}={v}" for k, v in cfg.items())),
    ]
    width = max(len(k) for k, _ in pairs)
    out = []
    for k, v in pairs:  # long values (the config) wrap under themselves
        lines = textwrap.wrap(v, 110 - width, break_long_words=False, break_on_hyphens=False) or [""]
        out += [f"{k.ljust(width)}  {lines[0]}", *(f"{'':{width}}  {rest}" for rest in lines[1:])]
    sweep = sched.get("sweep")
    if sweep:
        out += ["", f"LR range sweep: {sweep['steps']} steps (rolled back), suggested LR {fmt_num(sweep['lr'], 3)}"]
    stages = sched.get("stages", [])
    if stages:
        out += ["", "stages"]
        rows = [
            [
                str(st["index"]),
                str(st["start_step"]),
                str(st["tau"]),
                str(st["cand_steps"]),
                st["objective"],
                "warm" if st["warm"] else "cold",
                str(len(st["candidates"])),
                fmt_num(st.get("winner_lr"), 3),
                st["status"],
            ]
            for st in stages
        ]
        heads = ["STAGE", "START", "TAU", "CAND STEPS", "OBJECTIVE", "WARM", "CANDIDATES", "WINNER LR", "STATUS"]
        out.append(table(heads, rows, right=frozenset({0, 1, 2, 3, 6, 7})))
        for st in stages:
            if not st["candidates"]:
                continue
            plan_kind = st.get("kind") == "plan"
            if plan_kind:  # judged by the final loss the model predicts for each under its own best plan
                floor = cfg.get("loss_floor")
                out += [
                    "",
                    f"stage {st['index']} candidates ({st['objective']} loss predicted at the end of the budget, "
                    f"step {total}, each under its own best plan)",
                ]
            else:
                floor = None
                out += ["", f"stage {st['index']} candidates ({st['objective']} loss forecast at step {st['tau']})"]
            rows = []
            for c in st["candidates"]:
                rows.append(
                    [
                        str(c["index"]),
                        fmt_num(c["lr"], 3),
                        str(c["steps"]),
                        fmt_num(c.get("last_loss")),
                        fmt_num(c.get("forecast")),
                        fmt_num(c.get("std"), 2),
                        fmt_band(c.get("band90"), floor),
                        fmt_num(c.get("probe_loss")),
                        candidate_outcome(c),
                    ]
                )
            value = "PREDICTED FINAL LOSS" if plan_kind else "FORECAST"
            heads = ["CAND", "LR", "STEPS", "LAST LOSS", value, "STD", "90% BAND", "AFTER COOLDOWN", ""]
            out.append(table(heads, rows, right=frozenset({0, 1, 2, 3, 4, 5, 7})))
            out += [f"  #{c['index']} barred: {c['barred']}" for c in st["candidates"] if c.get("barred")]
    if segments:
        out += ["", "segments"]
        rows = [
            [
                str(s["segment_id"]),
                str(s["start_step"]),
                str(s["steps"]),
                s["phase"],
                "-" if s.get("stage") is None else str(s["stage"]),
                "-" if s.get("candidate") is None else str(s["candidate"]),
                fmt_num(s["lr"], 3),
                fmt_num(s["lr_end"], 3),
                "rolled back" if s["rolled_back"] else "",
            ]
            for s in sched.get("segments", [])
        ]
        heads = ["SEGMENT", "START", "STEPS", "PHASE", "STAGE", "CAND", "LR", "LR END", ""]
        out.append(table(heads, rows, right=frozenset({0, 1, 2, 4, 5, 6, 7})))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- commands


def _fail(err: CliError) -> NoReturn:
    typer.echo(f"lrtune jobs: {err}", err=True)
    raise typer.Exit(err.exit_code)


@app.command("list")
def list_jobs(
    url: Url = DEFAULT_URL,
    key: Key = None,
    status: Annotated[Status | None, typer.Option(help="Only jobs with this status.")] = None,
    sort: Annotated[SortKey, typer.Option(help="Sort key.")] = SortKey.created,
    order: Annotated[Order, typer.Option(help="Sort direction.")] = Order.desc,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Name contains, or id prefix.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Jobs per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Jobs to skip.")] = 0,
    as_json: AsJson = False,
) -> None:
    """List jobs (newest first): status, progress, phase, LR, exploration share, last loss, age."""
    params: dict[str, Any] = {"sort": sort.value, "order": order.value, "limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status.value
    if query:
        params["q"] = query
    with _session(url, key) as client:
        page = client.get_json("/v1/jobs", params)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    jobs = page["jobs"]
    if not jobs:
        typer.echo("no jobs" if page["total"] == 0 else f"no jobs on this page ({page['total']} in all)")
        return
    typer.echo(jobs_table(jobs))
    first = page["offset"] + 1
    typer.echo(f"\n{first}-{page['offset'] + len(jobs)} of {page['total']} jobs, by {sort.value} {order.value}")


@app.command()
def show(
    job: JobRef,
    url: Url = DEFAULT_URL,
    key: Key = None,
    segments: Annotated[bool, typer.Option("--segments", help="Also list every realized segment.")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a job: progress, LR, exploration, and every stage's candidates with forecasts."""
    with _session(url, key) as client:
        job_id = client.resolve(job)
        info = client.get_json(client.job_path(job_id))
        sched = client.get_json(f"{client.job_path(job_id)}/schedule")
    if as_json:
        typer.echo(json.dumps({"job": info, "schedule": sched}, indent=2))
        return
    typer.echo(job_report(info, sched, segments=segments))


@app.command()
def export(
    job: JobRef,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="json: the realized schedule; csv: its segments; lambdalr: replay form."),
    ] = ExportFormat.json,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: standard output).", dir_okay=False)
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Export a job's schedule: JSON, CSV, or the form a LambdaLR replays without the service."""
    with _session(url, key) as client:
        job_id = client.resolve(job)
        body = client.get(f"{client.job_path(job_id)}/schedule", {"format": fmt.value})
    if output is None:
        sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
        sys.stdout.flush()
        return
    try:
        output.write_bytes(body)
    except OSError as exc:
        typer.echo(f"lrtune jobs: cannot write {output}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from exc
    typer.echo(f"wrote {output} ({len(body)} bytes, {fmt.value})", err=True)


@app.command()
def delete(
    job: JobRef,
    url: Url = DEFAULT_URL,
    key: Key = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Remove the job entirely instead of marking it deleted.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a job (its worker's next report is refused); with --purge, remove every trace of it."""
    with _session(url, key) as client:
        job_id = client.resolve(job)
        info = client.get_json(client.job_path(job_id))
        what = f"job {job_id} ({info.get('name') or 'unnamed'}, {info['status']}, {info['steps_used']} steps)"
        if not yes:
            if not sys.stdin.isatty():
                raise CliError(f"not deleting {what} without --yes (no terminal to ask on)", EXIT_USAGE)
            if not typer.confirm(f"{'Purge' if purge else 'Delete'} {what}?", default=False):
                raise CliError("nothing deleted", EXIT_REFUSED)
        client.delete(job_id, purge)
    typer.echo(f"{'purged' if purge else 'deleted'} {what}")


@app.command()
def watch(
    job: JobRef,
    url: Url = DEFAULT_URL,
    key: Key = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between updates.")] = 2.0,
    timeout: Annotated[float | None, typer.Option(min=0.0, help="Stop watching after this many seconds.")] = None,
) -> None:
    """Follow a job live until it is done: progress, phase, LR, exploration, last loss, the current plan.

    On a terminal the view updates in place; otherwise one line is printed whenever the job moves on.
    """
    started = time.monotonic()
    live = sys.stdout.isatty()
    last = ""
    with _session(url, key) as client, contextlib.suppress(KeyboardInterrupt):
        job_id = client.resolve(job)
        while True:
            info = client.get_json(client.job_path(job_id))
            if live:  # the full view needs the schedule; a line does not
                text = watch_view(info, client.get_json(f"{client.job_path(job_id)}/schedule"))
            else:
                text = watch_line(info)
            if text != last:
                if live:
                    typer.echo("\x1b[H\x1b[2J" + text)  # clear the screen, then draw
                else:
                    typer.echo(text)
                last = text
            if info["status"] in ("done", "deleted"):
                break
            if timeout is not None and time.monotonic() - started >= timeout:
                typer.echo(f"stopped watching after {timeout:g} s; the job is {info['status']}", err=True)
                break
            time.sleep(interval)


def watch_line(info: dict[str, Any]) -> str:
    """One line of a job's progress (``lrtune jobs watch`` without a terminal)."""
    used, total = info["steps_used"], info["total_steps"]
    stage = "" if info.get("stage") is None else f" stage {info['stage']}"
    return (
        f"{info['job_id']} {info['status']} {used}/{total} ({fmt_pct(used / total if total else 0.0)}) "
        f"{info['phase']}{stage} lr {fmt_num(info.get('lr'), 3)} explore {fmt_pct(info.get('explore_share'))} "
        f"last loss {fmt_num(info.get('last_loss'))}"
    )


def watch_view(info: dict[str, Any], sched: dict[str, Any], width: int | None = None) -> str:
    """A job's live view: a progress bar, then the summary lines of ``lrtune jobs show``."""
    width = width or terminal_width() or 100
    used, total = info["steps_used"], info["total_steps"]
    share = used / total if total else 0.0
    bar = max(10, min(width, 100) - 20)
    filled = round(share * bar)
    head = f"[{'#' * filled}{'.' * (bar - filled)}] {fmt_pct(share):>6}  {info['status']}"
    report = job_report(info, sched).split("\n\n")[0]  # the summary block, without the stage tables
    return "\n".join([head, report])


@contextlib.contextmanager
def _session(url: str, key: str | None) -> Iterator[JobsClient]:
    """A client for one command: a :class:`CliError` ends the command with its one line and exit code."""
    try:
        client = JobsClient(url, key)
    except CliError as err:
        _fail(err)
    try:
        yield client
    except CliError as err:
        _fail(err)
    finally:
        client.close()
