"""Schedule views: JSON, LambdaLR export, CSV, posterior."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from tests.server.helpers import SMALL_CONFIG
from tests.server.test_jobs_api import create, poll, run_to_end


@pytest.fixture
def finished(client: TestClient) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    job, auth = create(client)
    return job, auth, run_to_end(client, job, auth)


def test_schedule_shows_stages_candidates_and_search_share(
    client: TestClient, finished: tuple[str, dict[str, str], list[dict[str, Any]]]
) -> None:
    job, auth, _ = finished
    body = client.get(f"/v1/jobs/{job}/schedule", headers=auth).json()
    assert body["job_id"] == job and body["done"] is True
    assert 0 < body["explore_share"] <= 1
    cand = body["stages"][0]["candidates"][0]
    assert {"lr", "forecast", "std", "band90", "observed"} <= set(cand)
    assert sum(c["winner"] for c in body["stages"][0]["candidates"]) == 1


def test_lambdalr_export_replays_the_realized_lrs(
    client: TestClient, finished: tuple[str, dict[str, str], list[dict[str, Any]]]
) -> None:
    from lrtune.tuner import export_lr

    job, auth, segments = finished
    export = client.get(f"/v1/jobs/{job}/schedule?format=lambdalr", headers=auth).json()
    schedule = client.get(f"/v1/jobs/{job}/schedule", headers=auth).json()
    kept = [s for s in schedule["segments"] if not s["rolled_back"]]
    assert export["steps"] == sum(s["steps"] for s in kept)
    base = export["base_lr"]
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: export_lr(export, step) / base)
    by_id = {s["segment_id"]: s for s in segments}
    lrs = []
    for _ in range(export["steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = []
    for rec in kept:
        seg = by_id[rec["segment_id"]]
        expected += [_lr_at(seg, j) for j in range(rec["steps"])]
    assert lrs == pytest.approx(expected, rel=1e-9)


def _lr_at(seg: dict[str, Any], j: int) -> float:
    from lrtune.client.protocol import WireSegment

    return WireSegment.from_dict(seg).lr_at(j)


def test_csv_lists_every_realized_segment(
    client: TestClient, finished: tuple[str, dict[str, str], list[dict[str, Any]]]
) -> None:
    job, auth, segments = finished
    resp = client.get(f"/v1/jobs/{job}/schedule?format=csv", headers=auth)
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == len(segments)
    assert set(rows[0]) >= {"start_step", "steps", "phase", "stage", "candidate", "lr", "lr_end", "rolled_back"}
    assert sum(int(r["steps"]) for r in rows) == SMALL_CONFIG["total_steps"]
    assert client.get(f"/v1/jobs/{job}/schedule?format=xml", headers=auth).status_code == 422


def test_posterior_before_and_after_observations(client: TestClient) -> None:
    job, auth = create(client)
    empty = client.get(f"/v1/jobs/{job}/posterior", headers=auth).json()
    assert empty["mean"] is None
    run_to_end(client, job, auth)
    post = client.get(f"/v1/jobs/{job}/posterior?stage=0&points=16", headers=auth).json()
    assert post["stage"] == 0 and len(post["lr"]) == len(post["mean"]) == len(post["std"]) == 16
    assert post["lr"][0] == pytest.approx(SMALL_CONFIG["min_lr"])
    assert client.get(f"/v1/jobs/{job}/posterior?stage=999", headers=auth).json()["mean"] is None


def test_schedule_while_running_shows_the_open_segment(client: TestClient) -> None:
    job, auth = create(client)
    seg = poll(client, job, auth).json()
    body = client.get(f"/v1/jobs/{job}/schedule", headers=auth).json()
    assert body["open"]["segment_id"] == seg["segment_id"] and body["segments"] == []
