"""The JobStore contract, run over every backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from lrtune.server.store import (
    JobExistsError,
    JobHead,
    JobNotFoundError,
    JobRecord,
    JobStore,
    Lease,
    MemoryStore,
    RecordDecodeError,
    StoreUnavailableError,
)
from lrtune.server.store.redis import RedisStore


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    s = RedisStore(url, prefix)
    yield s
    s.close()


def make_record(job_id: str, created_at: float = 100.0, status: str = "running") -> JobRecord:
    head = JobHead(
        job_id=job_id,
        name=f"job {job_id}",
        token_sha256="ab" * 32,
        status=status,  # type: ignore[arg-type]
        created_at=created_at,
        updated_at=created_at,
        config={"min_lr": 0.001, "max_lr": 1.0, "total_steps": 100},
        summary={"steps_used": 0},
    )
    return JobRecord(head, {"schema": 1, "step": 0, "segments": [], "nested": {"xs": [1.5, None]}})


def test_create_get_round_trips(store: JobStore) -> None:
    rec = make_record("a1")
    rec.head.lease = Lease("w", 3, 123.5)
    store.create(rec)
    got = store.get("a1")
    assert got == rec
    assert store.get_head("a1") == rec.head


def test_create_twice_raises_job_exists(store: JobStore) -> None:
    store.create(make_record("a1"))
    with pytest.raises(JobExistsError):
        store.create(make_record("a1"))


def test_unknown_ids_raise_job_not_found(store: JobStore) -> None:
    for call in (
        lambda: store.get("nope"),
        lambda: store.get_head("nope"),
        lambda: store.delete("nope"),
        lambda: store.update("nope", lambda r: None, now=1.0),
    ):
        with pytest.raises(JobNotFoundError):
            call()


def test_records_are_passed_by_value(store: JobStore) -> None:
    rec = make_record("a1")
    store.create(rec)
    rec.tuner["step"] = 99  # mutating what was passed in changes nothing stored
    got = store.get("a1")
    assert got.tuner["step"] == 0
    got.tuner["nested"]["xs"].append(3)  # nor does mutating what came out
    got.head.name = "changed"
    again = store.get("a1")
    assert again.tuner["nested"]["xs"] == [1.5, None]
    assert again.head.name == "job a1"

    def fn(r: JobRecord) -> None:
        r.tuner["step"] = 5

    written, _ = store.update("a1", fn, now=200.0)
    written.tuner["step"] = 77
    assert store.get("a1").tuner["step"] == 5
    assert got.tuner["step"] == 0  # a record handed out earlier does not change under a later write


def test_update_bumps_version_and_time_and_returns_fn_value(store: JobStore) -> None:
    store.create(make_record("a1"))

    def fn(r: JobRecord) -> str:
        r.tuner["step"] = r.tuner["step"] + 10
        r.head.status = "done"
        return "out"

    written, out = store.update("a1", fn, now=250.0)
    assert out == "out"
    assert written.head.version == 2
    got = store.get("a1")
    assert (got.head.version, got.head.updated_at, got.tuner["step"], got.head.status) == (2, 250.0, 10, "done")


def test_update_head_leaves_tuner_state_alone(store: JobStore) -> None:
    store.create(make_record("a1"))
    store.update("a1", lambda r: r.tuner.__setitem__("step", 3), now=5.0)

    def fn(h: JobHead) -> int:
        h.lease = Lease("w", 1, 9.0)
        h.status = "deleted"
        return 7

    head, out = store.update_head("a1", fn, now=6.0)
    assert out == 7 and head.version == 3
    got = store.get("a1")
    assert (got.tuner["step"], got.head.lease, got.head.version, got.head.updated_at) == (3, Lease("w", 1, 9.0), 3, 6.0)
    assert [h.job_id for h in store.list_heads(status="deleted").heads] == ["a1"]
    with pytest.raises(JobNotFoundError):
        store.update_head("nope", fn, now=1.0)


def test_head_and_full_updates_race_safely(store: JobStore) -> None:
    store.create(make_record("a1"))
    barrier = threading.Barrier(4)

    def full() -> None:
        barrier.wait()
        for _ in range(20):
            store.update("a1", lambda r: r.tuner.__setitem__("step", r.tuner["step"] + 1), now=1.0)

    def head_only() -> None:
        barrier.wait()
        for _ in range(20):
            store.update_head("a1", lambda h: setattr(h, "last_epoch", h.last_epoch + 1), now=1.0)

    threads = [threading.Thread(target=f) for f in (full, full, head_only, head_only)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.get("a1")
    assert (got.tuner["step"], got.head.last_epoch, got.head.version) == (40, 40, 81)


def test_failing_fn_writes_nothing(store: JobStore) -> None:
    store.create(make_record("a1"))

    def fn(r: JobRecord) -> None:
        r.tuner["step"] = 1
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.update("a1", fn, now=2.0)
    got = store.get("a1")
    assert (got.tuner["step"], got.head.version) == (0, 1)


def test_concurrent_updates_are_atomic(store: JobStore) -> None:
    """Threads racing read-modify-writes on one job lose no increment (optimistic retry)."""
    store.create(make_record("a1"))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(25):
                store.update("a1", lambda r: r.tuner.__setitem__("step", r.tuner["step"] + 1), now=3.0)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = store.get("a1")
    assert got.tuner["step"] == 200
    assert got.head.version == 201


def test_list_is_oldest_first_paged_and_filtered(store: JobStore) -> None:
    for i, t in enumerate([30.0, 10.0, 20.0, 40.0]):
        store.create(make_record(f"j{i}", created_at=t, status="done" if i == 3 else "running"))
    page = store.list_heads(offset=0, limit=3)
    assert [h.job_id for h in page.heads] == ["j1", "j2", "j0"]
    assert page.total == 4
    assert [h.job_id for h in store.list_heads(offset=3, limit=3).heads] == ["j3"]
    running = store.list_heads(status="running")
    assert ([h.job_id for h in running.heads], running.total) == (["j1", "j2", "j0"], 3)
    assert store.count("running") == 3
    store.update("j0", lambda r: setattr(r.head, "status", "done"), now=5.0)
    assert (store.count("running"), store.count("done")) == (2, 2)
    assert [h.job_id for h in store.list_heads(status="done").heads] == ["j0", "j3"]


def test_list_newest_first_is_the_exact_reverse(store: JobStore) -> None:
    for i, t in enumerate([30.0, 10.0, 20.0, 20.0, 40.0]):  # j2 and j3 tie on created_at: ordered by id
        store.create(make_record(f"j{i}", created_at=t, status="done" if i == 4 else "running"))
    oldest = [h.job_id for h in store.list_heads(limit=10).heads]
    assert oldest == ["j1", "j2", "j3", "j0", "j4"]
    page = store.list_heads(offset=0, limit=2, newest_first=True)
    assert ([h.job_id for h in page.heads], page.total) == (["j4", "j0"], 5)
    assert [h.job_id for h in store.list_heads(offset=2, limit=10, newest_first=True).heads] == ["j3", "j2", "j1"]
    running = store.list_heads(status="running", newest_first=True)
    assert ([h.job_id for h in running.heads], running.total) == (["j0", "j3", "j2", "j1"], 4)
    assert store.list_heads(offset=9, limit=3, newest_first=True).heads == []


def test_delete_removes_everything(store: JobStore) -> None:
    store.create(make_record("a1"))
    store.delete("a1")
    with pytest.raises(JobNotFoundError):
        store.get("a1")
    assert store.list_heads().total == 0
    assert store.count("running") == 0
    store.create(make_record("a1"))  # the id can be used again


def test_ping_answers(store: JobStore) -> None:
    store.ping()


def test_redis_keys_live_under_the_prefix(redis_url: str, redis_prefix: str) -> None:
    import redis

    s = RedisStore(redis_url, redis_prefix)
    s.create(make_record("a1"))
    r = redis.Redis.from_url(redis_url)
    found = {k.decode() for k in r.scan_iter(match=f"{redis_prefix}:*")}
    assert found == {f"{redis_prefix}:job:a1", f"{redis_prefix}:jobs", f"{redis_prefix}:status:running"}
    assert r.hget(f"{redis_prefix}:job:a1", "head").startswith(b"{")  # JSON


def test_redis_refuses_unknown_schema(redis_url: str, redis_prefix: str) -> None:
    import redis

    s = RedisStore(redis_url, redis_prefix)
    s.create(make_record("a1"))
    redis.Redis.from_url(redis_url).hset(f"{redis_prefix}:job:a1", "head", b'{"schema": 99}')
    with pytest.raises(RecordDecodeError, match="schema 99"):
        s.get("a1")


def test_two_redis_clients_see_one_store(redis_url: str, redis_prefix: str) -> None:
    a, b = RedisStore(redis_url, redis_prefix), RedisStore(redis_url, redis_prefix)
    a.create(make_record("a1"))
    b.update("a1", lambda r: r.tuner.__setitem__("step", 4), now=1.0)
    assert a.get("a1").tuner["step"] == 4


def test_unreachable_redis_raises_store_unavailable() -> None:
    s = RedisStore("redis://127.0.0.1:1/0", "x", timeout_s=0.5)
    with pytest.raises(StoreUnavailableError):
        s.ping()
    with pytest.raises(StoreUnavailableError):
        s.get("a1")
