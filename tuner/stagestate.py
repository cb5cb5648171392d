"""Stage records: a search stage of the state, its candidates and their cooldown probes.

Every preset keeps its searches as :class:`Stage` records (the ``plan`` preset's with ``kind="plan"``), so the
schedule, the CLI and the dashboard show them alike. Each record writes exactly the JSON keys the stored state has
always held (:meth:`Stage.to_dict`) and reads them back (:meth:`Stage.from_dict`), including the keys of dumps
written before some were added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from lrtune.tuner import fields as f
from lrtune.tuner.fields import UNSET, Points, Unset
from lrtune.tuner.planner import Plan

StageKind = Literal["greedy", "plan"]
StageStatus = Literal["search", "exploit", "done"]
Objective = Literal["train", "val"]


@dataclass(frozen=True)
class Point:
    """An observation a stage carries over from the previous stage (see :class:`lrtune.tuner.search.Observation`).

    Attributes:
        x: Normalized log10-LR in [0, 1].
        y: The objective there, in loss units.
        noise_var: Its noise variance, in squared loss units.
    """

    x: float
    y: float
    noise_var: float

    def to_dict(self) -> dict[str, float]:
        """JSON-safe form."""
        return {"x": self.x, "y": self.y, "noise_var": self.noise_var}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Point:
        """Inverse of :meth:`to_dict`."""
        return cls(f.number(data, "x"), f.number(data, "y"), f.number(data, "noise_var"))


@dataclass(frozen=True)
class CurveFit:
    """The most likely curve of a candidate's forecast (see :class:`lrtune.tuner.forecast.Forecast`).

    Attributes:
        family: ``"exp"`` or ``"power"``.
        a: Amplitude, in loss units.
        rate: Decay rate per step (exponential family), else None.
        exponent: Exponent (power family), else None.
        c: Asymptote, in loss units.
        noise: Per-point noise of the series, in loss units.
        points: Finite points the fit used.
    """

    family: str
    a: float
    rate: float | None
    exponent: float | None
    c: float
    noise: float
    points: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "family": self.family,
            "a": self.a,
            "rate": self.rate,
            "exponent": self.exponent,
            "c": self.c,
            "noise": self.noise,
            "points": self.points,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurveFit:
        """Inverse of :meth:`to_dict`."""
        return cls(
            family=f.text(data, "family"),
            a=f.number(data, "a"),
            rate=f.opt_number(data, "rate"),
            exponent=f.opt_number(data, "exponent"),
            c=f.number(data, "c"),
            noise=f.number(data, "noise"),
            points=f.integer(data, "points"),
        )


@dataclass
class Probe:
    """A candidate's cooldown probe: from the candidate's end state the LR decays linearly to 0.

    Attributes:
        segment_id: The probe's segment.
        loss: The loss at its end (the last validation loss, or the mean of the last training losses), once run.
        var: The variance of that loss, in squared loss units, once run.
        tail: The losses ``loss`` was taken from, once run (None: not run, or it diverged; not written then).
        lost: It was never run: an outage replaced it (its candidate's end state had offline steps on it).
            Written only when true.
    """

    segment_id: int
    loss: float | None = None
    var: float | None = None
    tail: tuple[float, ...] | None = None
    lost: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out: dict[str, Any] = {"segment_id": self.segment_id, "loss": self.loss, "var": self.var}
        if self.tail is not None:
            out["tail"] = list(self.tail)
        if self.lost:
            out["lost"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        """Inverse of :meth:`to_dict`."""
        return cls(
            segment_id=f.integer(data, "segment_id"),
            loss=f.opt_number(data, "loss"),
            var=f.opt_number(data, "var"),
            tail=tuple(f.numbers_of(data, "tail")) if "tail" in data else None,
            lost="lost" in data and f.flag(data, "lost"),
        )


@dataclass
class Candidate:
    """A candidate LR of a stage: a few steps at one LR from the stage snapshot, and what they showed.

    Attributes:
        index: Its index within the stage.
        lr: Its LR.
        x: Its normalized log10-LR.
        segment_id: Its segment (a new one when an outage made it run again).
        forecast: Its objective: the loss forecast at the stage horizon (for a ``plan`` stage the predicted final
            loss under its own best plan), once known.
        std: The standard deviation of ``forecast``, in loss units.
        diverged: Its loss diverged.
        kept: The snapshot its end state is kept under, or None.
        steps_run: Steps it ran (0: not yet).
        first_loss: Mean of its first five finite losses, or None.
        last_loss: Mean of its last five finite losses, or None.
        curve: Its binned losses (those of its segment record).
        abort_above: Its divergence guard's threshold, or None.
        probe: Its cooldown probe, once handed out.
        fit: The curve its forecast fitted (written only once there is one).
        plan: For a ``plan`` stage: its best plan for the rest of the budget (written only once there is one).
        barred: For a ``plan`` stage: why it could not win whatever its predicted final loss (it ran above the trust
            region and its cooldown probe did not end below the incumbent's), or None (written only once set).
    """

    index: int
    lr: float
    x: float
    segment_id: int
    forecast: float | None = None
    std: float | None = None
    diverged: bool = False
    kept: str | None = None
    steps_run: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    curve: Points = ()
    abort_above: float | None = None
    probe: Probe | None = None
    fit: CurveFit | None = None
    plan: Plan | None = None
    barred: str | None = None

    @property
    def probe_loss(self) -> float | None:
        """The loss at the end of its cooldown probe, or None."""
        return None if self.probe is None else self.probe.loss

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out: dict[str, Any] = {
            "index": self.index,
            "lr": self.lr,
            "x": self.x,
            "segment_id": self.segment_id,
            "forecast": self.forecast,
            "std": self.std,
            "diverged": self.diverged,
            "kept": self.kept,
            "steps_run": self.steps_run,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "curve": f.points_json(self.curve),
            "abort_above": self.abort_above,
            "probe": None if self.probe is None else self.probe.to_dict(),
        }
        if self.fit is not None:
            out["fit"] = self.fit.to_dict()
        if self.plan is not None:
            out["plan"] = self.plan.to_dict()
        if self.barred is not None:
            out["barred"] = self.barred
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Inverse of :meth:`to_dict` (candidates written before probes and the guard have neither: None)."""
        probe, fit, plan = (f.opt_mapping(data, key) for key in ("probe", "fit", "plan"))
        return cls(
            index=f.integer(data, "index"),
            lr=f.number(data, "lr"),
            x=f.number(data, "x"),
            segment_id=f.integer(data, "segment_id"),
            forecast=f.opt_number(data, "forecast"),
            std=f.opt_number(data, "std"),
            diverged=f.flag(data, "diverged"),
            kept=f.opt_text(data, "kept"),
            steps_run=f.integer(data, "steps_run"),
            first_loss=f.opt_number(data, "first_loss"),
            last_loss=f.opt_number(data, "last_loss"),
            curve=f.points(data, "curve"),
            abort_above=f.opt_number(data, "abort_above", required=False),
            probe=None if probe is None else Probe.from_dict(probe),
            fit=None if fit is None else CurveFit.from_dict(fit),
            plan=None if plan is None else Plan.from_dict(dict(plan)),
            barred=f.opt_text(data, "barred") if "barred" in data else None,
        )


@dataclass
class Stage:
    """A search: candidates from one snapshot, the winner, and (greedy, paper) the training at its LR after it.

    Attributes:
        index: Its index in the job.
        kind: ``"greedy"`` (the greedy and paper presets; not written) or ``"plan"``.
        tau: Its horizon in steps (for a ``plan`` stage, the rest of the budget).
        cand_steps: Steps per candidate.
        k: Candidates it tries (0: it trains on at the last winner).
        warm: It starts from the previous stage's observations.
        incumbent_lr: The LR it is centred on (its first candidate's), or None.
        objective: ``"train"`` or ``"val"`` loss.
        start_step: Global step its first candidate starts at.
        start_loss: The reference loss at its start, or None.
        start_spread: The step-to-step spread of the losses there, or None.
        lo: Lower end of its search range, in normalized log10-LR.
        hi: Upper end of its search range.
        snapshot: Name of its snapshot.
        candidates: Its candidates, in the order they ran.
        carried: The previous stage's observations it starts from.
        status: ``"search"``, ``"exploit"`` (training at the winner's LR) or ``"done"``.
        winner: Index of the winning candidate, or None.
        winner_lr: The LR it trains at (the winner's, or a fallback), once decided.
        exploit_end: Global step its training ends at, once decided.
        base: For a ``plan`` stage: the segment whose end state its candidates start from (written for those only).
        restore: The snapshot its training starts from (None: none), once its search finished (:data:`UNSET`
            before, and then not written).
    """

    index: int
    tau: int
    cand_steps: int
    k: int
    warm: bool
    incumbent_lr: float | None
    objective: Objective
    start_step: int
    start_loss: float | None
    start_spread: float | None
    lo: float
    hi: float
    snapshot: str
    status: StageStatus
    candidates: list[Candidate] = field(default_factory=list)
    carried: tuple[Point, ...] = ()
    winner: int | None = None
    winner_lr: float | None = None
    exploit_end: int | None = None
    kind: StageKind = "greedy"
    base: int | None = None
    restore: str | Unset | None = UNSET

    @property
    def restore_snapshot(self) -> str | None:
        """The snapshot its training starts from: :attr:`restore`, None while undecided."""
        return None if isinstance(self.restore, Unset) else self.restore

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out: dict[str, Any] = {"index": self.index}
        if self.kind == "plan":
            out["kind"] = self.kind
        out.update(
            tau=self.tau,
            cand_steps=self.cand_steps,
            k=self.k,
            warm=self.warm,
            incumbent_lr=self.incumbent_lr,
            objective=self.objective,
            start_step=self.start_step,
            start_loss=self.start_loss,
            start_spread=self.start_spread,
            lo=self.lo,
            hi=self.hi,
            snapshot=self.snapshot,
            candidates=[c.to_dict() for c in self.candidates],
            carried=[p.to_dict() for p in self.carried],
            status=self.status,
            winner=self.winner,
            winner_lr=self.winner_lr,
            exploit_end=self.exploit_end,
        )
        if self.kind == "plan":
            out["base"] = self.base
        if not isinstance(self.restore, Unset):
            out["restore"] = self.restore
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage:
        """Inverse of :meth:`to_dict` (stages written before the spread was kept have no ``start_spread``: None)."""
        kind = f.text(data, "kind") if "kind" in data else "greedy"
        status = f.text(data, "status")
        objective = f.text(data, "objective")
        if kind not in ("greedy", "plan") or status not in ("search", "exploit", "done"):
            raise TypeError(f"unknown stage kind {kind!r} or status {status!r}")
        if objective not in ("train", "val"):
            raise TypeError(f"unknown stage objective {objective!r}")
        return cls(
            index=f.integer(data, "index"),
            kind=cast(StageKind, kind),
            tau=f.integer(data, "tau"),
            cand_steps=f.integer(data, "cand_steps"),
            k=f.integer(data, "k"),
            warm=f.flag(data, "warm"),
            incumbent_lr=f.opt_number(data, "incumbent_lr"),
            objective=cast(Objective, objective),
            start_step=f.integer(data, "start_step"),
            start_loss=f.opt_number(data, "start_loss"),
            start_spread=f.opt_number(data, "start_spread", required=False),
            lo=f.number(data, "lo"),
            hi=f.number(data, "hi"),
            snapshot=f.text(data, "snapshot"),
            candidates=[Candidate.from_dict(c) for c in f.items(data, "candidates")],
            carried=tuple(Point.from_dict(p) for p in f.items(data, "carried")),
            status=cast(StageStatus, status),
            winner=f.opt_integer(data, "winner"),
            winner_lr=f.opt_number(data, "winner_lr"),
            exploit_end=f.opt_integer(data, "exploit_end"),
            base=f.opt_integer(data, "base", required=False) if kind == "plan" else None,
            restore=f.opt_text(data, "restore") if "restore" in data else UNSET,
        )
