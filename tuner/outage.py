"""Outages: the continuation every segment carries, and the steps a worker ran while it could not reach the service.

A worker that loses the service keeps training. So that it follows the plan rather than a constant, every segment
carries ``then``: the rest of the budget's schedule as the tuner sees it when it hands the segment out
(:meth:`Outages._continuation`). Once the service is back the worker does not run the segment it is handed (that
segment was planned for the state before the outage); it reports the steps it ran instead, as
:class:`lrtune.tuner.segment.OfflinePiece` objects with their losses (:meth:`Outages._skip`). The tuner then

* records them as ``offline`` segment records on the line the worker holds, so the budget, the schedule, the
  export and the loss model all count them;
* decides what the segment it handed out becomes: a candidate (or the LR range sweep) is handed out again from
  the snapshot it restores, a cooldown probe is dropped (its candidate's end state is gone: it would be scored on
  weights it did not plan for), and anything else is planned afresh from the new step, keeping the snapshot it
  was to restore and the ones it was to free;
* marks the offline steps rolled back when that next segment restores a snapshot (they ran on a branch that is
  discarded), so the search's rolled-back share counts them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from lrtune.tuner import schedules
from lrtune.tuner.errors import InvalidReportError
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.planner import Plan
from lrtune.tuner.records import SegmentRecord, segment_record
from lrtune.tuner.segment import MAX_OFFLINE_PIECES, SHAPES, OfflinePiece, Piece, Segment

#: Share of the budget a continuation decays over when the job has no plan and no anneal of its own yet.
_DEFAULT_DECAY = 0.2


def parse_offline(items: Sequence[Any]) -> list[OfflinePiece]:
    """Read offline pieces from dicts (or pieces); raise :class:`InvalidReportError` on a malformed one."""
    if not 1 <= len(items) <= MAX_OFFLINE_PIECES:
        raise InvalidReportError(f"a report of offline steps holds 1 to {MAX_OFFLINE_PIECES} pieces, got {len(items)}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, OfflinePiece):
            piece = item
        else:
            try:
                piece = OfflinePiece(**{k: item[k] for k in item if k in _OFFLINE_FIELDS})
            except (TypeError, KeyError) as exc:
                raise InvalidReportError(f"offline piece {i} is malformed: {exc}") from exc
        problem = _piece_problem(piece)
        if problem:
            raise InvalidReportError(f"offline piece {i}: {problem}")
        out.append(piece)
    return out


_OFFLINE_FIELDS = {f.name for f in dataclasses.fields(OfflinePiece)}


def _piece_problem(p: OfflinePiece) -> str | None:
    if p.shape not in SHAPES:
        return f"unknown shape {p.shape!r}"
    values = (p.curve_from, p.curve_to, p.curve_start, p.curve_end)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return "curve values must be finite numbers"
    if p.curve_from < 0 or p.curve_to < 0:
        return "LRs must not be negative"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (p.start_step, p.steps, p.ran)):
        return "start_step, steps and ran must be integers"
    if not 1 <= p.ran <= p.steps:
        return f"ran must be between 1 and steps ({p.steps}), got {p.ran}"
    return None


def plan_pieces(plan: Plan, step: int) -> list[Piece]:
    """The plan from global step ``step`` on as pieces, LR for LR what :meth:`Plan.lr_at` gives."""
    n = len(plan.knots)
    if n == 1 or plan.steps <= 0:
        return [Piece(step, max(plan.end - step, 0), "constant", plan.knots[0], plan.knots[0])]
    span = plan.steps / (n - 1)
    out: list[Piece] = []
    for i in range(n - 1):
        a = plan.start + i * span
        lo = math.ceil(a)
        hi = plan.end if i == n - 2 else math.ceil(plan.start + (i + 1) * span)
        if hi <= lo:
            continue
        piece = Piece(lo, hi - lo, "exp", plan.knots[i], plan.knots[i + 1], (lo - a) / span, (hi - a) / span)
        if piece.end_step > step:
            out.append(piece.tail(step))
    return out


class Outages(TunerParts):
    """The continuation and the offline-step reports, mixed into :class:`lrtune.tuner.stages.Tuner`."""

    # ------------------------------------------------------------------ the continuation

    def _continuation(self, seg: Segment) -> tuple[Piece, ...]:
        """The rest of the budget after ``seg`` as the tuner plans it now (no more exploration assumed)."""
        st = self.settings
        total = st.total_steps
        step = seg.end_step
        if seg.done or step >= total:
            return ()
        out: list[Piece] = []
        w0 = self._warm_start()
        w_end = w0 + st.warmup_steps
        if step < w_end:
            lr = self._start_lr()
            out.append(schedules.curve_piece(step, w_end - step, "linear", lr / st.warmup_steps, lr, w0, w_end))
            step = w_end
        if step >= total:
            return tuple(out)
        if st.strategy != "autolrs":
            while step < total:
                c = schedules.curve_at(st, step)
                end = min(c.end, total)
                out.append(schedules.curve_piece(step, end - step, c.shape, c.lr_from, c.lr_to, c.start, c.end))
                step = end
            return tuple(out)
        if st.planner:
            plan = None if self._s.online is None else self._s.online.plan
            if plan is not None and plan.start <= step and plan.end == total:
                return (*out, *plan_pieces(plan, step))
            lr = self._planned_lr(step)
            decay = st.anneal_steps or round(_DEFAULT_DECAY * total)
        else:
            lr = self._s.anneal_lr or self._s.winner_lr or self._start_lr()
            decay = st.anneal_steps
        main_end = max(total - decay, 0)
        if step < main_end:
            out.append(Piece(step, main_end - step, "constant", lr, lr))
            step = main_end
        if step < total:
            out.append(schedules.curve_piece(step, total - step, "linear", lr, 0.0, main_end, total))
        return tuple(out)

    # ------------------------------------------------------------------ offline steps

    def _skip(self, seg: Segment, pieces: list[OfflinePiece], losses: list[float]) -> Segment:
        """Record the offline steps run instead of the open segment ``seg``; return what comes next."""
        s = self._s
        st = self.settings
        step = s.step
        n = sum(p.ran for p in pieces)
        if pieces[0].start_step != step:
            raise InvalidReportError(
                f"the offline steps start at step {pieces[0].start_step}, but the job has used {step} steps"
            )
        for a, b in zip(pieces, pieces[1:], strict=False):
            if b.start_step != a.start_step + a.ran:
                raise InvalidReportError(
                    f"offline pieces must follow each other: one starts at step {b.start_step}, the one before it "
                    f"ended at step {a.start_step + a.ran}"
                )
        if step + n > st.total_steps:
            raise InvalidReportError(
                f"the report has {n} offline steps, but only {st.total_steps - step} of the budget are left"
            )
        if len(losses) != n:
            raise InvalidReportError(f"the report has {n} offline steps but {len(losses)} losses")
        chain = self._record_offline(pieces, losses)
        nxt = self._after_skip(seg)
        if nxt.restore is not None and not nxt.done:
            for rec in chain:  # on a branch the next segment leaves
                rec.rolled_back = True
                s.wasted_steps += rec.steps
        return nxt

    def _record_offline(self, pieces: list[OfflinePiece], losses: list[float]) -> list[SegmentRecord]:
        s = self._s
        chain = []
        at = 0
        for p in pieces:
            part = losses[at : at + p.ran]
            at += p.ran
            sid = self._new_id()
            planned = Segment(
                sid, "offline", p.start_step, p.steps, p.shape, p.curve_from, p.curve_to, p.curve_start, p.curve_end
            )
            rec = segment_record(planned, part, None)
            rec.parent = s.line
            s.line = sid
            s.segments.append(rec)
            s.step += p.ran
            self._remember(part)
            chain.append(rec)
        return chain

    def _after_skip(self, seg: Segment) -> Segment:
        """The segment that replaces ``seg``, which was handed out but not run."""
        s = self._s
        st = self.settings
        step = s.step
        sid = seg.segment_id
        sweep = s.sweep
        stage = cand = None
        if seg.phase == "explore" and seg.stage is not None and seg.candidate is not None:
            stage = s.stages[seg.stage]
            cand = stage.candidates[seg.candidate]
        probe = cand.probe if cand is not None else None
        if probe is not None and probe.segment_id == sid:
            probe.lost = True  # its candidate's end state now has offline steps on it
            return self._plan()
        is_cand = cand is not None and cand.segment_id == sid
        if is_cand or (sweep is not None and sweep.segment_id == sid):
            left = st.total_steps - step
            if left < 1:
                return self._plan()
            new = self._new_id()
            if cand is not None and stage is not None:
                cand.segment_id = new
                if seg.candidate == 0:
                    stage.start_step = step
            elif sweep is not None:
                sweep.segment_id = new
            return dataclasses.replace(seg, segment_id=new, start_step=step, steps=min(seg.steps, left))
        nxt = self._plan()
        if nxt.done:
            return nxt
        drop = tuple(dict.fromkeys((*seg.drop, *nxt.drop)))
        return dataclasses.replace(nxt, restore=seg.restore or nxt.restore, drop=drop)
