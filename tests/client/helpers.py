"""Shared helpers of the client tests: a tiny regression problem, a recording training loop, a flaky link."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import torch
from fastapi.testclient import TestClient

from lrtune.client import AutoLRSCallback
from lrtune.client.protocol import WireSegment

#: A small job: three stages with BO, a few dozen segments, well under a second of tuner work.
# Budgets of a few hundred steps: short stages, and room under the exploration cap for a search.
SMALL: dict[str, Any] = {"tau": 20, "k": 3, "k_warm": 2, "max_segment_steps": 40, "explore_cap": 0.3}

Batch = tuple[int, torch.Tensor, torch.Tensor]


def make_batches(n_batches: int = 16, batch_size: int = 16, dim: int = 8, seed: int = 0) -> list[Batch]:
    """A fixed list of ``(batch index, x, y)`` batches of a noisy linear regression problem."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, 1, generator=g)
    out = []
    for i in range(n_batches):
        x = torch.randn(batch_size, dim, generator=g)
        out.append((i, x, x @ w + 0.1 * torch.randn(batch_size, 1, generator=g)))
    return out


def make_model(seed: int = 0, dim: int = 8, dropout: float = 0.0) -> torch.nn.Module:
    """A tiny MLP with dropout and batch norm (so RNG and buffers matter)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.Tanh(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(32, 1),
    )


@dataclass
class Run:
    """What a training loop saw.

    Attributes:
        lrs: LR of param group 0 when each optimizer step ran (read by a step pre-hook).
        group_lrs: LRs of every param group at each step.
        losses: Training loss of each step.
        batch_ids: Index of the batch of each step.
        segment_ids: Id of the segment each step belonged to (None: no segment, fallback LR).
    """

    lrs: list[float] = field(default_factory=list)
    group_lrs: list[list[float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    batch_ids: list[int] = field(default_factory=list)
    segment_ids: list[int | None] = field(default_factory=list)


def record_lrs(optimizer: torch.optim.Optimizer, run: Run) -> None:
    """Record the LR each optimizer step actually uses."""

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        run.lrs.append(float(opt.param_groups[0]["lr"]))
        run.group_lrs.append([float(g["lr"]) for g in opt.param_groups])

    optimizer.register_step_pre_hook(hook)


def train(
    cb: AutoLRSCallback,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Iterable[Batch],
    run: Run | None = None,
    max_steps: int = 100_000,
    before_step: Callable[[int], None] | None = None,
) -> Run:
    """The README's loop: train until the callback is done, recording what happened."""
    run = run if run is not None else Run()
    if not run.lrs:
        record_lrs(optimizer, run)
    steps = 0
    while not cb.done and steps < max_steps:
        for idx, x, y in data:
            if before_step is not None:
                before_step(cb.step)
            seg = cb.segment
            run.segment_ids.append(None if seg is None else seg.segment_id)
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.losses.append(float(loss.detach()))
            run.batch_ids.append(idx)
            cb.on_train_batch_end(loss)
            steps += 1
            if cb.done or steps >= max_steps:
                break
    return run


def prescribed_lrs(history: list[WireSegment], steps_run: dict[int, int]) -> list[float]:
    """The LR every step should have used: each segment's ``lr_at(j)`` for the steps it ran."""
    out: list[float] = []
    for seg in history:
        out += [seg.lr_at(j) for j in range(steps_run[seg.segment_id])]
    return out


def steps_by_segment(schedule: dict[str, Any]) -> dict[int, int]:
    """Steps each reported segment ran, from a tuner/service schedule."""
    return {rec["segment_id"]: rec["steps"] for rec in schedule["segments"]}


class Link:
    """A switchable link to an in-process service (an ``httpx.MockTransport`` handler).

    ``mode``: ``"up"`` forwards to the app; ``"down"`` refuses connections; ``"timeout"`` times out; ``"503"``
    answers 503. Counts requests by route.
    """

    def __init__(self, app_client: TestClient) -> None:
        self.app = app_client
        self.mode = "up"
        self.requests: list[str] = []
        self.failed = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.mode == "down":
            self.failed += 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "timeout":
            self.failed += 1
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "503":
            self.failed += 1
            return httpx.Response(503, json={"code": "store_unavailable", "message": "store down"})
        target = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        resp = self.app.request(request.method, target, content=request.content, headers=headers)
        return httpx.Response(resp.status_code, content=resp.content, headers={"content-type": "application/json"})

    def client(self) -> httpx.Client:
        """An ``httpx.Client`` over this link."""
        return httpx.Client(transport=httpx.MockTransport(self), base_url="http://lrtune.test")
