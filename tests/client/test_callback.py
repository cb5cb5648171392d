"""The callback in a plain PyTorch loop, driving the real tuner in process."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from typing import Any

import pytest
import torch

from lrtune.client import AutoLRSCallback, ReplayLoader
from tests.client.helpers import (
    SMALL,
    Run,
    make_batches,
    make_model,
    prescribed_lrs,
    steps_by_segment,
    train,
)


def _setup(total: int = 240, seed: int = 0, dropout: float = 0.0, **kw: Any) -> tuple[Any, ...]:
    model = make_model(seed=seed, dropout=dropout)
    body = [p for n, p in model.named_parameters() if not n.startswith("4.")]
    head = list(model[4].parameters())
    opt = torch.optim.SGD([{"params": body}, {"params": head, "lr": 0.5}], lr=0.1, momentum=0.9)
    config = {**SMALL, **kw.pop("config", {})}
    cb = AutoLRSCallback(model, opt, None, 1e-3, 1.0, total, config=config, seed=seed, **kw)
    return model, opt, cb


def test_every_step_uses_the_prescribed_lr_on_every_group() -> None:
    model, opt, cb = _setup()
    assert opt.param_groups[0]["lr"] == cb.history[0].lr_at(0)  # set before the first step
    run = train(cb, model, opt, make_batches())
    cb.on_train_end()

    sched = cb.tuner.schedule()
    assert cb.done and sched["done"] and cb.step == 240 and len(run.lrs) == 240
    assert run.lrs == prescribed_lrs(cb.history, steps_by_segment(sched))
    assert all(len(set(g)) == 1 for g in run.group_lrs)  # the same LR on both param groups
    phases = {s.phase for s in cb.history}
    assert {"explore", "train"} <= phases  # the default plans its own end: no separate anneal phase
    assert any(s.restore for s in cb.history)
    assert cb.snapshots.names == []  # everything freed at the end


def test_moving_shapes_change_the_lr_every_step() -> None:
    model, opt, cb = _setup(total=120, strategy="cosine", config={"warmup_steps": 20})
    run = train(cb, model, opt, make_batches())
    sched = cb.tuner.schedule()
    assert run.lrs == prescribed_lrs(cb.history, steps_by_segment(sched))
    warmup, decay = run.lrs[:20], run.lrs[20:]
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False))  # linear warmup, step by step
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))  # cosine decay, step by step


def test_candidates_restart_from_the_stage_snapshot_on_the_same_batches() -> None:
    data = ReplayLoader(make_batches(n_batches=7))
    model, opt, cb = _setup(dropout=0.2, loader=data, preset="greedy")  # a cooldown probe after every candidate
    run = train(cb, model, opt, data)

    first_loss: dict[int, list[float]] = {}
    first_batches: dict[int, list[list[int]]] = {}
    probe_batches: dict[int, list[list[int]]] = {}
    for seg in cb.history:
        if seg.phase != "explore" or seg.stage is None:
            continue  # the LR range sweep has no stage
        at = [i for i, sid in enumerate(run.segment_ids) if sid == seg.segment_id]
        if seg.restore is None and seg.snapshot is None:  # a cooldown probe, continuing its candidate
            probe_batches.setdefault(seg.stage, []).append([run.batch_ids[i] for i in at])
            continue
        first_loss.setdefault(seg.stage, []).append(run.losses[at[0]])
        first_batches.setdefault(seg.stage, []).append([run.batch_ids[i] for i in at[:8]])
    searched = [s for s, v in first_loss.items() if len(v) > 1]
    assert searched
    for stage in searched:
        # Same weights, same batch, same dropout draws: the same first loss, bit for bit.
        assert len(set(first_loss[stage])) == 1
        assert all(b == first_batches[stage][0] for b in first_batches[stage])
        # Every candidate's cooldown probe sees the same batches as the others'.
        assert len(probe_batches[stage]) == len(first_loss[stage])
        assert all(b == probe_batches[stage][0] for b in probe_batches[stage])
    assert data.replayed > 0 and data.recorded == 0  # recording freed after the search


def test_without_replay_candidates_see_fresh_batches() -> None:
    data = ReplayLoader(make_batches(n_batches=7))
    model, opt, cb = _setup(config={"replay_batches": False}, loader=data)
    run = train(cb, model, opt, data)
    assert data.replayed == 0
    stage0 = [s.segment_id for s in cb.history if s.phase == "explore" and s.stage == 0]
    starts = [run.batch_ids[run.segment_ids.index(sid)] for sid in stage0]
    assert len(set(starts)) == len(starts)


def test_val_fn_runs_at_the_segment_cadence_in_eval_mode() -> None:
    batches = make_batches(n_batches=4, seed=3)
    calls: list[bool] = []
    model, opt, cb = None, None, None

    def val_fn() -> torch.Tensor:
        assert model is not None
        calls.append(model.training or torch.is_grad_enabled())
        _, x, y = batches[0]
        return torch.nn.functional.mse_loss(model(x), y)

    model = make_model(dropout=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AutoLRSCallback(
        model, opt, None, 1e-3, 1.0, 200, val_fn, config={**SMALL, "objective": "val", "val_samples": 4}
    )
    train(cb, model, opt, make_batches())
    sched = cb.tuner.schedule()
    evaluated = [s for s in cb.history if s.eval_every]
    assert evaluated and cb.done
    expected = sum(steps_by_segment(sched)[s.segment_id] // s.eval_every for s in evaluated)
    assert len(calls) == expected
    assert not any(calls)  # never in train mode, never with gradients
    assert model.training  # switched back
    assert all(rec["val"] for rec in sched["segments"] if rec["phase"] == "explore")


def test_diverging_candidates_stop_early_and_the_run_completes() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # The greedy preset without the LR range sweep: its search spans the range, so candidates blow up (the sweep,
    # and the plan preset's stability cap, would keep them far below the LRs that do).
    cb = AutoLRSCallback(
        model,
        opt,
        None,
        1e-2,
        1e4,
        240,
        config={**SMALL, "sweep_fraction": 0.0},
        preset="greedy",
        seed=1,
        guard_every=4,
    )
    run = train(cb, model, opt, make_batches())
    sched = cb.tuner.schedule()
    cut = [r for r in sched["segments"] if r["phase"] == "explore" and r["steps"] < r["planned_steps"]]
    assert cut, "a candidate at LR up to 1e4 must diverge"
    assert all(r["steps"] % 4 == 0 for r in cut)  # checked every guard_every steps, no sooner
    assert cb.done and sched["done"] and len(run.lrs) == 240
    assert run.lrs == prescribed_lrs(cb.history, steps_by_segment(sched))


def test_losses_are_synced_once_per_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AutoLRSCallback(model, opt, None, 1e-3, 1.0, 200, strategy="constant", config={"max_segment_steps": 50})
    syncs = {"tolist": 0, "item": 0}
    real_tolist, real_item = torch.Tensor.tolist, torch.Tensor.item

    def tolist(self: torch.Tensor) -> Any:
        syncs["tolist"] += 1
        return real_tolist(self)

    def item(self: torch.Tensor) -> Any:
        syncs["item"] += 1
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    monkeypatch.setattr(torch.Tensor, "item", item)
    batches = make_batches()
    while not cb.done:
        for _, x, y in batches:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            cb.on_train_batch_end(loss)
            if cb.done:
                break
    assert syncs == {"tolist": 4, "item": 0}  # 4 segments of 50 steps, one sync each


def test_resume_from_a_checkpoint_continues_the_same_job() -> None:
    def fresh(seed: int) -> tuple[Any, ...]:
        model = make_model(seed=seed, dropout=0.2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        cb = AutoLRSCallback(model, opt, None, 1e-4, 1e-1, 200, config=SMALL, preset="greedy")
        return model, opt, cb

    batches = make_batches()

    def loop(model: Any, opt: Any, cb: AutoLRSCallback, pos: int, run: Run, stop_at: int | None = None) -> int:
        while not cb.done and pos != stop_at:
            _, x, y = batches[pos % len(batches)]
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            run.lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            run.losses.append(loss.item())
            cb.on_train_batch_end(loss)
            pos += 1
        return pos

    torch.manual_seed(42)
    ref_model, ref_opt, ref_cb = fresh(0)
    ref = Run()
    loop(ref_model, ref_opt, ref_cb, 0, ref)

    torch.manual_seed(42)
    model, opt, cb = fresh(0)
    got = Run()
    pos = loop(model, opt, cb, 0, got, stop_at=15)  # mid-way through the second candidate of stage 0
    assert cb.segment is not None and cb.segment.phase == "explore" and cb.segment.restore
    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "cb": cb.state_dict(),
            "pos": pos,
            "rng": torch.get_rng_state(),
        },
        buf,
    )
    del model, opt, cb  # the crash

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model, opt, cb = fresh(7)  # another init: everything must come from the checkpoint
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    cb.load_state_dict(ckpt["cb"])
    torch.set_rng_state(ckpt["rng"])
    loop(model, opt, cb, ckpt["pos"], got)

    assert got.lrs == ref.lrs
    assert got.losses == ref.losses
    assert cb.tuner.schedule()["segments"] == ref_cb.tuner.schedule()["segments"]


def test_resume_without_snapshots_warns_once_and_completes(caplog: pytest.LogCaptureFixture) -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AutoLRSCallback(
        model, opt, None, 1e-3, 1.0, 200, config=SMALL, checkpoint_snapshots=False, preset="greedy"
    )  # stopped mid-search
    train(cb, model, opt, make_batches(), max_steps=15)
    state = cb.state_dict()
    assert state["snapshots"] is None
    cb2 = AutoLRSCallback(model, opt, None, 1e-3, 1.0, 200, config=SMALL, preset="greedy")
    cb2.load_state_dict(state)
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        train(cb2, model, opt, make_batches())
    assert cb2.done and cb2.tuner.done
    assert len([r for r in caplog.records if "is not held" in r.getMessage()]) == 1


def test_steps_after_done_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    model, opt, cb = _setup(total=60, strategy="constant")
    train(cb, model, opt, make_batches())
    lr = opt.param_groups[0]["lr"]
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        for _ in range(3):
            cb.on_train_batch_end(torch.tensor(1.0))
    assert cb.step == 60 and opt.param_groups[0]["lr"] == lr
    assert len(caplog.records) == 1


def test_loss_must_be_a_scalar() -> None:
    _, _, cb = _setup(total=60, strategy="constant")
    with pytest.raises(ValueError, match="scalar"):
        cb.on_train_batch_end(torch.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "nope"}, TypeError, "torch.nn.Module"),
        ({"optimizer": object()}, TypeError, "optimizer"),
        ({"min_lr": None}, TypeError, "min_lr is required"),
        ({"min_lr": -1.0}, ValueError, "positive"),
        ({"min_lr": 1.0, "max_lr": 0.1}, ValueError, "below max_lr"),
        ({"total_steps": 0}, ValueError, "total_steps"),
        ({"total_steps": 10.5}, ValueError, "total_steps"),
        ({"val_fn": 3}, TypeError, "val_fn"),
        ({"loader": [1, 2]}, TypeError, "ReplayLoader"),
        ({"fallback": "linear"}, ValueError, "fallback"),
        ({"config": {"bogus": 1}}, ValueError, "bogus"),
        ({"config": {"tau": 0}}, ValueError, "tau"),
        ({"config": {"objective": "val"}}, ValueError, "val_fn"),
        ({"config": {"warmup_steps": 100}}, ValueError, "warmup_steps"),
        ({"config": {"min_lr": 0.1}}, ValueError, "as arguments"),
        ({"preset": "fast"}, ValueError, "preset"),
        ({"job_id": "abc"}, ValueError, "token"),
        ({"server_url": "localhost:8000"}, ValueError, "http"),
        ({"http_client": "x"}, TypeError, "httpx.Client"),
        ({"guard_every": 0}, ValueError, "guard_every"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    model = make_model()
    args: dict[str, Any] = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "min_lr": 1e-3,
        "max_lr": 1.0,
        "total_steps": 100,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        AutoLRSCallback(**args)


def test_import_client_loads_only_the_tuners_pure_modules() -> None:
    pure = tuple(f"lrtune.tuner{m}" for m in ("", ".segment", ".errors", ".config", ".schedules"))
    code = (
        "import sys, lrtune.client, lrtune.client.callback, lrtune.client.http\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('botorch', 'gpytorch', 'scipy')]\n"
        "bad += [m for m in sys.modules if m.startswith('lrtune.server')]\n"
        f"bad += [m for m in sys.modules if m.startswith('lrtune.tuner') and m not in {pure!r}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_val_fn_makes_the_default_plan_minimise_the_validation_loss() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def val_fn() -> float:
        return 1.0

    planned = AutoLRSCallback(model, opt, None, 1e-3, 1.0, 200, val_fn)
    assert planned.tuner.settings.planner and planned.tuner.settings.objective == "val"
    told = AutoLRSCallback(model, opt, None, 1e-3, 1.0, 200, val_fn, config={"objective": "train"})
    assert told.tuner.settings.objective == "train"  # an objective the user gave stands
    greedy = AutoLRSCallback(model, opt, None, 1e-3, 1.0, 200, val_fn, preset="greedy")
    assert not greedy.tuner.settings.planner and greedy.tuner.settings.objective == "train"
