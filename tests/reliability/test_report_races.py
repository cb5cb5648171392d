"""Duplicate, reordered and replayed reports, workers racing on one job, and jobs deleted under a reporting
worker, against a real ``lrtune serve`` on Redis. Every check compares what the workers saw acknowledged with
the stored record or the realized schedule."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from lrtune.server.store.keys import Keys
from tests.reliability.harness import (
    DEADLINE_S,
    Ack,
    RefusedError,
    Service,
    SimWorker,
    create_job,
    fetch,
    losses_digest,
    record_result,
    replay,
)
from tests.server.helpers import SMALL_CONFIG, reference_schedule, run_segment


def config(seed: int) -> dict[str, Any]:
    return {**SMALL_CONFIG, "seed": seed}


@pytest.fixture
def db(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def record_of(db: redis.Redis, prefix: str, job: str) -> dict[str, Any]:
    """The job as Redis stores it, without what a repeated report legitimately touches (version, times, lease
    expiry): the tuner state and the rest of the head."""
    raw: dict[bytes, bytes] = db.hgetall(Keys(prefix).job(job))  # type: ignore[assignment]
    head = json.loads(raw[b"head"])
    for volatile in ("version", "updated_at"):
        head.pop(volatile)
    if head.get("lease"):
        head["lease"].pop("expires_at")
    return {"head": head, "tuner": json.loads(raw[b"tuner"])}


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(path, json=body)


def test_duplicates_sent_at_once_are_applied_once(shared_service: Service) -> None:
    url = shared_service.url
    job, token = create_job(url, config(400), "dupes")
    worker = SimWorker(url, job, token, "w")
    copies = 4
    barrier = threading.Barrier(copies)
    clients = [httpx.Client(base_url=url, headers=worker.headers, timeout=60.0) for _ in range(copies)]
    try:
        seg = worker.poll()
        with ThreadPoolExecutor(max_workers=copies) as pool:
            while not seg["done"]:
                body = worker.report_body(seg)
                path = f"/v1/jobs/{job}/segments/{seg['segment_id']}/report"

                def send(http: httpx.Client, path: str = path, body: dict[str, Any] = body) -> httpx.Response:
                    barrier.wait(timeout=30)
                    return post(http, path, body)

                answers = list(pool.map(send, clients))
                assert [r.status_code for r in answers] == [200] * copies, [r.text for r in answers]
                assert all(r.json() == answers[0].json() for r in answers)
                worker.acks.append(Ack(seg["segment_id"], seg["lease_epoch"], len(body["losses"]), "", body))
                seg = answers[0].json()
    finally:
        worker.close()
        for c in clients:
            c.close()
    schedule = fetch(url, f"/v1/jobs/{job}/schedule", token)
    assert [s["segment_id"] for s in schedule["segments"]] == [a.segment_id for a in worker.acks]
    schedule.pop("job_id")
    assert schedule == reference_schedule(config(400))


def test_reordered_and_replayed_reports_change_nothing(
    shared_service: Service, shared_prefix: str, db: redis.Redis
) -> None:
    url = shared_service.url
    rng = random.Random(7)
    job, token = create_job(url, config(401), "replays")
    worker = SimWorker(url, job, token, "w")
    outcomes: dict[str, int] = {}
    try:
        seg = worker.poll()
        sent: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (segment, the answer its report got)
        while True:
            # Replay an earlier report, or send one for a segment that does not exist yet, or with an old epoch.
            for old_seg, answer in rng.sample(sent, min(3, len(sent))):
                before = record_of(db, shared_prefix, job)
                body = worker.report_body(old_seg)
                resp = post(worker.http, f"/v1/jobs/{job}/segments/{old_seg['segment_id']}/report", body)
                is_last = old_seg["segment_id"] == sent[-1][0]["segment_id"]
                if is_last:  # a retry of the last report: the same answer as the first time
                    assert resp.status_code == 200 and resp.json()["segment_id"] == answer["segment_id"], resp.text
                else:
                    assert (resp.status_code, resp.json()["code"]) == (409, "unknown_segment"), resp.text
                outcomes[str(resp.status_code)] = outcomes.get(str(resp.status_code), 0) + 1
                assert record_of(db, shared_prefix, job) == before
            if seg["done"]:
                break
            before = record_of(db, shared_prefix, job)
            ahead = post(
                worker.http, f"/v1/jobs/{job}/segments/{seg['segment_id'] + 1}/report", worker.report_body(seg)
            )
            assert (ahead.status_code, ahead.json()["code"]) == (409, "unknown_segment")
            stale = {**worker.report_body(seg), "lease_epoch": seg["lease_epoch"] + 1}
            resp = post(worker.http, f"/v1/jobs/{job}/segments/{seg['segment_id']}/report", stale)
            assert (resp.status_code, resp.json()["code"]) == (409, "stale_lease")
            changed = {**worker.report_body(seg), "losses": [x + 1.0 for x in run_segment(seg)["losses"]]}
            if sent:  # different losses for the segment already reported: a conflict, not an overwrite
                prev = sent[-1][0]
                resp = post(worker.http, f"/v1/jobs/{job}/segments/{prev['segment_id']}/report", changed)
                assert (resp.status_code, resp.json()["code"]) == (409, "conflicting_report"), resp.text
            assert record_of(db, shared_prefix, job) == before
            nxt = worker.report(seg)
            sent.append((seg, nxt))
            seg = nxt
    finally:
        worker.close()
    schedule = fetch(url, f"/v1/jobs/{job}/schedule", token)
    assert [s["segment_id"] for s in schedule["segments"]] == [a.segment_id for a in worker.acks]
    schedule.pop("job_id")
    assert schedule == replay(config(401), worker.acks) == reference_schedule(config(401))
    record_result("replayed_reports", replays_by_status=outcomes, reports_acknowledged=len(worker.acks))


def test_two_workers_racing_on_one_job(shared_service: Service) -> None:
    """Twins (the same worker id, e.g. a job launched twice) report different losses for each segment at the
    same instant: exactly one report per segment is applied, the other is refused."""
    url = shared_service.url
    job, token = create_job(url, config(402), "twins")
    twins = [SimWorker(url, job, token, "twin") for _ in range(2)]
    barrier = threading.Barrier(2)
    winners: list[Ack] = []
    refusals: dict[str, int] = {}
    try:
        seg = twins[0].poll()
        with ThreadPoolExecutor(max_workers=2) as pool:
            while not seg["done"]:
                bodies = [twins[0].report_body(seg), twins[1].report_body(seg)]
                bodies[1]["losses"] = [x * 1.01 for x in bodies[1]["losses"]]
                path = f"/v1/jobs/{job}/segments/{seg['segment_id']}/report"

                def send(k: int, path: str = path, bodies: list[dict[str, Any]] = bodies) -> httpx.Response:
                    twins[k].poll()  # both hold "the" lease: same worker id, same epoch
                    barrier.wait(timeout=30)
                    return post(twins[k].http, path, bodies[k])

                answers = list(pool.map(send, range(2)))
                ok = [k for k, r in enumerate(answers) if r.status_code == 200]
                assert len(ok) == 1, [r.text for r in answers]
                loser = answers[1 - ok[0]]
                assert (loser.status_code, loser.json()["code"]) == (409, "conflicting_report")
                refusals[loser.json()["code"]] = refusals.get(loser.json()["code"], 0) + 1
                body = bodies[ok[0]]
                digest = losses_digest(body["losses"], body["val_losses"])
                winners.append(Ack(seg["segment_id"], seg["lease_epoch"], len(body["losses"]), digest, body))
                seg = answers[ok[0]].json()
    finally:
        for t in twins:
            t.close()
    schedule = fetch(url, f"/v1/jobs/{job}/schedule", token)
    schedule.pop("job_id")
    assert schedule == replay(config(402), winners)

    # Two different workers polling a fresh job at the same instant: one lease, one refusal.
    for n in range(4):
        job, token = create_job(url, config(403 + n), f"race-{n}")
        rivals = [SimWorker(url, job, token, f"rival-{k}") for k in range(2)]
        try:

            def grab(k: int, rivals: list[SimWorker] = rivals) -> str:
                barrier.wait(timeout=30)
                try:
                    rivals[k].poll()
                    return "leased"
                except RefusedError as exc:
                    return exc.code

            with ThreadPoolExecutor(max_workers=2) as pool:
                assert sorted(pool.map(grab, range(2))) == ["leased", "segment_leased"]
        finally:
            for r in rivals:
                r.close()
    record_result("twin_workers", segments=len(winners), applied_per_segment=1, refused=refusals)


def test_job_deleted_or_purged_while_a_worker_reports(
    shared_service: Service, shared_prefix: str, db: redis.Redis
) -> None:
    url = shared_service.url
    results = {}
    for how in ("delete", "purge"):
        for after in (2, 5):
            cfg = config(410 + after)
            job, token = create_job(url, cfg, f"{how}-{after}")
            worker = SimWorker(url, job, token, "w")
            auth = {"Authorization": f"Bearer {token}"}
            together = threading.Barrier(2)
            deleted = threading.Event()

            def meet(
                seg: dict[str, Any],
                after: int = after,
                together: threading.Barrier = together,
                deleted: threading.Event = deleted,
            ) -> None:
                if seg["segment_id"] == after:  # this report and the deletion leave at the same instant
                    together.wait(timeout=30)
                elif seg["segment_id"] == after + 1:  # the next report only once the deletion was answered
                    deleted.wait(timeout=30)

            try:
                with ThreadPoolExecutor(max_workers=1) as pool:
                    running = pool.submit(worker.run, None, None, meet)
                    together.wait(timeout=DEADLINE_S)
                    params = {"purge": "true"} if how == "purge" else {}
                    gone = httpx.delete(f"{url}/v1/jobs/{job}", params=params, headers=auth, timeout=30.0)
                    assert gone.status_code == (204 if how == "purge" else 200), gone.text
                    deleted_at = time.monotonic()
                    deleted.set()
                    with pytest.raises(RefusedError) as refused:
                        running.result(timeout=DEADLINE_S)
            finally:
                worker.close()
            expected = (410, "job_deleted") if how == "delete" else (404, "job_not_found")
            assert all(a.sent_at < deleted_at for a in worker.acks)  # nothing sent after the deletion was taken
            assert (refused.value.status, refused.value.code) == expected
            keys = Keys(shared_prefix)
            if how == "delete":  # the schedule stays readable and holds exactly what was acknowledged
                schedule = fetch(url, f"/v1/jobs/{job}/schedule", token)
                assert [s["segment_id"] for s in schedule["segments"]] == [a.segment_id for a in worker.acks]
                schedule.pop("job_id")
                assert schedule == replay(cfg, worker.acks)
                assert fetch(url, f"/v1/jobs/{job}", token)["status"] == "deleted"
            else:  # nothing comes back to life: no key, no index entry
                assert not db.exists(keys.job(job))
                for index in (keys.jobs(), keys.status("running"), keys.status("done"), keys.status("deleted")):
                    assert db.zscore(index, job) is None
            results[f"{how} after {after} acks"] = f"{expected[0]} {expected[1]}, {len(worker.acks)} acks recorded"
    record_result("deleted_while_reporting", outcomes=results)
