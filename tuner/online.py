"""Online re-planning (the ``plan`` preset): fit the loss model, plan the whole budget, search where it pays.

A job's life::

    LR range sweep ─► warmup ─► train at the sweep's LR ─► search ─► follow the plan, re-planned every segment
                                                              ▲                   │
                                                              └── when it pays ───┘

* Every reported segment is data for the schedule-aware loss model (:mod:`lrtune.tuner.lossmodel`): the sweep, the
  candidates, their cooldown probes and the kept line, each with its exact LR trajectory; rolled-back branches
  share their parent's prefix.
* After every training segment the model is refitted and the planner (:mod:`lrtune.tuner.planner`) chooses the rest of
  the schedule to minimise the predicted final loss. The next segment follows that plan: model-predictive
  control, so a long run keeps adapting.
* At a decision point the job *searches*: from one snapshot, the plan's LR (the incumbent) and two other
  candidates each run a few steps on the same batches; a cooldown probe after the incumbent shows the loss drop
  that a decay buys. The model, refitted on them, predicts each candidate's final loss under its own best plan,
  and the job continues from the best one; the others are rolled back. Candidates after the first are chosen
  where the model's lower confidence bound on that final loss is lowest. A search happens only when it pays:
  while the plan's predicted final loss is more uncertain than the loss its steps would cost (the model's
  prediction with that many fewer steps), and the exploration cap leaves room for it.

State lives in the tuner's dict (``online``) and in the stage records the schedule shows; everything here is a
pure function of that state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner import lossmodel, planner
from lrtune.tuner.lossmodel import Fit, History, Run
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.planner import Plan
from lrtune.tuner.segment import Segment, curve_lr

_EDGE = 3.0  # candidates go no higher than the LR where the sweep's loss bottomed out, divided by this
_UP, _DOWN = 3.0, 1.0 / 3.0  # the first stage's challengers, relative to the incumbent, before a model exists
_LCB = 1.0  # standard deviations subtracted from a candidate's predicted final loss when proposing
_PROPOSALS = 25  # LRs the proposal scores
#: The rival fit's noise-response exponent: how slowly a decay keeps paying off at long range. Short decays cannot
#: tell it apart from a fast one; the closed form of a noisy quadratic puts it near 0.5-0.6 (1 - (1 + C x)^-beta
#: fitted to its relaxation spectrum), and so do the multi-power law's fits to language-model runs.
RIVAL_BETA = 0.5
#: The rival counts while the RMS of its relative residuals is within this factor of the better fit's.
RIVAL_TOL = 1.2


@dataclass(frozen=True)
class Knobs:
    """The settings online planning runs on (resolved from the config).

    Attributes:
        window: Observations whose loss exceeds this factor times the lowest observed loss are left out of the
            fit (the model is local: early transients do not bend its prediction of the end).
        pieces: Knots of a plan.
        replan: Re-plan after every training segment (else only after a search).
        search: Search beyond the first stage when it pays.
        free_shape: Plans of any non-increasing shape (else only a cosine from the plan's first LR).
        tied: The loss model's noise response shares its progress kernel (see :func:`lrtune.tuner.lossmodel.fit`).
        rival_beta: Also fit the model with its noise-response exponent held at this value and plan against the
            worse of the two readings (see :func:`best_plan`); None: plan on the best fit alone.
    """

    window: float
    pieces: int
    replan: bool
    search: bool
    free_shape: bool
    tied: bool = False
    rival_beta: float | None = None


def record_lrs(rec: dict[str, Any]) -> NDArray[np.float64]:
    """Per-step LR of a reported segment record, shape (steps,)."""
    n = int(rec["steps"])
    planned = max(int(rec["planned_steps"]), 1)
    pos = rec["curve_start"] + (rec["curve_end_planned"] - rec["curve_start"]) * np.arange(n) / planned
    shape = rec["shape"]
    f, t = float(rec["curve_from"]), float(rec["curve_to"])
    if shape == "constant":
        return np.full(n, f)
    if shape == "exp":
        p = np.clip(pos, 0.0, 1.0)
        return np.asarray(f * (t / f) ** p if f > 0 and t > 0 else np.full(n, f), dtype=float)
    return np.array([curve_lr(shape, f, t, float(p)) for p in pos])


def runs_of(
    records: Sequence[dict[str, Any]], objective: str = "train", memo: RecordMemo | None = None
) -> tuple[list[Run], dict[int, int]]:
    """The loss model's runs from the segment records, and each segment id's run index.

    Args:
        records: Reported segment records, in report order (parents first).
        objective: ``train`` uses the binned training losses, ``val`` the validation losses.
        memo: Reuse the runs (and so the geometry each run caches) built on earlier calls.
    """
    runs: list[Run] = []
    index: dict[int, int] = {}
    for rec in records:
        if int(rec["steps"]) == 0:
            continue
        parent = rec.get("parent")
        p = index.get(parent) if parent is not None else None
        sid = int(rec["segment_id"])
        hit = None if memo is None else memo.runs.get((objective, sid))
        if hit is not None and hit[0] is rec and hit[1].parent == p:
            run = hit[1]
        else:
            start = int(rec["start_step"])
            source = rec["val"] if objective == "val" else rec["curve"]
            points = tuple((round(float(e)) - start, m) for e, m in source)
            lrs = record_lrs(rec) if memo is None else memo.lrs_of(rec)
            run = Run(p, lrs, points)  # type: ignore[arg-type]
            if memo is not None:
                memo.runs[objective, sid] = (rec, run)
        index[sid] = len(runs)
        runs.append(run)
    return runs, index


def path_lrs(
    records: Sequence[dict[str, Any]], segment_id: int | None, memo: RecordMemo | None = None
) -> list[NDArray[np.float64]]:
    """Per-step LRs of the segments from the initial weights to the end of segment ``segment_id``, first first.

    Args:
        records: Reported segment records.
        segment_id: The last segment of the path (None: the empty path).
        memo: Reuse the LRs computed on earlier calls.
    """
    return [record_lrs(rec) if memo is None else memo.lrs_of(rec) for rec in _path(records, segment_id)]


def _path(records: Sequence[dict[str, Any]], segment_id: int | None) -> list[dict[str, Any]]:
    """The records from the initial weights to the end of segment ``segment_id``, first first."""
    by_id = {int(r["segment_id"]): r for r in records}
    chain: list[dict[str, Any]] = []
    sid = segment_id
    while sid is not None and sid in by_id:
        rec = by_id[sid]
        chain.append(rec)
        sid = rec.get("parent")
    return chain[::-1]


@dataclass
class RecordMemo:
    """What the loss model derives from the segment records, kept on a tuner object between reports.

    Never part of the dumped state: a recovered tuner starts with an empty memo and computes the same values.
    Records only ever gain new entries and flip ``rolled_back``, which nothing here reads; every entry keeps the
    record object it was computed from and is recomputed when the state holds another one.

    Attributes:
        lrs: Per segment id, the record and its per-step LRs (:func:`record_lrs`), shape (steps,).
        runs: Per (objective, segment id), the record and its loss-model run.
        histories: Per segment id, the record, the history it extends (its parent's) and the history of the path
            to the end of the segment.
        empty: The history of the empty path (the root every path's history extends).
    """

    lrs: dict[int, tuple[dict[str, Any], NDArray[np.float64]]] = field(default_factory=dict)
    runs: dict[tuple[str, int], tuple[dict[str, Any], Run]] = field(default_factory=dict)
    histories: dict[int, tuple[dict[str, Any], History, History]] = field(default_factory=dict)
    empty: History = field(default_factory=lambda: History.of([]))

    def lrs_of(self, rec: dict[str, Any]) -> NDArray[np.float64]:
        """:func:`record_lrs` of a record, computed once."""
        sid = int(rec["segment_id"])
        hit = self.lrs.get(sid)
        if hit is not None and hit[0] is rec:
            return hit[1]
        lrs = record_lrs(rec)
        self.lrs[sid] = (rec, lrs)
        return lrs

    def history(self, records: Sequence[dict[str, Any]], segment_id: int | None) -> History:
        """``History.of(path_lrs(records, segment_id))``, extending the histories of the path's prefixes."""
        history = self.empty
        for rec in _path(records, segment_id):
            sid = int(rec["segment_id"])
            hit = self.histories.get(sid)
            if hit is not None and hit[0] is rec and hit[1] is history:
                history = hit[2]
                continue
            longer = history.then(self.lrs_of(rec))
            self.histories[sid] = (rec, history, longer)
            history = longer
        return history


def fit_model(
    records: Sequence[dict[str, Any]],
    knobs: Knobs,
    floor: float | None,
    objective: str,
    start: lossmodel.Params | None = None,
    memo: RecordMemo | None = None,
    beta: float | None = None,
) -> Fit | None:
    """Fit the loss model to every reported segment (None while it cannot tell yet).

    Args:
        records: Reported segment records, in report order.
        knobs: The planning settings (the fit's window and kernel).
        floor: Lowest value the loss can take, or None.
        objective: ``train`` or ``val``.
        start: A previous fit's parameters to start a short search from (None: the multi-start search).
        memo: Reuse the runs built on earlier calls.
        beta: Hold the noise-response exponent at this value (the rival fit), or None.
    """
    runs, _ = runs_of(records, objective, memo)
    return lossmodel.fit(runs, loss_floor=floor, window=knobs.window, start=start, tied=knobs.tied, beta=beta)


def best_plan(
    fit: Fit,
    history: History,
    start: int,
    steps: int,
    lr_min: float,
    lr_max: float,
    knobs: Knobs,
    rival: Fit | None = None,
) -> Plan:
    """The plan for the rest of the budget from a history, with its predicted final loss and uncertainty.

    With a ``rival`` fit that explains the data about as well (the RMS of its relative residuals within
    ``RIVAL_TOL`` of the better one's), the plan minimises the worse of the two readings' relative regret (see
    :func:`lrtune.tuner.planner.optimize`): the data rarely tell how long a decay keeps paying off, and a plan that bets
    on one reading (hold the LR, decay late and fast) loses badly when the other one is right. The predicted
    final loss and its uncertainty are always ``fit``'s.
    """
    if not knobs.free_shape:
        plan = _best_cosine(fit, history, start, steps, lr_min, lr_max, knobs.pieces)
    elif rival is None or max(fit.rel_noise, rival.rel_noise) > RIVAL_TOL * min(fit.rel_noise, rival.rel_noise):
        plan = planner.optimize(fit.params, history, start, steps, lr_min, lr_max, pieces=knobs.pieces)
    else:
        main, other = (fit, rival) if fit.rel_noise <= rival.rel_noise else (rival, fit)
        ref = planner.optimize(other.params, history, start, steps, lr_min, lr_max, pieces=knobs.pieces)
        rivals = [(other.params, float(ref.final_loss))] if ref.final_loss is not None and ref.final_loss > 0 else []
        plan = planner.optimize(main.params, history, start, steps, lr_min, lr_max, pieces=knobs.pieces, rivals=rivals)
    seg_steps, lrs = plan.pieces()
    mean = float(lossmodel.final_losses(fit.params, history, seg_steps, lrs[None, :])[0])
    std = lossmodel.final_loss_std(fit, history, seg_steps, lrs)
    return Plan(plan.start, plan.steps, plan.knots, mean, std)


def _best_cosine(fit: Fit, history: History, start: int, steps: int, lo: float, hi: float, pieces: int) -> Plan:
    """The ablation's plan: a cosine from the best peak down to ``lo``."""
    best: Plan | None = None
    for peak in np.exp(np.linspace(math.log(lo), math.log(hi), 33)):
        u = np.linspace(0.0, 1.0, max(pieces, 2))
        knots = np.maximum(lo + (peak - lo) * 0.5 * (1 + np.cos(math.pi * u)), lo)
        plan = Plan(start, steps, tuple(float(v) for v in knots))
        seg_steps, lrs = plan.pieces()
        loss = float(lossmodel.final_losses(fit.params, history, seg_steps, lrs[None, :])[0])
        if best is None or (best.final_loss is not None and loss < best.final_loss):
            best = Plan(start, steps, plan.knots, loss)
    assert best is not None
    return best


def exploration_pays(
    fit: Fit,
    history: History,
    plan: Plan,
    cost_steps: int,
    lo: float,
    hi: float,
    knobs: Knobs,
    rival: Fit | None = None,
) -> bool:
    """Whether a search costing ``cost_steps`` rolled-back steps is worth it now.

    It is while the plan's predicted final loss is more uncertain than what those steps would cost: the loss the
    model predicts for the best plan over ``cost_steps`` fewer steps, minus the loss of this plan.
    """
    if plan.final_loss is None or plan.final_std is None or cost_steps >= plan.steps:
        return False
    shorter = best_plan(fit, history, plan.start, plan.steps - cost_steps, lo, hi, knobs, rival)
    cost = (shorter.final_loss or plan.final_loss) - plan.final_loss
    return plan.final_std > max(cost, 0.0)


def propose(
    fit: Fit | None,
    history: History,
    plan: Plan | None,
    incumbent: float,
    tried: Sequence[float],
    cand_steps: int,
    lo: float,
    hi: float,
) -> float:
    """The next candidate LR: where the lower confidence bound of its predicted final loss is lowest.

    A candidate is scored as ``cand_steps`` steps at its LR followed by the incumbent's plan. Without a model
    (or a plan), the incumbent's neighbours a factor of three up, then down. LRs within a fifth of a decade of
    one already tried are not proposed again.
    """

    def fresh(lr: float) -> bool:
        return all(abs(math.log10(lr / t)) > 0.2 for t in tried)

    if fit is None or plan is None:
        for lr in (incumbent * _UP, incumbent * _DOWN, math.sqrt(lo * incumbent), math.sqrt(hi * incumbent)):
            lr = float(min(max(lr, lo), hi))
            if fresh(lr):
                return lr
        return float(min(max(incumbent * _UP, lo), hi))
    grid = np.exp(np.linspace(math.log(max(lo, incumbent / 30)), math.log(min(hi, incumbent * 30)), _PROPOSALS))
    grid = np.array([lr for lr in grid if fresh(float(lr))])
    if grid.size == 0:
        return float(min(max(incumbent * _UP, lo), hi))
    rest_steps, rest_lrs = plan.pieces()
    steps = np.concatenate([[float(cand_steps)], rest_steps])
    rows = np.concatenate([grid[:, None], np.repeat(rest_lrs[None, :], grid.size, axis=0)], axis=1)
    means = lossmodel.final_losses(fit.params, history, steps, rows)
    stds = np.array([lossmodel.final_loss_std(fit, history, steps, row) for row in rows])
    return float(grid[int(np.argmin(means - _LCB * stds))])


class OnlinePlanning(TunerParts):
    """The ``plan`` preset's stage sequencing, mixed into :class:`lrtune.tuner.stages.Tuner`.

    It reads and writes the tuner's state dict: ``online`` (the current plan, the next decision point, the
    stability cap) and the stage records, in the same form the other presets use, so the schedule, the CLI and
    the dashboard show them alike. A candidate's ``forecast`` here is its predicted final loss under its own
    best plan, and ``std`` that prediction's uncertainty.
    """

    _model_memo: tuple[int, Fit | None] | None
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
        )

    def _bounds(self) -> tuple[float, float]:
        """The stability cap and the candidates' edge from the LR range sweep, or the prior LR (else ``max_lr``)."""
        st = self.settings
        suggested = self._suggested_lr()
        cap = edge = st.max_lr
        if suggested is not None:
            # Plan a safe factor below the LR where the sweep's loss bottomed out (ten times its suggestion);
            # candidates may go up to that LR itself, where the divergence guard watches them. A prior LR stands
            # in for the suggestion.
            bottom = min(st.max_lr, max(st.min_lr, suggested * 10.0))
            edge = min(bottom, max(st.min_lr, bottom / _EDGE))
            cap = min(edge, max(st.min_lr, bottom / 3.0))
        return cap, edge

    def _online(self) -> dict[str, Any]:
        """The planner's state, created on first use (after the sweep and the warmup)."""
        o = self._s.get("online")
        if o is None:
            st = self.settings
            cap, edge = self._bounds()
            o = {
                "plan": None,
                "cap": cap,
                "edge": edge,
                "next_search": int(self._s["step"]) + st.tau,
                "spacing": st.tau,
                "fit": None,
            }
            self._s["online"] = o
        return o

    def _model(self, record: bool = True) -> Fit | None:
        """The loss model fitted to every reported segment (remembered per number of reports, never stored).

        Args:
            record: Fit and keep the parameters in the state (the next fit starts from them). Views pass False:
                they use the parameters the state holds, so reading a job never changes what it does next and every
                process shows the same model.
        """
        n = len(self._s["segments"])
        memo = self._model_memo
        if record and memo is not None and memo[0] == n:
            return memo[1]
        st = self.settings
        o = self._online()
        prev = o.get("fit")
        records = self._record_memo
        if records is None:
            records = self._record_memo = RecordMemo()
        if not record:
            if prev is None:
                return None
            runs, _ = runs_of(self._s["segments"], self._objective(), records)
            knobs = self._knobs()
            return lossmodel.at(runs, lossmodel.Params(**prev["params"]), st.loss_floor, knobs.window, knobs.tied)
        # A full multi-start search every eighth fit, else a short one from the last parameters (kept in the state,
        # so a recovered tuner fits exactly alike).
        start = None
        if prev is not None and n % 8 != 0:
            start = lossmodel.Params(**prev["params"])
        fit = fit_model(self._s["segments"], self._knobs(), st.loss_floor, self._objective(), start, records)
        self._model_memo = (n, fit)
        o["fit"] = None if fit is None else fit.to_dict()
        return fit

    def _rival(self) -> Fit | None:
        """The rival fit (the noise-response exponent held at ``RIVAL_BETA``), or None when planning needs none.

        Fitted like :meth:`_model`: a multi-start search every eighth report, else a short one from the rival's
        last parameters, which the state keeps (``online.rival``) so that a recovered tuner fits exactly alike.
        """
        beta = self._knobs().rival_beta
        if beta is None:
            return None
        n = len(self._s["segments"])
        memo = self._rival_memo
        if memo is not None and memo[0] == n:
            return memo[1]
        o = self._online()
        prev = o.get("rival")
        start = lossmodel.Params(**prev["params"]) if prev is not None and n % 8 != 0 else None
        records = self._record_memo
        if records is None:
            records = self._record_memo = RecordMemo()
        st = self.settings
        fit = fit_model(self._s["segments"], self._knobs(), st.loss_floor, self._objective(), start, records, beta)
        self._rival_memo = (n, fit)
        o["rival"] = None if fit is None else fit.to_dict()
        return fit

    def _objective(self) -> str:
        """What the plan minimises at the end of the budget: ``val`` loss when the job asks for it, else ``train``."""
        return "val" if self.settings.objective == "val" else "train"

    def _eval_every(self, steps: int) -> int | None:
        """Validation cadence of a segment of ``steps`` steps (None when the objective is the training loss)."""
        if self._objective() != "val":
            return None
        return max(1, steps // 4)

    def _history(self, segment_id: int | None) -> History:
        """The LR history of the path to the end of segment ``segment_id`` (the empty history for None)."""
        memo = self._record_memo
        if memo is None:
            memo = self._record_memo = RecordMemo()
        return memo.history(self._s["segments"], segment_id)

    def _replan(self, step: int) -> Plan | None:
        """Refit the model and plan the rest of the budget from the current line; None while it cannot tell."""
        st = self.settings
        o = self._online()
        started = time.perf_counter()
        fit = self._model()
        if fit is None or step >= st.total_steps:
            return None
        history = self._history(self._s.get("line"))
        cap = self._cap(history)
        plan = best_plan(fit, history, step, st.total_steps - step, st.min_lr, cap, self._knobs(), self._rival())
        o["plan"] = plan.to_dict()
        o["plan_from"] = self._s.get("line")
        self.last_suggest_s = time.perf_counter() - started
        return plan

    def _cap(self, history: History) -> float:
        """Highest LR a plan from ``history`` may use.

        The stability cap, and once a search has chosen the LR level, the LR the history ends at (a plan never
        rises again; only a search moves the LR up).
        """
        o = self._online()
        if any(st.get("status") == "done" and st.get("winner") is not None for st in self._s["stages"]):
            return float(min(float(o["edge"]), max(history.last_lr, float(self.settings.min_lr))))
        return float(o["cap"])

    def _current_plan(self) -> Plan | None:
        o = self._online()
        return None if o["plan"] is None else Plan.from_dict(o["plan"])

    def _planned_lr(self, step: int) -> float:
        o = self._s.get("online")
        if o is None:
            # Asked before planning started (the continuation of the sweep or the warmup): the state is created
            # only once the sweep has set the cap and the first search's step.
            return float(min(self._start_lr(), self._bounds()[0]))
        plan = self._current_plan()
        if plan is not None:
            return plan.lr_at(step)
        return float(min(self._start_lr(), float(o["cap"])))

    # ------------------------------------------------------------------ views

    def _plan_view(self, points: int = 32) -> dict[str, Any] | None:
        """The current plan and the model behind it, for the schedule.

        Returns:
            None before a plan exists, else ``start``, ``end`` and ``lr`` (``[step, lr]`` pairs over the rest of
            the budget), ``predicted`` (``[step, loss, lo90, hi90]`` of the model's loss under the plan),
            ``fitted`` (``[step, loss]`` of the model along the kept line so far), ``final_loss``,
            ``final_std``, ``band90`` and ``model`` (the fitted parameters).
        """
        o = self._s.get("online")
        if not o or o.get("plan") is None:
            return None
        plan = Plan.from_dict(o["plan"])
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
            "model": o.get("fit"),
        }
        fit = self._model(record=False)
        if fit is None:
            return view
        floor = self.settings.loss_floor
        if plan.final_loss is not None and plan.final_std is not None:
            view["band90"] = list(lossmodel.band90(plan.final_loss, plan.final_std, floor))
        history = self._history(o.get("plan_from"))
        seg_steps, lrs = plan.pieces()
        ends = plan.start + np.cumsum(seg_steps)
        for k in np.unique(np.linspace(0, len(seg_steps) - 1, min(points, len(seg_steps))).round().astype(int)):
            mean = float(lossmodel.final_losses(fit.params, history, seg_steps[: k + 1], lrs[None, : k + 1])[0])
            std = lossmodel.final_loss_std(fit, history, seg_steps[: k + 1], lrs[: k + 1])
            lo, hi = lossmodel.band90(mean, std, floor)
            view["predicted"].append([float(ends[k]), mean, lo, hi])
        records = self._s["segments"]
        runs, index = runs_of(records, self._objective())
        on_line = set()
        sid = o.get("plan_from")
        by_id = {int(r["segment_id"]): r for r in records}
        while sid is not None and sid in by_id:
            on_line.add(index.get(sid))
            sid = by_id[sid].get("parent")
        starts = {index[int(r["segment_id"])]: int(r["start_step"]) for r in records if int(r["segment_id"]) in index}
        view["fitted"] = [[starts[r] + c, v] for r, c, v in lossmodel.fitted(fit.params, runs) if r in on_line]
        return view

    # ------------------------------------------------------------------ segments

    def _online_segment(self, step: int) -> Segment:
        """The next segment of the ``plan`` preset."""
        st = self.settings
        o = self._online()
        stages = self._s["stages"]
        if stages and stages[-1]["status"] == "search":
            seg = self._online_candidate(stages[-1], step)
            if seg is not None:
                return seg
            return self._online_finish(stages[-1], step)
        last = self._s["segments"][-1] if self._s["segments"] else None
        trained = last is not None and last["phase"] == "train"
        if trained and st.replan:
            self._replan(step)
        if step >= o["next_search"] and self._search_pays(step):
            stage = self._online_stage(step)
            seg = self._online_candidate(stage, step)
            if seg is not None:
                return seg
            stage["status"] = "done"
        if step >= o["next_search"]:
            o["next_search"] = step + o["spacing"]
        end = st.total_steps
        if o["next_search"] > step and self._searches_left():
            end = min(end, int(o["next_search"]))
        n = self._chunk(step, max(end, step + 1))
        lr0, lr1 = self._planned_lr(step), self._planned_lr(step + n)
        shape = "constant" if lr0 == lr1 else "exp"
        return Segment(
            self._new_id(),
            "train",
            step,
            n,
            shape,  # type: ignore[arg-type]
            lr0,
            lr1,
            0.0,
            1.0,
            eval_every=self._eval_every(n),
        )

    def _searches_left(self) -> bool:
        st = self.settings
        return bool(st.later_searches or not self._s["stages"])

    def _stage_k(self) -> int:
        """Candidates of the next search: ``k`` for the first, ``k_warm`` (the incumbent and its probe) later."""
        st = self.settings
        return int(st.k if not self._s["stages"] else st.k_warm)

    def _stage_cost(self) -> tuple[int, int]:
        """Steps per candidate and rolled-back steps of the next search."""
        st = self.settings
        n = max(st.min_candidate_steps, round(st.candidate_fraction * st.tau))
        k = self._stage_k()
        return n, (k - 1) * n + (k if st.probe_all else 1) * self._probe_steps(n)

    def _search_pays(self, step: int) -> bool:
        """Search now? Only with room under the cap and budget after it; later searches only when they pay."""
        st = self.settings
        n, wasted = self._stage_cost()
        k = self._stage_k()
        if not self._searches_left() or wasted == 0 or (k < 2 and not self._s["stages"]):
            return False
        if self._s["wasted_steps"] + wasted > st.explore_cap * st.total_steps + 1e-9:
            return False
        if st.total_steps - step < k * n + wasted + 2 * n:
            return False
        if not self._s["stages"]:
            return True
        fit = self._model()
        plan = self._current_plan()
        if fit is None or plan is None:
            return True
        history = self._history(self._s.get("line"))
        cap = self._cap(history)
        return exploration_pays(fit, history, plan, wasted, st.min_lr, cap, self._knobs(), self._rival())

    def _online_stage(self, step: int) -> dict[str, Any]:
        st = self.settings
        stages = self._s["stages"]
        index = len(stages)
        n, _ = self._stage_cost()
        incumbent = self._planned_lr(step)
        stage = {
            "index": index,
            "kind": "plan",
            "tau": st.total_steps - step,
            "cand_steps": n,
            "k": self._stage_k(),
            "warm": False,
            "incumbent_lr": incumbent,
            "objective": self._objective(),
            "start_step": step,
            "start_loss": self._s["ref_loss"],
            "start_spread": self._s.get("ref_spread"),
            "lo": 0.0,
            "hi": 1.0,
            "snapshot": f"stage-{index}",
            "candidates": [],
            "carried": [],
            "status": "search",
            "winner": None,
            "winner_lr": None,
            "exploit_end": None,
            "base": self._s.get("line"),
        }
        stages.append(stage)
        return stage

    def _online_candidate(self, stage: dict[str, Any], step: int) -> Segment | None:
        """The stage's next candidate or cooldown probe, or None when its search is over."""
        from lrtune.tuner.search import to_unit

        st = self.settings
        cands = stage["candidates"]
        # The incumbent's cooldown probe, and with ``probe_all`` every other candidate's (right after it ran).
        last = cands[-1] if cands and (len(cands) == 1 or st.probe_all) else None
        if (
            last is not None
            and st.probe_fraction > 0
            and last["steps_run"] > 0
            and not last["diverged"]
            and last.get("probe") is None
        ):
            return self._probe(stage, last, step)
        i = len(cands)
        n = stage["cand_steps"]
        if i >= stage["k"]:
            return None
        o = self._online()
        if i == 0:
            lr = stage["incumbent_lr"]
        else:
            started = time.perf_counter()
            base = self._history(stage["base"])
            fit = self._model()
            plan = None
            if fit is not None:
                rest = st.total_steps - step - n
                after = base.extend(np.array([float(n)]), np.array([stage["incumbent_lr"]]))
                cap = min(o["edge"], after.last_lr)
                plan = best_plan(fit, after, step + n, rest, st.min_lr, cap, self._knobs(), self._rival())
            edge = o["edge"]
            lr = propose(fit, base, plan, stage["incumbent_lr"], [c["lr"] for c in cands], n, st.min_lr, edge)
            self.last_suggest_s = time.perf_counter() - started
        keep = f"cand-{stage['index']}-{i}"
        return self._candidate(stage, step, lr, to_unit(lr, st.min_lr, st.max_lr), keep, self._eval_every(n))

    def _online_finish(self, stage: dict[str, Any], step: int) -> Segment:
        """Judge the candidates by their predicted final loss, continue from the best, re-plan."""
        import dataclasses as _dc

        st = self.settings
        o = self._online()
        fit = self._model()
        best, best_loss = None, math.inf
        for c in stage["candidates"]:
            if c["steps_run"] == 0 or c["diverged"]:
                continue
            if fit is not None:
                history = self._history(c["segment_id"])
                cap = min(o["edge"], history.last_lr)
                rest = st.total_steps - step
                plan = best_plan(fit, history, step, rest, st.min_lr, cap, self._knobs(), self._rival())
                c["forecast"], c["std"] = plan.final_loss, plan.final_std
                c["plan"] = plan.to_dict()
                value = plan.final_loss if plan.final_loss is not None else math.inf
            else:
                value = c["last_loss"] if c["last_loss"] is not None else math.inf
            if value < best_loss:
                best, best_loss = c, value
        usable = [c for c in stage["candidates"] if c["steps_run"] > 0 and not c["diverged"]]
        probed = [c for c in usable if c.get("probe") and c["probe"].get("loss") is not None]
        if st.probe_judge and len(usable) > 1 and len(probed) == len(usable):
            # Judged by what was seen: the loss each candidate reached after its own short decay.
            best = min(probed, key=lambda c: float(c["probe"]["loss"]))
        drop = [c["kept"] for c in stage["candidates"] if c["kept"]]
        ids = {c["segment_id"] for c in stage["candidates"]}
        ids |= {c["probe"]["segment_id"] for c in stage["candidates"] if c.get("probe")}
        restore = stage["snapshot"]
        winner_seg = None
        if best is not None:
            stage["winner"], stage["winner_lr"] = best["index"], best["lr"]
            restore, winner_seg = best["kept"], best["segment_id"]
            if best.get("plan") is not None:
                o["plan"] = best["plan"]
                o["plan_from"] = winner_seg
        else:
            lowest = min(c["lr"] for c in stage["candidates"])
            stage["winner_lr"] = max(st.min_lr, lowest / 10)
            o["cap"] = min(o["cap"], lowest / 3)
            o["edge"] = min(o["edge"], lowest)
            o["plan"] = None
        for rec in self._s["segments"]:
            if rec["segment_id"] in ids and rec["segment_id"] != winner_seg and not rec["rolled_back"]:
                rec["rolled_back"] = True
                self._s["wasted_steps"] += rec["steps"]
        for c in stage["candidates"]:
            c["kept"] = None
        drop.append(stage["snapshot"])
        stage["status"] = "done"
        self._s["winner_lr"] = stage["winner_lr"]
        o["spacing"] = min(2 * o["spacing"], st.tau_max)
        o["next_search"] = step + o["spacing"]
        seg = self._online_segment(step)
        return _dc.replace(seg, restore=restore, drop=tuple(drop))
