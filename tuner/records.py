"""Segment records: what the tuner keeps of every segment that ran (its LR geometry and its binned losses).

A :class:`SegmentRecord` has the segment's fields, ``steps`` as run (a candidate may stop early) next to
``planned_steps``, the curve position reached (``curve_end``) next to the planned one (``curve_end_planned``), the
LR at its first and last step, ``rolled_back`` (set when the search discards it), ``diverged``, ``curve`` (at most
:data:`CURVE_POINTS` ``[step, mean loss]`` pairs, steps counted from the job's start), ``val`` (``[step, validation
loss]`` pairs) and ``parent``, the record whose end state it started from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrtune.tuner import fields as f
from lrtune.tuner.fields import Points
from lrtune.tuner.segment import Segment, stretch_lr

#: Binned loss points kept per segment.
CURVE_POINTS = 32
#: LR points a shaped (not constant) stretch is drawn with.
LR_POINTS = 24


@dataclass
class SegmentRecord:
    """A segment that ran, as the state keeps it (see the module docstring).

    Attributes:
        segment_id: The segment's id.
        phase: Its phase (``warmup``, ``explore``, ``train``, ``anneal``, ``schedule`` or ``offline``).
        stage: Its stage index, or None.
        candidate: Its candidate index within the stage, or None.
        start_step: Global step of its first step.
        steps: Steps it ran.
        planned_steps: Steps it was handed out with.
        shape: LR shape (see :mod:`lrtune.tuner.segment`).
        curve_from: LR at curve position 0.
        curve_to: LR at curve position 1.
        curve_start: Curve position at its first step.
        curve_end: Curve position after the last step it ran.
        curve_end_planned: Curve position after its last planned step.
        lr: LR at its first step.
        lr_end: LR at the last step it ran.
        rolled_back: The search discarded its steps (the worker restored a snapshot from before it).
        diverged: A loss was non-finite, or a candidate tripped the divergence guard.
        curve: At most :data:`CURVE_POINTS` ``[step, mean training loss]`` pairs (step after the bin, counted from
            the job's start; None for a bin with a non-finite loss).
        val: ``[step, validation loss]`` pairs (None for a non-finite one).
        parent: The segment whose end state it started from (None: the initial weights).
    """

    segment_id: int
    phase: str
    stage: int | None
    candidate: int | None
    start_step: int
    steps: int
    planned_steps: int
    shape: str
    curve_from: float
    curve_to: float
    curve_start: float
    curve_end: float
    curve_end_planned: float
    lr: float
    lr_end: float
    rolled_back: bool
    diverged: bool
    curve: Points
    val: Points
    parent: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (fresh lists: changing it changes nothing here)."""
        return {
            "segment_id": self.segment_id,
            "phase": self.phase,
            "stage": self.stage,
            "candidate": self.candidate,
            "start_step": self.start_step,
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "shape": self.shape,
            "curve_from": self.curve_from,
            "curve_to": self.curve_to,
            "curve_start": self.curve_start,
            "curve_end": self.curve_end,
            "curve_end_planned": self.curve_end_planned,
            "lr": self.lr,
            "lr_end": self.lr_end,
            "rolled_back": self.rolled_back,
            "diverged": self.diverged,
            "curve": f.points_json(self.curve),
            "val": f.points_json(self.val),
            "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentRecord:
        """Inverse of :meth:`to_dict`.

        Records written before lineage have no ``parent`` (read as None); before the planned geometry was kept,
        no ``planned_steps`` or ``curve_end_planned`` (read as ``steps`` and ``curve_end``).

        Raises:
            KeyError, TypeError: A field is missing or of the wrong type.
        """
        steps = f.integer(data, "steps")
        curve_end = f.number(data, "curve_end")
        return cls(
            segment_id=f.integer(data, "segment_id"),
            phase=f.text(data, "phase"),
            stage=f.opt_integer(data, "stage"),
            candidate=f.opt_integer(data, "candidate"),
            start_step=f.integer(data, "start_step"),
            steps=steps,
            planned_steps=f.opt_integer(data, "planned_steps", required=False) or steps,
            shape=f.text(data, "shape"),
            curve_from=f.number(data, "curve_from"),
            curve_to=f.number(data, "curve_to"),
            curve_start=f.number(data, "curve_start"),
            curve_end=curve_end,
            curve_end_planned=curve_end if "curve_end_planned" not in data else f.number(data, "curve_end_planned"),
            lr=f.number(data, "lr"),
            lr_end=f.number(data, "lr_end"),
            rolled_back=f.flag(data, "rolled_back"),
            diverged=f.flag(data, "diverged"),
            curve=f.points(data, "curve"),
            val=f.points(data, "val"),
            parent=f.opt_integer(data, "parent", required=False),
        )


def mean(values: list[float]) -> float | None:
    """Mean of ``values``, or None when there are none."""
    return sum(values) / len(values) if values else None


def lr_points(
    steps: int, start_step: int, shape: str, geometry: tuple[float, float, float, float], planned_steps: int
) -> list[list[float]]:
    """``[step, lr]`` points along a stretch of LR curve, for drawing it.

    Two points for a constant LR, else :data:`LR_POINTS` + 1 evenly spaced over its steps; the step of each is
    the job's, from the stretch's start to its end.

    Args:
        steps: Steps the stretch ran.
        start_step: Global step of its first step.
        shape: LR shape.
        geometry: ``(curve_from, curve_to, curve_start, curve_end)`` of the planned stretch.
        planned_steps: Steps the planned stretch covers.
    """
    n = steps
    if n <= 0:
        return []
    k = 1 if shape == "constant" else min(n, LR_POINTS)
    return [
        [start_step + n * i / k, stretch_lr(shape, *geometry, planned_steps, min(n * i / k, n - 1))]
        for i in range(k + 1)
    ]


def record_lr_points(rec: SegmentRecord) -> list[list[float]]:
    """:func:`lr_points` of a segment record."""
    geometry = (rec.curve_from, rec.curve_to, rec.curve_start, rec.curve_end_planned)
    return lr_points(rec.steps, rec.start_step, rec.shape, geometry, rec.planned_steps or rec.steps)


def segment_lr_points(seg: Segment) -> list[list[float]]:
    """:func:`lr_points` of a segment as handed out."""
    geometry = (seg.curve_from, seg.curve_to, seg.curve_start, seg.curve_end)
    return lr_points(seg.steps, seg.start_step, seg.shape, geometry, seg.steps)


def spread(values: list[float]) -> float:
    """Standard deviation of the finite values (0 with fewer than two)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _bin(values: list[float], offset: int, points: int) -> Points:
    """Downsample a per-step series to at most ``points`` (step, mean) pairs (step counted from 1)."""
    n = len(values)
    if n == 0:
        return ()
    edges = np.linspace(0, n, min(points, n) + 1).round().astype(int)
    out: list[tuple[float, float | None]] = []
    for a, b in itertools.pairwise(edges):
        chunk = [v for v in values[a:b] if math.isfinite(v)]
        out.append((float(offset + b), mean(chunk) if len(chunk) == b - a else None))
    return tuple(out)


def segment_record(seg: Segment, train: list[float], val: list[float] | None) -> SegmentRecord:
    """The record of segment ``seg`` that ran with losses ``train`` (and ``val``).

    Args:
        seg: The segment as handed out.
        train: Shape (steps run,). Training losses, NaN for a non-finite one.
        val: Validation losses when the segment asked for them, else None.
    """
    n = len(train)
    planned = seg.steps
    start = seg.start_step
    every = seg.eval_every
    span = seg.curve_end - seg.curve_start
    return SegmentRecord(
        segment_id=seg.segment_id,
        phase=seg.phase,
        stage=seg.stage,
        candidate=seg.candidate,
        start_step=start,
        steps=n,
        planned_steps=planned,
        shape=seg.shape,
        curve_from=seg.curve_from,
        curve_to=seg.curve_to,
        curve_start=seg.curve_start,
        curve_end=seg.curve_start + span * n / planned,
        curve_end_planned=seg.curve_end,
        lr=seg.lr,
        lr_end=seg.lr_at(n - 1),
        rolled_back=False,
        diverged=any(not math.isfinite(v) for v in train),
        curve=_bin(train, start, CURVE_POINTS),
        val=tuple((float(start + every * (i + 1)), _finite_or_none(v)) for i, v in enumerate(val or []))
        if every
        else (),
    )
