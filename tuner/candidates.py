"""Candidates: the segments that try an LR from a stage's snapshot, their cooldown probes, and judging them.

A candidate runs ``cand_steps`` steps at one LR from the stage snapshot (the first saves it, the others restore
it); its losses are forecast to the stage horizon; an optional cooldown probe then decays its LR linearly to 0
from its end state, so every candidate is judged as if annealed there. BO over normalized log10-LR (a GP on the
candidates' scores, :mod:`lrtune.tuner.search`) proposes the next one; the ranking leaves the incumbent only for a
clearly better LR. The greedy, paper and plan presets all build their candidates here.
"""

from __future__ import annotations

import math

import numpy as np

from lrtune.tuner.forecast import forecast_loss
from lrtune.tuner.parts import TunerParts
from lrtune.tuner.records import SegmentRecord
from lrtune.tuner.records import mean as _mean
from lrtune.tuner.records import spread as _spread
from lrtune.tuner.search import Observation, Surrogate, to_unit
from lrtune.tuner.segment import Segment, diverged
from lrtune.tuner.stagestate import Candidate, CurveFit, Point, Probe, Stage

MAX_KEPT = 2  # candidate end states held at once in keep-winner mode
_SWITCH_MARGIN = 2.0  # standard errors of the difference by which a challenger must beat the incumbent
_CARRY_NOISE = 1.0  # carried points get extra noise of this times their spread: a weak prior, not a verdict


class Candidates(TunerParts):
    """Building, observing, scoring and ranking a stage's candidates."""

    def _observe_candidate(self, seg: Segment, train: list[float], val: list[float] | None, rec: SegmentRecord) -> None:
        """Take a candidate's losses: its first and last loss, its curve and the forecast at the stage horizon.

        Args:
            seg: The candidate's segment.
            train: Shape (steps run,). Its training losses, NaN for a non-finite one.
            val: Its validation losses, when it asked for them.
            rec: Its segment record (its ``diverged`` is set here).
        """
        assert seg.stage is not None and seg.candidate is not None
        st = self._s.stages[seg.stage]
        cand = st.candidates[seg.candidate]
        rec.diverged = diverged(train, seg.abort_above)
        finite = [v for v in train if math.isfinite(v)]
        cand.steps_run = len(train)
        cand.first_loss = _mean(finite[:5])
        cand.last_loss = _mean(finite[-5:])
        cand.curve = rec.curve
        cand.diverged = rec.diverged
        if st.start_loss is None and cand.first_loss is not None:
            st.start_loss = cand.first_loss
            st.start_spread = _spread(finite[:50])
        if not rec.diverged:
            if st.objective == "val" and seg.eval_every:
                every = seg.eval_every
                xs = [every * (i + 1) for i in range(len(val or []))]
                ys: list[float] = list(val or [])
            else:
                xs = list(range(1, len(train) + 1))
                ys = train
            fc = forecast_loss(xs, ys, st.tau, self.settings.forecast_families, self.settings.loss_floor)
            if math.isfinite(fc.mean):
                cand.forecast = fc.mean
                cand.std = fc.std
                cand.fit = CurveFit(fc.family, fc.a, fc.rate, fc.exponent, fc.c, fc.noise, fc.points)
            else:
                cand.diverged = rec.diverged = True

    def _observe_probe(
        self, seg: Segment, train: list[float], val: list[float] | None, rec: SegmentRecord, cand: Candidate
    ) -> None:
        """Take a cooldown probe's losses: the loss after a short decay to 0, and its noise."""
        probe = cand.probe
        assert probe is not None
        rec.diverged = diverged(train, seg.abort_above)
        finite = [v for v in train if math.isfinite(v)]
        if rec.diverged or not finite:
            cand.diverged = True
            return
        if seg.eval_every and val and math.isfinite(val[-1]):
            tail = [val[-1]]
            end, var = val[-1], 0.0
        else:
            tail = finite[-max(3, len(finite) // 4) :]
            end, var = sum(tail) / len(tail), _spread(tail) ** 2 / len(tail)
        probe.loss = end
        probe.var = var
        probe.tail = tuple(tail)

    def _candidate(
        self,
        stage: Stage,
        step: int,
        lr: float,
        x: float,
        keep: str | None,
        eval_every: int | None,
        drop: tuple[str, ...] = (),
    ) -> Segment:
        """Record the stage's next candidate and return its segment.

        The first candidate saves the stage snapshot; the others restore it.

        Args:
            stage: The stage.
            step: Global step the candidate starts at.
            lr: Its LR.
            x: Its normalized log10-LR.
            keep: Name to keep its end state under, or None.
            eval_every: Validation cadence, or None.
            drop: Snapshots the worker may free first.
        """
        st = self.settings
        i = len(stage.candidates)
        name = stage.snapshot
        abort = None
        start_loss = stage.start_loss
        if st.divergence_guard and start_loss is not None:
            # "Far above the start": by (factor - 1) times the start loss, or times three times the step-to-step
            # spread of the losses when that is larger (a loss near zero is noisy relative to its level).
            scale = max(abs(start_loss), 3.0 * (stage.start_spread or 0.0))
            abort = start_loss + (st.divergence_factor - 1.0) * scale
        stage.candidates.append(Candidate(i, lr, x, self._s.next_id, kept=keep, abort_above=abort))
        return Segment(
            self._new_id(),
            "explore",
            step,
            stage.cand_steps,
            "constant",
            lr,
            lr,
            0.0,
            1.0,
            stage=stage.index,
            candidate=i,
            restore=name if i > 0 else None,
            snapshot=name if i == 0 else None,
            keep=keep,
            drop=drop,
            eval_every=eval_every,
            abort_above=abort,
            replay=st.replay_batches,
        )

    def _probe_steps(self, cand_steps: int) -> int:
        """Length of the cooldown probe after a candidate of ``cand_steps`` steps (0: no probes)."""
        fraction = self.settings.probe_fraction
        return max(3, round(fraction * cand_steps)) if fraction > 0 else 0

    def _wants_probe(self, cand: Candidate) -> bool:
        """True when a candidate ran, did not diverge, and its cooldown probe has not been handed out yet."""
        return self.settings.probe_fraction > 0 and cand.steps_run > 0 and not cand.diverged and cand.probe is None

    def _probe(self, stage: Stage, cand: Candidate, step: int) -> Segment:
        """The cooldown probe of a candidate: from its end state, the LR decays linearly to 0; nothing is kept."""
        st = self.settings
        n = self._probe_steps(stage.cand_steps)
        sid = self._new_id()
        cand.probe = Probe(sid)
        return Segment(
            sid,
            "explore",
            step,
            n,
            "linear",
            cand.lr,
            0.0,
            0.0,
            1.0,
            stage=stage.index,
            candidate=cand.index,
            eval_every=n if stage.objective == "val" else None,
            abort_above=cand.abort_above,
            replay=st.replay_batches,
        )

    def _propose(self, stage: Stage, i: int) -> float:
        """Next candidate's normalized log10-LR (deterministic given the seed and the observations)."""
        st = self.settings
        rng = np.random.default_rng([st.seed, stage.index, i])
        if stage.incumbent_lr is not None:
            if i == 0:
                return to_unit(stage.incumbent_lr, st.min_lr, st.max_lr)
        elif st.acquisition == "explore":
            if i == 0:
                return float(rng.uniform(0.0, 1.0))
        elif i < 3:
            return float((2 * i + 1) / 6 + rng.uniform(-1 / 12, 1 / 12))
        obs = self._observations(stage, carried=True)
        seen = [c.x for c in stage.candidates]
        surrogate = self._surrogate(obs)
        return surrogate.suggest(stage.lo, stage.hi, acquisition=st.acquisition, avoid=seen)

    def _surrogate(self, obs: list[Observation]) -> Surrogate:
        """The GP fitted to ``obs``; fits are remembered, since one report ranks and proposes on the same points.

        The memo lives on this object only (never in the dumped state); a fit is a pure function of ``obs``.
        """
        key = tuple(obs)
        memo = self._fits.get(key)
        if memo is None:
            memo = Surrogate(obs, learn_noise=not self.settings.noise_from_forecast)
            if len(self._fits) >= 8:
                self._fits.clear()
            self._fits[key] = memo
        return memo

    def _observations(self, stage: Stage, carried: bool = False, failed: bool = True) -> list[Observation]:
        """The stage's (x, objective, noise) points.

        Args:
            stage: The stage.
            carried: Add the previous stage's points (shifted to this stage's level).
            failed: Include diverged candidates, with a finite penalty (for proposing; ranking leaves them out, so
                a penalty does not drag down the posterior of a good LR next to a diverged one).
        """
        st = self.settings
        scores, _ = self._scores(stage)
        cands = [c for c in stage.candidates if c.steps_run > 0 and ((c.diverged and failed) or c.index in scores)]
        ref = stage.start_loss
        base = max([*(v for v, _ in scores.values()), *([ref] if ref is not None else [])], default=1.0)
        penalty = base + 0.5 * abs(base) + 1e-8
        obs: list[Observation] = []
        for c in cands:
            if c.diverged:
                obs.append(Observation(c.x, penalty, (0.1 * abs(base)) ** 2 + 1e-12))
            else:
                value, var = scores[c.index]
                obs.append(Observation(c.x, value, var if st.noise_from_forecast else 0.0))
        if carried and stage.carried and obs:
            obs = self._with_carried(stage, obs)
        return obs

    def _scores(self, stage: Stage) -> tuple[dict[int, tuple[float, float]], bool]:
        """Each usable candidate's objective and its variance, by candidate index, and whether probes gave them.

        Without probes the objective is the forecast at the stage horizon. With cooldown probes it is the loss at
        the end of the probe: every candidate is judged as if it were annealed there, and on the same batches. (The
        forecast of a short constant-LR curve is far noisier than the differences between candidates, and it
        still credits a smaller LR with the loss drop that any LR gets from the final anneal.) A candidate whose
        probe has not run is left out, unless no candidate has one (a stage cut short by the end of the budget),
        when the forecasts alone rank them.
        """
        out: dict[int, tuple[float, float]] = {}
        plain: dict[int, tuple[float, float]] = {}
        for c in stage.candidates:
            if c.steps_run == 0 or c.diverged or c.forecast is None:
                continue
            assert c.std is not None  # set with the forecast
            plain[c.index] = (float(c.forecast), float(c.std) ** 2)
            probe = c.probe
            if (
                stage.kind != "plan"
                and self.settings.probe_fraction > 0
                and probe is not None
                and probe.loss is not None
            ):
                out[c.index] = (float(probe.loss), float(probe.var or 0.0))
        return (out, True) if out else (plain, False)

    def _with_carried(self, stage: Stage, obs: list[Observation]) -> list[Observation]:
        """Add the previous stage's points, shifted to agree with this stage at the incumbent."""
        prev = [Observation(p.x, p.y, p.noise_var) for p in stage.carried]
        if not prev:
            return obs
        incumbent = obs[0]
        prev_model = self._surrogate(prev)
        mean, _ = prev_model.predict([incumbent.x])
        offset = incumbent.y - float(mean[0])
        spread = float(np.std([o.y for o in prev])) if len(prev) > 1 else 0.0
        extra = (_CARRY_NOISE * spread) ** 2
        shifted = [Observation(o.x, o.y + offset, o.noise_var + extra) for o in prev]
        return obs + shifted

    def _ranking(self, stage: Stage, kept_only: bool = False) -> list[int]:
        """Candidate indices that did not diverge, best first (posterior mean, or forecast in the paper).

        Args:
            stage: The stage.
            kept_only: Rank only candidates whose end state is still kept.
        """
        scores, probed = self._scores(stage)
        cands = [c for c in stage.candidates if c.index in scores and (c.kept or not kept_only)]
        if not cands:
            return []
        if self.settings.preset == "paper" or len(cands) < 2:
            return [c.index for c in sorted(cands, key=lambda c: (scores[c.index][0], c.index))]
        if probed:
            # Probe losses are measured, on the same batches: their paired noise is far below the spread the GP
            # sees, so the measurements themselves rank the candidates (the GP only proposes).
            mean = np.array([scores[c.index][0] for c in cands])
        else:
            obs = self._observations(stage, carried=True, failed=False)
            mean, _ = self._surrogate(obs).predict([c.x for c in cands])
        order = sorted(range(len(cands)), key=lambda j: (float(mean[j]), cands[j].index))
        # Leave the incumbent (the last winner, candidate 0 of a warm stage) only for a clearly better LR: by more
        # than the noise of the two candidates' loss difference, measured step by step (with batch replay the
        # candidates see the same batches, so that noise is small). The forecasts' extrapolation error is largely
        # shared between candidates of a stage, so it does not count here; without this rule, ties (a saturated
        # loss) let the LR drift at random.
        challenger = order[0]
        if stage.incumbent_lr is not None and cands[0].index == 0 and challenger != 0:
            margin = _SWITCH_MARGIN * _difference_noise(cands[0], cands[challenger])
            if not mean[challenger] < mean[0] - margin:
                order.remove(0)
                order.insert(0, 0)
        return [cands[j].index for j in order]

    def _drops(self, stage: Stage) -> list[str]:
        """Kept candidate states no longer among the best ``MAX_KEPT``; marks them dropped."""
        if not self.settings.keep_winner:
            return []
        best = set(self._ranking(stage, kept_only=True)[:MAX_KEPT])
        out = []
        for c in stage.candidates:
            if c.kept and c.steps_run > 0 and c.index not in best:
                out.append(c.kept)
                c.kept = None
        return out


def _difference_noise(a: Candidate, b: Candidate) -> float:
    """Standard error of the mean loss difference of two candidates.

    From the ends of their cooldown probes when both have one, else from their binned loss curves. Steps (or bins)
    at the same position are paired; with replayed batches their shared batch noise cancels. With fewer than
    three pairs, the candidates' forecast uncertainties stand in.
    """
    ta, tb = (None if c.probe is None else c.probe.tail for c in (a, b))
    if ta and tb and len(ta) == len(tb) and len(ta) >= 3:
        paired = [x - y for x, y in zip(ta, tb, strict=True)]
        return float(np.std(paired, ddof=1)) / math.sqrt(len(paired))
    diffs = [x[1] - y[1] for x, y in zip(a.curve, b.curve, strict=False) if x[1] is not None and y[1] is not None]
    if len(diffs) < 3:
        return math.hypot(float(a.std or 0.0), float(b.std or 0.0))
    return float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))


def carried_point(o: Observation) -> Point:
    """An observation as a stage carries it over to the next stage."""
    return Point(o.x, o.y, o.noise_var)
