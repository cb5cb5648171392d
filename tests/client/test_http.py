"""The typed HTTP client: routes, auth headers, and how each failure maps to a typed error."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from lrtune.client import (
    AuthError,
    ConfigRejectedError,
    JobGoneError,
    LrtuneHTTPError,
    ReportRejectedError,
    SegmentLeasedError,
    ServiceClient,
    ServiceUnavailableError,
    StaleLeaseError,
)
from lrtune.client.protocol import JobConfig, WireReport

SEGMENT = {
    "job_id": "0123456789abcdef",
    "segment_id": 3,
    "lease_epoch": 2,
    "phase": "train",
    "start_step": 30,
    "steps": 10,
    "lr": 0.1,
    "lr_end": 0.1,
    "curve_from": 0.1,
    "curve_to": 0.1,
}


def _api(handler: Any, **kw: Any) -> ServiceClient:
    return ServiceClient("http://lrtune.test/", http_client=httpx.Client(transport=httpx.MockTransport(handler)), **kw)


def test_requests_carry_routes_bodies_and_tokens() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/jobs":
            info = {
                "job_id": "0123456789abcdef",
                "status": "running",
                "created_at": 0.0,
                "updated_at": 0.0,
                "config": json.loads(request.content)["config"],
                "steps_used": 0,
                "total_steps": 100,
                "phase": "explore",
            }
            return httpx.Response(201, json={"job_id": "0123456789abcdef", "token": "tok", "job": info})
        return httpx.Response(200, json=SEGMENT)

    api = _api(handler, api_key="admin")
    created = api.create_job(JobConfig(min_lr=1e-3, max_lr=1.0, total_steps=100), name="run")
    seg = api.lease(created.job_id, created.token, "w1")
    nxt = api.report(
        created.job_id, created.token, seg.segment_id, WireReport(worker_id="w1", lease_epoch=2, losses=[1.0, None])
    )
    assert nxt.segment_id == 3 and seg.lr_at(0) == 0.1
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/jobs"),
        ("POST", "/v1/jobs/0123456789abcdef/lease"),
        ("POST", "/v1/jobs/0123456789abcdef/segments/3/report"),
    ]
    assert seen[0].headers["authorization"] == "Bearer admin"
    assert json.loads(seen[0].content)["name"] == "run"
    assert seen[1].headers["authorization"] == "Bearer tok"
    assert json.loads(seen[1].content) == {"worker_id": "w1"}
    assert json.loads(seen[2].content) == {
        "worker_id": "w1",
        "lease_epoch": 2,
        "losses": [1.0, None],
        "val_losses": None,
    }


def _error(status: int, code: str | None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"code": code, "message": "nope"} if code else {"detail": "plain"}
        return httpx.Response(status, json=body)

    return handler


@pytest.mark.parametrize(
    ("status", "code", "call", "error"),
    [
        (409, "stale_lease", "report", StaleLeaseError),
        (409, "segment_leased", "lease", SegmentLeasedError),
        (404, "job_not_found", "lease", JobGoneError),
        (410, "job_deleted", "report", JobGoneError),
        (401, "unauthorized", "lease", AuthError),
        (403, "forbidden", "report", AuthError),
        (422, "invalid_config", "create", ConfigRejectedError),
        (422, "invalid_report", "report", ReportRejectedError),
        (409, "unknown_segment", "report", ReportRejectedError),
        (409, "conflicting_report", "report", ReportRejectedError),
        (503, "store_unavailable", "report", ServiceUnavailableError),
        (500, "internal", "lease", ServiceUnavailableError),
        (502, None, "lease", ServiceUnavailableError),
        (429, None, "report", ServiceUnavailableError),
        (404, None, "create", LrtuneHTTPError),
    ],
)
def test_errors_map_to_typed_exceptions(status: int, code: str | None, call: str, error: type[Exception]) -> None:
    api = _api(_error(status, code))
    calls = {
        "create": lambda: api.create_job(JobConfig(min_lr=1e-3, max_lr=1.0, total_steps=100)),
        "lease": lambda: api.lease("0123456789abcdef", "t", "w"),
        "report": lambda: api.report(
            "0123456789abcdef", "t", 1, WireReport(worker_id="w", lease_epoch=1, losses=[1.0])
        ),
    }
    with pytest.raises(error) as info:
        calls[call]()
    assert type(info.value) is error
    assert info.value.status == status and info.value.code == code


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset")]
)
def test_transport_failures_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(ServiceUnavailableError):
        _api(handler).lease("0123456789abcdef", "t", "w")


def test_unreadable_answers_are_transient() -> None:
    with pytest.raises(ServiceUnavailableError, match="not JSON"):
        _api(lambda r: httpx.Response(200, text="<html>proxy</html>")).lease("0123456789abcdef", "t", "w")
    with pytest.raises(ServiceUnavailableError, match="WireSegment"):
        _api(lambda r: httpx.Response(200, json={"segment_id": "x"})).lease("0123456789abcdef", "t", "w")


def test_errors_inherit_the_matching_builtins() -> None:
    assert issubclass(ConfigRejectedError, ValueError)
    assert issubclass(JobGoneError, LookupError)
    assert issubclass(ServiceUnavailableError, ConnectionError)
    assert issubclass(AuthError, PermissionError)


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="http"):
        ServiceClient("127.0.0.1:8000")
    with pytest.raises(ValueError, match="server_url"):
        ServiceClient(None)
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        ServiceClient("http://x", http_client="nope")  # type: ignore[arg-type]


def test_csv_schedule_comes_back_as_text() -> None:
    csv = "segment_id,start_step,steps\n0,0,10\n"

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["format"] == "csv"
        return httpx.Response(200, text=csv, headers={"content-type": "text/csv"})

    assert _api(handler).schedule("job", "tok", fmt="csv") == csv
