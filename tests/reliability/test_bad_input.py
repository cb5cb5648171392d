"""Bad input, generated: schemathesis over the OpenAPI spec, hypothesis over the tuner's and the API's inputs.

Whatever is sent, the answer is a 2xx or a 4xx JSON error with a ``code`` and a ``message`` (never a 5xx), the
tuner raises only its own typed errors, and a refused report or config leaves the stored state untouched.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from lrtune.server.app import create_app
from lrtune.server.settings import Settings
from lrtune.server.store import MemoryStore
from lrtune.server.store.records import encode_head, encode_tuner
from lrtune.tuner import InvalidConfigError, Tuner, TunerConfig, TunerError
from tests.asgi import local_client
from tests.reliability.harness import Service, record_result
from tests.server.helpers import SMALL_CONFIG, run_segment

#: Examples per generated test: a few hundred requests in all, a few seconds each.
API_EXAMPLES = 300
TUNER_EXAMPLES = 40
CONFIG_EXAMPLES = 300


def fast(examples: int) -> settings:
    """Bounded, deterministic (seeds fixed by derandomizing), no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


#: A job whose GP work is light: a few stages of two candidates.
LIGHT = {**SMALL_CONFIG, "total_steps": 160, "k": 2, "k_warm": 2}


def assert_error_body(resp: Any) -> None:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text}"
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body, dict), resp.text
        assert isinstance(body.get("code"), str) and body["code"], resp.text
        assert isinstance(body.get("message"), str) and body["message"], resp.text


@pytest.fixture(scope="module")
def app_and_client() -> Iterator[tuple[Any, TestClient, MemoryStore]]:
    store = MemoryStore()
    # schemathesis calls the app as http://testserver: a host this service is configured to answer.
    settings = Settings(
        redis_url=None, lease_ttl_s=60.0, allowed_hosts=["127.0.0.1", "testserver"], max_jobs_per_client=0
    )
    app = create_app(settings, store=store)
    with local_client(app) as client:
        yield app, client, store


def test_schemathesis_finds_no_5xx_and_every_error_is_json(app_and_client: Any) -> None:
    app, client, _ = app_and_client
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    seen: Counter[int] = Counter()

    @fast(API_EXAMPLES)
    @given(case=cases, own_job=st.booleans())
    def check(case: Any, own_job: bool) -> None:
        params = case.path_parameters or {}
        if own_job and "job_id" in params:  # half the job-scoped cases reach a real job with its token
            created = client.post("/v1/jobs", json={"config": LIGHT}).json()
            params["job_id"] = created["job_id"]
            if "segment_id" in params:
                params["segment_id"] = 0
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {created['token']}"}
        resp = case.call()
        seen[resp.status_code] += 1
        assert_error_body(resp)

    check()
    assert seen[200] + seen[201] > 0 and sum(n for s, n in seen.items() if 400 <= s < 500) > 0
    record_result("schemathesis", examples=API_EXAMPLES, statuses=dict(sorted(seen.items())), server_errors=0)


# ---------------------------------------------------------------------------------------------- tuner

#: Loss values nobody should send, and some that are fine.
odd_losses = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e308, -1e308, 5e-324, 1e30]),
    st.none(),
    st.integers(min_value=-(10**6), max_value=10**6),
)


@st.composite
def bad_report(draw: st.DrawFn, seg: dict[str, Any]) -> tuple[int, list[Any], list[Any] | None]:
    """A report for the open segment ``seg`` that is wrong in some way (or, now and then, odd but valid)."""
    good = run_segment(seg)
    sid = draw(st.sampled_from([seg["segment_id"], seg["segment_id"] + 1, seg["segment_id"] - 1, 10**6, -3]))
    how = draw(st.sampled_from(["values", "length", "empty", "val"]))
    losses: list[Any] = list(good["losses"])
    val = good["val_losses"]
    if how == "values":
        for i in draw(st.lists(st.integers(0, max(len(losses) - 1, 0)), max_size=5)):
            losses[i] = draw(odd_losses)
    elif how == "length":
        losses = losses[: draw(st.integers(0, len(losses)))] + [1.0] * draw(st.integers(0, 3))
    elif how == "empty":
        losses = []
    else:
        val = draw(st.one_of(st.none(), st.lists(odd_losses, max_size=4)))
    return sid, losses, val


def state_of(tuner: Tuner) -> str:
    return json.dumps(tuner.dump(), sort_keys=True)  # NaN-safe comparison (NaN != NaN in a dict)


@fast(TUNER_EXAMPLES)
@given(data=st.data(), seed=st.integers(0, 3))
def test_tuner_refuses_bad_reports_with_typed_errors_and_keeps_its_state(data: st.DataObject, seed: int) -> None:
    tuner = Tuner(TunerConfig.from_dict({**LIGHT, "seed": seed}))
    seg = tuner.next_segment()
    while not seg.done:
        wire = seg.to_dict()
        if data.draw(st.booleans(), label="fuzz this segment"):
            sid, losses, val = data.draw(bad_report(wire), label="report")
            before = state_of(tuner)
            try:
                tuner.report(sid, losses, val)
            except TunerError:
                assert state_of(tuner) == before
            else:  # odd but acceptable (a diverged candidate, a negative loss): the job must still go on
                seg = tuner.next_segment()
                continue
        body = run_segment(wire)
        seg = tuner.report(seg.segment_id, body["losses"], body["val_losses"])
    assert tuner.steps_used <= LIGHT["total_steps"]


absurd_numbers = st.sampled_from([0, -1, 1, 2, 0.0, -0.5, 1e-300, 1e300, 10**9, 10**10, 10**30, math.nan, math.inf])
config_fields = (
    "min_lr",
    "max_lr",
    "total_steps",
    "tau",
    "tau_max",
    "k",
    "k_warm",
    "candidate_fraction",
    "min_candidate_steps",
    "warmup_steps",
    "explore_cap",
    "anneal_fraction",
    "max_segment_steps",
    "val_samples",
    "divergence_factor",
    "seed",
)
#: A valid config with one to three fields set to something absurd (min_lr >= max_lr, zero or astronomical
#: budgets, k=0, NaN, ...): each is either refused with a typed error or makes a job that runs.
absurd_configs = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([LIGHT, {**LIGHT, "preset": "paper"}, {**LIGHT, "strategy": "wsd"}, {**LIGHT, "objective": "val"}]),
    st.dictionaries(
        st.sampled_from(config_fields),
        absurd_numbers | st.none() | st.sampled_from(["1", True, [], {}]),
        min_size=1,
        max_size=3,
    ),
)


@fast(CONFIG_EXAMPLES)
@given(config=absurd_configs)
def test_absurd_configs_are_refused_with_a_typed_error_or_run(config: dict[str, Any]) -> None:
    try:
        tuner = Tuner(TunerConfig.from_dict(config))
    except InvalidConfigError as exc:
        assert str(exc)
        return
    assert config["min_lr"] < config["max_lr"] and 0 < config["total_steps"] <= 10**9
    assert all(config.get(f) is None or config[f] >= 1 for f in ("k", "k_warm", "tau", "tau_max"))
    seg = tuner.next_segment()  # accepted: it must make sense, and run
    for _ in range(6):
        assert seg.done or seg.steps >= 1
        if seg.done or seg.steps > 2_000:  # astronomical budgets make segments too long to simulate here
            break
        assert math.isfinite(seg.lr) and seg.lr > 0
        body = run_segment(seg.to_dict())
        seg = tuner.report(seg.segment_id, body["losses"], body["val_losses"])


# ---------------------------------------------------------------------------------------------- API


def stored(store: MemoryStore, job: str) -> tuple[bytes, bytes]:
    rec = store.get(job)
    return encode_head(rec.head), encode_tuner(rec.tuner)


@fast(TUNER_EXAMPLES)
@given(data=st.data())
def test_api_refuses_bad_reports_and_the_stored_job_is_unchanged(
    app_and_client: tuple[Any, TestClient, MemoryStore], data: st.DataObject
) -> None:
    _, client, store = app_and_client
    created = client.post("/v1/jobs", json={"config": LIGHT}).json()
    job, auth = created["job_id"], {"Authorization": f"Bearer {created['token']}"}
    seg = client.post(f"/v1/jobs/{job}/lease", json={"worker_id": "w"}, headers=auth).json()
    while not seg["done"]:
        if data.draw(st.booleans(), label="fuzz this segment"):
            sid, losses, val = data.draw(bad_report(seg), label="report")
            body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], "losses": losses, "val_losses": val}
            raw = json.dumps(body).encode()  # NaN and Infinity as Python writes them
            before = stored(store, job)
            resp = client.post(
                f"/v1/jobs/{job}/segments/{sid}/report",
                content=raw,
                headers={**auth, "content-type": "application/json"},
            )
            assert_error_body(resp)
            if resp.status_code >= 400:
                assert resp.status_code in (404, 409, 422), resp.text
                assert stored(store, job) == before
            else:
                seg = resp.json()
                continue
        body = {"worker_id": "w", "lease_epoch": seg["lease_epoch"], **run_segment(seg)}
        resp = client.post(f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        seg = resp.json()


@fast(CONFIG_EXAMPLES)
@given(config=absurd_configs)
def test_api_refuses_absurd_configs_with_4xx_and_creates_nothing(
    app_and_client: tuple[Any, TestClient, MemoryStore], config: dict[str, Any]
) -> None:
    _, client, store = app_and_client
    jobs_before = store.list_heads(0, 0).total
    resp = client.post(
        "/v1/jobs", content=json.dumps({"config": config}).encode(), headers={"content-type": "application/json"}
    )
    assert_error_body(resp)
    if resp.status_code == 201:
        assert store.list_heads(0, 0).total == jobs_before + 1
    else:
        assert (resp.status_code, resp.json()["code"]) in ((422, "invalid_request"), (422, "invalid_config"))
        assert store.list_heads(0, 0).total == jobs_before


def test_bodies_over_the_limit_are_413_on_a_real_process(shared_service: Service) -> None:
    url = shared_service.url
    too_big = b'{"name": "' + b"x" * (8 * 1024 * 1024) + b'", "config": {}}'
    resp = httpx.post(f"{url}/v1/jobs", content=too_big, headers={"content-type": "application/json"}, timeout=60.0)
    assert (resp.status_code, resp.json()["code"]) == (413, "body_too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(9 * 1024):
            yield b"y" * 1024
        yield b'"}'

    streamed = httpx.post(f"{url}/v1/jobs", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert (streamed.status_code, streamed.json()["code"]) == (413, "body_too_large")
    assert httpx.get(f"{url}/healthz", timeout=10.0).status_code == 200
