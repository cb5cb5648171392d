"""Memory is bounded: idle jobs stall, deleted and finished jobs are dropped, listings work at any size."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lrtune.client.protocol import JobConfig, JobCreate, WireReport
from lrtune.server.quotas import MemoryLedger, job_gate
from lrtune.server.service import Credential, JobService
from lrtune.server.store import JobHead, JobNotFoundError, JobRecord, JobStore, MemoryStore
from lrtune.server.store.redis import EXPIRY_SLACK_S, RedisStore
from tests.server.helpers import SMALL_CONFIG, FakeClock, run_segment

BODY = JobCreate(config=JobConfig.from_dict(SMALL_CONFIG))


def service(store: JobStore, clock: FakeClock, **kw: float) -> JobService:
    kw.setdefault("deleted_retention_s", 300.0)
    kw.setdefault("done_retention_s", 3600.0)
    return JobService(store, lease_ttl_s=10.0, clock=clock, stall_after_s=30.0, **kw)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    prefix = request.getfixturevalue("redis_prefix")
    s = RedisStore(request.getfixturevalue("redis_url"), prefix)
    yield s
    s.close()


def test_an_idle_job_stalls_frees_its_quota_slot_and_runs_again_when_its_worker_returns(store: JobStore) -> None:
    clock = FakeClock()
    svc = service(store, clock)
    token, info = svc.create(BODY)
    cred = Credential(token)
    svc.poll(info.job_id, "w", cred)
    ledger = MemoryLedger()
    ledger.admit("c", info.job_id, 1, lambda _: "running", clock())
    gate = job_gate(ledger, "c", 1, store, 60, clock)
    clock.advance(29)
    assert svc.sweep().stalled == 0 and svc.info(info.job_id, cred).status == "running"
    with pytest.raises(Exception, match="running jobs"):
        gate("other")
    clock.advance(2)
    assert svc.sweep().stalled == 1 and svc.info(info.job_id, cred).status == "stalled"
    assert svc.sweep().stalled == 0  # once is enough
    assert store.count("stalled") == 1 and store.count("running") == 0
    gate("other")  # the stalled job's slot is free
    seg = svc.poll(info.job_id, "w", cred).segment  # the worker is back
    assert svc.info(info.job_id, cred).status == "running" and store.count("stalled") == 0
    body = {"worker_id": "w", "lease_epoch": seg.lease_epoch, **run_segment(seg.to_dict())}
    svc.report(info.job_id, seg.segment_id, WireReport.model_validate(body), cred)
    assert svc.info(info.job_id, cred).status == "running"


def test_deleted_and_finished_jobs_are_dropped_after_their_retention(store: JobStore) -> None:
    clock = FakeClock()
    svc = service(store, clock)
    token, deleted = svc.create(BODY)
    svc.delete(deleted.job_id, Credential(token))
    token2, finished = svc.create(JobCreate(config=JobConfig.from_dict({**SMALL_CONFIG, "strategy": "constant"})))
    cred2 = Credential(token2)
    seg = svc.poll(finished.job_id, "w", cred2).segment
    while not seg.done:
        body = {"worker_id": "w", "lease_epoch": seg.lease_epoch, **run_segment(seg.to_dict())}
        seg = svc.report(finished.job_id, seg.segment_id, WireReport.model_validate(body), cred2).segment
    svc.create(BODY)  # a running job: kept
    clock.advance(299)
    assert svc.sweep().expired == 0
    assert svc.info(deleted.job_id, Credential(token)).status == "deleted"  # still readable for a while
    clock.advance(2)
    assert svc.sweep().expired == 1
    with pytest.raises(JobNotFoundError):
        store.get_head(deleted.job_id)
    clock.advance(3600)
    assert svc.sweep().expired == 1
    with pytest.raises(JobNotFoundError):
        store.get_head(finished.job_id)
    assert store.list_heads(0, 10).total == 1 and store.count("deleted") == 0 and store.count("done") == 0
    if isinstance(store, RedisStore):  # the data goes even if no service ever sweeps again: a key TTL
        token3, other = svc.create(BODY)
        svc.delete(other.job_id, Credential(token3))
        expires_at = store.get_head(other.job_id).expires_at
        assert expires_at == clock() + 300
        ttl = int(store._r.ttl(store.keys.job(other.job_id)))  # type: ignore[arg-type]
        assert abs(ttl - (expires_at + EXPIRY_SLACK_S - time.time())) < 5


def test_ten_thousand_create_delete_cycles_keep_the_store_bounded() -> None:
    """Memory is bounded by what is live plus the retention window, not by what was ever created."""
    clock = FakeClock()
    store = MemoryStore()
    svc = service(store, clock, deleted_retention_s=60.0)
    per_job = 0
    peak_jobs = peak_bytes = 0
    for i in range(10_000):
        token, info = svc.create(BODY)
        svc.delete(info.job_id, Credential(token))
        clock.advance(0.1)  # 10 cycles a second: 600 inside the retention window at any time
        if i % 100 == 99:
            svc.sweep()  # what the service's janitor does every few seconds
            peak_jobs, peak_bytes = max(peak_jobs, len(store)), max(peak_bytes, store.nbytes)
            per_job = per_job or store.nbytes // len(store)
    assert peak_jobs <= 60 / 0.1 + 100
    assert peak_bytes <= (60 / 0.1 + 100) * per_job * 1.2
    clock.advance(61)
    svc.sweep()
    assert len(store) == 0 and store.nbytes == 0
    pytest.importorskip("tests.reliability.harness").record_result(
        "create_delete_cycles", cycles=10_000, peak_jobs=peak_jobs, peak_kib=round(peak_bytes / 1024)
    )


def test_sorted_listings_work_past_ten_thousand_jobs() -> None:
    store = MemoryStore()
    clock = FakeClock()
    n = 10_050
    for i in range(n):
        name = f"job-{(i * 7919) % n:05d}"  # a shuffled order of names
        head = JobHead(f"{i:016x}", name, "0" * 64, "running", clock() + i, clock() + i, dict(SMALL_CONFIG), {})
        store.create(JobRecord(head, {}))
    svc = service(store, clock)
    page, total = svc.list(offset=10_000, limit=5, status=None, sort="name")
    assert total == n and [j.name for j in page] == [f"job-{k:05d}" for k in range(10_000, 10_005)]
    page, total = svc.list(offset=0, limit=3, status="running", sort="name", descending=True)
    assert [j.name for j in page] == [f"job-{k:05d}" for k in (n - 1, n - 2, n - 3)]
    page, total = svc.list(offset=0, limit=5, status=None, name_contains="job-0999")
    assert total == 10 and len(page) == 5 and all("job-0999" in (j.name or "") for j in page)
