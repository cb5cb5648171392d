"""``lrtune jobs list|show|export`` against real ``lrtune serve`` processes on loopback."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lrtune.server.cli_jobs import fmt_age, fmt_band, fmt_num, jobs_table, plan_pairs, plan_points, table
from lrtune.server.launch import (
    ADMIN_KEY_ENV,
    REDIS_URL_ENV,
    free_port,
    local_program,
    start_local,
    stop_local,
    wait_ready,
)
from tests.server.helpers import SMALL_CONFIG, run_segment

ADMIN_KEY = "cli-test-admin-key"


def serve(tmp: Path, admin_key: str) -> Iterator[str]:
    port = free_port()
    proc = start_local(port, {ADMIN_KEY_ENV: admin_key, REDIS_URL_ENV: ""}, tmp / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        stop_local(proc)


@pytest.fixture(scope="module")
def open_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service without an admin key (open to this machine)."""
    yield from serve(tmp_path_factory.mktemp("open"), "")


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service with an admin key."""
    yield from serve(tmp_path_factory.mktemp("keyed"), ADMIN_KEY)


def create(url: str, name: str, run: bool, **config: Any) -> tuple[str, str]:
    """Create a job (and run it to the end with simulated losses when ``run``); return its id and token."""
    with httpx.Client(base_url=url, timeout=60.0) as http:
        resp = http.post("/v1/jobs", json={"name": name, "config": {**SMALL_CONFIG, **config}})
        assert resp.status_code == 201, resp.text
        job, token = resp.json()["job_id"], resp.json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        seg = http.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w"}).json()
        while run and not seg["done"]:
            body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
            seg = http.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body).json()
    return job, token


def lrtune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``lrtune`` script; LRTUNE_URL and LRTUNE_KEY come only from ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in ("LRTUNE_URL", "LRTUNE_KEY")}
    out = subprocess.run(
        [local_program(), *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def jobs(open_url: str) -> dict[str, str]:
    finished, _ = create(open_url, "finished-run", run=True, preset="greedy")  # a sweep and searches to show
    fresh, _ = create(open_url, "fresh-run", run=False, seed=3)
    return {"finished": finished, "fresh": fresh}


def test_list_prints_an_aligned_table_newest_first(open_url: str, jobs: dict[str, str]) -> None:
    out = lrtune("jobs", "list", "--url", open_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header, rows = lines[0], lines[1:3]
    columns = ["ID", "NAME", "STATUS", "PROGRESS", "PHASE", "STAGE", "LR", "EXPLORE", "LAST", "LOSS", "AGE"]
    assert header.split() == columns
    assert [r.split()[0] for r in rows] == [jobs["fresh"], jobs["finished"]]
    assert rows[1].split()[1:3] == ["finished-run", "done"]
    assert f"{SMALL_CONFIG['total_steps']}/{SMALL_CONFIG['total_steps']}" in rows[1]
    for column in ("STATUS", "PHASE"):  # left-aligned columns start where their header does
        at = header.index(column)
        assert all(r[at - 2 : at] == "  " and r[at] != " " for r in rows), column
    assert lines[-1] == "1-2 of 2 jobs, by created desc"


def test_list_takes_the_url_from_the_environment_and_sorts(open_url: str, jobs: dict[str, str]) -> None:
    out = lrtune("jobs", "list", "--sort", "name", "--order", "asc", env={"LRTUNE_URL": open_url})
    assert out.returncode == 0, out.stderr
    assert [line.split()[1] for line in out.stdout.splitlines()[1:3]] == ["finished-run", "fresh-run"]
    out = lrtune("jobs", "list", "--status", "done", "--json", env={"LRTUNE_URL": open_url})
    page = json.loads(out.stdout)
    assert [j["job_id"] for j in page["jobs"]] == [jobs["finished"]] and page["total"] == 1


def test_show_by_name_and_by_id_prefix(open_url: str, jobs: dict[str, str]) -> None:
    out = lrtune("jobs", "show", "finished-run", "--url", open_url)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"job          {jobs['finished']}  finished-run")
    assert "status       done" in text and "exploration  " in text
    assert "STAGE  START  TAU" in text and "stage 0 candidates" in text and "winner" in text
    assert "LR range sweep: " in text and "AFTER COOLDOWN" in text
    by_prefix = lrtune("jobs", "show", jobs["finished"][:7], "--segments", "--url", open_url)
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert by_prefix.stdout.startswith(text.split("\n", 1)[0]) and "SEGMENT  START  STEPS  PHASE" in by_prefix.stdout
    as_json = json.loads(lrtune("jobs", "show", jobs["fresh"], "--json", "--url", open_url).stdout)
    assert as_json["job"]["job_id"] == jobs["fresh"] and as_json["schedule"]["steps_used"] == 0


def test_show_prints_the_plan_and_predicted_final_losses(open_url: str, jobs: dict[str, str]) -> None:
    planned_job, _ = create(open_url, "plan-run", run=True)  # the default preset plans
    plan = httpx.get(f"{open_url}/dashboard/api/jobs/{planned_job}/schedule").json()["plan"]
    assert plan is not None and plan["final_loss"] is not None
    out = lrtune("jobs", "show", planned_job, "--url", open_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("plan "))
    wrapped = itertools.takewhile(lambda line: line.startswith(" " * 13), lines[at + 1 :])  # a long value wraps
    planned = " ".join([lines[at], *(line.strip() for line in wrapped)])
    assert planned.startswith(f"plan         steps {plan['start']}-{plan['end']} (the last plan): lr ")
    assert f"@{plan['lr'][0][0]}," in planned and planned.endswith(f"@{plan['lr'][-1][0]}")
    assert 2 <= planned.count("@") <= 5  # a few points of the curve, not all of them
    predicted = next(line for line in lines if line.startswith("predicted "))
    assert predicted == (
        f"predicted    final loss {fmt_num(plan['final_loss'])} ± {fmt_num(plan['final_std'], 2)} at step "
        f"{plan['end']} (90% band {fmt_band(plan['band90'])})"
    )
    # Its candidates were judged by the final loss the model predicts for each.
    assert "PREDICTED FINAL LOSS" in out.stdout and "FORECAST" not in out.stdout
    assert "stage 0 candidates (train loss predicted at the end of the budget, step 240" in out.stdout

    fresh_plan, _ = create(open_url, "fresh-plan", run=False)
    fresh = lrtune("jobs", "show", fresh_plan, "--url", open_url).stdout
    assert "\nplan         none yet" in fresh and "\npredicted " not in fresh

    assert httpx.get(f"{open_url}/dashboard/api/jobs/{fresh_plan}/schedule").json()["planner"] is True
    # Whether a job plans is the schedule's word, not its config's: a job stored under ``default`` before the
    # default changed runs greedy, and shows no plan.
    assert plan_pairs({"planner": False, "plan": None}) == []

    out = lrtune("jobs", "show", jobs["finished"], "--url", open_url)  # a greedy job: no plan
    assert out.returncode == 0, out.stderr
    assert httpx.get(f"{open_url}/dashboard/api/jobs/{jobs['finished']}/schedule").json()["planner"] is False
    assert not any(line.startswith(("plan ", "predicted ")) for line in out.stdout.splitlines())
    assert "FORECAST" in out.stdout and "PREDICTED FINAL LOSS" not in out.stdout
    assert "loss forecast at step" in out.stdout


@pytest.mark.parametrize("fmt", ["json", "csv", "lambdalr"])
def test_export_writes_what_the_schedule_route_answers(
    open_url: str, jobs: dict[str, str], fmt: str, tmp_path: Path
) -> None:
    job = jobs["finished"]
    target = tmp_path / f"export.{fmt}"
    out = lrtune("jobs", "export", job, "--format", fmt, "-o", str(target), "--url", open_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and f"wrote {target}" in out.stderr
    via_dashboard = httpx.get(f"{open_url}/dashboard/api/jobs/{job}/schedule", params={"format": fmt}).content
    assert target.read_bytes() == via_dashboard
    if fmt == "lambdalr":
        stdout = lrtune("jobs", "export", job, "--format", fmt, "--url", open_url).stdout
        assert json.loads(stdout)["format"] == "lrtune.schedule/v1"


def test_errors_are_one_line_with_distinct_exit_codes(open_url: str, jobs: dict[str, str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    out = lrtune("jobs", "list", "--url", nowhere)
    assert out.returncode == 3 and "cannot reach the lrtune service" in out.stderr and "LRTUNE_URL" in out.stderr
    out = lrtune("jobs", "show", "0123456789abcdef", "--url", open_url)
    assert (out.returncode, out.stderr.count("\n")) == (5, 1) and "no job with id" in out.stderr
    out = lrtune("jobs", "export", "no-such-run", "--url", open_url)
    assert out.returncode == 5 and "'no-such-run'" in out.stderr
    run_a, _ = create(open_url, "twin", run=False)
    create(open_url, "twin", run=False)
    out = lrtune("jobs", "show", "twin", "--url", open_url)
    assert out.returncode == 1 and "matches 2 jobs" in out.stderr and run_a in out.stderr
    out = lrtune("jobs", "list", "--url", "127.0.0.1:8000")
    assert out.returncode == 2 and "must start with http://" in out.stderr
    out = lrtune("jobs", "export", jobs["finished"], "--format", "xml", "--url", open_url)
    assert out.returncode == 2
    out = lrtune("jobs", "list", "--url", f"{open_url}/v1")
    assert out.returncode == 1 and "is it an lrtune service?" in out.stderr


def test_keys_admin_and_job_token(keyed_url: str) -> None:
    job, token = create(keyed_url, "keyed-run", run=True)
    other, _ = create(keyed_url, "other-run", run=False)
    out = lrtune("jobs", "list", "--url", keyed_url)
    assert out.returncode == 4 and "pass --key or set LRTUNE_KEY" in out.stderr
    out = lrtune("jobs", "list", "--url", keyed_url, "--key", "wrong")
    assert out.returncode == 4 and "403" in out.stderr
    out = lrtune("jobs", "list", env={"LRTUNE_URL": keyed_url, "LRTUNE_KEY": ADMIN_KEY})
    assert out.returncode == 0 and "keyed-run" in out.stdout and "other-run" in out.stdout
    out = lrtune("jobs", "show", job, "--url", keyed_url)
    assert out.returncode == 4
    # A job's own token opens that job (through the token-scoped routes), and no other.
    out = lrtune("jobs", "show", job, "--url", keyed_url, env={"LRTUNE_KEY": token})
    assert out.returncode == 0 and "keyed-run" in out.stdout
    out = lrtune("jobs", "export", job, "-f", "csv", "--url", keyed_url, env={"LRTUNE_KEY": token})
    assert out.returncode == 0 and out.stdout.startswith("segment_id,start_step,steps,phase")
    out = lrtune("jobs", "show", other, "--url", keyed_url, env={"LRTUNE_KEY": token})
    assert out.returncode == 4 and "does not open this job" in out.stderr


def test_formatting_helpers() -> None:
    assert [fmt_num(v) for v in (None, float("nan"), 0.0, 0.012345, 2.5, 1e-5, 123456.0)] == [
        "-",
        "-",
        "0",
        "0.01235",
        "2.5",
        "1.000e-05",
        "1.235e+05",
    ]
    assert [fmt_age(1000.0 - s, now=1000.0) for s in (5, 120, 7200, 172800)] == ["5 s", "2 min", "2 h", "2 d"]
    assert table(["A", "NUM"], [["xx", "1"], ["y", "100"]], right=frozenset({1})) == "A   NUM\nxx    1\ny   100"
    assert [fmt_band(None), fmt_band([-0.5, 1.0]), fmt_band([-0.5, 1.0], floor=0.0)] == ["-", "-0.5 .. 1", "0 .. 1"]
    # A plan's curve in a few points: its start, the end of its hold, its decay, its end.
    curve = [[0, 1.0], [10, 1.0], [20, 1.0], [30, 0.5], [40, 0.1]]
    assert plan_points(curve, most=4) == [(0, 1.0), (20, 1.0), (30, 0.5), (40, 0.1)]
    assert plan_points([]) == [] and plan_points([[5, 0.1]]) == [(5, 0.1)]
    assert len(plan_points([[i, 1.0 / (1 + i)] for i in range(32)])) == 5
    info = {
        "job_id": "0123456789abcdef",
        "name": None,
        "status": "running",
        "steps_used": 5,
        "total_steps": 10,
        "phase": "explore",
        "stage": 0,
        "lr": 0.01,
        "explore_share": 0.5,
        "last_loss": None,
        "created_at": 0.0,
    }
    row = jobs_table([info], now=30.0).splitlines()[1]
    cells = ["0123456789abcdef", "-", "running", "5/10", "50.0%", "explore", "0", "0.01", "50.0%", "-", "30", "s"]
    assert row.split() == cells


def test_list_fits_the_terminal_width(open_url: str, jobs: dict[str, str]) -> None:
    create(open_url, "a-run-with-a-very-long-name-that-would-not-fit-in-a-narrow-terminal", run=False)
    wide = lrtune("jobs", "list", "--url", open_url, env={"COLUMNS": "400"}).stdout.splitlines()
    narrow = lrtune("jobs", "list", "--url", open_url, env={"COLUMNS": "100"}).stdout.splitlines()
    assert max(len(line) for line in wide) > 100
    rows = narrow[: narrow.index("")]  # the table, then a blank line and the page line
    assert rows[0].startswith("ID") and all(len(line) <= 100 for line in rows), narrow
    row = next(line for line in rows if "a-run-" in line)
    assert "…" in row  # the long name gave way
    # A cut id is still a prefix that opens the job.
    assert lrtune("jobs", "show", row.split()[0].rstrip("…"), "--url", open_url).returncode == 0


def test_delete_asks_first_then_ends_the_job_and_purge_removes_it(open_url: str) -> None:
    job, token = create(open_url, "to-delete", run=False)
    auth = {"LRTUNE_KEY": token}
    out = lrtune("jobs", "delete", job, "--url", open_url, env=auth)
    assert out.returncode == 2 and "without --yes" in out.stderr  # no terminal to ask on
    out = lrtune("jobs", "delete", job, "--yes", "--url", open_url)
    assert out.returncode == 4 and "pass --key" in out.stderr  # deleting takes the job's token or the admin key
    out = lrtune("jobs", "delete", job, "--yes", "--url", open_url, env=auth)
    assert out.returncode == 0 and f"deleted job {job} (to-delete, running" in out.stdout
    assert json.loads(lrtune("jobs", "show", job, "--json", "--url", open_url).stdout)["job"]["status"] == "deleted"
    out = lrtune("jobs", "delete", job, "--purge", "-y", "--url", open_url, env=auth)
    assert out.returncode == 0 and out.stdout.startswith("purged")
    assert lrtune("jobs", "show", job, "--url", open_url).returncode == 5


def test_watch_follows_a_job_to_its_end(open_url: str, jobs: dict[str, str]) -> None:
    out = lrtune("jobs", "watch", jobs["finished"], "--url", open_url)
    assert out.returncode == 0 and out.stdout.count("\n") == 1 and " done " in out.stdout
    out = lrtune("jobs", "watch", "fresh-run", "--url", open_url, "--interval", "0.1", "--timeout", "0.5")
    assert out.returncode == 0 and " running 0/" in out.stdout and "stopped watching after 0.5 s" in out.stderr
    job, token = create(open_url, "watched-run", run=False)
    watcher = subprocess.Popen(
        [local_program(), "jobs", "watch", job, "--url", open_url, "--interval", "0.05", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # it is watching: now train the job
    with httpx.Client(base_url=open_url, timeout=60.0, headers={"Authorization": f"Bearer {token}"}) as http:
        seg = http.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w"}).json()
        while not seg["done"]:
            body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
            seg = http.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body).json()
            time.sleep(0.1)  # a segment's training
    stdout, stderr = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, stderr
    lines = [first, *stdout.splitlines()]
    assert len(lines) >= 2 and " done " in lines[-1] and "stopped watching" not in stderr
    used = [int(line.split()[2].split("/")[0]) for line in lines]
    assert used == sorted(used)  # progress only moves on


def test_show_says_why_a_candidate_could_not_win() -> None:
    # A plan search's candidate above the trust region whose cooldown probe did not beat the incumbent's keeps its
    # predicted final loss (it may be the lowest) but could not win: the table marks it and a line says why.
    from lrtune.server.cli_jobs import job_report
    from tests.tuner.test_digits import Digits, run_seeded

    tuner, state, _ = run_seeded(Digits(), 5)
    barred = [c for s in state["stages"] for c in s["candidates"] if "barred" in c]  # type: ignore[index]
    assert barred, "the seed no longer has a barred candidate"
    info = {
        **{"job_id": "j1", "name": "digits", "status": "done", "phase": "done", "stage": None, "lr": None},
        **{"last_loss": None, "steps_used": tuner.steps_used, "total_steps": tuner.settings.total_steps},
        **{"config": state["config"], "created_at": time.time()},
    }
    text = job_report(info, tuner.schedule())
    for cand in barred:
        row = next(line for line in text.splitlines() if line.split()[:2] == [str(cand["index"]), f"{cand['lr']:.3g}"])
        assert row.rstrip().endswith("barred")
        assert f"  #{cand['index']} barred: {cand['barred']}" in text.splitlines()
