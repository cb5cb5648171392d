"""The callback against the real service (in process, through its ASGI app)."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from lrtune.client import AuthError, AutoLRSCallback, JobGoneError
from lrtune.client.protocol import JobInfo
from lrtune.tuner.errors import InvalidConfigError
from tests.client.helpers import SMALL, Link, make_batches, make_model, prescribed_lrs, steps_by_segment, train


def _cb(**kw: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer, AutoLRSCallback]:
    model = make_model(dropout=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = kw.pop("config", SMALL)
    cb = AutoLRSCallback(model, opt, kw.pop("server_url", None), 1e-3, 1.0, 200, config=config, seed=3, **kw)
    return model, opt, cb


def _info(app_client: TestClient, cb: AutoLRSCallback) -> JobInfo:
    src: Any = cb.source
    resp = app_client.get(f"/v1/jobs/{src.job_id}", headers={"Authorization": f"Bearer {src.token}"})
    return JobInfo.model_validate(resp.json())


def _schedule(app_client: TestClient, job_id: str, token: str) -> dict[str, Any]:
    resp = app_client.get(f"/v1/jobs/{job_id}/schedule", headers={"Authorization": f"Bearer {token}"})
    out: dict[str, Any] = resp.json()
    return out


def test_over_http_the_run_equals_the_in_process_run(link: Link, app_client: TestClient) -> None:
    torch.manual_seed(0)
    model, opt, local = _cb()
    ref = train(local, model, opt, make_batches())

    torch.manual_seed(0)
    model, opt, remote = _cb(http_client=link.client())
    got = train(remote, model, opt, make_batches())
    remote.on_train_end()

    fields = ("segment_id", "phase", "steps", "lr", "lr_end", "restore", "snapshot", "keep", "drop", "eval_every")
    assert [{f: s.to_dict()[f] for f in fields} for s in remote.history] == [
        {f: s.to_dict()[f] for f in fields} for s in local.history
    ]
    assert got.lrs == ref.lrs and got.losses == ref.losses
    info = _info(app_client, remote)
    assert info.status == "done" and info.steps_used == 200
    # One round trip per segment: a create, one lease, then one report per segment run.
    reports = [r for r in link.requests if r.endswith("/report")]
    assert link.requests[:2] == ["POST /v1/jobs", f"POST /v1/jobs/{remote.job_id}/lease"]
    assert len(reports) == len(remote.history) and len(link.requests) == 2 + len(reports)


def test_attach_to_an_existing_job(app_client: TestClient) -> None:
    body = {"config": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 120, "strategy": "cosine"}}
    created = app_client.post("/v1/jobs", json=body).json()
    model, opt, cb = _cb(http_client=app_client, job_id=created["job_id"], token=created["token"])
    run = train(cb, model, opt, make_batches())
    sched = _schedule(app_client, created["job_id"], created["token"])
    assert cb.done and sched["done"] and len(run.lrs) == 120  # the job's budget, not the callback's
    assert run.lrs == prescribed_lrs(cb.history, steps_by_segment(sched))


def test_mistakes_fail_clearly_at_construction(app_client: TestClient) -> None:
    with pytest.raises(InvalidConfigError, match="tau_max"):  # the tuner's own check, before anything is sent
        _cb(http_client=app_client, config={**SMALL, "tau": 50, "tau_max": 20})
    with pytest.raises(JobGoneError):
        _cb(http_client=app_client, job_id="0123456789abcdef", token="nope")
    created = app_client.post("/v1/jobs", json={"config": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 100}})
    with pytest.raises(AuthError):
        _cb(http_client=app_client, job_id=created.json()["job_id"], token="wrong")


def test_resume_continues_the_same_job_and_drops_the_fresh_one(link: Link, app_client: TestClient) -> None:
    model, opt, cb = _cb(http_client=link.client(), worker_id="w-1")
    train(cb, model, opt, make_batches(), max_steps=35)
    job_id, token = cb.source.job_id, cb.source.token  # type: ignore[union-attr]
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "cb": cb.state_dict()}, buf)
    del model, opt, cb

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model, opt, cb = _cb(http_client=link.client())
    fresh_id, fresh_token = cb.job_id, cb.source.token  # type: ignore[union-attr]
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    cb.load_state_dict(ckpt["cb"])
    assert cb.job_id == job_id and cb.source.worker_id == "w-1"  # type: ignore[union-attr]
    train(cb, model, opt, make_batches())
    sched = _schedule(app_client, job_id, token)
    assert cb.done and sched["done"] and sched["steps_used"] == 200
    fresh = app_client.get(f"/v1/jobs/{fresh_id}", headers={"Authorization": f"Bearer {fresh_token}"})
    assert fresh.json()["status"] == "deleted"


def test_resuming_from_an_old_checkpoint_warns_once_and_takes_the_open_segment(
    link: Link, app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    model, opt, cb = _cb(http_client=link.client(), checkpoint_snapshots=False)
    train(cb, model, opt, make_batches(), max_steps=35)
    old = cb.state_dict()
    train(cb, model, opt, make_batches(), max_steps=60)  # the job moves on, then the process dies
    job_id, token = cb.source.job_id, cb.source.token  # type: ignore[union-attr]

    model, opt, cb = _cb(http_client=link.client())
    cb.load_state_dict(old)  # the last checkpoint is older than the job's progress
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        train(cb, model, opt, make_batches())
    assert cb.done and _schedule(app_client, job_id, token)["done"]
    assert len([r for r in caplog.records if "refused the report" in r.getMessage()]) == 1
