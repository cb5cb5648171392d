"""DDP on two CPU processes (gloo): every rank applies the same LRs and restores at the same steps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lrtune.client import AutoLRSCallback, ReplayLoader, RetryPolicy
from tests.asgi import local_client
from tests.client.helpers import SMALL, Run, make_batches, make_model, record_lrs


def _train(cb: AutoLRSCallback, model: Any, opt: Any, data: Any, before_step: Any = None) -> dict[str, Any]:
    run = Run()
    record_lrs(opt, run)
    events: list[tuple[int, int, str | None]] = []  # (step, segment id, restore) at each segment start
    last = None
    while not cb.done:
        for _, x, y in data:
            if before_step is not None:
                before_step(cb.step)
            seg = cb.segment
            if seg is not None and seg is not last:
                events.append((cb.step, seg.segment_id, seg.restore))
                last = seg
            run.segment_ids.append(None if seg is None else seg.segment_id)
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            cb.on_train_batch_end(loss)
            if cb.done:
                break
    out = {
        "lrs": run.lrs,
        "segment_ids": run.segment_ids,
        "events": events,
        "steps": cb.step,
        "offline_steps": cb.offline_steps,
        "params": [p.detach().clone() for p in model.parameters()],
        "broadcasts": cb.comm.broadcasts,
        "reductions": cb.comm.reductions,
        "segments": len(cb.history),
        "tuner_done": None if cb.tuner is None else cb.tuner.done,
        "is_leader": cb.comm.is_leader,
    }
    # As a training script ends: the client's request thread stops before the process exits (here the service runs
    # in this process, so that thread runs the tuner; left running at exit it can abort the interpreter's teardown).
    cb.on_train_end()
    return out


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    out: dict[str, Any] = {}
    app_client: Any = None
    try:
        # 1. In process: rank 0 runs the tuner, rank 1 only follows.
        model = torch.nn.parallel.DistributedDataParallel(make_model(seed=0, dropout=0.1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        data = ReplayLoader(make_batches(n_batches=5, seed=10 + rank))  # each rank its own shard
        cb = AutoLRSCallback(model, opt, None, 1e-3, 1.0, 200, config=SMALL, loader=data, guard_every=4)
        out["local"] = _train(cb, model, opt, data)

        # 2. Through the service (on rank 0 only), down for a while mid-run.

        from lrtune.server.app import create_app
        from lrtune.server.settings import Settings
        from tests.client.helpers import Link

        link = None
        http = None
        if rank == 0:
            app_client = local_client(create_app(Settings(redis_url=None, admin_key=None)))
            app_client.__enter__()
            link = Link(app_client)
            http = link.client()

        def outage(step: int) -> None:
            if link is not None:
                link.mode = "down" if 36 <= step < 60 else "up"

        model = torch.nn.parallel.DistributedDataParallel(make_model(seed=1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        cb = AutoLRSCallback(
            model,
            opt,
            "http://127.0.0.1:9" if rank else None,  # never contacted off rank 0
            1e-3,
            1.0,
            200,
            config=SMALL,
            http_client=http,
            retry=RetryPolicy(initial_s=1e-4, max_s=1e-3),
            offline_sync_steps=8,
        )
        out["remote"] = _train(cb, model, opt, make_batches(n_batches=5, seed=20 + rank), before_step=outage)
        if link is not None:
            src: Any = cb.source
            auth = {"Authorization": f"Bearer {src.token}"}
            out["remote"]["job"] = link.app.get(f"/v1/jobs/{src.job_id}/schedule", headers=auth).json()
        # 3. Rank 0 gets no segment (strict, and no service listens there): every rank raises, none hangs, then
        # each leaves.
        try:
            AutoLRSCallback(
                make_model(),
                torch.optim.SGD(make_model().parameters(), lr=0.1),
                "http://127.0.0.1:9",
                1e-3,
                1.0,
                100,
                strict=True,
            )
        except Exception as exc:
            out["error"] = type(exc).__name__
            out["error_message"] = str(exc)
        # 4. A config the tuner refuses: every rank refuses it at construction, in the tuner's words.
        try:
            AutoLRSCallback(
                make_model(),
                torch.optim.SGD(make_model().parameters(), lr=0.1),
                None,
                1e-3,
                1.0,
                100,
                config={"tau": 50, "tau_max": 20},
            )
        except Exception as exc:
            out["config_error"] = str(exc)
    finally:
        torch.save(out, f"{tmp}/rank{rank}.pt")
        if app_client is not None:
            app_client.__exit__(None, None, None)
        dist.destroy_process_group()


def test_two_ranks_apply_the_same_lrs_and_restores(tmp_path: Path) -> None:
    logging.getLogger("lrtune.client").setLevel(logging.ERROR)
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)

    for key in ("local", "remote"):
        a, b = r0[key], r1[key]
        assert a["is_leader"] and not b["is_leader"]
        assert a["lrs"] == b["lrs"] and a["events"] == b["events"] and a["segment_ids"] == b["segment_ids"]
        assert a["steps"] == b["steps"] and a["offline_steps"] == b["offline_steps"]
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"], strict=True))
        assert any(restore for _, _, restore in a["events"])
        # Collectives: one broadcast per segment (plus construction), never one per step.
        assert a["reductions"] < a["steps"] / 4

    local = r0["local"]
    assert local["tuner_done"] and local["steps"] == 200
    assert local["broadcasts"] == local["segments"] + 1

    assert r0["error"] == r1["error"] == "ServiceUnavailableError", r1.get("error_message")
    assert "strict=True" in r1["error_message"]
    assert r0["config_error"] == r1["config_error"] == "tau_max (20) must be at least tau (50)"

    remote = r0["remote"]
    assert remote["offline_steps"] > 0 and remote["job"]["done"] and remote["job"]["steps_used"] == 200
