"""Shared helpers of the service tests: simulated training and a fake clock."""

from __future__ import annotations

import math
from typing import Any

from lrtune.tuner.segment import Segment

#: A small job: a few stages with BO, a few dozen segments, tens of milliseconds of GP work in all.
SMALL_CONFIG: dict[str, Any] = {
    "min_lr": 1e-4,
    "max_lr": 1.0,
    "total_steps": 240,
    "tau": 20,
    "k": 3,
    "k_warm": 2,
    "max_segment_steps": 40,
    "seed": 7,
}


def sim_loss(lr: float, step: int) -> float:
    """Simulated training loss after ``step`` steps at ``lr``: decays over steps, best near lr = 0.03."""
    x = math.log10(lr)
    return 0.1 + 2.0 * math.exp(-0.02 * step) + 0.05 * (x + 1.5) ** 2


def run_segment(seg: dict[str, Any]) -> dict[str, Any]:
    """Simulated losses of a wire segment: the report body fields ``losses`` and ``val_losses``."""
    losses = [sim_loss(_lr_at(seg, j), seg["start_step"] + j) for j in range(seg["steps"])]
    every = seg.get("eval_every")
    vals = [losses[i - 1] + 0.05 for i in range(every, len(losses) + 1, every)] if every else None
    return {"losses": losses, "val_losses": vals}


def _lr_at(seg: dict[str, Any], j: int) -> float:
    return Segment.from_dict(seg).lr_at(j)


def reference_schedule(config: dict[str, Any]) -> dict[str, Any]:
    """The schedule an in-process tuner produces for ``config`` with :func:`run_segment` losses (JSON form)."""
    import json

    import torch

    from lrtune.tuner import Tuner, TunerConfig

    torch.set_num_threads(1)  # as the service runs it (Settings.torch_threads)
    full = TunerConfig.from_dict(config)
    tuner = Tuner(full)
    seg = tuner.next_segment()
    while not seg.done:
        body = run_segment(seg.to_dict())
        seg = tuner.report(seg.segment_id, body["losses"], body["val_losses"])
    out: dict[str, Any] = json.loads(json.dumps(tuner.schedule()))
    return out


class FakeClock:
    """A clock that moves only when told to (Unix seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
