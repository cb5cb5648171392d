"""The ``plan`` preset's segments: train along the plan, and search where it pays.

Between decision points the job trains along the plan in force (:mod:`lrtune.tuner.online`), one segment at a
time, re-planned after each. At a decision point it searches when the search pays (:meth:`OnlineStages._search_pays`):
a ``plan`` stage (:class:`lrtune.tuner.stagestate.Stage` with ``kind="plan"``) whose first candidate is the plan's LR
(the incumbent), with a cooldown probe after it (after every candidate with ``probe_all``), and whose other
candidates are proposed by the model (:func:`lrtune.tuner.replan.propose`). The search is judged by each candidate's
predicted final loss under its own best plan (``forecast`` and ``std`` of the candidate record; with
``probe_judge`` by the loss after its probe); the job continues from the winner and the others are rolled back.

With the spectral model a search respects the trust region as the plans do: a candidate's plan goes at most
``TRUST_GROWTH`` times above the trusted LR, and a candidate above that gets a cooldown probe right after it and may
win only where the probe ended below the incumbent's (same snapshot, same batches): a checked rise, whose LR becomes
trusted. A quadratic model reads a high LR's excess loss as noise that a decay removes; on a network it can be damage
that stays (a charlm run kept a candidate at 10 times the trusted LR and ended at test loss 2.18, where other seeds
end at 1.25-1.30).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from lrtune.tuner import spectral
from lrtune.tuner.fields import UNSET, Unset
from lrtune.tuner.modelruns import runs_of
from lrtune.tuner.online import SPECTRAL_CAP, TRUST_GROWTH, peak_lr
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.replan import best_plan, disagreement_pays, exploration_pays, propose
from lrtune.tuner.search import to_unit
from lrtune.tuner.segment import Segment, Shape
from lrtune.tuner.spectral import ModeHistory, SpectralFit
from lrtune.tuner.stagestate import Candidate, Objective, Stage


class OnlineStages(TunerParts):
    """The ``plan`` preset's stage sequencing, mixed into :class:`lrtune.tuner.stages.Tuner`."""

    def _online_segment(self, step: int) -> Segment:
        """The next segment of the ``plan`` preset."""
        st = self.settings
        o = self._online()
        stages = self._s.stages
        if stages and stages[-1].status == "search":
            seg = self._online_candidate(stages[-1], step)
            if seg is not None:
                return seg
            if not isinstance(o.rise, Unset):  # set only while a rise's check runs
                return self._verify_finish(stages[-1], step)
            return self._online_finish(stages[-1], step)
        last = self._s.segments[-1] if self._s.segments else None
        trained = last is not None and last.phase == "train"
        if trained:
            self._check_trust()
        if trained and st.replan:
            self._replan(step)
        checked = self._verify_due(step) if trained else 0
        if checked:
            stage = self._online_stage(step, k=checked)
            seg = self._online_candidate(stage, step)
            if seg is not None:
                return seg
            stage.status = "done"
        if step >= o.next_search and self._search_pays(step):
            stage = self._online_stage(step)
            seg = self._online_candidate(stage, step)
            if seg is not None:
                return seg
            stage.status = "done"
        if step >= o.next_search:
            o.next_search = step + o.spacing
        end = st.total_steps
        if o.next_search > step and self._searches_left():
            end = min(end, int(o.next_search))
        n = self._chunk(step, max(end, step + 1))
        lr0, lr1 = self._planned_lr(step), self._planned_lr(step + n)
        shape: Shape = "constant" if lr0 == lr1 else "exp"
        return Segment(
            self._new_id(),
            "train",
            step,
            n,
            shape,
            lr0,
            lr1,
            0.0,
            1.0,
            eval_every=self._eval_every(n),
        )

    def _searches_left(self) -> bool:
        st = self.settings
        return bool(st.later_searches or not self._s.stages)

    def _stage_k(self) -> int:
        """Candidates of the next search: ``k`` for the first, ``k_warm`` (the incumbent and its probe) later."""
        st = self.settings
        return int(st.k if not self._s.stages else st.k_warm)

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
        if not self._searches_left() or wasted == 0 or (k < 2 and not self._s.stages):
            return False
        if not self._within_cap(wasted):
            return False
        if st.total_steps - step < k * n + wasted + 2 * n:
            return False
        by_spectrum = self._spectral
        if not self._s.stages and not by_spectrum:
            return True  # the multi-power-law model's first search is part of its plan
        fit = self._model()
        plan = self._current_plan()
        if fit is None or plan is None:
            return not by_spectrum
        history = self._history(self._s.line)
        cap = self._cap(history)
        if isinstance(fit, SpectralFit):
            assert isinstance(history, ModeHistory)
            memo = self._memo()
            runs, _ = runs_of(self._s.segments, self._objective(), memo)
            others = spectral.rivals(runs, fit, cache=memo.spectral_rows)
            return disagreement_pays(fit, others, history, plan, wasted, st.min_lr, cap, self._knobs())
        return exploration_pays(fit, history, plan, wasted, st.min_lr, cap, self._knobs(), self._rival())

    def _verify_due(self, step: int) -> int:
        """With ``verify_rise``: check a rise now (the LR that rose runs on, then a cooldown probe)?

        A rise that cannot be checked (no room under the exploration cap, or too little budget left) stays
        untrusted.

        Returns:
            The check's candidates: 0 (no check), 1 (the risen LR, judged against the model's word) or 2 (with
            ``measure_rise``, and room for it: the trusted LR's control too, unless the plan is already back there).
        """
        st = self.settings
        o = self._online()
        if isinstance(o.rise, Unset):  # set only with ``verify_rise`` and the spectral model
            return 0
        n, _ = self._stage_cost()
        probe = self._probe_steps(n)
        if probe == 0 or not self._within_cap(probe) or st.total_steps - step < 3 * n + probe:
            o.rise = UNSET
            return 0
        assert not isinstance(o.trusted, Unset)  # set by the first training segment, before any rise
        control = (
            st.measure_rise
            and self._planned_lr(step) > float(o.trusted) * (1 + 1e-9)
            and self._within_cap(n + 2 * probe)
            and st.total_steps - step >= 4 * n + 2 * probe
        )
        return 2 if control else 1

    def _within_cap(self, steps: int) -> bool:
        """Whether rolling back ``steps`` more steps keeps the rolled-back share under the exploration cap."""
        st = self.settings
        return self._s.wasted_steps + steps <= st.explore_cap * st.total_steps + 1e-9

    def _verify_finish(self, stage: Stage, step: int) -> Segment:
        """Trust the risen LR if the rise paid for itself, else bring the cap down; go on from the risen line.

        The rise paid when its cooldown probe (which removes the noise a higher LR adds) ended below what the line
        would have reached had it stayed at the trusted LR and decayed alike (:meth:`_stayed`; the loss where the rise
        began when the model cannot tell), or above it by at most ``rise_tolerance`` times the fit's relative residual
        noise: what is left above that is damage a quadratic model does not know of.
        With ``measure_rise`` the check ran a control from the same snapshot (the trusted LR and its probe, on the
        same batches): the rise paid when its probe ended below the control's, and where it did not, the job goes on
        from the control.
        """
        st = self.settings
        o = self._online()
        assert not isinstance(o.trusted, Unset)  # set by the first training segment, before any rise
        trusted = float(o.trusted)
        rise, before = self._rise()
        ran = [c if c.steps_run > 0 and not c.diverged else None for c in stage.candidates]
        keep = ran[0] if ran else None
        control = ran[1] if len(ran) > 1 else None
        probe = None
        if keep is not None and keep.probe is not None:
            probe = next((r for r in reversed(self._s.segments) if r.segment_id == keep.probe.segment_id), None)
        risen = None if keep is None else keep.probe_loss
        stay = None if control is None else control.probe_loss
        paid: bool | None = None  # None: unchecked
        if control is not None and _finite(stay) and (keep is None or _finite(risen)):
            # Measured (``measure_rise``): the risen LR's probe against the trusted LR's, from one snapshot on the
            # same batches; a risen LR that diverged loses, and the job goes on from the control.
            paid = keep is not None and float(risen) < float(stay)  # type: ignore[arg-type]
            keep = keep if paid else control
        # A probe that never ran (an outage took its place) leaves the rise unchecked: neither trusted nor cut.
        elif keep is None or probe is not None:
            bar = before
            if keep is not None and probe is not None and before is not None and rise.parent is not None:
                stayed = self._stayed(rise.parent, before, rise.steps + keep.steps_run, probe.steps)
                bar = stayed if stayed is not None else before
            if bar is not None and o.fit is not None:
                bar *= 1 + st.rise_tolerance * o.fit.rel_noise  # a miss within the fit's scatter (rise_tolerance)
            paid = keep is not None and (bar is None or (_finite(risen) and float(risen) < bar))  # type: ignore[arg-type]
        if paid:
            self._trust(peak_lr(rise))
        elif paid is not None:
            # No rise above the trusted LR pays here; a smaller one would only be checked again (each check costs a
            # probe) for a gain too small to measure.
            o.cap = float(max(st.min_lr, min(o.cap, trusted)))
        o.rise = UNSET
        restore, drop = self._end_search(stage, keep)
        if keep is not None:
            self._s.winner_lr = keep.lr
        line = keep.segment_id if keep is not None else stage.base
        fit = self._model()
        if fit is not None:
            history = self._history(line)
            o.plan = best_plan(
                fit, history, step, st.total_steps - step, st.min_lr, self._cap(history), self._knobs(), self._rival()
            )
            o.plan_from = line
            if keep is not None:
                # Its predicted final loss is the plan's from its end, as for a search's candidates (not the curve
                # forecaster's extrapolation at a constant LR that its report left there).
                keep.forecast, keep.std, keep.plan = o.plan.final_loss, o.plan.final_std, o.plan
        seg = self._online_segment(step)
        return dataclasses.replace(seg, restore=restore, drop=drop)

    def _end_search(self, stage: Stage, keep: Candidate | None) -> tuple[str | None, tuple[str, ...]]:
        """End a search: the job goes on from ``keep``'s end state (None: from the stage's start), the rest is undone.

        Every other candidate and every cooldown probe is rolled back (its steps count as wasted), the stage's
        snapshots are released and the stage is done.

        Returns:
            The snapshot the next segment restores and the snapshots it lets the worker free.
        """
        s = self._s
        ids = {c.segment_id for c in stage.candidates}
        ids |= {c.probe.segment_id for c in stage.candidates if c.probe is not None}
        restore: str | None = stage.snapshot
        if keep is not None:
            stage.winner, stage.winner_lr = keep.index, keep.lr
            restore = keep.kept
            ids.discard(keep.segment_id)
        for rec in s.segments:
            if rec.segment_id in ids and not rec.rolled_back:
                rec.rolled_back = True
                s.wasted_steps += rec.steps
        drop = (*[c.kept for c in stage.candidates if c.kept], stage.snapshot)
        for c in stage.candidates:
            c.kept = None
        stage.status = "done"
        return restore, drop

    def _online_stage(self, step: int, k: int | None = None) -> Stage:
        st = self.settings
        s = self._s
        index = len(s.stages)
        n, _ = self._stage_cost()
        incumbent = self._planned_lr(step)
        objective: Objective = "val" if self._objective() == "val" else "train"
        stage = Stage(
            index=index,
            kind="plan",
            tau=st.total_steps - step,
            cand_steps=n,
            k=self._stage_k() if k is None else k,
            warm=False,
            incumbent_lr=incumbent,
            objective=objective,
            start_step=step,
            start_loss=s.ref_loss,
            start_spread=s.ref_spread,
            lo=0.0,
            hi=1.0,
            snapshot=f"stage-{index}",
            status="search",
            base=s.line,
        )
        s.stages.append(stage)
        return stage

    def _online_candidate(self, stage: Stage, step: int) -> Segment | None:
        """The stage's next candidate or cooldown probe, or None when its search is over."""
        st = self.settings
        cands = stage.candidates
        # The incumbent's cooldown probe, and every other candidate's above the trust region (with ``probe_all``
        # every candidate's), right after it ran.
        o = self._online()
        checking = not isinstance(o.rise, Unset)  # a rise's check: its control, if any, is probed too
        last = cands[-1] if cands else None
        if (
            last is not None
            and (
                len(cands) == 1 or st.probe_all or checking or (self._beyond_trust(last.lr) and self._probe_fits(stage))
            )
            and self._wants_probe(last)
        ):
            return self._probe(stage, last, step)
        i = len(cands)
        n = stage.cand_steps
        if i >= stage.k:
            return None
        incumbent = stage.incumbent_lr
        assert incumbent is not None  # a plan stage is centred on the plan's LR
        if i == 0:
            lr = incumbent
        elif checking:
            assert not isinstance(o.trusted, Unset)  # set by the first training segment, before any rise
            lr = float(o.trusted)  # the control: the line had it not risen
        else:
            started = time.perf_counter()
            base = self._history(stage.base)
            fit = self._model()
            plan = None
            if fit is not None:
                rest = st.total_steps - step - n
                after = base.extend(np.array([float(n)]), np.array([incumbent]))
                cap = self._cap(after) if self._spectral else min(o.edge, after.last_lr)
                plan = best_plan(fit, after, step + n, rest, st.min_lr, cap, self._knobs(), self._rival())
            lr = propose(fit, base, plan, incumbent, [c.lr for c in cands], n, st.min_lr, o.edge)
            self.last_suggest_s = time.perf_counter() - started
        keep = f"cand-{stage.index}-{i}"
        return self._candidate(stage, step, lr, to_unit(lr, st.min_lr, st.max_lr), keep, self._eval_every(n))

    def _beyond_trust(self, lr: float) -> bool:
        """Whether a candidate at ``lr`` lies above the spectral model's trust region (it informs the model only)."""
        o = self._online()
        return self._spectral and not isinstance(o.trusted, Unset) and lr > TRUST_GROWTH * float(o.trusted) * (1 + 1e-9)

    def _probe_fits(self, stage: Stage) -> bool:
        """Whether one more cooldown probe in this search keeps the exploration under its cap.

        The search was started with room for its candidates and the incumbent's probe; every other probe is extra,
        and counts against both the rolled-back steps and the steps spent exploring (the kept winner's included).
        """
        st = self.settings
        s = self._s
        n, p = stage.cand_steps, self._probe_steps(stage.cand_steps)
        probes = sum(1 for c in stage.candidates if c.probe is not None)
        planned = (stage.k - 1) * n + p
        rest = (stage.k - len(stage.candidates)) * n
        cap = st.explore_cap * st.total_steps + 1e-9
        return s.wasted_steps + planned + probes * p <= cap and s.explore_steps + rest + p <= cap

    def _barred(self, stage: Stage, cand: Candidate) -> str | None:
        """Why a candidate above the trust region may not win, or None where it may.

        It may where its cooldown probe ended below the incumbent's (the same batches, the same decay).
        """
        o = self._online()
        assert not isinstance(o.trusted, Unset)  # a candidate is above the trust region only once there is one
        bound = TRUST_GROWTH * float(o.trusted)
        above = f"above the trust region (LRs up to {bound:.3g}, {TRUST_GROWTH:g}x the trusted LR)"
        mine, inc = cand.probe_loss, stage.candidates[0].probe_loss
        if mine is None:
            return f"{above} and not probed: no room left under the exploration cap"
        if inc is None:
            return f"{above}; the incumbent's cooldown probe did not run, so nothing to beat was measured"
        if math.isfinite(mine) and math.isfinite(inc) and mine < inc:
            return None
        return f"{above}; its cooldown probe ended at {mine:.4g}, not below the incumbent's {inc:.4g}"

    def _online_finish(self, stage: Stage, step: int) -> Segment:
        """Judge the candidates by their predicted final loss, continue from the best, re-plan."""
        st = self.settings
        s = self._s
        o = self._online()
        fit = self._model()
        ran = [c for c in stage.candidates if c.steps_run > 0 and not c.diverged]
        beyond = {c.index for c in ran if self._beyond_trust(c.lr)}
        # Above the trust region only a candidate whose probe showed the rise paying may win; the others inform the
        # model, and say why they could not win.
        for c in ran:
            if c.index in beyond:
                c.barred = self._barred(stage, c)
        usable = [c for c in ran if c.barred is None]
        eligible = {c.index for c in usable}
        best: Candidate | None = None
        best_loss = math.inf
        for c in ran:
            if fit is not None:
                history = self._history(c.segment_id)
                if not self._spectral:
                    cap = min(o.edge, history.last_lr)
                else:
                    cap = min(float(o.cap), TRUST_GROWTH * c.lr) if c.index in beyond else self._cap(history)
                rest = st.total_steps - step
                plan = best_plan(fit, history, step, rest, st.min_lr, cap, self._knobs(), self._rival())
                c.forecast, c.std = plan.final_loss, plan.final_std
                c.plan = plan
                value = plan.final_loss if plan.final_loss is not None else math.inf
            else:
                value = c.last_loss if c.last_loss is not None else math.inf
            if c.index in eligible and value < best_loss:
                best, best_loss = c, value
        probed = [c for c in usable if c.probe_loss is not None]
        if st.probe_judge and len(usable) > 1 and len(probed) == len(usable):
            # Judged by what was seen: the loss each candidate reached after its own short decay.
            best = min(probed, key=lambda c: float(c.probe_loss))  # type: ignore[arg-type]
        if best is not None and best.index in beyond:
            self._trust(best.lr)  # its probe paid off against the incumbent's: a checked rise
        restore, drop = self._end_search(stage, best)
        if best is None:
            lowest = min(c.lr for c in stage.candidates)
            stage.winner_lr = max(st.min_lr, lowest / 10)
            # Every candidate diverged: the stability edge lies below the lowest of them.
            o.cap = min(o.cap, lowest * (SPECTRAL_CAP if self._spectral else 1 / 3))
            o.edge = min(o.edge, lowest)
            o.plan = None
        elif best.plan is not None:
            o.plan = best.plan
            o.plan_from = best.segment_id
        s.winner_lr = stage.winner_lr
        o.spacing = min(2 * o.spacing, st.tau_max)
        o.next_search = step + o.spacing
        seg = self._online_segment(step)
        return dataclasses.replace(seg, restore=restore, drop=drop)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
