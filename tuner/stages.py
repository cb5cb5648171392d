"""The tuner: turns reports into segments, one job at a time.

:class:`Tuner` holds a job's whole state as typed records (:class:`lrtune.tuner.state.TunerState`): observations
are stored, never fitted models, and every decision is a deterministic function of them, so :meth:`Tuner.recover`
continues exactly where :meth:`Tuner.dump` left off (both go through plain JSON). This module sequences a job (the
LR range sweep, the warmup, then the preset's stages, or a standard schedule) and takes its reports; the concepts
live in their own modules, mixed in here:

* :mod:`lrtune.tuner.candidates`: candidates and their cooldown probes, scored, ranked and proposed by BO;
* :mod:`lrtune.tuner.greedy`: the ``greedy`` and ``paper`` presets' stage machine;
* :mod:`lrtune.tuner.online`, :mod:`lrtune.tuner.onlinestages`, :mod:`lrtune.tuner.replan`,
  :mod:`lrtune.tuner.modelruns`: the ``plan`` preset (the loss model fitted to every run, the plan re-made online,
  the searches it decides);
* :mod:`lrtune.tuner.outage`: the continuation every segment carries, and steps run while the service was away;
* :mod:`lrtune.tuner.views`: ``summary``, ``schedule``, ``export`` and ``posterior``;
* :mod:`lrtune.tuner.state`, :mod:`lrtune.tuner.stagestate`, :mod:`lrtune.tuner.records`, :mod:`lrtune.tuner.fields`:
  the state records and how they read the stored JSON;
* :mod:`lrtune.tuner.reports`, :mod:`lrtune.tuner.sweep`: the checks at the door, the sweep's suggestion.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from lrtune.tuner import schedules
from lrtune.tuner.candidates import Candidates
from lrtune.tuner.config import LEGACY_DEFAULTS, Defaults, Settings, TunerConfig, check_model_switches, resolve
from lrtune.tuner.errors import (
    ConflictingReportError,
    InvalidReportError,
    InvalidStateError,
    UnknownSegmentError,
)
from lrtune.tuner.greedy import GreedyStages
from lrtune.tuner.online import OnlinePlanning
from lrtune.tuner.onlinestages import OnlineStages
from lrtune.tuner.outage import Outages, parse_offline
from lrtune.tuner.records import SegmentRecord, segment_record, spread
from lrtune.tuner.reports import MAX_ABS_LOSS, as_floats, check_report, digest
from lrtune.tuner.search import Observation, Surrogate
from lrtune.tuner.segment import OfflinePiece, Segment
from lrtune.tuner.state import SCHEMA_VERSION, LastReport, Sweep, TunerState
from lrtune.tuner.sweep import sweep_suggestion
from lrtune.tuner.views import Views

__all__ = ["MAX_ABS_LOSS", "SCHEMA_VERSION", "Tuner", "sweep_suggestion"]

_RECENT = 50  # losses of the kept trajectory remembered for the divergence guard's reference


class Tuner(Views, GreedyStages, Candidates, OnlinePlanning, OnlineStages, Outages):
    """An LR tuning job: hands out segments and takes their losses.

    Args:
        config: What the job asks for.

    Raises:
        InvalidConfigError: ``config`` asks for a switch its loss model would ignore.

    Example:
        >>> t = Tuner(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=2_000))
        >>> seg = t.next_segment()
        >>> seg = t.report(seg.segment_id, losses=[1.0] * seg.steps)
    """

    def __init__(self, config: TunerConfig) -> None:
        self.config = config
        defaults = Defaults()
        self.settings: Settings = resolve(config, defaults)
        check_model_switches(config, self.settings)
        self._reset_memos()
        # The open segment is a placeholder until the first one is planned (planning reads the state).
        self._s = TunerState(config, Segment(0, "done", 0, 0, done=True), defaults=defaults)
        self._open(self._plan())

    def _reset_memos(self) -> None:
        """What this object derives from the state between reports (never part of it)."""
        self.last_suggest_s: float = 0.0
        self._fits: dict[tuple[Observation, ...], Surrogate] = {}
        self._model_memo = None
        self._rival_memo = None
        self._record_memo = None

    # ------------------------------------------------------------------ public API

    def next_segment(self) -> Segment:
        """Return the open segment: the same one until it is reported."""
        return self._s.open

    @property
    def done(self) -> bool:
        """True once the whole budget is spent."""
        return self._s.open.done

    @property
    def steps_used(self) -> int:
        """Gradient steps reported so far, exploration included."""
        return self._s.step

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
                (see :mod:`lrtune.tuner.outage`): pieces that follow each other from the step the job had used.

        Returns:
            The next segment. Reporting the last reported segment again with the same losses changes nothing
            and returns the same next segment.

        Raises:
            UnknownSegmentError: ``segment_id`` is neither the open segment nor the last reported one.
            ConflictingReportError: The last reported segment is reported again with other losses.
            InvalidReportError: The losses do not fit the segment.
        """
        seg = self._s.open
        self.last_suggest_s = 0.0
        train = as_floats(losses, "losses")
        val = None if val_losses is None else as_floats(val_losses, "val_losses")
        pieces = None if offline is None else parse_offline(offline)
        fingerprint = digest(segment_id, train, val, pieces)
        last = self._s.last_report
        if last is not None and segment_id == last.segment_id:
            if fingerprint != last.digest:
                raise ConflictingReportError(
                    f"segment {segment_id} was already reported with different losses; the open segment is "
                    f"{seg.segment_id}"
                )
            return self.next_segment()
        if segment_id != seg.segment_id:
            raise UnknownSegmentError(
                f"segment {segment_id} is not the open segment (the open segment is {seg.segment_id})"
            )
        if seg.done:
            raise InvalidReportError("the job is done: its budget is spent and there is nothing to report")
        if pieces is not None:
            if val:
                raise InvalidReportError("a report of offline steps has no validation losses")
            nxt = self._skip(seg, pieces, train)
        else:
            check_report(seg, train, val)
            self._apply(seg, train, val)
            nxt = self._plan()
        self._s.last_report = LastReport(segment_id, fingerprint)
        self._open(nxt)
        return self.next_segment()

    def dump(self, copy: bool = True) -> dict[str, Any]:
        """Return the job's whole state as a JSON-safe dict (the stored format, see :mod:`lrtune.tuner.state`).

        Args:
            copy: Kept for callers of earlier versions: the dict is always built afresh from the state records, so
                changing it never changes this tuner, with or without a copy.
        """
        return self._s.to_dict()

    @classmethod
    def recover(cls, state: dict[str, Any], copy: bool = True) -> Tuner:
        """Rebuild a tuner from :meth:`dump` output; it behaves exactly like the dumped one from here on.

        Args:
            state: The dumped state.
            copy: Kept for callers of earlier versions: the state is read into records of its own, so the tuner
                never changes ``state``, with or without a copy.

        Raises:
            InvalidStateError: The state has another schema version or is malformed.
        """
        schema = state["schema"] if isinstance(state, dict) and "schema" in state else None
        if schema != SCHEMA_VERSION:
            got = schema if isinstance(state, dict) else type(state).__name__
            raise InvalidStateError(f"cannot recover tuner state with schema {got!r} (expected {SCHEMA_VERSION})")
        try:
            s = TunerState.from_dict(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidStateError(f"malformed tuner state: {exc}") from exc
        tuner = cls.__new__(cls)
        tuner.config = s.config
        tuner.settings = resolve(s.config, s.defaults or LEGACY_DEFAULTS)
        tuner._reset_memos()
        tuner._s = s
        return tuner

    # ------------------------------------------------------------------ reports

    def _apply(self, seg: Segment, train: list[float], val: list[float] | None) -> None:
        s = self._s
        n = len(train)
        s.step += n
        rec = segment_record(seg, train, val)
        rec.parent = self._lineage(seg)
        s.segments.append(rec)
        if seg.phase == "explore":
            s.explore_steps += n
            if s.sweep is not None and s.sweep.segment_id == seg.segment_id:
                self._observe_sweep(s.sweep, seg, train, rec)
                return
            assert seg.stage is not None and seg.candidate is not None
            stage = s.stages[seg.stage]
            cand = stage.candidates[seg.candidate]
            if cand.probe is not None and cand.probe.segment_id == seg.segment_id:
                self._observe_probe(seg, train, val, rec, cand)
                return
            self._observe_candidate(seg, train, val, rec)
            return
        self._remember(train)

    def _remember(self, train: list[float]) -> None:
        """Keep the recent losses of the line the worker holds: the divergence guard's reference."""
        s = self._s
        recent = [*s.recent_losses, *(v for v in train[-_RECENT:] if math.isfinite(v))][-_RECENT:]
        if recent:
            s.recent_losses = recent
            s.ref_loss = sum(recent[-10:]) / len(recent[-10:])
            s.ref_spread = spread(recent)

    def _lineage(self, seg: Segment) -> int | None:
        """Follow the segment's snapshot instructions; return the segment whose end state it started from.

        ``line`` is the segment whose end state the worker holds (None: the initial weights); ``snaps`` maps each
        snapshot name to the segment whose end state it holds.
        """
        s = self._s
        snaps = s.snaps
        line = s.line
        if seg.restore is not None and seg.restore in snaps:
            line = snaps[seg.restore]
        for name in seg.drop:
            snaps.pop(name, None)
        if seg.snapshot is not None:
            snaps[seg.snapshot] = line
        parent = line
        s.line = seg.segment_id
        if seg.keep is not None:
            snaps[seg.keep] = seg.segment_id
        return parent

    def _observe_sweep(self, sweep: Sweep, seg: Segment, train: list[float], rec: SegmentRecord) -> None:
        """Take the LR range sweep's losses: the suggested LR, then roll its steps back."""
        st = self.settings
        lrs = [seg.lr_at(j) for j in range(len(train))]
        sweep.steps_run = len(train)
        sweep.lr = min(max(sweep_suggestion(train, lrs, st.sweep_divisor), st.min_lr), st.max_lr)
        rec.rolled_back = True
        self._s.wasted_steps += len(train)

    # ------------------------------------------------------------------ planning

    def _open(self, seg: Segment) -> None:
        self._s.open = dataclasses.replace(seg, then=self._continuation(seg))

    def _new_id(self) -> int:
        sid = self._s.next_id
        self._s.next_id = sid + 1
        return sid

    def _plan(self) -> Segment:
        """Decide the next segment from the state (the only place that creates segments)."""
        st = self.settings
        step = self._s.step
        if step >= st.total_steps:
            return Segment(self._new_id(), "done", step, 0, done=True)
        sweep = self._s.sweep
        if st.sweep_steps and sweep is None:
            return self._sweep(step)
        seg = self._plan_after_sweep(step)
        if sweep is not None and not sweep.restored:
            # The first segment after the sweep returns to the state before it and frees that snapshot.
            sweep.restored = True
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
        sweep = self._s.sweep
        return sweep.steps_run if sweep is not None else 0

    def _start_lr(self) -> float:
        """The LR the search starts from: the suggested LR (:meth:`_suggested_lr`) unless the user set ``warmup_lr``."""
        suggested = self._suggested_lr()
        if suggested is not None and self.config.warmup_lr is None:
            return suggested
        return self.settings.warmup_lr

    def _suggested_lr(self) -> float | None:
        """The LR the first search centres on: the LR range sweep's suggestion, else the config's ``prior_lr``."""
        sweep = self._s.sweep
        if sweep is not None and sweep.lr is not None:
            return float(sweep.lr)
        return None if self.config.prior_lr is None else float(self.config.prior_lr)

    def _sweep(self, step: int) -> Segment:
        """The LR range sweep: LR rising log-linearly over the whole range, from a snapshot restored afterwards."""
        st = self.settings
        sid = self._new_id()
        self._s.sweep = Sweep(sid)
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


# ---------------------------------------------------------------------- helpers
