"""Online re-planning (the ``plan`` preset): fit the loss model, plan the whole budget, search where it pays.

A job's life::

    LR range sweep ─► warmup ─► train at the sweep's LR ─► search ─► follow the plan, re-planned every segment
                                                              ▲                   │
                                                              └── when it pays ───┘

* Every reported segment is data for the schedule-aware loss model (:mod:`lrtune.tuner.lossmodel`): the sweep, the
  candidates, their cooldown probes and the kept line, each with its exact LR trajectory; rolled-back branches
  share their parent's prefix (:mod:`lrtune.tuner.modelruns`).
* After every training segment the model is refitted and the planner (:mod:`lrtune.tuner.planner`) chooses the rest of
  the schedule to minimise the predicted final loss. The next segment follows that plan: model-predictive
  control, so a long run keeps adapting.
* At a decision point the job *searches* (:mod:`lrtune.tuner.onlinestages`): from one snapshot, the plan's LR (the
  incumbent) and two other candidates each run a few steps on the same batches; a cooldown probe after the
  incumbent shows the loss drop that a decay buys. The model, refitted on them, predicts each candidate's final loss
  under its own best plan, and the job continues from the best one; the others are rolled back. Candidates after
  the first are chosen where the model's lower confidence bound on that final loss is lowest. A search happens only
  when it pays: while the plan's predicted final loss is more uncertain than the loss its steps would cost (the
  model's prediction with that many fewer steps), and the exploration cap leaves room for it
  (:mod:`lrtune.tuner.replan`).

This module keeps the planner's state (:class:`lrtune.tuner.state.OnlineState`: the plan in force, the next decision
point, the stability bounds, the last fits' parameters), fits the model and plans; everything here is a pure
function of the tuner's state.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner import lossmodel, spectral
from lrtune.tuner.fields import Unset
from lrtune.tuner.lossmodel import Fit
from lrtune.tuner.modelruns import RecordMemo, fit_model, path_lrs, record_lrs, runs_of
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.planner import Plan
from lrtune.tuner.records import SegmentRecord, mean
from lrtune.tuner.replan import (
    RIVAL_BETA,
    RIVAL_TOL,
    AnyFit,
    AnyHistory,
    Knobs,
    best_plan,
    exploration_pays,
    follow,
    predict,
    predict_std,
    propose,
)
from lrtune.tuner.spectral import ModeHistory, RowCache, SpectralFit, SpectralParams
from lrtune.tuner.state import ModelFit, OnlineState

__all__ = [
    "RIVAL_BETA",
    "RIVAL_TOL",
    "Knobs",
    "OnlinePlanning",
    "RecordMemo",
    "best_plan",
    "exploration_pays",
    "fit_model",
    "path_lrs",
    "peak_lr",
    "propose",
    "record_lrs",
    "runs_of",
]

_EDGE = 3.0  # candidates go no higher than the LR where the sweep's loss bottomed out, divided by this
#: The spectral model's plans go up to this fraction of the LR where the sweep's loss bottomed out: that LR is close
#: to the stability edge, which the model's grid of curvatures places only to within a factor of 1.5.
SPECTRAL_CAP = 0.75
#: The spectral model's plans go at most this factor above the highest LR the kept line ran at as predicted.
TRUST_GROWTH = 2.0
#: A training segment above the trusted LR that ends this factor worse than the model predicted marks the LR it
#: reached as beyond the model's reach: the cap falls back (a quadratic model knows nothing of a network's
#: instabilities short of divergence). A young model misses by tens of percent, so only a large miss counts.
SURPRISE = 1.5
#: With ``verify_fall``: before the tail, plans go at most this factor below the lowest LR the kept line has fallen
#: to as the model predicted (with ``lift_floor``, the LR of a trusted rise above it, once there is one). Wider than
#: ``TRUST_GROWTH``: a noisy quadratic's best schedule falls tenfold and more early in its budget, one checked
#: segment per step down (with 2 the steep landscape's 20k-step job ended at 1.265x its optimum, with 4 at 1.240x as
#: without the check).
FALL_GROWTH = 4.0
#: A fall is as the model predicted where the loss dropped by at least this share of the drop the model predicted.
FALL_SHARE = 0.5


def peak_lr(rec: SegmentRecord) -> float:
    """The highest LR a segment's curve reaches (its LR moves monotonically from ``curve_from`` to ``curve_to``)."""
    return max(float(rec.curve_from), float(rec.curve_to))


class OnlinePlanning(TunerParts):
    """The ``plan`` preset's model and plan, mixed into :class:`lrtune.tuner.stages.Tuner`.

    It reads and writes the planner's state (``online``); the searches are stage records in the same form the other
    presets use (see :mod:`lrtune.tuner.onlinestages`), so the schedule, the CLI and the dashboard show them alike.
    """

    _model_memo: tuple[int, AnyFit | None] | None
    _record_memo: RecordMemo | None  # per-record values the model derives (never in the state)
    _rival_memo: tuple[int, Fit | None] | None = None  # the rival fit, per number of reports (never in the state)

    # ------------------------------------------------------------------ state

    def _knobs(self) -> Knobs:
        st = self.settings
        return Knobs(
            st.model_window,
            st.plan_pieces,
            st.replan,
            st.later_searches,
            st.plan_shape == "free",
            st.tied_kernel,
            RIVAL_BETA if st.robust_plan and not st.tied_kernel else None,
            round(st.decay_tail * st.total_steps),
            self._tail_anchor(),
            self._floor(),
        )

    def _floor(self) -> float | None:
        """With ``verify_fall``: the lowest LR a plan may take before its tail (None: no floor)."""
        o = self._s.online
        return None if o is None or isinstance(o.floor, Unset) else float(o.floor)

    def _tail_anchor(self) -> tuple[int, float] | None:
        """Where the line the plan's end stays under starts, once the job has passed it (the plan in force's)."""
        o = self._s.online
        plan = None if o is None else o.plan
        if plan is None or plan.anchor is None or plan.anchor[0] > self._s.step:
            return None
        return plan.anchor

    @property
    def _spectral(self) -> bool:
        """The job plans with the spectral loss model (:mod:`lrtune.tuner.spectral`)."""
        return self.settings.loss_model == "spectral"

    def _bounds(self) -> tuple[float, float]:
        """The stability cap and the candidates' edge from the LR range sweep, or the prior LR (else ``max_lr``)."""
        st = self.settings
        suggested = self._suggested_lr()
        if suggested is None:
            return st.max_lr, st.max_lr
        # The LR where the sweep's loss bottomed out (``sweep_divisor`` times its suggestion; a prior LR stands in
        # for the suggestion).
        bottom = min(st.max_lr, max(st.min_lr, suggested * st.sweep_divisor))
        if self._spectral:
            # The model knows the stability edge from the sweep's blow-up; the cap keeps a margin below it.
            return max(st.min_lr, SPECTRAL_CAP * bottom), bottom
        # Plan a safe factor below the bottom; candidates may go up to that LR itself, where the divergence guard
        # watches them.
        edge = min(bottom, max(st.min_lr, bottom / _EDGE))
        return min(edge, max(st.min_lr, bottom / 3.0)), edge

    def _online(self) -> OnlineState:
        """The planner's state, created on first use (after the sweep and the warmup)."""
        o = self._s.online
        if o is None:
            st = self.settings
            cap, edge = self._bounds()
            o = self._s.online = OnlineState(None, cap, edge, self._s.step + st.tau, st.tau)
        return o

    def _memo(self) -> RecordMemo:
        memo = self._record_memo
        if memo is None:
            memo = self._record_memo = RecordMemo()
        return memo

    def _grid(self) -> NDArray[np.float64]:
        """The spectral model's curvatures: fixed for the job by its initial stability cap and its budget."""
        return spectral.curvature_grid(self._bounds()[0], self.settings.total_steps)

    def _model(self, record: bool = True) -> AnyFit | None:
        """The loss model fitted to every reported segment (remembered per number of reports, never stored).

        Args:
            record: Fit and keep the parameters in the state (the next fit starts from them). Views pass False:
                they use the parameters the state holds, so reading a job never changes what it does next and every
                process shows the same model.
        """
        n = len(self._s.segments)
        memo = self._model_memo
        if record and memo is not None and memo[0] == n:
            return memo[1]
        st = self.settings
        o = self._online()
        prev = o.fit
        records = self._memo()
        if self._spectral:
            return self._spectral_model(record)
        if not record:
            if prev is None or not isinstance(prev.params, lossmodel.Params):
                return None
            runs, _ = runs_of(self._s.segments, self._objective(), records)
            knobs = self._knobs()
            return lossmodel.at(runs, prev.params, st.loss_floor, knobs.window, knobs.tied)
        # A full multi-start search every eighth fit, else a short one from the last parameters (kept in the state,
        # so a recovered tuner fits exactly alike).
        start = prev.params if prev is not None and n % 8 != 0 else None
        assert start is None or isinstance(start, lossmodel.Params)
        fit = fit_model(self._s.segments, self._knobs(), st.loss_floor, self._objective(), start, records)
        self._model_memo = (n, fit)
        o.fit = None if fit is None else ModelFit.of(fit)
        return fit

    def _spectral_model(self, record: bool) -> SpectralFit | None:
        """:meth:`_model` for the spectral model.

        A search over the noise ratio's whole range every eighth fit, else a local one around the last fit's (kept
        in the state, so a recovered tuner fits exactly alike).
        """
        n = len(self._s.segments)
        prev = self._online().fit
        kept = prev.params if prev is not None and isinstance(prev.params, SpectralParams) else None
        memo = self._memo()
        runs, _ = runs_of(self._s.segments, self._objective(), memo)
        floor = self.settings.loss_floor
        rows = memo.spectral_rows
        if not record:
            return None if kept is None else spectral.at(runs, self._grid(), kept, floor, None, rows)
        kappa = kept.kappa if kept is not None and n % 8 else None
        fit = spectral.fit(runs, self._grid(), floor, None, kappa, rows)
        self._model_memo = (n, fit)
        self._online().fit = None if fit is None else ModelFit.of(fit)
        return fit

    def _rival(self) -> Fit | None:
        """The rival fit (the noise-response exponent held at ``RIVAL_BETA``), or None when planning needs none.

        Fitted like :meth:`_model`: a multi-start search every eighth report, else a short one from the rival's
        last parameters, which the state keeps (``online.rival``) so that a recovered tuner fits exactly alike.
        """
        beta = self._knobs().rival_beta
        if beta is None or self._spectral:
            return None
        n = len(self._s.segments)
        memo = self._rival_memo
        if memo is not None and memo[0] == n:
            return memo[1]
        o = self._online()
        prev = o.rival_fit
        start = prev.params if prev is not None and n % 8 != 0 else None
        assert start is None or isinstance(start, lossmodel.Params)
        st = self.settings
        fit = fit_model(self._s.segments, self._knobs(), st.loss_floor, self._objective(), start, self._memo(), beta)
        self._rival_memo = (n, fit)
        o.rival = None if fit is None else ModelFit.of(fit)
        return fit

    def _objective(self) -> str:
        """What the plan minimises at the end of the budget: ``val`` loss when the job asks for it, else ``train``."""
        return "val" if self.settings.objective == "val" else "train"

    def _eval_every(self, steps: int) -> int | None:
        """Validation cadence of a segment of ``steps`` steps (None when the objective is the training loss)."""
        if self._objective() != "val":
            return None
        return max(1, steps // 4)

    def _history(self, segment_id: int | None) -> AnyHistory:
        """The LR history of the path to the end of segment ``segment_id`` (the empty history for None).

        As the job's loss model reads it: per-mode states for the spectral model, LR changes for the other.
        """
        if self._spectral:
            return self._memo().mode_history(self._s.segments, segment_id, self._grid())
        return self._memo().history(self._s.segments, segment_id)

    def _replan(self, step: int) -> Plan | None:
        """Refit the model and plan the rest of the budget from the current line; None while it cannot tell."""
        st = self.settings
        o = self._online()
        started = time.perf_counter()
        fit = self._model()
        if fit is None or step >= st.total_steps:
            return None
        history = self._history(self._s.line)
        cap = self._cap(history)
        prev = o.plan
        init = follow(prev, step, st.total_steps - step) if self._spectral and prev is not None else None
        plan = best_plan(fit, history, step, st.total_steps - step, st.min_lr, cap, self._knobs(), self._rival(), init)
        o.plan = plan
        o.plan_from = self._s.line
        self.last_suggest_s = time.perf_counter() - started
        return plan

    def _cap(self, history: AnyHistory) -> float:
        """Highest LR a plan from ``history`` may use.

        The stability cap; with the multi-power-law model, once a search has chosen the LR level, the LR the
        history ends at (a plan never rises again; only a search moves the LR up).
        """
        o = self._online()
        if self._spectral:
            return float(o.cap if isinstance(o.trusted, Unset) else min(o.cap, TRUST_GROWTH * o.trusted))
        if any(stage.status == "done" and stage.winner is not None for stage in self._s.stages):
            return float(min(float(o.edge), max(history.last_lr, float(self.settings.min_lr))))
        return float(o.cap)

    def _check_trust(self) -> None:
        """Widen or narrow the spectral model's trust region after a training segment on the kept line.

        The first training segment's LR (the sweep's suggestion) is trusted. A segment at or below the trusted LR
        changes nothing; one that went higher is compared with what the last fit (which has not seen it) predicted
        for it: as predicted, its LR becomes trusted; ``SURPRISE`` times worse, the cap falls to the geometric mean
        of the trusted LR and the LR it reached. With ``verify_fall``, a segment that fell is checked too
        (:meth:`_check_fall`).
        """
        if not self._spectral or not self._s.segments:
            return
        rec = self._s.segments[-1]
        o = self._online()
        top = peak_lr(rec)
        if isinstance(o.trusted, Unset):
            o.trusted = top  # the first training segment, at the LR the sweep suggested: where trust starts
            if self.settings.verify_fall:
                self._floor_from(top)
            return
        self._check_fall(rec)
        trusted = float(o.trusted)
        if top <= trusted * (1 + 1e-9):
            return
        ratio = None
        if o.fit is not None and isinstance(o.fit.params, SpectralParams):
            memo = self._memo()
            runs, index = runs_of(self._s.segments, self._objective(), memo)
            run = index.get(rec.segment_id)
            if run is not None:
                start = memo.mode_history(self._s.segments, rec.parent, self._grid())
                ratio = spectral.surprise(self._grid(), o.fit.params, runs[run], start)
        if ratio is not None and ratio > SURPRISE:
            o.cap = float(max(self.settings.min_lr, min(o.cap, math.sqrt(trusted * top))))
        elif self.settings.verify_rise:
            if isinstance(o.rise, Unset):
                o.rise = rec.segment_id
        else:
            self._trust(top)

    def _trust(self, lr: float) -> None:
        """Trust a rise to ``lr``; with ``lift_floor``, lift the fall check's floor with it.

        Plans may then go ``TRUST_GROWTH`` times above ``lr`` and, before the tail, ``FALL_GROWTH`` times below it
        (a fall below ``lr`` is checked as any other). A floor held where a fall missed its prediction stays.
        """
        o = self._online()
        assert not isinstance(o.trusted, Unset)  # set by the first training segment, before any rise
        o.trusted = max(float(o.trusted), lr)
        low = self._free_low()
        if self.settings.lift_floor and low is not None and lr > low * (1 + 1e-9):
            self._floor_from(lr)

    def _free_low(self) -> float | None:
        """With ``verify_fall``: the LR the floor is measured from (``low``), while the floor is not held there."""
        o = self._online()
        if isinstance(o.low, Unset) or isinstance(o.floor, Unset):
            return None
        low = float(o.low)
        return None if float(o.floor) >= low * (1 - 1e-9) else low

    def _floor_from(self, lr: float) -> None:
        """With ``verify_fall``: measure the floor from ``lr``: plans may go ``FALL_GROWTH`` times below it."""
        o = self._online()
        o.low, o.floor = lr, max(float(self.settings.min_lr), lr / FALL_GROWTH)

    def _rise(self) -> tuple[SegmentRecord, float | None]:
        """The rise waiting for its check: the training segment that rose, and the loss the line had before it.

        That loss is the objective's last value at the end of the segment's parent (None where the rise began at the
        initial weights or nothing finite was seen there).
        """
        o = self._online()
        assert not isinstance(o.rise, Unset)
        by_id = {r.segment_id: r for r in self._s.segments}
        rec = by_id[o.rise]
        parent = None if rec.parent is None else by_id.get(rec.parent)
        return rec, None if parent is None else self._end_loss(parent)

    def _stayed(self, start: int, before: float, steps: int, decay: int) -> float | None:
        """What the model says the line would have reached had it not risen: the check's yardstick.

        The line from the end of segment ``start`` (where the rise began, with loss ``before``), at the trusted LR
        for ``steps`` steps, then a linear decay to 0 over ``decay`` steps (the probe's), shifted by the model's miss
        at the rise's start (measured minus predicted), so that the model's error in level does not count for or
        against the rise. None where the model cannot tell.
        """
        o = self._online()
        fit = self._model()
        if not isinstance(fit, SpectralFit) or isinstance(o.trusted, Unset):
            return None
        history = self._history(start)
        assert isinstance(history, ModeHistory)
        trusted = float(o.trusted)
        pieces = 8  # the linear decay, in constant pieces at their mid LRs
        lengths = [float(steps)] + [decay / pieces] * pieces
        lrs = [trusted] + [trusted * (1 - (i + 0.5) / pieces) for i in range(pieces)]
        stayed = float(fit.final_losses(history, np.array(lengths), np.array([lrs]))[0])
        miss = before - float(fit.loss_of(history.d, history.n))
        value = stayed + miss
        return value if math.isfinite(value) else None

    def _check_fall(self, rec: SegmentRecord) -> None:
        """With ``verify_fall``: lower the floor after a fall the model predicted, or hold it where one was not.

        A training segment on the kept line that fell below the lowest LR trusted so far (``low``), before the tail,
        is compared with what the last fit (which has not seen it) predicted for it: the loss it dropped from where
        it started to its end against the drop the model predicted. At least ``FALL_SHARE`` of it: the LR it fell
        to becomes trusted and plans may go ``FALL_GROWTH`` times lower. Less: the model read as noise, which a lower
        LR removes, what was progress, which a lower LR slows; plans keep at least ``low`` until the tail.
        """
        o = self._online()
        st = self.settings
        low = self._free_low()
        if low is None or o.fit is None:
            return  # no fall check, or the floor already held
        bottom = min(float(rec.curve_from), float(rec.curve_to))
        if bottom >= low * (1 - 1e-9):
            return  # not below the trusted LRs
        if rec.start_step + rec.steps > st.total_steps - round(st.decay_tail * st.total_steps):
            return  # the tail decays freely
        if not isinstance(o.fit.params, SpectralParams) or rec.parent is None:
            return
        memo = self._memo()
        runs, index = runs_of(self._s.segments, self._objective(), memo)
        run = index.get(rec.segment_id)
        parent = next((r for r in self._s.segments if r.segment_id == rec.parent), None)
        if run is None or parent is None:
            return
        start = memo.mode_history(self._s.segments, rec.parent, self._grid())
        drops = spectral.drops(self._grid(), o.fit.params, runs[run], start, self._end_loss(parent))
        if drops is None:
            return
        seen, predicted = drops
        if predicted <= 0 or seen >= FALL_SHARE * predicted:
            self._floor_from(bottom)
        else:
            o.floor = low

    def _end_loss(self, rec: SegmentRecord) -> float | None:
        """The objective where a segment ended: its last validation loss, or its last quarter's mean training loss."""
        vals = [v for _, v in rec.val if v is not None and math.isfinite(v)]
        if self._objective() == "val" and vals:
            return vals[-1]
        curve = [v for _, v in rec.curve if v is not None and math.isfinite(v)]
        return mean(curve[-max(1, len(curve) // 4) :]) if curve else None

    def _current_plan(self) -> Plan | None:
        return self._online().plan

    def _planned_lr(self, step: int) -> float:
        o = self._s.online
        if o is None:
            # Asked before planning started (the continuation of the sweep or the warmup): the state is created
            # only once the sweep has set the cap and the first search's step.
            return float(min(self._start_lr(), self._bounds()[0]))
        plan = self._current_plan()
        if plan is not None:
            return plan.lr_at(step)
        return float(min(self._start_lr(), float(o.cap)))

    # ------------------------------------------------------------------ views

    def _plan_view(self, points: int = 32) -> dict[str, Any] | None:
        """The current plan and the model behind it, for the schedule.

        Returns:
            None before a plan exists, else ``start``, ``end`` and ``lr`` (``[step, lr]`` pairs over the rest of
            the budget), ``predicted`` (``[step, loss, lo90, hi90]`` of the model's loss under the plan),
            ``fitted`` (``[step, loss]`` of the model along the kept line so far), ``final_loss``,
            ``final_std``, ``band90`` and ``model`` (the fitted parameters).
        """
        o = self._s.online
        if o is None or o.plan is None:
            return None
        plan = o.plan
        steps = sorted({round(float(v)) for v in np.linspace(plan.start, max(plan.end - 1, plan.start), points)})
        view: dict[str, Any] = {
            "start": plan.start,
            "end": plan.end,
            "lr": [[s, plan.lr_at(s)] for s in steps],
            "predicted": [],
            "fitted": [],
            "final_loss": plan.final_loss,
            "final_std": plan.final_std,
            "band90": None,
            "model": None if o.fit is None else o.fit.to_dict(),
        }
        fit = self._model(record=False)
        if fit is None:
            return view
        floor = self.settings.loss_floor
        if plan.final_loss is not None and plan.final_std is not None:
            view["band90"] = list(lossmodel.band90(plan.final_loss, plan.final_std, floor))
        history = self._history(o.plan_source)
        seg_steps, lrs = plan.pieces()
        ends = plan.start + np.cumsum(seg_steps)
        for k in np.unique(np.linspace(0, len(seg_steps) - 1, min(points, len(seg_steps))).round().astype(int)):
            at = float(predict(fit, history, seg_steps[: k + 1], lrs[None, : k + 1])[0])
            std = predict_std(fit, history, seg_steps[: k + 1], lrs[: k + 1])
            lo, hi = lossmodel.band90(at, std, floor)
            view["predicted"].append([float(ends[k]), at, lo, hi])
        records = self._s.segments
        runs, index = runs_of(records, self._objective())
        on_line = set()
        sid = o.plan_source
        by_id = {r.segment_id: r for r in records}
        while sid is not None and sid in by_id:
            on_line.add(index.get(sid))
            sid = by_id[sid].parent
        starts = {index[r.segment_id]: r.start_step for r in records if r.segment_id in index}
        fitted = fit.fitted(runs, RowCache()) if isinstance(fit, SpectralFit) else lossmodel.fitted(fit.params, runs)
        view["fitted"] = [[starts[r] + c, v] for r, c, v in fitted if r in on_line]
        return view
