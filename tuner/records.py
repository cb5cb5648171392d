"""Segment records: what the tuner keeps of every segment that ran (its LR geometry and its binned losses).

A record has the segment's fields, ``steps`` as run (a candidate may stop early) next to ``planned_steps``, the
curve position reached (``curve_end``) next to the planned one (``curve_end_planned``), the LR at its first and
last step, ``rolled_back`` (set when the search discards it), ``diverged``, ``curve`` (at most
:data:`CURVE_POINTS` ``[step, mean loss]`` pairs, steps counted from the job's start) and ``val``
(``[step, validation loss]`` pairs); the tuner adds ``parent``, the record whose end state it started from.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from lrtune.tuner.segment import Segment, stretch_lr

#: Binned loss points kept per segment.
CURVE_POINTS = 32


def mean(values: list[float]) -> float | None:
    """Mean of ``values``, or None when there are none."""
    return sum(values) / len(values) if values else None


#: LR points a shaped (not constant) stretch is drawn with.
LR_POINTS = 24


def lr_points(rec: dict[str, Any]) -> list[list[float]]:
    """``[step, lr]`` points along a segment record or a segment (``Segment.to_dict()``), for drawing its LR.

    Two points for a constant LR, else :data:`LR_POINTS` + 1 evenly spaced over its steps; the step of each is
    the job's, from the segment's start to its end.
    """
    n = int(rec["steps"])
    if n <= 0:
        return []
    planned = int(rec.get("planned_steps") or n)
    end = rec.get("curve_end_planned", rec["curve_end"])
    geometry = (rec["shape"], rec["curve_from"], rec["curve_to"], rec["curve_start"], end, planned)
    k = 1 if rec["shape"] == "constant" else min(n, LR_POINTS)
    return [[rec["start_step"] + n * i / k, stretch_lr(*geometry, min(n * i / k, n - 1))] for i in range(k + 1)]


def spread(values: list[float]) -> float:
    """Standard deviation of the finite values (0 with fewer than two)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _bin(values: list[float], offset: int, points: int) -> list[list[float | None]]:
    """Downsample a per-step series to at most ``points`` [step, mean] pairs (step counted from 1)."""
    n = len(values)
    if n == 0:
        return []
    edges = np.linspace(0, n, min(points, n) + 1).round().astype(int)
    out: list[list[float | None]] = []
    for a, b in itertools.pairwise(edges):
        chunk = [v for v in values[a:b] if math.isfinite(v)]
        out.append([float(offset + b), mean(chunk) if len(chunk) == b - a else None])
    return out


def segment_record(seg: dict[str, Any], train: list[float], val: list[float] | None) -> dict[str, Any]:
    """The record of segment ``seg`` (``Segment.to_dict()``) that ran with losses ``train`` (and ``val``).

    Args:
        seg: The segment as handed out.
        train: Shape (steps run,). Training losses, NaN for a non-finite one.
        val: Validation losses when the segment asked for them, else None.
    """
    n = len(train)
    planned = seg["steps"]
    start = seg["start_step"]
    every = seg["eval_every"]
    span = seg["curve_end"] - seg["curve_start"]
    return {
        "segment_id": seg["segment_id"],
        "phase": seg["phase"],
        "stage": seg["stage"],
        "candidate": seg["candidate"],
        "start_step": start,
        "steps": n,
        "planned_steps": planned,
        "shape": seg["shape"],
        "curve_from": seg["curve_from"],
        "curve_to": seg["curve_to"],
        "curve_start": seg["curve_start"],
        "curve_end": seg["curve_start"] + span * n / planned,
        "curve_end_planned": seg["curve_end"],
        "lr": seg["lr"],
        "lr_end": Segment.from_dict(seg).lr_at(n - 1),
        "rolled_back": False,
        "diverged": any(not math.isfinite(v) for v in train),
        "curve": _bin(train, start, CURVE_POINTS),
        "val": [[float(start + every * (i + 1)), _finite_or_none(v)] for i, v in enumerate(val or [])] if every else [],
    }
