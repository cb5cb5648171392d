"""Views of a job: the figures a listing shows, the realized schedule, its export and the GP posterior of a stage.

Pure reads of the state: a view never changes what the tuner does next.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lrtune.tuner.forecast import Z90
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.records import SegmentRecord, record_lr_points, segment_lr_points
from lrtune.tuner.search import from_unit
from lrtune.tuner.stagestate import Stage
from lrtune.tuner.state import Sweep


class Views(TunerParts):
    """``summary``, ``schedule``, ``export`` and ``posterior`` of :class:`lrtune.tuner.stages.Tuner`."""

    def summary(self) -> dict[str, Any]:
        """Return the few figures a job listing shows.

        Returns:
            ``steps_used``, ``total_steps``, ``phase`` and ``lr`` (of the open segment), ``stage``,
            ``explore_share``, ``last_loss`` (mean of the last reported segment's final losses, or None) and
            ``done``.
        """
        s = self._s
        seg = s.open
        last = None
        for rec in reversed(s.segments):
            points = [p[1] for p in rec.curve if p[1] is not None]
            if points:
                last = points[-1]
                break
        return {
            "steps_used": s.step,
            "total_steps": self.settings.total_steps,
            "phase": seg.phase,
            "lr": None if seg.done else seg.lr,
            "stage": seg.stage,
            "explore_share": s.explore_steps / self.settings.total_steps,
            "last_loss": last,
            "done": bool(seg.done),
        }

    def schedule(self) -> dict[str, Any]:
        """Return the realized schedule: segments, stages with their candidates, and the search share."""
        s = self._s
        total = self.settings.total_steps
        return {
            "total_steps": total,
            "steps_used": s.step,
            "explore_steps": s.explore_steps,
            "wasted_steps": s.wasted_steps,
            "explore_share": s.explore_steps / total,
            "wasted_share": s.wasted_steps / total,
            "winner_lr": s.winner_lr,
            "done": self.done,
            "open": {**s.open.to_dict(), "lr_points": segment_lr_points(s.open)},
            "segments": [{**r.to_dict(), "lr_points": record_lr_points(r)} for r in s.segments],
            "stages": [_stage_summary(st) for st in s.stages],
            "sweep": _sweep_summary(s.sweep),
            "planner": self.settings.planner,
            "plan": self._plan_view() if self.settings.planner else None,
        }

    def export(self) -> dict[str, Any]:
        """Return the realized LR trajectory of the final model, to replay without the service.

        The segments on the line of the weights the worker holds now (followed back through the snapshots each
        segment started from), so rolled-back branches are left out and step 0 of the export is the first step the
        final weights saw. See :func:`lrtune.tuner.schedules.export_lr` for evaluating it.
        """
        pieces: list[dict[str, Any]] = []
        at = 0
        for rec in self._line_records():
            if rec.steps == 0:
                continue
            pieces.append(
                {
                    "start": at,
                    "steps": rec.steps,
                    "shape": rec.shape,
                    "curve_from": rec.curve_from,
                    "curve_to": rec.curve_to,
                    "curve_start": rec.curve_start,
                    "curve_end": rec.curve_end_planned,
                    "planned_steps": rec.planned_steps,
                }
            )
            at += rec.steps
        base_lr = max([max(p["curve_from"], p["curve_to"]) for p in pieces], default=self.settings.max_lr)
        return {"format": "lrtune.schedule/v1", "base_lr": base_lr, "steps": at, "pieces": pieces}

    def stage_outcome(self, stage: int) -> dict[str, Any]:
        """What a stage decided, cheaply (no copies, no model): for the service's log line.

        Returns:
            ``winner_lr`` (None when the stage has none), ``step`` (steps used), and ``plan``: None, or the plan in
            force as ``start``, ``end``, ``lr_start``, ``lr_end`` and ``final_loss``.
        """
        s = self._s
        stages = s.stages
        winner = stages[stage].winner_lr if 0 <= stage < len(stages) else None
        plan: dict[str, Any] | None = None
        p = None if s.online is None else s.online.plan
        if p is not None:
            last = max(p.end - 1, p.start)
            plan = {
                "start": p.start,
                "end": p.end,
                "lr_start": p.lr_at(p.start),
                "lr_end": p.lr_at(last),
                "final_loss": p.final_loss,
            }
        return {"winner_lr": winner, "step": s.step, "plan": plan}

    def _line_records(self) -> list[SegmentRecord]:
        """The records from the initial weights to the state the worker holds, first first."""
        s = self._s
        by_id = {r.segment_id: r for r in s.segments}
        chain: list[SegmentRecord] = []
        sid = s.line
        while sid is not None and sid in by_id:
            chain.append(by_id[sid])
            sid = by_id[sid].parent
        return chain[::-1]

    def posterior(self, stage: int | None = None, points: int = 64) -> dict[str, Any] | None:
        """Return the GP posterior over log10-LR for a stage (default: the latest with observations).

        Returns:
            None without observations, else ``stage``; ``lr``, ``mean``, ``std``, ``lo90`` and ``hi90`` (lists of
            length ``points``; the band is kept at or above the loss floor); ``quantity`` (what the GP was fitted
            on: ``"predicted final loss"``, ``"loss after cooldown probe"`` or ``"forecast at tau"``) and
            ``observed`` (the stage's fitted points as ``[lr, value, lo90, hi90]``, diverged ones left out).
        """
        stages = self._s.stages
        if stage is None:
            stage = next((st.index for st in reversed(stages) if st.candidates), None)
        if stage is None or not 0 <= stage < len(stages):
            return None
        obs = self._observations(stages[stage])
        if not obs:
            return None
        xs = np.linspace(0.0, 1.0, points)
        mean, std = self._surrogate(obs).predict(xs)
        st = self.settings
        floor = st.loss_floor
        scores, probed = self._scores(stages[stage])
        if stages[stage].kind == "plan":
            quantity = "predicted final loss"
        else:
            quantity = "loss after cooldown probe" if probed else "forecast at tau"

        def band(m: float, sd: float) -> tuple[float, float]:
            lo, hi = m - Z90 * sd, m + Z90 * sd
            return (lo if floor is None else max(lo, floor)), hi

        bands = [band(float(m), float(sd)) for m, sd in zip(mean, std, strict=True)]
        observed = []
        for c in stages[stage].candidates:
            if c.index in scores:
                value, var = scores[c.index]
                lo, hi = band(value, math.sqrt(max(var, 0.0)))
                observed.append([c.lr, value, lo, hi])
        return {
            "stage": stage,
            "lr": [from_unit(float(x), st.min_lr, st.max_lr) for x in xs],
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "lo90": [b[0] for b in bands],
            "hi90": [b[1] for b in bands],
            "quantity": quantity,
            "observed": observed,
        }


def _sweep_summary(sweep: Sweep | None) -> dict[str, Any] | None:
    """The LR range sweep as the schedule shows it: its segment, steps and suggested LR."""
    if sweep is None:
        return None
    return {"segment_id": sweep.segment_id, "steps": sweep.steps_run, "lr": sweep.lr}


def _stage_summary(stage: Stage) -> dict[str, Any]:
    cands = []
    for c in stage.candidates:
        band = None
        if c.forecast is not None and c.std is not None:
            band = [c.forecast - Z90 * c.std, c.forecast + Z90 * c.std]
        cands.append(
            {
                "index": c.index,
                "lr": c.lr,
                "segment_id": c.segment_id,
                "steps": c.steps_run,
                "forecast": c.forecast,
                "std": c.std,
                "band90": band,
                "diverged": c.diverged,
                "winner": c.index == stage.winner,
                "first_loss": c.first_loss,
                "last_loss": c.last_loss,
                "observed": [list(p) for p in c.curve],
                "probe_loss": c.probe_loss,
                "barred": c.barred,
            }
        )
    return {
        "index": stage.index,
        "kind": stage.kind,
        "tau": stage.tau,
        "cand_steps": stage.cand_steps,
        "objective": stage.objective,
        "start_step": stage.start_step,
        "warm": stage.warm,
        "search_range": [stage.lo, stage.hi],
        "status": stage.status,
        "winner": stage.winner,
        "winner_lr": stage.winner_lr,
        "candidates": cands,
    }
