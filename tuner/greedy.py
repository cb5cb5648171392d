"""The stage machine of the ``greedy`` and ``paper`` presets.

A job's life::

    warmup ─► stage 0: candidates (explore) ─► winner ─► train ─► stage 1 ... ─► anneal ─► done

Each stage tries a few candidates (:mod:`lrtune.tuner.candidates`), chooses the winner, and trains on at its LR for the
rest of the stage (continuing from the winner's end state when it was kept); the horizon ``tau`` doubles per
stage up to ``tau_max``; the last ``anneal_steps`` decay linearly to 0 from the last winner.
"""

from __future__ import annotations

import math
import time

from lrtune.tuner import schedules
from lrtune.tuner.candidates import carried_point
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.search import from_unit, to_unit
from lrtune.tuner.segment import Segment
from lrtune.tuner.stagestate import Objective, Point, Stage

_SWEEP_HEADROOM = 3.0  # the first stage searches at least this factor below the sweep's lowest-loss LR


class GreedyStages(TunerParts):
    """Stages of candidates, a winner and its training, then the final anneal."""

    def _anneal(self, step: int, main_end: int) -> Segment:
        st = self.settings
        s = self._s
        restore, drop = self._close_stage()
        if s.anneal_lr is None:
            s.anneal_lr = s.winner_lr or self._start_lr()
        n = self._chunk(step, st.total_steps)
        return schedules.piece(
            self._new_id(),
            "anneal",
            step,
            n,
            "linear",
            s.anneal_lr,
            0.0,
            main_end,
            st.total_steps,
            restore=restore,
            drop=tuple(drop),
        )

    def _close_stage(self) -> tuple[str | None, list[str]]:
        """Finish a stage whose search ran into the end of the main phase.

        Returns:
            The snapshot to restore (the winner's) and the snapshots to free.
        """
        stages = self._s.stages
        if not stages or stages[-1].status != "search":
            return None, []
        stage = stages[-1]
        drop = self._finish_search(stage)
        stage.status = "done"
        return stage.restore_snapshot, drop

    def _stage_segment(self, step: int, main_end: int) -> Segment:
        stages = self._s.stages
        last = stages[-1] if stages else None
        if last is not None and last.status == "exploit" and step >= (last.exploit_end or math.inf):
            last.status = "done"  # offline steps ran past its end
        if not stages or stages[-1].status == "done":
            stages.append(self._new_stage(step, main_end))
        stage = stages[-1]
        if stage.status == "search":
            seg = self._next_candidate(stage, step, main_end)
            if seg is not None:
                return seg
            drop = self._finish_search(stage)
            return self._exploit(stage, step, main_end, first=True, drop=drop)
        return self._exploit(stage, step, main_end, first=False, drop=[])

    def _new_stage(self, step: int, main_end: int) -> Stage:
        st = self.settings
        s = self._s
        index = len(s.stages)
        tau = min(st.tau * 2**index, st.tau_max)
        objective: Objective = (
            "val" if st.objective == "val" or (st.objective == "auto" and tau >= st.tau_max) else "train"
        )
        prev = s.stages[-1] if s.stages else None
        warm = bool(st.carry_observations and prev is not None and prev.winner_lr is not None)
        # The incumbent: the last winner, or for the first stage the LR range sweep's suggestion (or the prior LR).
        incumbent = prev.winner_lr if prev is not None else None
        if prev is None:
            incumbent = self._suggested_lr()
        centred = warm or (prev is None and incumbent is not None)
        k = st.k_warm if centred else st.k
        cand = max(st.min_candidate_steps, round(st.candidate_fraction * tau))
        rem = main_end - step
        cost = k * (cand + self._probe_steps(cand)) + (tau - cand if st.keep_winner else tau)
        if rem < cost:
            shrink = rem / cost
            tau = max(1, math.floor(tau * shrink))
            cand = max(1, min(round(st.candidate_fraction * tau), rem // (k + 1)))
            if s.winner_lr is not None and cand < st.min_candidate_steps:
                k = 0  # not worth a search: train on at the last winner
        if objective == "val":
            cand = max(cand, st.val_samples)
        if s.winner_lr is not None and k > 0:
            # Under the exploration cap, a stage that cannot try at least two LRs does not search.
            room = st.explore_cap * st.total_steps - s.explore_steps
            affordable = int(room // (cand + self._probe_steps(cand)))
            k = min(k, affordable) if affordable >= 2 else 0
        lo, hi = 0.0, 1.0
        carried: tuple[Point, ...] = ()
        if centred and incumbent is not None:
            center = to_unit(incumbent, st.min_lr, st.max_lr)
            lo, hi = max(0.0, center - st.trust_region), min(1.0, center + st.trust_region)
            if not warm:
                # Centred on the sweep: stay a safe factor below the LR where the sweep's loss bottomed out
                # (``sweep_divisor`` times its suggestion), past which training turns unstable. Short candidates
                # cannot see that instability early in training: a larger LR makes faster early progress there,
                # even after a cooldown.
                edge = to_unit(st.sweep_divisor * incumbent / _SWEEP_HEADROOM, st.min_lr, st.max_lr)
                hi = max(center, min(hi, edge))
        if warm and prev is not None:
            carried = tuple(carried_point(o) for o in self._observations(prev))
        return Stage(
            index=index,
            tau=tau,
            cand_steps=cand,
            k=k,
            warm=warm,
            incumbent_lr=incumbent if centred else None,
            objective=objective,
            start_step=step,
            start_loss=s.ref_loss,
            start_spread=s.ref_spread,
            lo=lo,
            hi=hi,
            snapshot=f"stage-{index}",
            carried=carried,
            status="search" if k > 0 else "exploit",
            winner_lr=s.winner_lr if k == 0 else None,
        )

    def _next_candidate(self, stage: Stage, step: int, main_end: int) -> Segment | None:
        st = self.settings
        cands = stage.candidates
        if cands and self._wants_probe(cands[-1]):
            return self._probe(stage, cands[-1], step)
        i = len(cands)
        n = stage.cand_steps
        cost = n + self._probe_steps(n)
        if i >= stage.k or step + cost > main_end:
            return None
        if self._s.explore_steps + cost > st.explore_cap * st.total_steps + 1e-9:
            return None
        started = time.perf_counter()
        x = self._propose(stage, i)
        self.last_suggest_s = time.perf_counter() - started
        lr = from_unit(x, st.min_lr, st.max_lr)
        keep = f"cand-{stage.index}-{i}" if st.keep_winner else None
        every = max(1, n // st.val_samples) if stage.objective == "val" else None
        drop = tuple(self._drops(stage)) if i > 0 else ()
        return self._candidate(stage, step, lr, x, keep, every, drop)

    def _finish_search(self, stage: Stage) -> list[str]:
        """Choose the winner, mark rolled-back segments; return snapshots to free."""
        st = self.settings
        s = self._s
        ranking = self._ranking(stage, kept_only=st.keep_winner)
        drop: list[str] = []
        if ranking:
            w = stage.candidates[ranking[0]]
            stage.winner = w.index
            stage.winner_lr = w.lr
            stage.restore = w.kept if st.keep_winner else stage.snapshot
        elif stage.candidates:
            # Every candidate diverged: fall back below the lowest LR tried, from the stage start.
            lowest = min(c.lr for c in stage.candidates)
            stage.winner_lr = max(st.min_lr, lowest / 10)
            stage.restore = stage.snapshot
        else:
            # No candidate fitted the budget: train on at the last winner.
            stage.winner_lr = s.winner_lr or self._start_lr()
            stage.restore = None
        for c in stage.candidates:
            if c.kept:
                drop.append(c.kept)
                c.kept = None
        if stage.candidates:
            drop.append(stage.snapshot)
        winner_seg = None
        if stage.winner is not None and st.keep_winner and stage.restore_snapshot:
            winner_seg = stage.candidates[stage.winner].segment_id
        ids = {c.segment_id for c in stage.candidates}
        ids |= {c.probe.segment_id for c in stage.candidates if c.probe is not None}
        for rec in s.segments:
            if rec.segment_id in ids and rec.segment_id != winner_seg:
                rec.rolled_back = True
                s.wasted_steps += rec.steps
        stage.status = "exploit"
        s.winner_lr = stage.winner_lr
        return drop

    def _exploit(self, stage: Stage, step: int, main_end: int, first: bool, drop: list[str]) -> Segment:
        st = self.settings
        if stage.exploit_end is None:
            kept = stage.winner is not None and st.keep_winner and bool(stage.restore_snapshot)
            length = stage.tau - (stage.cand_steps if kept else 0)
            end = min(step + max(length, 1), main_end)
            next_tau = min(stage.tau * 2, st.tau_max)
            next_cand = max(st.min_candidate_steps, round(st.candidate_fraction * next_tau))
            next_cost = (st.k_warm + 1) * next_cand + st.k_warm * self._probe_steps(next_cand)
            if main_end - end < max(next_cost, next_tau // 2):
                end = main_end
            stage.exploit_end = end
        if stage.winner_lr is None:
            stage.winner_lr = self._s.winner_lr or self._start_lr()
        end = stage.exploit_end
        n = self._chunk(step, end)
        if step + n >= end:
            stage.status = "done"
        restore = stage.restore_snapshot if first else None
        return Segment(
            self._new_id(),
            "train",
            step,
            n,
            "constant",
            stage.winner_lr,
            stage.winner_lr,
            0.0,
            1.0,
            stage=stage.index,
            restore=restore,
            drop=tuple(drop),
        )
