"""The stage machine: turns reports into segments.

A job's life, for the ``autolrs`` strategy::

    warmup ─► stage 0: candidates (explore) ─► winner ─► train ─► stage 1 ... ─► anneal ─► done

In each stage a few candidate LRs each run ``tau'`` steps from the same snapshot; each candidate's losses are
forecast to the stage horizon ``tau``; BO over normalized log10-LR proposes the next candidate; the winner
then trains for the rest of the stage. The other strategies serve a fixed schedule through the same
segments. The whole state is one JSON-safe dict: observations are stored, never fitted models, and every
decision is a deterministic function of that dict, so :meth:`Tuner.recover` continues exactly where
:meth:`Tuner.dump` left off.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tuner import schedules
from tuner.config import Settings, TunerConfig, resolve
from tuner.errors import (
    ConflictingReportError,
    InvalidReportError,
    InvalidStateError,
    UnknownSegmentError,
)
from tuner.forecast import forecast_loss
from tuner.online import OnlinePlanning
from tuner.outage import Outages, parse_offline
from tuner.records import mean as _mean
from tuner.records import segment_record
from tuner.search import Observation, Surrogate, from_unit, to_unit
from tuner.segment import OfflinePiece, Segment, diverged

SCHEMA_VERSION = 1
_MAX_KEPT = 2  # candidate end states held at once in keep-winner mode
_SWITCH_MARGIN = 2.0  # standard errors of the difference by which a challenger must beat the incumbent
_CARRY_NOISE = 1.0  # carried points get extra noise of this times their spread: a weak prior, not a verdict
_RECENT = 50  # losses of the kept trajectory remembered for the divergence guard's reference
_SWEEP_DIVISOR = 10.0  # the sweep suggests its lowest-loss LR divided by this
_SWEEP_HEADROOM = 3.0  # the first stage searches at least this factor below the sweep's lowest-loss LR
_Z90 = 1.6448536269514722


class Tuner(OnlinePlanning, Outages):
    """An LR tuning job: hands out segments and takes their losses.

    Args:
        config: What the job asks for.

    Example:
        >>> t = Tuner(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=2_000))
        >>> seg = t.next_segment()
        >>> seg = t.report(seg.segment_id, losses=[1.0] * seg.steps)
    """

    def __init__(self, config: TunerConfig) -> None:
        self.config = config
        self.settings: Settings = resolve(config)
        self.last_suggest_s: float = 0.0
        self._fits: dict[tuple[Observation, ...], Surrogate] = {}
        self._model_memo = None
        self._record_memo = None
        self._s: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "config": config.to_dict(),
            "step": 0,
            "next_id": 0,
            "open": None,
            "stages": [],
            "segments": [],
            "winner_lr": None,
            "explore_steps": 0,
            "wasted_steps": 0,
            "ref_loss": None,
            "ref_spread": None,
            "recent_losses": [],
            "anneal_lr": None,
            "last_report": None,
            "sweep": None,
            "line": None,
            "snaps": {},
        }
        self._open(self._plan())

    # ------------------------------------------------------------------ public API

    def next_segment(self) -> Segment:
        """Return the open segment: the same one until it is reported."""
        return Segment.from_dict(self._s["open"])

    @property
    def done(self) -> bool:
        """True once the whole budget is spent."""
        return bool(self._s["open"]["done"])

    @property
    def steps_used(self) -> int:
        """Gradient steps reported so far, exploration included."""
        return int(self._s["step"])

    def report(
        self,
        segment_id: int,
        losses: Sequence[float | None],
        val_losses: Sequence[float | None] | None = None,
        offline: Sequence[OfflinePiece | dict[str, Any]] | None = None,
    ) -> Segment:
        """Record the losses of the open segment and return the next one.

        Args:
            segment_id: Id of the segment that ran (with ``offline``: the open segment, which did not run).
            losses: Shape (steps,). Training loss after each step; ``None``, NaN or inf mark a diverged step.
                A candidate (``explore``) segment may be cut short once it diverged. With ``offline``: one loss
                per offline step.
            val_losses: Shape (steps // eval_every,). Validation losses, required when the segment set
                ``eval_every``.
            offline: The steps the worker ran instead of the open segment, while it could not reach the service
                (see :mod:`tuner.outage`): pieces that follow each other from the step the job had used.

        Returns:
            The next segment. Reporting the last reported segment again with the same losses changes nothing
            and returns the same next segment.

        Raises:
            UnknownSegmentError: ``segment_id`` is neither the open segment nor the last reported one.
            ConflictingReportError: The last reported segment is reported again with other losses.
            InvalidReportError: The losses do not fit the segment.
        """
        seg = self._s["open"]
        self.last_suggest_s = 0.0
        train = _as_floats(losses, "losses")
        val = None if val_losses is None else _as_floats(val_losses, "val_losses")
        pieces = None if offline is None else parse_offline(offline)
        digest = _digest(segment_id, train, val, pieces)
        last = self._s["last_report"]
        if last is not None and segment_id == last["segment_id"]:
            if digest != last["digest"]:
                raise ConflictingReportError(
                    f"segment {segment_id} was already reported with different losses; the open segment is "
                    f"{seg['segment_id']}"
                )
            return self.next_segment()
        if segment_id != seg["segment_id"]:
            raise UnknownSegmentError(
                f"segment {segment_id} is not the open segment (the open segment is {seg['segment_id']})"
            )
        if seg["done"]:
            raise InvalidReportError("the job is done: its budget is spent and there is nothing to report")
        if pieces is not None:
            if val:
                raise InvalidReportError("a report of offline steps has no validation losses")
            nxt = self._skip(seg, pieces, train)
        else:
            self._validate(seg, train, val)
            self._apply(seg, train, val)
            nxt = self._plan()
        self._s["last_report"] = {"segment_id": segment_id, "digest": digest}
        self._open(nxt)
        return self.next_segment()

    def dump(self, copy: bool = True) -> dict[str, Any]:
        """Return the job's whole state as a JSON-safe dict.

        Args:
            copy: Return a deep copy. ``False`` returns the live state, for a caller that serializes it at once
                and does not use this tuner again (it saves the copy's time on large states).
        """
        return _copy.deepcopy(self._s) if copy else self._s

    @classmethod
    def recover(cls, state: dict[str, Any], copy: bool = True) -> Tuner:
        """Rebuild a tuner from :meth:`dump` output; it behaves exactly like the dumped one from here on.

        Args:
            state: The dumped state.
            copy: Work on a deep copy of ``state``. ``False`` adopts it (and changes it in place as the tuner
                runs), for a caller that just decoded it and keeps no other reference.

        Raises:
            InvalidStateError: The state has another schema version or is malformed.
        """
        if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION:
            got = state.get("schema") if isinstance(state, dict) else type(state).__name__
            raise InvalidStateError(f"cannot recover tuner state with schema {got!r} (expected {SCHEMA_VERSION})")
        try:
            config = TunerConfig.from_dict(state["config"])
            tuner = cls.__new__(cls)
            tuner.config = config
            tuner.settings = resolve(config)
            tuner.last_suggest_s = 0.0
            tuner._fits = {}
            tuner._model_memo = None
            tuner._record_memo = None
            tuner._s = _copy.deepcopy(state) if copy else state
            Segment.from_dict(tuner._s["open"])
        except (KeyError, TypeError) as exc:
            raise InvalidStateError(f"malformed tuner state: {exc}") from exc
        return tuner

    def summary(self) -> dict[str, Any]:
        """Return the few figures a job listing shows.

        Returns:
            ``steps_used``, ``total_steps``, ``phase`` and ``lr`` (of the open segment), ``stage``,
            ``explore_share``, ``last_loss`` (mean of the last reported segment's final losses, or None) and
            ``done``.
        """
        s = self._s
        seg = s["open"]
        last = None
        for rec in reversed(s["segments"]):
            points = [p[1] for p in rec["curve"] if p[1] is not None]
            if points:
                last = points[-1]
                break
        return {
            "steps_used": s["step"],
            "total_steps": self.settings.total_steps,
            "phase": seg["phase"],
            "lr": None if seg["done"] else seg["lr"],
            "stage": seg["stage"],
            "explore_share": s["explore_steps"] / self.settings.total_steps,
            "last_loss": last,
            "done": bool(seg["done"]),
        }

    def schedule(self) -> dict[str, Any]:
        """Return the realized schedule: segments, stages with their candidates, and the search share."""
        s = self._s
        total = self.settings.total_steps
        return {
            "total_steps": total,
            "steps_used": s["step"],
            "explore_steps": s["explore_steps"],
            "wasted_steps": s["wasted_steps"],
            "explore_share": s["explore_steps"] / total,
            "wasted_share": s["wasted_steps"] / total,
            "winner_lr": s["winner_lr"],
            "done": self.done,
            "open": self._s["open"],
            "segments": _copy.deepcopy(s["segments"]),
            "stages": [_stage_summary(st) for st in s["stages"]],
            "sweep": _sweep_summary(s.get("sweep")),
            "plan": self._plan_view() if self.settings.planner else None,
        }

    def export(self) -> dict[str, Any]:
        """Return the realized LR trajectory of the final model, to replay without the service.

        The segments on the line of the weights the worker holds now (followed back through the snapshots each
        segment started from), so rolled-back branches are left out and step 0 of the export is the first step the
        final weights saw. See :func:`tuner.schedules.export_lr` for evaluating it.
        """
        pieces: list[dict[str, Any]] = []
        at = 0
        for rec in self._line_records():
            if rec["steps"] == 0:
                continue
            pieces.append(
                {
                    "start": at,
                    "steps": rec["steps"],
                    "shape": rec["shape"],
                    "curve_from": rec["curve_from"],
                    "curve_to": rec["curve_to"],
                    "curve_start": rec["curve_start"],
                    "curve_end": rec["curve_end_planned"],
                    "planned_steps": rec["planned_steps"],
                }
            )
            at += rec["steps"]
        base_lr = max([max(p["curve_from"], p["curve_to"]) for p in pieces], default=self.settings.max_lr)
        return {"format": "lrtune.schedule/v1", "base_lr": base_lr, "steps": at, "pieces": pieces}

    def _line_records(self) -> list[dict[str, Any]]:
        """The records from the initial weights to the state the worker holds, first first."""
        s = self._s
        by_id = {int(r["segment_id"]): r for r in s["segments"]}
        chain: list[dict[str, Any]] = []
        sid = s.get("line")
        while sid is not None and sid in by_id:
            chain.append(by_id[sid])
            sid = by_id[sid].get("parent")
        return chain[::-1]

    def posterior(self, stage: int | None = None, points: int = 64) -> dict[str, Any] | None:
        """Return the GP posterior over log10-LR for a stage (default: the latest with observations).

        Returns:
            None without observations, else ``stage``; ``lr``, ``mean``, ``std``, ``lo90`` and ``hi90`` (lists of
            length ``points``; the band is kept at or above the loss floor); ``quantity`` (what the GP was fitted
            on: ``"predicted final loss"``, ``"loss after cooldown probe"`` or ``"forecast at tau"``) and
            ``observed`` (the stage's fitted points as ``[lr, value, lo90, hi90]``, diverged ones left out).
        """
        stages = self._s["stages"]
        if stage is None:
            stage = next((st["index"] for st in reversed(stages) if st["candidates"]), None)
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
        if stages[stage].get("kind") == "plan":
            quantity = "predicted final loss"
        else:
            quantity = "loss after cooldown probe" if probed else "forecast at tau"

        def band(m: float, sd: float) -> tuple[float, float]:
            lo, hi = m - _Z90 * sd, m + _Z90 * sd
            return (lo if floor is None else max(lo, floor)), hi

        bands = [band(float(m), float(sd)) for m, sd in zip(mean, std, strict=True)]
        observed = []
        for c in stages[stage]["candidates"]:
            if c["index"] in scores:
                value, var = scores[c["index"]]
                lo, hi = band(value, math.sqrt(max(var, 0.0)))
                observed.append([c["lr"], value, lo, hi])
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

    # ------------------------------------------------------------------ reports

    def _validate(self, seg: dict[str, Any], train: list[float], val: list[float] | None) -> None:
        steps = seg["steps"]
        n = len(train)
        if n == 0:
            raise InvalidReportError(f"segment {seg['segment_id']} needs losses for its {steps} steps, got none")
        if n > steps:
            raise InvalidReportError(f"segment {seg['segment_id']} has {steps} steps but the report has {n} losses")
        if n < steps and not (seg["phase"] == "explore" and diverged(train, seg["abort_above"])):
            raise InvalidReportError(
                f"segment {seg['segment_id']} has {steps} steps but the report has {n} losses; only a candidate "
                "whose loss diverged may stop early"
            )
        every = seg["eval_every"]
        if every is None:
            if val:
                raise InvalidReportError(
                    f"segment {seg['segment_id']} asked for no validation losses, but the report has {len(val)}"
                )
            return
        want = n // every
        got = 0 if val is None else len(val)
        if got != want:
            raise InvalidReportError(
                f"segment {seg['segment_id']} evaluates every {every} steps: {want} validation losses expected "
                f"for {n} steps, got {got}"
            )

    def _apply(self, seg: dict[str, Any], train: list[float], val: list[float] | None) -> None:
        s = self._s
        n = len(train)
        s["step"] += n
        rec = segment_record(seg, train, val)
        rec["parent"] = self._lineage(seg)
        s["segments"].append(rec)
        phase = seg["phase"]
        if phase == "explore":
            s["explore_steps"] += n
            sweep = s.get("sweep")
            if sweep is not None and sweep["segment_id"] == seg["segment_id"]:
                self._observe_sweep(seg, train, rec)
                return
            cand = s["stages"][seg["stage"]]["candidates"][seg["candidate"]]
            probe = cand.get("probe")
            if probe is not None and probe["segment_id"] == seg["segment_id"]:
                self._observe_probe(seg, train, val, rec, cand)
                return
            self._observe_candidate(seg, train, val, rec)
            return
        self._remember(train)

    def _remember(self, train: list[float]) -> None:
        """Keep the recent losses of the line the worker holds: the divergence guard's reference."""
        s = self._s
        recent = [*s["recent_losses"], *(v for v in train[-_RECENT:] if math.isfinite(v))][-_RECENT:]
        if recent:
            s["recent_losses"] = recent
            s["ref_loss"] = sum(recent[-10:]) / len(recent[-10:])
            s["ref_spread"] = _spread(recent)

    def _lineage(self, seg: dict[str, Any]) -> int | None:
        """Follow the segment's snapshot instructions; return the segment whose end state it started from.

        ``line`` is the segment whose end state the worker holds (None: the initial weights); ``snaps`` maps each
        snapshot name to the segment whose end state it holds.
        """
        s = self._s
        snaps = s.setdefault("snaps", {})
        line = s.get("line")
        if seg["restore"] is not None:
            line = snaps.get(seg["restore"], line)
        for name in seg["drop"]:
            snaps.pop(name, None)
        if seg["snapshot"] is not None:
            snaps[seg["snapshot"]] = line
        parent = line
        s["line"] = seg["segment_id"]
        if seg["keep"] is not None:
            snaps[seg["keep"]] = seg["segment_id"]
        return parent

    def _observe_candidate(
        self, seg: dict[str, Any], train: list[float], val: list[float] | None, rec: dict[str, Any]
    ) -> None:
        st = self._s["stages"][seg["stage"]]
        cand = st["candidates"][seg["candidate"]]
        rec["diverged"] = diverged(train, seg["abort_above"])
        finite = [v for v in train if math.isfinite(v)]
        cand["steps_run"] = len(train)
        cand["first_loss"] = _mean(finite[:5])
        cand["last_loss"] = _mean(finite[-5:])
        cand["curve"] = rec["curve"]
        cand["diverged"] = rec["diverged"]
        if st["start_loss"] is None and cand["first_loss"] is not None:
            st["start_loss"] = cand["first_loss"]
            st["start_spread"] = _spread(finite[:50])
        if not rec["diverged"]:
            if st["objective"] == "val" and seg["eval_every"]:
                every = seg["eval_every"]
                xs = [every * (i + 1) for i in range(len(val or []))]
                ys: list[float] = list(val or [])
            else:
                xs = list(range(1, len(train) + 1))
                ys = train
            fc = forecast_loss(xs, ys, st["tau"], self.settings.forecast_families, self.settings.loss_floor)
            if math.isfinite(fc.mean):
                cand["forecast"] = fc.mean
                cand["std"] = fc.std
                cand["fit"] = {
                    "family": fc.family,
                    "a": fc.a,
                    "rate": fc.rate,
                    "exponent": fc.exponent,
                    "c": fc.c,
                    "noise": fc.noise,
                    "points": fc.points,
                }
            else:
                cand["diverged"] = rec["diverged"] = True

    def _observe_sweep(self, seg: dict[str, Any], train: list[float], rec: dict[str, Any]) -> None:
        """Take the LR range sweep's losses: the suggested LR, then roll its steps back."""
        st = self.settings
        s = self._s
        segment = Segment.from_dict(seg)
        lrs = [segment.lr_at(j) for j in range(len(train))]
        lr = min(max(sweep_suggestion(train, lrs), st.min_lr), st.max_lr)
        s["sweep"].update(steps_run=len(train), lr=lr)
        rec["rolled_back"] = True
        s["wasted_steps"] += len(train)

    def _observe_probe(
        self,
        seg: dict[str, Any],
        train: list[float],
        val: list[float] | None,
        rec: dict[str, Any],
        cand: dict[str, Any],
    ) -> None:
        """Take a cooldown probe's losses: the loss after a short decay to 0, and its noise."""
        probe = cand["probe"]
        rec["diverged"] = diverged(train, seg["abort_above"])
        finite = [v for v in train if math.isfinite(v)]
        if rec["diverged"] or not finite:
            cand["diverged"] = True
            return
        if seg["eval_every"] and val and math.isfinite(val[-1]):
            tail = [val[-1]]
            end, var = val[-1], 0.0
        else:
            tail = finite[-max(3, len(finite) // 4) :]
            end, var = sum(tail) / len(tail), _spread(tail) ** 2 / len(tail)
        probe["loss"] = end
        probe["var"] = var
        probe["tail"] = tail

    # ------------------------------------------------------------------ planning

    def _open(self, seg: Segment) -> None:
        self._s["open"] = dataclasses.replace(seg, then=self._continuation(seg)).to_dict()

    def _new_id(self) -> int:
        sid = int(self._s["next_id"])
        self._s["next_id"] = sid + 1
        return sid

    def _plan(self) -> Segment:
        """Decide the next segment from the state (the only place that creates segments)."""
        st = self.settings
        step = int(self._s["step"])
        if step >= st.total_steps:
            return Segment(self._new_id(), "done", step, 0, done=True)
        sweep = self._s.get("sweep")
        if st.sweep_steps and sweep is None:
            return self._sweep(step)
        seg = self._plan_after_sweep(step)
        if sweep is not None and not sweep["restored"]:
            # The first segment after the sweep returns to the state before it and frees that snapshot.
            sweep["restored"] = True
            seg = dataclasses.replace(seg, restore=seg.restore or "sweep", drop=(*seg.drop, "sweep"))
        return seg

    def _plan_after_sweep(self, step: int) -> Segment:
        st = self.settings
        if step < self._warm_start() + st.warmup_steps:
            return self._warmup(step)
        if st.strategy != "autolrs":
            return self._schedule_segment(step)
        if st.planner:
            return self._online_segment(step)
        main_end = st.total_steps - st.anneal_steps
        if step >= main_end:
            return self._anneal(step, main_end)
        return self._stage_segment(step, main_end)

    def _warm_start(self) -> int:
        """First step of the warmup: after the LR range sweep, if one ran."""
        sweep = self._s.get("sweep")
        return int(sweep["steps_run"]) if sweep is not None else 0

    def _start_lr(self) -> float:
        """The LR the search starts from: the sweep's suggestion unless the user set ``warmup_lr``."""
        sweep = self._s.get("sweep")
        if sweep is not None and sweep["lr"] is not None and self.config.warmup_lr is None:
            return float(sweep["lr"])
        return self.settings.warmup_lr

    def _sweep(self, step: int) -> Segment:
        """The LR range sweep: LR rising log-linearly over the whole range, from a snapshot restored afterwards."""
        st = self.settings
        sid = self._new_id()
        self._s["sweep"] = {"segment_id": sid, "steps_run": 0, "lr": None, "restored": False}
        return Segment(sid, "explore", step, st.sweep_steps, "exp", st.min_lr, st.max_lr, 0.0, 1.0, snapshot="sweep")

    def _chunk(self, step: int, end: int) -> int:
        """Steps of the next segment towards ``end``: at most ``max_segment_steps``, and no tiny remainder."""
        longest = self.settings.max_segment_steps
        n = min(end - step, longest)
        if 0 < end - step - n < longest // 4:
            n = end - step
        return n

    def _warmup(self, step: int) -> Segment:
        st = self.settings
        w0, w = self._warm_start(), st.warmup_steps
        lr = self._start_lr()
        n = self._chunk(step, w0 + w)
        return schedules.piece(self._new_id(), "warmup", step, n, "linear", lr / w, lr, w0, w0 + w)

    def _schedule_segment(self, step: int) -> Segment:
        st = self.settings
        curve = schedules.curve_at(st, step)
        n = self._chunk(step, curve.end)
        return schedules.piece(
            self._new_id(),
            "schedule",
            step,
            n,
            curve.shape,
            curve.lr_from,
            curve.lr_to,
            curve.start,
            curve.end,
        )

    def _anneal(self, step: int, main_end: int) -> Segment:
        st = self.settings
        restore, drop = self._close_stage()
        if self._s["anneal_lr"] is None:
            self._s["anneal_lr"] = self._s["winner_lr"] or self._start_lr()
        n = self._chunk(step, st.total_steps)
        return schedules.piece(
            self._new_id(),
            "anneal",
            step,
            n,
            "linear",
            self._s["anneal_lr"],
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
        stages = self._s["stages"]
        if not stages or stages[-1]["status"] != "search":
            return None, []
        stage = stages[-1]
        drop = self._finish_search(stage)
        stage["status"] = "done"
        return stage.get("restore"), drop

    def _stage_segment(self, step: int, main_end: int) -> Segment:
        stages = self._s["stages"]
        last = stages[-1] if stages else None
        if last is not None and last["status"] == "exploit" and step >= (last["exploit_end"] or math.inf):
            last["status"] = "done"  # offline steps ran past its end
        if not stages or stages[-1]["status"] == "done":
            stages.append(self._new_stage(step, main_end))
        stage = stages[-1]
        if stage["status"] == "search":
            seg = self._next_candidate(stage, step, main_end)
            if seg is not None:
                return seg
            drop = self._finish_search(stage)
            return self._exploit(stage, step, main_end, first=True, drop=drop)
        return self._exploit(stage, step, main_end, first=False, drop=[])

    def _new_stage(self, step: int, main_end: int) -> dict[str, Any]:
        st = self.settings
        stages = self._s["stages"]
        index = len(stages)
        tau = min(st.tau * 2**index, st.tau_max)
        objective = "val" if st.objective == "val" or (st.objective == "auto" and tau >= st.tau_max) else "train"
        prev = stages[-1] if stages else None
        warm = bool(st.carry_observations and prev is not None and prev["winner_lr"] is not None)
        # The incumbent: the last winner, or for the first stage the LR range sweep's suggestion.
        incumbent = prev["winner_lr"] if prev is not None else None
        sweep = self._s.get("sweep")
        if prev is None and sweep is not None and sweep["lr"] is not None:
            incumbent = sweep["lr"]
        centred = warm or (prev is None and incumbent is not None)
        k = st.k_warm if centred else st.k
        cand = max(st.min_candidate_steps, round(st.candidate_fraction * tau))
        rem = main_end - step
        cost = k * (cand + self._probe_steps(cand)) + (tau - cand if st.keep_winner else tau)
        if rem < cost:
            shrink = rem / cost
            tau = max(1, math.floor(tau * shrink))
            cand = max(1, min(round(st.candidate_fraction * tau), rem // (k + 1)))
            if self._s["winner_lr"] is not None and cand < st.min_candidate_steps:
                k = 0  # not worth a search: train on at the last winner
        if objective == "val":
            cand = max(cand, st.val_samples)
        if self._s["winner_lr"] is not None and k > 0:
            # Under the exploration cap, a stage that cannot try at least two LRs does not search.
            room = st.explore_cap * st.total_steps - self._s["explore_steps"]
            affordable = int(room // (cand + self._probe_steps(cand)))
            k = min(k, affordable) if affordable >= 2 else 0
        lo, hi = 0.0, 1.0
        carried: list[dict[str, Any]] = []
        if centred and incumbent is not None:
            center = to_unit(incumbent, st.min_lr, st.max_lr)
            lo, hi = max(0.0, center - st.trust_region), min(1.0, center + st.trust_region)
            if not warm:
                # Centred on the sweep: stay a safe factor below the LR where the sweep's loss bottomed out (ten
                # times its suggestion), past which training turns unstable. Short candidates cannot see that
                # instability early in training: a larger LR makes faster early progress there, even after a cooldown.
                edge = to_unit(_SWEEP_DIVISOR * incumbent / _SWEEP_HEADROOM, st.min_lr, st.max_lr)
                hi = max(center, min(hi, edge))
        if warm and prev is not None:
            carried = [_obs_dict(o) for o in self._observations(prev)]
        return {
            "index": index,
            "tau": tau,
            "cand_steps": cand,
            "k": k,
            "warm": warm,
            "incumbent_lr": incumbent if centred else None,
            "objective": objective,
            "start_step": step,
            "start_loss": self._s["ref_loss"],
            "start_spread": self._s.get("ref_spread"),
            "lo": lo,
            "hi": hi,
            "snapshot": f"stage-{index}",
            "candidates": [],
            "carried": carried,
            "status": "search" if k > 0 else "exploit",
            "winner": None,
            "winner_lr": self._s["winner_lr"] if k == 0 else None,
            "exploit_end": None,
        }

    def _next_candidate(self, stage: dict[str, Any], step: int, main_end: int) -> Segment | None:
        st = self.settings
        cands = stage["candidates"]
        if cands and self._wants_probe(cands[-1]):
            return self._probe(stage, cands[-1], step)
        i = len(cands)
        n = stage["cand_steps"]
        cost = n + self._probe_steps(n)
        if i >= stage["k"] or step + cost > main_end:
            return None
        if self._s["explore_steps"] + cost > st.explore_cap * st.total_steps + 1e-9:
            return None
        started = time.perf_counter()
        x = self._propose(stage, i)
        self.last_suggest_s = time.perf_counter() - started
        lr = from_unit(x, st.min_lr, st.max_lr)
        keep = f"cand-{stage['index']}-{i}" if st.keep_winner else None
        every = max(1, n // st.val_samples) if stage["objective"] == "val" else None
        drop = tuple(self._drops(stage)) if i > 0 else ()
        return self._candidate(stage, step, lr, x, keep, every, drop)

    def _candidate(
        self,
        stage: dict[str, Any],
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
        i = len(stage["candidates"])
        name = stage["snapshot"]
        abort = None
        start_loss = stage["start_loss"]
        if st.divergence_guard and start_loss is not None:
            # "Far above the start": by (factor - 1) times the start loss, or times three times the step-to-step
            # spread of the losses when that is larger (a loss near zero is noisy relative to its level).
            scale = max(abs(start_loss), 3.0 * (stage.get("start_spread") or 0.0))
            abort = start_loss + (st.divergence_factor - 1.0) * scale
        stage["candidates"].append(
            {
                "index": i,
                "lr": lr,
                "x": x,
                "segment_id": self._s["next_id"],
                "forecast": None,
                "std": None,
                "diverged": False,
                "kept": keep,
                "steps_run": 0,
                "first_loss": None,
                "last_loss": None,
                "curve": [],
                "abort_above": abort,
                "probe": None,
            }
        )
        return Segment(
            self._new_id(),
            "explore",
            step,
            stage["cand_steps"],
            "constant",
            lr,
            lr,
            0.0,
            1.0,
            stage=stage["index"],
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

    def _wants_probe(self, cand: dict[str, Any]) -> bool:
        """True when a candidate ran, did not diverge, and its cooldown probe has not been handed out yet."""
        return (
            self.settings.probe_fraction > 0
            and cand["steps_run"] > 0
            and not cand["diverged"]
            and not cand.get("probe")
        )

    def _probe(self, stage: dict[str, Any], cand: dict[str, Any], step: int) -> Segment:
        """The cooldown probe of a candidate: from its end state, the LR decays linearly to 0; nothing is kept."""
        st = self.settings
        n = self._probe_steps(stage["cand_steps"])
        sid = self._new_id()
        cand["probe"] = {"segment_id": sid, "loss": None, "var": None}
        return Segment(
            sid,
            "explore",
            step,
            n,
            "linear",
            cand["lr"],
            0.0,
            0.0,
            1.0,
            stage=stage["index"],
            candidate=cand["index"],
            eval_every=n if stage["objective"] == "val" else None,
            abort_above=cand.get("abort_above"),
            replay=st.replay_batches,
        )

    def _propose(self, stage: dict[str, Any], i: int) -> float:
        """Next candidate's normalized log10-LR (deterministic given the seed and the observations)."""
        st = self.settings
        rng = np.random.default_rng([st.seed, stage["index"], i])
        if stage.get("incumbent_lr") is not None:
            if i == 0:
                return to_unit(stage["incumbent_lr"], st.min_lr, st.max_lr)
        elif st.acquisition == "explore":
            if i == 0:
                return float(rng.uniform(0.0, 1.0))
        elif i < 3:
            return float((2 * i + 1) / 6 + rng.uniform(-1 / 12, 1 / 12))
        obs = self._observations(stage, carried=True)
        seen = [c["x"] for c in stage["candidates"]]
        surrogate = self._surrogate(obs)
        return surrogate.suggest(stage["lo"], stage["hi"], acquisition=st.acquisition, avoid=seen)

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

    def _observations(self, stage: dict[str, Any], carried: bool = False, failed: bool = True) -> list[Observation]:
        """The stage's (x, objective, noise) points.

        Args:
            stage: The stage.
            carried: Add the previous stage's points (shifted to this stage's level).
            failed: Include diverged candidates, with a finite penalty (for proposing; ranking leaves them out, so
                a penalty does not drag down the posterior of a good LR next to a diverged one).
        """
        st = self.settings
        scores, _ = self._scores(stage)
        cands = [
            c
            for c in stage["candidates"]
            if c["steps_run"] > 0 and ((c["diverged"] and failed) or c["index"] in scores)
        ]
        ref = stage["start_loss"]
        base = max([*(v for v, _ in scores.values()), *([ref] if ref is not None else [])], default=1.0)
        penalty = base + 0.5 * abs(base) + 1e-8
        obs: list[Observation] = []
        for c in cands:
            if c["diverged"]:
                obs.append(Observation(c["x"], penalty, (0.1 * abs(base)) ** 2 + 1e-12))
            else:
                value, var = scores[c["index"]]
                obs.append(Observation(c["x"], value, var if st.noise_from_forecast else 0.0))
        if carried and stage["carried"] and obs:
            obs = self._with_carried(stage, obs)
        return obs

    def _scores(self, stage: dict[str, Any]) -> tuple[dict[int, tuple[float, float]], bool]:
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
        for c in stage["candidates"]:
            if c["steps_run"] == 0 or c["diverged"] or c["forecast"] is None:
                continue
            var = float(c["std"]) ** 2
            plain[c["index"]] = (float(c["forecast"]), var)
            probe = c.get("probe")
            if (
                stage.get("kind") != "plan"
                and self.settings.probe_fraction > 0
                and probe is not None
                and probe.get("loss") is not None
            ):
                out[c["index"]] = (float(probe["loss"]), float(probe["var"] or 0.0))
        return (out, True) if out else (plain, False)

    def _with_carried(self, stage: dict[str, Any], obs: list[Observation]) -> list[Observation]:
        """Add the previous stage's points, shifted to agree with this stage at the incumbent."""
        prev = [Observation(**o) for o in stage["carried"]]
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

    def _ranking(self, stage: dict[str, Any], kept_only: bool = False) -> list[int]:
        """Candidate indices that did not diverge, best first (posterior mean, or forecast in the paper).

        Args:
            stage: The stage.
            kept_only: Rank only candidates whose end state is still kept.
        """
        scores, probed = self._scores(stage)
        cands = [c for c in stage["candidates"] if c["index"] in scores and (c["kept"] or not kept_only)]
        if not cands:
            return []
        if self.settings.preset == "paper" or len(cands) < 2:
            return [c["index"] for c in sorted(cands, key=lambda c: (scores[c["index"]][0], c["index"]))]
        if probed:
            # Probe losses are measured, on the same batches: their paired noise is far below the spread the GP
            # sees, so the measurements themselves rank the candidates (the GP only proposes).
            mean = np.array([scores[c["index"]][0] for c in cands])
        else:
            obs = self._observations(stage, carried=True, failed=False)
            mean, _ = self._surrogate(obs).predict([c["x"] for c in cands])
        order = sorted(range(len(cands)), key=lambda j: (float(mean[j]), cands[j]["index"]))
        # Leave the incumbent (the last winner, candidate 0 of a warm stage) only for a clearly better LR: by more
        # than the noise of the two candidates' loss difference, measured step by step (with batch replay the
        # candidates see the same batches, so that noise is small). The forecasts' extrapolation error is largely
        # shared between candidates of a stage, so it does not count here; without this rule, ties (a saturated
        # loss) let the LR drift at random.
        challenger = order[0]
        if stage.get("incumbent_lr") is not None and cands[0]["index"] == 0 and challenger != 0:
            margin = _SWITCH_MARGIN * _difference_noise(cands[0], cands[challenger])
            if not mean[challenger] < mean[0] - margin:
                order.remove(0)
                order.insert(0, 0)
        return [cands[j]["index"] for j in order]

    def _drops(self, stage: dict[str, Any]) -> list[str]:
        """Kept candidate states no longer among the best ``_MAX_KEPT``; marks them dropped."""
        if not self.settings.keep_winner:
            return []
        best = set(self._ranking(stage, kept_only=True)[:_MAX_KEPT])
        out = []
        for c in stage["candidates"]:
            if c["kept"] and c["steps_run"] > 0 and c["index"] not in best:
                out.append(c["kept"])
                c["kept"] = None
        return out

    def _finish_search(self, stage: dict[str, Any]) -> list[str]:
        """Choose the winner, mark rolled-back segments; return snapshots to free."""
        st = self.settings
        ranking = self._ranking(stage, kept_only=st.keep_winner)
        drop: list[str] = []
        if ranking:
            w = stage["candidates"][ranking[0]]
            stage["winner"] = w["index"]
            stage["winner_lr"] = w["lr"]
            stage["restore"] = w["kept"] if st.keep_winner else stage["snapshot"]
        elif stage["candidates"]:
            # Every candidate diverged: fall back below the lowest LR tried, from the stage start.
            lowest = min(c["lr"] for c in stage["candidates"])
            stage["winner_lr"] = max(st.min_lr, lowest / 10)
            stage["restore"] = stage["snapshot"]
        else:
            # No candidate fitted the budget: train on at the last winner.
            stage["winner_lr"] = self._s["winner_lr"] or self._start_lr()
            stage["restore"] = None
        for c in stage["candidates"]:
            if c["kept"]:
                drop.append(c["kept"])
                c["kept"] = None
        if stage["candidates"]:
            drop.append(stage["snapshot"])
        winner_seg = None
        if stage["winner"] is not None and st.keep_winner and stage["restore"]:
            winner_seg = stage["candidates"][stage["winner"]]["segment_id"]
        ids = {c["segment_id"] for c in stage["candidates"]}
        ids |= {c["probe"]["segment_id"] for c in stage["candidates"] if c.get("probe")}
        for rec in self._s["segments"]:
            if rec["segment_id"] in ids and rec["segment_id"] != winner_seg:
                rec["rolled_back"] = True
                self._s["wasted_steps"] += rec["steps"]
        stage["status"] = "exploit"
        self._s["winner_lr"] = stage["winner_lr"]
        return drop

    def _exploit(self, stage: dict[str, Any], step: int, main_end: int, first: bool, drop: list[str]) -> Segment:
        st = self.settings
        if stage["exploit_end"] is None:
            kept = stage["winner"] is not None and st.keep_winner and bool(stage.get("restore"))
            length = stage["tau"] - (stage["cand_steps"] if kept else 0)
            end = min(step + max(length, 1), main_end)
            next_tau = min(stage["tau"] * 2, st.tau_max)
            next_cand = max(st.min_candidate_steps, round(st.candidate_fraction * next_tau))
            next_cost = (st.k_warm + 1) * next_cand + st.k_warm * self._probe_steps(next_cand)
            if main_end - end < max(next_cost, next_tau // 2):
                end = main_end
            stage["exploit_end"] = end
        if stage["winner_lr"] is None:
            stage["winner_lr"] = self._s["winner_lr"] or self._start_lr()
        end = stage["exploit_end"]
        n = self._chunk(step, end)
        if step + n >= end:
            stage["status"] = "done"
        restore = stage.get("restore") if first else None
        return Segment(
            self._new_id(),
            "train",
            step,
            n,
            "constant",
            stage["winner_lr"],
            stage["winner_lr"],
            0.0,
            1.0,
            stage=stage["index"],
            restore=restore,
            drop=tuple(drop),
        )


# ---------------------------------------------------------------------- helpers


def sweep_suggestion(losses: Sequence[float], lrs: Sequence[float]) -> float:
    """Suggest a working LR from an LR range sweep: a tenth of the LR at the lowest smoothed loss.

    The losses are smoothed with a bias-corrected exponential moving average (weight 0.1 per step); the sweep is
    read only up to its first non-finite loss or its first smoothed loss above four times the lowest so far.

    Args:
        losses: Shape (n,). Loss after each sweep step.
        lrs: Shape (n,). LR of each sweep step, rising.

    Returns:
        The suggested LR (the first LR when no loss is finite).
    """
    best, best_lr, avg = math.inf, lrs[0], 0.0
    for i, (loss, lr) in enumerate(zip(losses, lrs, strict=False)):
        if not math.isfinite(loss):
            break
        avg = 0.9 * avg + 0.1 * loss
        value = avg / (1.0 - 0.9 ** (i + 1))
        if value < best:
            best, best_lr = value, lr
        elif value > 4.0 * best:
            break
    return best_lr / _SWEEP_DIVISOR


def _difference_noise(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Standard error of the mean loss difference of two candidates.

    From the ends of their cooldown probes when both have one, else from their binned loss curves. Steps (or bins)
    at the same position are paired; with replayed batches their shared batch noise cancels. With fewer than
    three pairs, the candidates' forecast uncertainties stand in.
    """
    tails = [(c.get("probe") or {}).get("tail") for c in (a, b)]
    if tails[0] and tails[1] and len(tails[0]) == len(tails[1]) and len(tails[0]) >= 3:
        paired = [x - y for x, y in zip(tails[0], tails[1], strict=True)]
        return float(np.std(paired, ddof=1)) / math.sqrt(len(paired))
    diffs = [x[1] - y[1] for x, y in zip(a["curve"], b["curve"], strict=False) if x[1] is not None and y[1] is not None]
    if len(diffs) < 3:
        return math.hypot(float(a["std"] or 0.0), float(b["std"] or 0.0))
    return float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))


#: Largest loss magnitude taken as a number. A loss beyond it (either sign) is a diverged point, like NaN: the loss
#: model squares and sums losses and the GP standardizes them, and values near the float64 limit (1e155 squared
#: is inf) overflow there. No real training loss comes near 1e30; subnormals and other tiny values are kept.
MAX_ABS_LOSS = 1e30


def _as_floats(values: Sequence[float | None], name: str) -> list[float]:
    """Convert reported losses to floats: ``None``, NaN, ±inf and any magnitude above :data:`MAX_ABS_LOSS` → NaN.

    Raises:
        InvalidReportError: Not a list, or an entry that is neither a number nor ``None``.
    """
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise InvalidReportError(f"{name} must be a list of numbers")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise InvalidReportError(f"{name}[{i}] must be a number or null, got {type(v).__name__}")
        try:
            x = float(v)
        except OverflowError:  # an int beyond float64
            x = math.inf
        out.append(x if abs(x) <= MAX_ABS_LOSS else math.nan)
    return out


def _digest(
    segment_id: int, train: list[float], val: list[float] | None, offline: list[OfflinePiece] | None = None
) -> str:
    values = [segment_id, [repr(v) for v in train], None if val is None else [repr(v) for v in val]]
    if offline is not None:
        values.append([repr(dataclasses.astuple(p)) for p in offline])
    payload = json.dumps(values)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _spread(values: list[float]) -> float:
    """Standard deviation of the finite values (0 with fewer than two)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def _obs_dict(o: Observation) -> dict[str, float]:
    return {"x": o.x, "y": o.y, "noise_var": o.noise_var}


def _sweep_summary(sweep: dict[str, Any] | None) -> dict[str, Any] | None:
    """The LR range sweep as the schedule shows it: its segment, steps and suggested LR."""
    if sweep is None:
        return None
    return {"segment_id": sweep["segment_id"], "steps": sweep["steps_run"], "lr": sweep["lr"]}


def _stage_summary(stage: dict[str, Any]) -> dict[str, Any]:
    cands = []
    for c in stage["candidates"]:
        band = None
        if c["forecast"] is not None and c["std"] is not None:
            band = [c["forecast"] - 1.6448536 * c["std"], c["forecast"] + 1.6448536 * c["std"]]
        cands.append(
            {
                "index": c["index"],
                "lr": c["lr"],
                "segment_id": c["segment_id"],
                "steps": c["steps_run"],
                "forecast": c["forecast"],
                "std": c["std"],
                "band90": band,
                "diverged": c["diverged"],
                "winner": c["index"] == stage["winner"],
                "first_loss": c["first_loss"],
                "last_loss": c["last_loss"],
                "observed": c["curve"],
                "probe_loss": (c.get("probe") or {}).get("loss"),
            }
        )
    return {
        "index": stage["index"],
        "kind": stage.get("kind", "greedy"),
        "tau": stage["tau"],
        "cand_steps": stage["cand_steps"],
        "objective": stage["objective"],
        "start_step": stage["start_step"],
        "warm": stage["warm"],
        "search_range": [stage["lo"], stage["hi"]],
        "status": stage["status"],
        "winner": stage["winner"],
        "winner_lr": stage["winner_lr"],
        "candidates": cands,
    }
