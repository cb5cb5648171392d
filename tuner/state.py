"""The tuner's state: typed records that write (and read back) the JSON a job is stored as.

:class:`TunerState` is the whole state of a job; :meth:`lrtune.tuner.stages.Tuner.dump` is its
:meth:`TunerState.to_dict` and :meth:`lrtune.tuner.stages.Tuner.recover` its :meth:`TunerState.from_dict`. The stored
format is that of ``SCHEMA_VERSION`` 1, key for key, so jobs stored by earlier versions recover, and a recovered job
writes back the JSON it was read from (keys that dumps of earlier versions lack read as their defaults). The
records here hold observations and decisions only, never fitted models: every decision is a deterministic
function of them. The parts: segment records (:mod:`lrtune.tuner.records`), stages with their candidates and probes
(:mod:`lrtune.tuner.stagestate`), and here the LR range sweep (:class:`Sweep`), the last report's fingerprint
(:class:`LastReport`) and the ``plan`` preset's planner (:class:`OnlineState`, :class:`ModelFit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lrtune.tuner import fields as f
from lrtune.tuner.config import Defaults, TunerConfig
from lrtune.tuner.fields import UNSET, Unset
from lrtune.tuner.lossmodel import Fit, Params
from lrtune.tuner.planner import Plan
from lrtune.tuner.records import SegmentRecord
from lrtune.tuner.segment import Segment
from lrtune.tuner.spectral import SpectralFit, SpectralParams
from lrtune.tuner.stagestate import Stage

#: Version of the stored format (``schema``).
SCHEMA_VERSION = 1


@dataclass
class Sweep:
    """The LR range sweep: the LR rises log-linearly over the whole range, from a snapshot restored afterwards.

    Attributes:
        segment_id: Its segment (a new one when an outage made it run again).
        steps_run: Steps it ran (0: not yet).
        lr: The LR it suggests, once run.
        restored: The segment after it, which restores the snapshot from before it, has been handed out.
    """

    segment_id: int
    steps_run: int = 0
    lr: float | None = None
    restored: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"segment_id": self.segment_id, "steps_run": self.steps_run, "lr": self.lr, "restored": self.restored}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sweep:
        """Inverse of :meth:`to_dict`."""
        return cls(
            f.integer(data, "segment_id"),
            f.integer(data, "steps_run"),
            f.opt_number(data, "lr"),
            f.flag(data, "restored"),
        )


@dataclass(frozen=True)
class LastReport:
    """The last report taken, to tell a repeated report (a retry) from a conflicting one.

    Attributes:
        segment_id: The segment it reported.
        digest: Its fingerprint (:func:`lrtune.tuner.reports.digest`).
    """

    segment_id: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"segment_id": self.segment_id, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LastReport:
        """Inverse of :meth:`to_dict`."""
        return cls(f.integer(data, "segment_id"), f.text(data, "digest"))


@dataclass(frozen=True)
class ModelFit:
    """What the state keeps of a loss-model fit: its parameters (the next fit starts from them), not the model.

    Attributes:
        params: The fitted parameters: the multi-power-law model's (:class:`lrtune.tuner.lossmodel.Params`) or the
            spectral model's (:class:`lrtune.tuner.spectral.SpectralParams`).
        rel_noise: Standard deviation of the fit's relative residuals.
        points: Observations the fit used.
    """

    params: Params | SpectralParams
    rel_noise: float
    points: int

    @classmethod
    def of(cls, fit: Fit | SpectralFit) -> ModelFit:
        """The summary of a fit."""
        return cls(fit.params, fit.rel_noise, fit.points)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (that of the fit's own ``to_dict``)."""
        p = self.params
        params = p.to_dict() if isinstance(p, SpectralParams) else dataclasses.asdict(p)
        return {"params": params, "rel_noise": self.rel_noise, "points": self.points}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFit:
        """Inverse of :meth:`to_dict`."""
        params = f.mapping(data, "params")
        read: Params | SpectralParams
        if "weights" in params:
            read = SpectralParams(
                f.number(params, "l0"), tuple(f.numbers_of(params, "weights")), f.number(params, "kappa")
            )
        else:
            read = Params(**{n.name: f.number(params, n.name) for n in dataclasses.fields(Params)})
        return cls(read, f.number(data, "rel_noise"), f.integer(data, "points"))


@dataclass
class OnlineState:
    """The ``plan`` preset's planner: the plan in force, the next decision point and the stability bounds.

    Created once the LR range sweep and the warmup are over (they set the bounds and the first search's step).

    Attributes:
        plan: The plan in force, or None.
        cap: Highest LR a plan may use (the stability cap), before a search has chosen the LR level.
        edge: Highest LR a candidate may try.
        next_search: Global step of the next decision point.
        spacing: Steps between decision points (doubling after each search, up to ``tau_max``).
        fit: The last loss-model fit, or None.
        rival: The last rival fit (its noise-response exponent held), or None; :data:`UNSET` (not written) while
            no rival was ever fitted.
        plan_from: The segment whose end state the plan continues; :data:`UNSET` (not written) before the first
            plan.
        trusted: The spectral model's trust region: the highest LR the kept line has run at as the model predicted
            (plans go at most ``TRUST_GROWTH`` times higher); :data:`UNSET` (not written) for the other model and
            before the first training segment.
        rise: With ``verify_rise``: the training segment whose LR rose above the trusted LR as predicted, waiting
            for the check of its rise (a cooldown probe from the risen line); :data:`UNSET` (not written) while none
            waits.
        low: With ``verify_fall``: the lowest LR the kept line has fallen to as the model predicted (at first the
            sweep's; with ``lift_floor``, a trusted rise above it while the floor is not held lifts it to the risen
            LR); :data:`UNSET` (not written) without the switch or before the first training segment.
        floor: With ``verify_fall``: the lowest LR a plan may take before its tail (``low`` divided by
            ``FALL_GROWTH``, or ``low`` itself once a fall missed the model's prediction); :data:`UNSET` as ``low``.
    """

    plan: Plan | None
    cap: float
    edge: float
    next_search: int
    spacing: int
    fit: ModelFit | None = None
    rival: ModelFit | Unset | None = UNSET
    plan_from: int | Unset | None = UNSET
    trusted: float | Unset = UNSET
    rise: int | Unset = UNSET
    low: float | Unset = UNSET
    floor: float | Unset = UNSET

    @property
    def rival_fit(self) -> ModelFit | None:
        """:attr:`rival`, None while unset."""
        return None if isinstance(self.rival, Unset) else self.rival

    @property
    def plan_source(self) -> int | None:
        """:attr:`plan_from`, None while unset."""
        return None if isinstance(self.plan_from, Unset) else self.plan_from

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out: dict[str, Any] = {
            "plan": None if self.plan is None else self.plan.to_dict(),
            "cap": self.cap,
            "edge": self.edge,
            "next_search": self.next_search,
            "spacing": self.spacing,
            "fit": None if self.fit is None else self.fit.to_dict(),
        }
        if not isinstance(self.rival, Unset):
            out["rival"] = None if self.rival is None else self.rival.to_dict()
        if not isinstance(self.plan_from, Unset):
            out["plan_from"] = self.plan_from
        if not isinstance(self.trusted, Unset):
            out["trusted"] = self.trusted
        if not isinstance(self.rise, Unset):
            out["rise"] = self.rise
        if not isinstance(self.low, Unset):
            out["low"] = self.low
        if not isinstance(self.floor, Unset):
            out["floor"] = self.floor
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineState:
        """Inverse of :meth:`to_dict`."""
        plan, fit, rival = (f.opt_mapping(data, key) for key in ("plan", "fit", "rival"))
        return cls(
            plan=None if plan is None else Plan.from_dict(dict(plan)),
            cap=f.number(data, "cap"),
            edge=f.number(data, "edge"),
            next_search=f.integer(data, "next_search"),
            spacing=f.integer(data, "spacing"),
            fit=None if fit is None else ModelFit.from_dict(fit),
            rival=UNSET if "rival" not in data else None if rival is None else ModelFit.from_dict(rival),
            plan_from=UNSET if "plan_from" not in data else f.opt_integer(data, "plan_from"),
            trusted=UNSET if "trusted" not in data else f.number(data, "trusted"),
            rise=UNSET if "rise" not in data else f.integer(data, "rise"),
            low=UNSET if "low" not in data else f.number(data, "low"),
            floor=UNSET if "floor" not in data else f.number(data, "floor"),
        )


@dataclass
class TunerState:
    """A job's whole state.

    Attributes:
        config: What the job asks for.
        open: The open segment: handed out, not reported yet.
        step: Gradient steps reported so far, exploration included.
        next_id: Id of the next segment.
        stages: The searches, in order.
        segments: The records of every segment reported, in report order (parents first).
        winner_lr: The last search's winning LR, or None.
        explore_steps: Steps spent exploring: the LR range sweep, candidates and their probes.
        wasted_steps: Steps rolled back.
        ref_loss: Mean of the last ten losses of the kept line (the divergence guard's reference), or None.
        ref_spread: Their step-to-step spread, or None.
        recent_losses: Up to 50 recent finite losses of the kept line.
        anneal_lr: The LR the final anneal starts from, once decided.
        last_report: The last report's fingerprint, or None.
        sweep: The LR range sweep, once handed out.
        line: The segment whose end state the worker holds (None: the initial weights).
        snaps: Each snapshot the worker holds, by name: the segment whose end state it holds (None: the initial
            weights).
        online: The ``plan`` preset's planner, once created (not written before).
        defaults: What the config's unset choices stood for when the job was created; None in dumps written
            before it was kept (those ran with :data:`lrtune.tuner.config.LEGACY_DEFAULTS`).
        schema: Version of the stored format.
    """

    config: TunerConfig
    open: Segment
    step: int = 0
    next_id: int = 0
    stages: list[Stage] = field(default_factory=list)
    segments: list[SegmentRecord] = field(default_factory=list)
    winner_lr: float | None = None
    explore_steps: int = 0
    wasted_steps: int = 0
    ref_loss: float | None = None
    ref_spread: float | None = None
    recent_losses: list[float] = field(default_factory=list)
    anneal_lr: float | None = None
    last_report: LastReport | None = None
    sweep: Sweep | None = None
    line: int | None = None
    snaps: dict[str, int | None] = field(default_factory=dict)
    online: OnlineState | None = None
    defaults: Defaults | None = None
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON-safe, built afresh (changing it changes nothing here)."""
        out: dict[str, Any] = {
            "schema": self.schema,
            "config": self.config.to_dict(),
            "step": self.step,
            "next_id": self.next_id,
            "open": self.open.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "segments": [r.to_dict() for r in self.segments],
            "winner_lr": self.winner_lr,
            "explore_steps": self.explore_steps,
            "wasted_steps": self.wasted_steps,
            "ref_loss": self.ref_loss,
            "ref_spread": self.ref_spread,
            "recent_losses": list(self.recent_losses),
            "anneal_lr": self.anneal_lr,
            "last_report": None if self.last_report is None else self.last_report.to_dict(),
            "sweep": None if self.sweep is None else self.sweep.to_dict(),
            "line": self.line,
            "snaps": dict(self.snaps),
        }
        if self.online is not None:
            out["online"] = self.online.to_dict()
        if self.defaults is not None:
            out["defaults"] = self.defaults.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TunerState:
        """Inverse of :meth:`to_dict`; reads nothing of ``data`` that it keeps (lists are copied).

        Dumps written before lineage, the LR range sweep, the spreads and the defaults were kept have no ``line``,
        ``snaps``, ``sweep``, ``ref_spread`` or ``defaults``: they read as None (``snaps``: empty).

        Raises:
            KeyError, TypeError, ValueError: A field is missing or of the wrong type (the config: invalid).
        """
        last, sweep, online, defaults = (
            f.opt_mapping(data, key) for key in ("last_report", "sweep", "online", "defaults")
        )
        snaps = dict(f.opt_mapping(data, "snaps") or {})
        for name, holder in snaps.items():
            if not isinstance(name, str) or (holder is not None and not isinstance(holder, int)):
                raise TypeError(f"snaps must map names to segment ids, got {name!r}: {holder!r}")
        return cls(
            schema=f.integer(data, "schema"),
            config=TunerConfig.from_dict(dict(f.mapping(data, "config"))),
            step=f.integer(data, "step"),
            next_id=f.integer(data, "next_id"),
            open=Segment.from_dict(dict(f.mapping(data, "open"))),
            stages=[Stage.from_dict(s) for s in f.items(data, "stages")],
            segments=[SegmentRecord.from_dict(r) for r in f.items(data, "segments")],
            winner_lr=f.opt_number(data, "winner_lr"),
            explore_steps=f.integer(data, "explore_steps"),
            wasted_steps=f.integer(data, "wasted_steps"),
            ref_loss=f.opt_number(data, "ref_loss"),
            ref_spread=f.opt_number(data, "ref_spread", required=False),
            recent_losses=f.numbers_of(data, "recent_losses"),
            anneal_lr=f.opt_number(data, "anneal_lr"),
            last_report=None if last is None else LastReport.from_dict(last),
            sweep=None if sweep is None else Sweep.from_dict(sweep),
            line=f.opt_integer(data, "line", required=False),
            snaps=snaps,
            online=None if online is None else OnlineState.from_dict(online),
            defaults=None if defaults is None else Defaults.from_dict(defaults),
        )
