"""What the callback runs while no segment is open, and the record of it it reports once the service is back.

While it cannot reach the service the callback follows a *course*: the continuation the last segment it ran
carries (``then``: the rest of the budget as the service planned it), or, when it has none (the service never
answered, or the job is new), the fallback of :mod:`lrtune.client.fallback`. Every offline step is logged with the
piece of the course it ran on and its loss (kept on its device: no sync per step). When a segment arrives, the
steps the job has not counted yet are reported instead of running it (see :mod:`lrtune.tuner.outage`), as
``OfflinePiece`` objects in the job's step numbering, so the job's schedule and export hold the LR every
optimizer step really used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lrtune.client.fallback import FallbackSpec, fallback_piece
from lrtune.tuner.segment import MAX_OFFLINE_PIECES, OfflinePiece, Piece

Loss = torch.Tensor | float


@dataclass
class Course:
    """LRs for global steps while no segment is open.

    Attributes:
        pieces: Planned pieces in global step numbering, in order (from a segment's ``then``), or empty.
        fallback: What to use past them or without them.
        anchor_lr: The last good LR (``hold`` holds it, ``cosine`` starts there).
        anchor_step: Global step the course starts at (the cosine's start).
        total_steps: The step budget (the cosine's end).
        min_lr: Where the cosine ends.
    """

    pieces: list[Piece]
    fallback: FallbackSpec
    anchor_lr: float
    anchor_step: int
    total_steps: int
    min_lr: float
    _at: int = 0

    def piece(self, step: int) -> Piece:
        """The piece global step ``step`` runs on (a one-step constant piece for a callable fallback)."""
        while self._at < len(self.pieces) and self.pieces[self._at].end_step <= step:
            self._at += 1
        if self._at < len(self.pieces) and self.pieces[self._at].start_step <= step:
            return self.pieces[self._at]
        if self.pieces and self.pieces[-1].end_step <= step:  # past the plan (never, normally): hold where it ended
            last = self.pieces[-1]
            lr = last.lr_at(last.steps - 1)
            return Piece(last.end_step, max(self.total_steps - last.end_step, 1), "constant", lr, lr)
        return fallback_piece(self.fallback, step, self.anchor_lr, self.anchor_step, self.min_lr, self.total_steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (a callable fallback is not stored: the resumed callback's own is used)."""
        return {
            "pieces": [p.to_dict() for p in self.pieces],
            "anchor_lr": self.anchor_lr,
            "anchor_step": self.anchor_step,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], fallback: FallbackSpec, total_steps: int, min_lr: float) -> Course:
        """Inverse of :meth:`to_dict`, with the resumed callback's fallback and budget."""
        pieces = [Piece.from_dict(p) for p in data["pieces"]]
        return cls(pieces, fallback, float(data["anchor_lr"]), int(data["anchor_step"]), total_steps, min_lr)


@dataclass
class _Entry:
    piece: Piece  # in global step numbering
    start: int  # global step of the first step logged on it
    ran: int
    grows: bool  # a run of one constant LR (the piece's length is what ran)


@dataclass
class OfflineLog:
    """The steps run while no segment was open that the job has not counted yet: pieces and losses."""

    entries: list[_Entry] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    held: bool = False  # too many pieces: the last one is held

    @property
    def start(self) -> int | None:
        """Global step of the first logged step, or None when empty."""
        return self.entries[0].start if self.entries else None

    @property
    def end(self) -> int | None:
        """Global step after the last logged step, or None when empty."""
        return self.entries[-1].start + self.entries[-1].ran if self.entries else None

    def next_piece(self, course: Course, step: int) -> Piece:
        """The piece global step ``step`` will run on.

        A callable fallback's LR changes are followed for as many pieces as one report takes; past that its last
        LR is held (``held``), so that the report still says exactly what ran.
        """
        piece = course.piece(step)
        last = self.entries[-1] if self.entries else None
        full = len(self.entries) >= MAX_OFFLINE_PIECES
        if full and last is not None and last.grows and last.start + last.ran == step and not _same(last, piece):
            self.held = True
            lr = last.piece.curve_from
            return Piece(step, 1, "constant", lr, lr)
        return piece

    def add(self, piece: Piece, step: int, loss: Loss) -> None:
        """Log that global step ``step`` ran on ``piece`` with loss ``loss``."""
        last = self.entries[-1] if self.entries else None
        if last is not None and last.start + last.ran == step and _same(last, piece):
            last.ran += 1
            if last.grows:
                last.piece = dataclasses.replace(last.piece, steps=last.ran)
        else:
            grows = piece.shape == "constant" and piece.steps == 1
            self.entries.append(_Entry(piece, step, 1, grows))
        self.losses.append(loss)

    def take(self, start: int, base: int) -> tuple[list[OfflinePiece], list[Loss]]:
        """The pieces and losses of the logged steps from global step ``start`` on, in the job's numbering.

        Args:
            start: Global step the job has counted up to.
            base: Global step of the job's step 0.
        """
        out: list[OfflinePiece] = []
        first = self.start
        if first is None:
            return [], []
        for e in self.entries:
            if e.start + e.ran <= start:
                continue
            skip = max(start - e.start, 0)
            at = e.start + skip  # global step of the first step reported on this entry
            piece = e.piece.tail(at) if at > e.piece.start_step else e.piece
            ran = e.ran - skip
            job = dataclasses.replace(piece, start_step=piece.start_step - base)
            out.append(OfflinePiece(**{**job.to_dict(), "ran": ran}))
        return out, self.losses[max(start - first, 0) :]

    def clear(self) -> None:
        """Forget everything (the job has counted it all, or the log belongs to a job that is gone)."""
        self.entries, self.losses, self.held = [], [], False

    def to_dict(self, losses: Sequence[float]) -> dict[str, Any]:
        """JSON-safe form, with the losses synced to ``losses``."""
        return {
            "entries": [
                {"piece": e.piece.to_dict(), "start": e.start, "ran": e.ran, "grows": e.grows} for e in self.entries
            ],
            "losses": [v if math.isfinite(v) else None for v in losses],
            "held": self.held,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OfflineLog:
        """Inverse of :meth:`to_dict`."""
        entries = [
            _Entry(Piece.from_dict(e["piece"]), int(e["start"]), int(e["ran"]), bool(e["grows"]))
            for e in data["entries"]
        ]
        losses: list[Loss] = [math.nan if v is None else float(v) for v in data["losses"]]
        return cls(entries, losses, bool(data["held"]))


def _same(entry: _Entry, piece: Piece) -> bool:
    """Whether ``piece`` continues ``entry``: the same planned piece, or the same constant LR in a run."""
    if entry.grows:
        return piece.shape == "constant" and piece.steps == 1 and piece.curve_from == entry.piece.curve_from
    return piece == entry.piece
