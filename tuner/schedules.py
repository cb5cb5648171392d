"""Standard LR schedules, served through the same segments as the search, and replay of exported schedules.

Strategies (after an optional linear warmup to ``max_lr``):

* ``constant``: ``max_lr`` throughout;
* ``cosine``, ``linear``, ``rex``: from ``max_lr`` down to ``min_lr`` with that shape;
* ``wsd`` (warmup-stable-decay): ``max_lr``, then a linear decay to ``min_lr`` over the last
  ``wsd_decay_fraction`` of the steps after warmup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrtune.tuner.config import Settings
from lrtune.tuner.segment import Phase, Piece, Segment, stretch_lr


@dataclass(frozen=True)
class Curve:
    """One LR curve over global steps ``[start, end)``.

    Attributes:
        shape: LR shape (see :mod:`lrtune.tuner.segment`).
        lr_from: LR at the curve's first step.
        lr_to: LR the curve tends to at its end.
        start: First global step of the curve.
        end: Global step after its last step.
    """

    shape: str
    lr_from: float
    lr_to: float
    start: int
    end: int


def piece(
    segment_id: int,
    phase: Phase,
    step: int,
    steps: int,
    shape: str,
    lr_from: float,
    lr_to: float,
    curve_start: int,
    curve_end: int,
    **kw: Any,
) -> Segment:
    """Build the segment covering global steps ``[step, step + steps)`` of a curve over ``[curve_start, curve_end)``."""
    p = curve_piece(step, steps, shape, lr_from, lr_to, curve_start, curve_end)
    return Segment(segment_id, phase, step, steps, p.shape, lr_from, lr_to, p.curve_start, p.curve_end, **kw)


def curve_piece(
    step: int, steps: int, shape: str, lr_from: float, lr_to: float, curve_start: int, curve_end: int
) -> Piece:
    """The piece covering global steps ``[step, step + steps)`` of a curve over ``[curve_start, curve_end)``."""
    span = max(curve_end - curve_start, 1)
    return Piece(
        step,
        steps,
        shape,  # type: ignore[arg-type]
        lr_from,
        lr_to,
        (step - curve_start) / span,
        (step + steps - curve_start) / span,
    )


def curve_at(settings: Settings, step: int) -> Curve:
    """Return the curve of a standard strategy that holds global step ``step`` (at or after warmup)."""
    st = settings
    start, end = st.warmup_steps, st.total_steps
    peak, final = st.max_lr, st.min_lr
    if st.strategy == "constant":
        return Curve("constant", peak, peak, start, end)
    if st.strategy in ("cosine", "linear", "rex"):
        return Curve(st.strategy, peak, final, start, end)
    if st.strategy == "wsd":
        decay = max(1, round(st.wsd_decay_fraction * (end - start)))
        knee = end - decay
        if step < knee:
            return Curve("constant", peak, peak, start, knee)
        return Curve("linear", peak, final, knee, end)
    raise ValueError(f"{st.strategy!r} is not a standard schedule")


def export_lr(export: dict[str, Any], step: int) -> float:
    """LR at ``step`` of a schedule from :meth:`lrtune.tuner.Tuner.export` (the last piece's end LR past its end)."""
    pieces = export["pieces"]
    if not pieces:
        return float(export["base_lr"])
    for p in pieces:
        if step < p["start"] + p["steps"]:
            return _piece_lr(p, max(step - p["start"], 0))
    last = pieces[-1]
    return _piece_lr(last, last["steps"] - 1)


def _piece_lr(p: dict[str, Any], j: int) -> float:
    lr = stretch_lr(p["shape"], p["curve_from"], p["curve_to"], p["curve_start"], p["curve_end"], p["planned_steps"], j)
    return float(lr)
