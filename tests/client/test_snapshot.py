"""Snapshots: restoring and replaying the same batches reproduces training bit for bit on CPU."""

from __future__ import annotations

import random

import numpy as np
import torch

from lrtune.client import SnapshotStore
from tests.client.helpers import make_batches, make_model


def _steps(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list, scaler=None) -> list[float]:
    """Train on ``batches``; inputs get noise from numpy and Python's random, dropout draws from torch."""
    losses = []
    for _, x, y in batches:
        noise = float(np.random.normal()) * 1e-3 + random.random() * 1e-3
        loss = torch.nn.functional.mse_loss(model(x + noise), y)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        losses.append(loss.item())
    return losses


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_restore_and_replay_is_bit_identical() -> None:
    batches = make_batches(n_batches=12)
    model = make_model(dropout=0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    np.random.seed(1)
    random.seed(1)
    _steps(model, opt, batches[:4])  # optimizer state exists before the snapshot
    store = SnapshotStore(model, opt)
    store.save("stage")

    first = _steps(model, opt, batches[4:])
    end_first = _params(model)
    assert store.restore("stage")
    second = _steps(model, opt, batches[4:])
    assert second == first
    assert all(torch.equal(a, b) for a, b in zip(_params(model), end_first, strict=True))

    # The snapshot survived its first restore intact (the optimizer got copies, not the snapshot's tensors).
    assert store.restore("stage")
    assert _steps(model, opt, batches[4:]) == first

    # Without a restore the same batches give other losses: the comparison above can fail.
    assert _steps(model, opt, batches[4:]) != first


def test_rng_states_are_restored() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    store = SnapshotStore(model, opt)
    store.save("s")
    draws = (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)])
    store.restore("s")
    again = (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)])
    assert again == draws


def test_grad_scaler_and_extra_state_are_restored() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    ema = make_model(seed=1)
    store = SnapshotStore(model, opt, scaler, extra={"ema": ema})
    store.save("s")
    ema_before = _params(ema)
    _steps(model, opt, make_batches(n_batches=2), scaler=scaler)
    scaler.update(new_scale=8.0)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    store.restore("s")
    assert scaler.get_scale() == 1024.0
    assert all(torch.equal(a, b) for a, b in zip(_params(ema), ema_before, strict=True))


def test_snapshots_live_on_cpu_and_are_freed() -> None:
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _steps(model, opt, make_batches(n_batches=1))
    store = SnapshotStore(model, opt)
    snap = store.save("a")
    store.save("b")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert snap.nbytes >= 3 * params  # weights + Adam's two moments
    assert all(t.device.type == "cpu" for t in snap.model.values())
    assert store.names == ["a", "b"] and store.nbytes == 2 * snap.nbytes
    store.drop("a")
    store.drop("missing")
    assert store.names == ["b"]
    assert not store.restore("a")
    store.clear()
    assert store.nbytes == 0


def test_state_dict_round_trip_restores_in_a_new_process_state() -> None:
    batches = make_batches(n_batches=6)
    model = make_model(dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    store = SnapshotStore(model, opt)
    store.save("s")
    reference = _steps(model, opt, batches)
    saved = store.state_dict()

    fresh_model = make_model(seed=5, dropout=0.2)
    fresh_opt = torch.optim.Adam(fresh_model.parameters(), lr=1e-2)
    fresh = SnapshotStore(fresh_model, fresh_opt)
    fresh.load_state_dict(saved)
    assert fresh.restore("s")
    assert _steps(fresh_model, fresh_opt, batches) == reference
