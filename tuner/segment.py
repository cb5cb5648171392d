"""Segments: the unit of work the tuner hands out, and the LR shapes within one.

A segment is a stretch of ``steps`` gradient steps. Before running it the worker

1. restores the snapshot named ``restore`` (if set),
2. frees the snapshots named in ``drop``,
3. saves its current state as ``snapshot`` (if set);

then runs the steps with the LR the segment prescribes, evaluates the validation loss every ``eval_every``
steps (if set), and finally saves its end state as ``keep`` (if set).

The LR follows a *curve* from ``curve_from`` (at curve position 0) to ``curve_to`` (at position 1); the
segment covers positions ``curve_start`` to ``curve_end`` of it, so one long cosine can be served as many
short segments. At step ``j`` (0-based) of ``n`` the position is ``p = curve_start + (curve_end -
curve_start) * j / n`` and the LR is ``curve_to + (curve_from - curve_to) * g(p)`` where ``g`` is the shape:
constant ``1``, linear ``1 - p``, cosine ``(1 + cos(pi p)) / 2``, rex ``(1 - p) / (1 - p / 2)``. The ``exp``
shape (the LR range sweep) rises or falls log-linearly instead: ``curve_from * (curve_to / curve_from) ** p``.

Every segment also carries ``then``: the rest of the budget's schedule as the tuner plans it when it hands the
segment out, as :class:`Piece` objects (the same curve geometry over global steps). A worker that loses the
service follows it, and reports the steps it ran that way (:class:`OfflinePiece`) once the service is back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Self

Phase = Literal["warmup", "explore", "train", "anneal", "schedule", "offline", "done"]
Shape = Literal["constant", "linear", "cosine", "rex", "exp"]
SHAPES: tuple[str, ...] = ("constant", "linear", "cosine", "rex", "exp")

#: Losses averaged when the divergence guard checks a series (see :func:`diverged`).
GUARD_WINDOW = 5
#: Most pieces one report of offline steps may hold (a plan has a dozen; a fallback one or a few).
MAX_OFFLINE_PIECES = 256


def shape_factor(shape: str, p: float) -> float:
    """Return the shape's factor ``g(p)`` in [0, 1] at curve position ``p`` in [0, 1] (not for ``exp``)."""
    p = min(max(p, 0.0), 1.0)
    if shape == "constant":
        return 1.0
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if shape == "rex":
        return (1.0 - p) / (1.0 - 0.5 * p)
    raise ValueError(f"unknown LR shape {shape!r}")


def curve_lr(shape: str, lr_from: float, lr_to: float, p: float) -> float:
    """Return the LR at position ``p`` in [0, 1] of a curve from ``lr_from`` to ``lr_to`` with that shape."""
    if shape == "exp":
        p = min(max(p, 0.0), 1.0)
        return lr_from * (lr_to / lr_from) ** p if lr_from > 0 and lr_to > 0 else lr_from
    return lr_to + (lr_from - lr_to) * shape_factor(shape, p)


def stretch_lr(shape: str, lr_from: float, lr_to: float, start: float, end: float, steps: int, j: float) -> float:
    """Return the LR of 0-based step ``j`` of a stretch of ``steps`` steps covering curve positions ``start``-``end``.

    The one formula behind segments, pieces, segment records and exported schedules.
    """
    return curve_lr(shape, lr_from, lr_to, start + (end - start) * j / max(steps, 1))


@dataclass(frozen=True)
class Piece:
    """A stretch of a planned LR curve over global steps ``[start_step, start_step + steps)``.

    Attributes:
        start_step: Global step (of the job) of the piece's first step.
        steps: Steps the piece covers.
        shape: LR shape, see the module docstring.
        curve_from: LR at curve position 0.
        curve_to: LR at curve position 1.
        curve_start: Curve position at the first step.
        curve_end: Curve position after the last step.
    """

    start_step: int
    steps: int
    shape: Shape = "constant"
    curve_from: float = 0.0
    curve_to: float = 0.0
    curve_start: float = 0.0
    curve_end: float = 1.0

    def lr_at(self, j: int) -> float:
        """Return the LR of 0-based step ``j`` of the piece."""
        return stretch_lr(self.shape, self.curve_from, self.curve_to, self.curve_start, self.curve_end, self.steps, j)

    @property
    def end_step(self) -> int:
        """Global step after the piece's last step."""
        return self.start_step + self.steps

    def tail(self, step: int) -> Piece:
        """The rest of the piece from global step ``step`` on (``start_step <= step < end_step``)."""
        j = step - self.start_step
        if j <= 0:
            return self
        span = self.curve_end - self.curve_start
        return dataclasses.replace(
            self, start_step=step, steps=self.steps - j, curve_start=self.curve_start + span * j / self.steps
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Piece:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class OfflinePiece(Piece):
    """Steps a worker ran on a :class:`Piece` while it could not reach the service.

    Attributes:
        ran: Steps of the piece that ran, from its first: ``1 <= ran <= steps``.
    """

    ran: int = 1


@dataclass(frozen=True)
class Segment:
    """One stretch of training the worker runs, then reports.

    Attributes:
        segment_id: Sequence number of the segment within its job (0, 1, 2, ...).
        phase: ``warmup``, ``explore`` (a candidate), ``train``, ``anneal``, ``schedule`` or ``done``.
        stage: Stage index for ``explore``/``train`` segments of the search, else None.
        candidate: Candidate index within the stage for ``explore`` segments, else None.
        start_step: Gradient steps the job had used before this segment.
        steps: Gradient steps to run (0 when ``done``).
        lr: LR at the segment's first step.
        lr_end: LR at the segment's last step.
        shape: LR shape, see the module docstring.
        curve_from: LR at curve position 0.
        curve_to: LR at curve position 1.
        curve_start: Curve position at the first step.
        curve_end: Curve position after the last step.
        restore: Snapshot to restore before running, or None.
        snapshot: Name to save the state under before running, or None.
        keep: Name to save the end state under, or None.
        drop: Snapshots the worker may free before running.
        eval_every: Validation cadence in steps, or None (no validation losses wanted).
        abort_above: The worker may stop early once the mean of the last ``GUARD_WINDOW`` losses exceeds
            this, or a loss is non-finite (None: only non-finite losses stop it early). ``to_dict`` adds the
            window as ``guard_window``.
        replay: Candidates of one stage should see the same batches (restart the stage's batch sequence).
        done: The budget is spent; nothing more to run.
        then: The planned continuation after this segment, up to the end of the budget (empty when ``done``).
    """

    segment_id: int
    phase: Phase
    start_step: int
    steps: int
    shape: Shape = "constant"
    curve_from: float = 0.0
    curve_to: float = 0.0
    curve_start: float = 0.0
    curve_end: float = 1.0
    stage: int | None = None
    candidate: int | None = None
    restore: str | None = None
    snapshot: str | None = None
    keep: str | None = None
    drop: tuple[str, ...] = field(default_factory=tuple)
    eval_every: int | None = None
    abort_above: float | None = None
    replay: bool = False
    done: bool = False
    then: tuple[Piece, ...] = field(default_factory=tuple)

    def lr_at(self, step: int) -> float:
        """Return the LR of 0-based step ``step`` of this segment."""
        f, t = self.curve_from, self.curve_to
        return stretch_lr(self.shape, f, t, self.curve_start, self.curve_end, self.steps, step)

    @property
    def lr(self) -> float:
        """LR at the first step."""
        return self.lr_at(0)

    @property
    def lr_end(self) -> float:
        """LR at the last step."""
        return self.lr_at(max(self.steps - 1, 0))

    @property
    def end_step(self) -> int:
        """Gradient steps the job will have used after this segment."""
        return self.start_step + self.steps

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict, ``lr`` and ``lr_end`` included for readers that do not compute them."""
        out = dataclasses.asdict(self)
        out["drop"] = list(self.drop)
        out["then"] = [p.to_dict() for p in self.then]
        out["lr"] = self.lr
        out["lr_end"] = self.lr_end
        out.setdefault("guard_window", GUARD_WINDOW)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict` (derived keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["drop"] = tuple(kwargs.get("drop", ()))
        kwargs["then"] = tuple(Piece.from_dict(p) for p in kwargs.get("then", ()))
        return cls(**kwargs)


def constant(segment_id: int, phase: Phase, start_step: int, steps: int, lr: float, **kw: Any) -> Segment:
    """Build a constant-LR segment."""
    return Segment(segment_id, phase, start_step, steps, "constant", lr, lr, 0.0, 1.0, **kw)


def diverged(losses: list[float], abort_above: float | None) -> bool:
    """Tell whether a loss series tripped the divergence guard.

    Args:
        losses: Per-step losses of one segment.
        abort_above: Threshold on the mean of the last ``GUARD_WINDOW`` losses, or None.

    Returns:
        True when a loss is non-finite, or the recent mean exceeds the threshold.
    """
    if any(not math.isfinite(v) for v in losses):
        return True
    if abort_above is None or not losses:
        return False
    tail = losses[-GUARD_WINDOW:]
    return sum(tail) / len(tail) > abort_above
