"""Runs a tuner against a simulated trainer, applying every snapshot instruction like a real client would."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lrtune.tuner import Segment, Tuner


@dataclass
class Log:
    """What the simulated worker saw and did, for assertions."""

    segments: list[Segment] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)  # LR of every step actually run
    restores: list[tuple[int, str]] = field(default_factory=list)  # (global step, name)
    peak_snapshots: int = 0


def drive(
    tuner: Tuner,
    state: Any,
    step_fn: Callable[[Any, float], float],
    val_fn: Callable[[Any], float] | None = None,
    max_segments: int = 100_000,
    before: Callable[[Tuner, Segment, Any], None] | None = None,
) -> tuple[Any, Log]:
    """Run ``tuner`` to the end.

    Args:
        tuner: The tuner.
        state: Mutable training state; deep-copied for snapshots.
        step_fn: ``step_fn(state, lr) -> loss`` runs one step in place.
        val_fn: Returns the validation loss of a state.
        max_segments: Safety bound.
        before: Called with each segment before it runs.

    Returns:
        The final state and the log.
    """
    snaps: dict[str, Any] = {}
    log = Log()
    seg = tuner.next_segment()
    for _ in range(max_segments):
        if seg.done:
            return state, log
        log.segments.append(seg)
        if before is not None:
            before(tuner, seg, state)
        if seg.restore is not None:
            state = copy.deepcopy(snaps[seg.restore])
            log.restores.append((seg.start_step, seg.restore))
        for name in seg.drop:
            snaps.pop(name, None)
        if seg.snapshot is not None:
            snaps[seg.snapshot] = copy.deepcopy(state)
        losses: list[float] = []
        vals: list[float] = []
        for j in range(seg.steps):
            lr = seg.lr_at(j)
            log.lrs.append(lr)
            losses.append(step_fn(state, lr))
            if seg.eval_every and (j + 1) % seg.eval_every == 0:
                assert val_fn is not None, "segment asked for validation losses"
                vals.append(val_fn(state))
            if seg.phase == "explore" and (j + 1) % 8 == 0:
                tail = losses[-5:]
                bad = any(not math.isfinite(v) for v in tail)
                if bad or (seg.abort_above is not None and sum(tail) / len(tail) > seg.abort_above):
                    break
        if seg.keep is not None:
            snaps[seg.keep] = copy.deepcopy(state)
        log.peak_snapshots = max(log.peak_snapshots, len(snaps))
        seg = tuner.report(seg.segment_id, losses, vals if seg.eval_every else None)
    raise AssertionError("tuner did not finish")


def toy_step(state: dict[str, float], lr: float) -> float:
    """A 1-D landscape: loss decays towards a floor that grows with the LR, diverges above lr=0.5."""
    if lr > 0.5:
        state["loss"] = state["loss"] * 1.5 + 1.0
    else:
        floor = 0.1 + 2.0 * lr
        state["loss"] = floor + (state["loss"] - floor) * (1.0 - 0.2 * lr)
    state["t"] = state.get("t", 0) + 1
    wiggle = 0.01 * math.sin(state["t"] * 12.9898)
    return state["loss"] + wiggle if math.isfinite(state["loss"]) else math.inf
