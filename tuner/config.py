"""Job configuration: what the user asks for, and the settings a preset resolves it to.

``TunerConfig`` is what a user writes (and what travels over the wire). ``Settings`` is the complete,
resolved set of knobs the stage machine runs on: every ``None`` in the config is filled from the preset and
the step budget. Resolution is a pure function of the config and the job's :class:`Defaults` (what ``"default"`` and
an unset loss model stood for when it was created), so a dumped job stores only those two.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from annotated_types import Ge, Gt, Le, Lt

from lrtune.tuner.errors import InvalidConfigError

Preset = Literal["default", "plan", "greedy", "paper"]
PlanShape = Literal["free", "cosine"]
LossModel = Literal["spectral", "power"]
Strategy = Literal["autolrs", "constant", "cosine", "linear", "wsd", "rex"]
Objective = Literal["train", "val", "auto"]

PRESETS: tuple[str, ...] = get_args(Preset)
#: The preset ``default`` stands for: the planner (the README's Presets section gives the figures, including where
#: ``greedy`` is ahead).
DEFAULT_PRESET = "plan"
#: The ``plan`` preset's loss model when the config leaves ``loss_model`` unset.
DEFAULT_LOSS_MODEL = "spectral"
#: The share of the budget at its end that a spectral plan keeps under a line falling to zero (``decay_tail``).
DECAY_TAIL = 0.2
#: Whether a spectral plan's falls are checked (``verify_fall``) when the config leaves it unset.
VERIFY_FALL = True
#: Whether a checked rise lifts the fall check's floor (``lift_floor``) when the config leaves it unset.
LIFT_FLOOR = True
PLAN_SHAPES: tuple[str, ...] = get_args(PlanShape)
LOSS_MODELS: tuple[str, ...] = get_args(LossModel)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
MAX_TOTAL_STEPS = 10**9
_MIN_SWEEP_STEPS = 10  # a shorter LR range sweep is skipped
_DEFAULT_STAGES = 6  # the greedy preset's first stage is this fraction of the main phase (then tau doubles)
_PLAN_TAU = 0.06  # the plan preset trains this share of the budget before its first search

# Field types with their bounds (``annotated_types``, which pydantic reads too).
LR = Annotated[float, Gt(0)]
Steps = Annotated[int, Ge(1), Le(MAX_TOTAL_STEPS)]
Share = Annotated[float, Ge(0), Le(1)]
#: Candidates of a search: each adds a point to a GP refitted on every report, hence the cap.
Candidates = Annotated[int, Ge(1), Le(64)]


#: The LR range sweep suggests the LR where its smoothed loss bottomed out divided by this (``sweep_divisor``).
SWEEP_DIVISOR = 10.0


@dataclass(frozen=True)
class TunerConfig:
    """What a job asks for.

    Attributes:
        min_lr: Lower bound of the LR search range (and the final LR of the standard schedules).
        max_lr: Upper bound of the LR search range (and the peak LR of the standard schedules).
        total_steps: Budget of gradient steps, every exploration and rolled-back step included.
        preset: ``"plan"`` (plans the whole budget with a loss model, re-planned online), ``"greedy"`` (stage by
            stage search of the best LR over a short horizon, then a fixed anneal), ``"paper"`` (the reference
            AutoLRS behaviour), or ``"default"``: the recommended one, ``plan`` (``DEFAULT_PRESET``).
        strategy: ``"autolrs"`` searches the LR; the others serve a standard schedule.
        seed: Seed of every random choice the tuner makes.
        tau: Length in steps of the first stage (None: from the preset and budget).
        tau_max: Longest stage in steps; tau doubles each stage until it reaches it.
        k: Candidates tried in a stage without prior observations.
        k_warm: Candidates tried in a stage that starts from carried observations.
        candidate_fraction: Steps per candidate as a fraction of tau (tau' = fraction * tau).
        min_candidate_steps: Fewest steps a candidate runs.
        objective: ``"train"`` or ``"val"`` loss, or ``"auto"`` (train until tau reaches tau_max, then val).
        val_samples: Validation evaluations per candidate when the objective is validation loss.
        warmup_steps: Linear warmup steps before the search (or the schedule) starts.
        warmup_lr: LR the warmup ends at (None: the LR range sweep's suggestion, or ``prior_lr``, or without either
            the geometric middle of the range; for the standard schedules ``max_lr``).
        prior_lr: An LR a previous job found to work (its winner: ``lrtune.client.prior_config`` reads it from that
            job's schedule). It takes the place of the LR range sweep's suggestion: the first search is centred on it,
            the plan's stability cap is set from it, and the sweep is skipped unless ``sweep_fraction`` is set.
        explore_cap: Largest share of ``total_steps`` spent exploring: the LR range sweep, candidates and their probes
            (the ``plan`` preset counts the steps it rolls back: the sweep, losing candidates and probes).
        anneal_fraction: Share of ``total_steps`` at the end that decays the LR linearly towards zero.
        noise_from_forecast: Pass each forecast's uncertainty to the GP as observation noise.
        carry_observations: Warm-start a stage's search from the previous stage's observations.
        keep_winner: Continue from the winning candidate's end state instead of rolling it back.
        divergence_guard: Stop a candidate whose loss turns non-finite or far above its start.
        replay_batches: Ask the client to show every candidate of a stage the same batches.
        power_law: Let a power-law curve family compete with the exponential in the forecaster.
        loss_floor: Lowest value the loss can take (0 for cross-entropy); null if it can go negative.
        divergence_factor: A candidate diverged once its recent loss exceeds this factor times the stage's
            start loss.
        trust_region: Half-width, in normalized log-LR units, of a warm stage's search around the last winner.
        max_segment_steps: Longest training segment in steps; longer stretches are cut into several segments.
        wsd_decay_fraction: Share of the schedule that decays, for the ``wsd`` strategy.
        sweep_fraction: Share of ``total_steps`` spent on an LR range sweep before the warmup (the LR rises
            log-linearly from ``min_lr`` to ``max_lr``; the weights are rolled back afterwards). Its result
            centres the first stage's search and is the warmup's target LR unless ``warmup_lr`` is set.
            0 turns it off.
        sweep_divisor: The LR range sweep suggests the LR where its smoothed loss bottomed out divided by this
            (``SWEEP_DIVISOR``, 10, by default): the warmup's target, the ``plan`` preset's first training LR and the
            other presets' first search centre. The stability cap and the candidates' edge are set from the bottom
            itself, so they do not move with it. A ``prior_lr`` stands in for the suggestion: the bottom is then
            ``prior_lr`` times this.
        probe_fraction: Length of a cooldown probe after each candidate, as a fraction of the candidate's steps:
            the LR decays linearly to 0 and the drop in loss it buys is added to the candidate's forecast, so a
            small LR gets no free "annealing bonus" over a larger one. 0 turns it off.
        replan: ``plan`` preset: refit the loss model and re-plan after every training segment (else the plan
            changes only after a search).
        later_searches: ``plan`` preset: search again after the first search whenever the model says it pays
            (with ``k_warm`` candidates: by default only the incumbent and its cooldown probe, which shows how
            much of the loss is LR noise that a decay would remove). Off by default: on the noisy quadratic it
            cost more than it gained (see ``benchmarks/results/nqm.md``).
        tied_kernel: ``plan`` preset with ``loss_model="power"``: the loss model's noise response shares the
            progress term's kernel (exact on a noisy quadratic at small LRs; two fewer parameters). Off by default.
        plan_shape: ``plan`` preset: ``"free"`` plans any non-increasing LR curve, ``"cosine"`` only a cosine
            (from the best peak to ``min_lr``).
        model_window: ``plan`` preset with ``loss_model="power"``: the loss model fits only losses below this
            factor times the lowest one observed (it is a local model of where training is now).
        plan_pieces: ``plan`` preset: knots of a plan (the LR moves log-linearly between them).
        probe_all: ``plan`` preset: a cooldown probe after every candidate of a search, not only after the
            incumbent: each shows the loss drop a decay from its own LR buys, which is what the loss model needs to
            tell how a decay pays off (and how much of a high LR's loss is noise).
        robust_plan: ``plan`` preset with ``loss_model="power"``: fit a rival loss model whose decay pays off
            slowly (its noise-response exponent held at 0.5) and, while it explains the data about as well as the
            best fit, plan against the worse of the two readings (the largest relative regret) instead of betting on
            the best fit alone.
        probe_judge: ``plan`` preset, with ``probe_all``: the search's winner is the candidate with the lowest
            loss after its cooldown probe (what was observed) instead of the lowest predicted final loss (what
            the model extrapolates); the plan from the winner is still the model's.
        loss_model: ``plan`` preset: ``"spectral"`` (the default: training read as a noisy quadratic with a fitted
            spectrum of curvatures, :mod:`lrtune.tuner.spectral`: plans may take any LR up to the stability cap, rise
            only as far as the model keeps predicting the loss and the rise check passes, and search only when rival
            readings of the data disagree on the plan; a 2% LR range sweep) or ``"power"`` (the multi-power-law
            model, :mod:`lrtune.tuner.lossmodel`, with non-increasing plans and a fixed first search). The spectral
            model is ahead of the power model on every noisy quadratic case and every benchmark network (see the
            README).
        verify_rise: ``plan`` preset with the spectral model (on by default there; refused with the power model,
            like the power model's own switches with the spectral one): an LR the kept line rose to is
            trusted (plans may go up to twice it) only once the rise has paid for itself: the line runs on, then a
            cooldown probe from it (rolled back) must end below what the model says the line would have reached had
            it stayed at the trusted LR and decayed alike (shifted by the model's miss where the rise began). The
            model's case for a higher LR is that its excess loss is noise a decay removes; the probe checks that
            claim. A rise that did not pay brings the cap down to the trusted LR (a smaller rise would only be checked
            again, for a gain too small to measure).
        decay_tail: ``plan`` preset with the spectral model: share of the budget at its end over which every plan
            stays under a line falling linearly to zero from where the plan stands at its start (0.2 by default
            there; 0 turns it off). The model chooses the LR up to there and any LR under the line, a steeper or
            earlier decay included; the tail only keeps the final decay from being a short drop at the very end.
        verify_fall: ``plan`` preset with the spectral model (on by default there; refused with the power model): before
            the tail, plans go at most four times below the lowest LR the kept line has fallen to as the model
            predicted (at first the sweep's). A training segment that falls below it is checked against the fit that
            has not seen it: where the loss dropped by at least half the drop the model predicted, its LR is trusted
            and plans may fall further; where it did not, the model read progress as noise, and plans keep at least
            that LR until the tail (without a ``decay_tail`` there is no tail to hold until, and the switch does
            nothing).
        lift_floor: ``plan`` preset with the spectral model and ``verify_fall`` (on by default there; refused with the
            power model): a rise that became trusted (checked, or as predicted) lifts the fall check's floor with it:
            from there on, plans go at most four times below the risen LR before the tail, and a fall below it is
            checked as any other. A floor already held where a fall missed the model's prediction stays. Without
            ``verify_fall`` there is no floor to lift, and the switch does nothing.
        measure_rise: ``plan`` preset with the spectral model and ``verify_rise`` (off by default; refused with the
            power model): a rise's check measures the line it is judged against instead of asking the model. From
            the same snapshot and on the same batches, the risen LR and the trusted LR each run on, each followed by
            a cooldown probe (both rolled back but the kept one); the rise is trusted where its probe ended below
            the trusted LR's, and the job goes on from the better of the two. Costs one more candidate and probe of
            rolled-back steps per check; where there is no room for them under the exploration cap, or the plan is
            back at the trusted LR, the check asks the model as without the switch. It catches lasting damage that
            the model's yardstick misses, but on the benchmark networks it refuses rises that the model's check
            trusted, and those runs end worse (the README's figures).
        rise_tolerance: ``plan`` preset with the spectral model and ``verify_rise`` (0 by default; refused with the
            power model): the model's check of a rise (not ``measure_rise``'s control) refuses the rise only where
            its probe ended above the yardstick by more than this many times the fit's relative residual noise (the
            scatter of one observation about the fit). The check's margins are often within one or two of those:
            on the 20k-step byte-level LM a tolerance of 2 trusts the rises that pay over the long run, but on the
            selection workloads 1 and 2 are worse than 0 (the README's figures), so the default keeps every miss.
    """

    #: How pydantic reads this class where it is the wire's job config (``lrtune.client.protocol``): unknown
    #: keys and non-finite numbers refused, each field described from the docstring above.
    __pydantic_config__: ClassVar[dict[str, Any]] = {
        "extra": "forbid",
        "allow_inf_nan": False,
        "json_schema_extra": lambda schema, cls: describe_fields(schema),
    }

    min_lr: LR
    max_lr: LR
    total_steps: Steps
    preset: Preset = "default"
    strategy: Strategy = "autolrs"
    seed: Annotated[int, Ge(0), Lt(2**63)] = 0
    tau: Steps | None = None
    tau_max: Steps | None = None
    k: Candidates | None = None
    k_warm: Candidates | None = None
    candidate_fraction: Annotated[float, Gt(0), Le(1)] | None = None
    min_candidate_steps: Steps | None = None
    objective: Objective | None = None
    val_samples: Annotated[int, Ge(2), Le(10_000)] = 16
    warmup_steps: Annotated[int, Ge(0), Le(MAX_TOTAL_STEPS)] = 0
    warmup_lr: LR | None = None
    prior_lr: LR | None = None
    explore_cap: Share | None = None
    anneal_fraction: Annotated[float, Ge(0), Le(0.9)] | None = None
    noise_from_forecast: bool | None = None
    carry_observations: bool | None = None
    keep_winner: bool | None = None
    divergence_guard: bool | None = None
    replay_batches: bool | None = None
    power_law: bool | None = None
    loss_floor: float | None = 0.0
    divergence_factor: Annotated[float, Gt(1), Lt(1e6)] = 2.0
    trust_region: Share = 0.25
    max_segment_steps: Steps | None = None
    wsd_decay_fraction: Share = 0.2
    sweep_fraction: Annotated[float, Ge(0), Le(0.5)] | None = None
    sweep_divisor: Annotated[float, Ge(1), Le(1000)] = SWEEP_DIVISOR
    probe_fraction: Annotated[float, Ge(0), Le(2)] | None = None
    replan: bool | None = None
    later_searches: bool | None = None
    tied_kernel: bool | None = None
    plan_shape: PlanShape | None = None
    model_window: Annotated[float, Ge(1.5), Le(1e6)] | None = None
    plan_pieces: Annotated[int, Ge(2), Le(64)] | None = None
    probe_all: bool | None = None
    robust_plan: bool | None = None
    probe_judge: bool | None = None
    loss_model: LossModel | None = None
    verify_rise: bool | None = None
    decay_tail: Share | None = None
    verify_fall: bool | None = None
    lift_floor: bool | None = None
    measure_rise: bool | None = None
    rise_tolerance: Annotated[float, Ge(0), Le(10)] | None = None

    def __post_init__(self) -> None:
        """Validate every field and raise :class:`InvalidConfigError` with what to fix."""
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain JSON-safe dict (``None`` fields included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunerConfig:
        """Build a config from a dict, refusing unknown keys.

        Raises:
            InvalidConfigError: An unknown or missing key, or an invalid value.
        """
        if not isinstance(data, dict):
            raise InvalidConfigError("config must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidConfigError(f"unknown config field(s): {', '.join(unknown)}")
        missing = [n for n in ("min_lr", "max_lr", "total_steps") if n not in data]
        if missing:
            raise InvalidConfigError(f"missing config field(s): {', '.join(missing)}")
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - guarded by the checks above
            raise InvalidConfigError(str(exc)) from exc


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FieldRule:
    """What one :class:`TunerConfig` field accepts, read from its annotation.

    Attributes:
        name: The field's name.
        kind: ``int``, ``float``, ``bool`` or ``str`` (a choice among ``choices``).
        choices: The values a ``Literal`` field accepts, else empty.
        optional: Whether ``None`` is accepted.
        low: The lower bound of a number (``Gt`` or ``Ge``), or None.
        low_open: The lower bound itself is refused (``Gt``).
        high: The upper bound of a number (``Lt`` or ``Le``), or None.
        high_open: The upper bound itself is refused (``Lt``).
    """

    name: str
    kind: type
    choices: tuple[Any, ...] = ()
    optional: bool = False
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def accepts(self, value: object) -> bool:
        """Tell whether ``value`` is of the field's kind, among its choices and within its bounds."""
        if value is None:
            return self.optional
        if self.choices:
            return value in self.choices
        if self.kind is bool:
            return isinstance(value, bool)
        if not (_is_int(value) if self.kind is int else _is_number(value)):
            return False
        v = float(value)  # type: ignore[arg-type]
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def describe(self) -> str:
        """What the field accepts, in words (for error messages)."""
        if self.kind is bool:
            return "true, false or null" if self.optional else "true or false"
        if self.choices:
            what = "one of " + ", ".join(map(str, self.choices))
        else:
            what = "an integer" if self.kind is int else "a finite number"
            low, high = _fmt(self.low), _fmt(self.high)
            if self.low is not None and self.high is not None:
                what += f" in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
            elif self.low is not None:
                what += f" {'>' if self.low_open else '>='} {low}"
            elif self.high is not None:
                what += f" {'<' if self.high_open else '<='} {high}"
        return what + (" or null" if self.optional else "")


def _fmt(x: float | None) -> str:
    return str(int(x)) if x is not None and x == int(x) and abs(x) < 1e21 else str(x)


@functools.cache
def field_rules() -> tuple[FieldRule, ...]:
    """The rule of every :class:`TunerConfig` field, in field order: the one definition of what each accepts.

    The tuner checks them in ``TunerConfig.__post_init__``; pydantic reads the same annotations where the
    config travels over the wire.
    """
    hints = get_type_hints(TunerConfig, include_extras=True)
    rules = []
    for f in dataclasses.fields(TunerConfig):
        hint = hints[f.name]
        optional = False
        if get_origin(hint) in (Union, UnionType):
            rest = [a for a in get_args(hint) if a is not type(None)]
            optional = len(rest) < len(get_args(hint))
            (hint,) = rest
        bounds: dict[str, Any] = {}
        if get_origin(hint) is Annotated:
            hint, *meta = get_args(hint)
            for m in meta:
                if isinstance(m, Gt | Ge):
                    bounds.update(low=float(m.gt if isinstance(m, Gt) else m.ge), low_open=isinstance(m, Gt))  # type: ignore[arg-type]
                elif isinstance(m, Lt | Le):
                    bounds.update(high=float(m.lt if isinstance(m, Lt) else m.le), high_open=isinstance(m, Lt))  # type: ignore[arg-type]
        choices: tuple[Any, ...] = get_args(hint) if get_origin(hint) is Literal else ()
        rules.append(FieldRule(f.name, str if choices else hint, choices, optional, **bounds))
    return tuple(rules)


@functools.cache
def field_docs() -> dict[str, str]:
    """Each :class:`TunerConfig` field's description, from the ``Attributes`` section of its docstring."""
    docs: dict[str, str] = {}
    name = None
    section = (TunerConfig.__doc__ or "").split("Attributes:", 1)[-1]
    for line in section.splitlines():
        head = re.match(r"^ {8}(\w+): (.*)$", line)
        if head:
            name = head.group(1)
            docs[name] = head.group(2)
        elif name is not None and line.startswith(" " * 12):
            docs[name] += " " + line.strip()
    return docs


def describe_fields(schema: dict[str, Any]) -> None:
    """Add each field's description to a JSON schema of :class:`TunerConfig` (pydantic's ``json_schema_extra``)."""
    docs = field_docs()
    for name, prop in schema.get("properties", {}).items():
        if name in docs:
            prop["description"] = docs[name]


def _validate(c: TunerConfig) -> None:
    for rule in field_rules():
        v = getattr(c, rule.name)
        if not rule.accepts(v):
            raise InvalidConfigError(f"{rule.name} must be {rule.describe()}, got {v!r}")
    if c.min_lr >= c.max_lr:
        raise InvalidConfigError(f"min_lr ({c.min_lr}) must be below max_lr ({c.max_lr})")
    if c.tau is not None and c.tau_max is not None and c.tau_max < c.tau:
        raise InvalidConfigError(f"tau_max ({c.tau_max}) must be at least tau ({c.tau})")
    if c.warmup_steps >= c.total_steps:
        raise InvalidConfigError(f"warmup_steps ({c.warmup_steps}) must be below total_steps ({c.total_steps})")
    if c.prior_lr is not None and not c.min_lr <= c.prior_lr <= c.max_lr:
        raise InvalidConfigError(
            f"prior_lr must be a number in [min_lr, max_lr] = [{c.min_lr}, {c.max_lr}], got {c.prior_lr!r}"
        )


@dataclass(frozen=True)
class Settings:
    """The resolved knobs the stage machine runs on; see :class:`TunerConfig` for their meaning."""

    min_lr: float
    max_lr: float
    total_steps: int
    preset: str
    strategy: str
    seed: int
    tau: int
    tau_max: int
    k: int
    k_warm: int
    candidate_fraction: float
    min_candidate_steps: int
    objective: str
    val_samples: int
    warmup_steps: int
    warmup_lr: float
    explore_cap: float
    anneal_steps: int
    noise_from_forecast: bool
    carry_observations: bool
    keep_winner: bool
    divergence_guard: bool
    replay_batches: bool
    forecast_families: tuple[str, ...]
    loss_floor: float | None
    divergence_factor: float
    trust_region: float
    max_segment_steps: int
    wsd_decay_fraction: float
    acquisition: str
    sweep_steps: int
    probe_fraction: float
    sweep_divisor: float = SWEEP_DIVISOR
    planner: bool = False
    replan: bool = False
    later_searches: bool = False
    tied_kernel: bool = False
    plan_shape: str = "free"
    model_window: float = 10.0
    plan_pieces: int = 12
    probe_all: bool = False
    robust_plan: bool = False
    probe_judge: bool = False
    loss_model: str = "power"
    verify_rise: bool = False
    decay_tail: float = 0.0
    verify_fall: bool = False
    lift_floor: bool = False
    measure_rise: bool = False
    rise_tolerance: float = 0.0


@dataclass(frozen=True)
class Defaults:
    """What a config's unset choices stand for; a job keeps the ones it was created with.

    A stored job must continue as it ran, so it is resolved with the defaults of the version that created it, not
    with today's (:data:`LEGACY_DEFAULTS` for jobs stored before the state recorded them).

    Attributes:
        preset: The preset ``"default"`` stands for.
        loss_model: The ``plan`` preset's loss model when ``loss_model`` is unset.
        decay_tail: The spectral plan's ``decay_tail`` when it is unset (0 for jobs stored before it existed).
        verify_fall: The spectral plan's ``verify_fall`` when it is unset (off for jobs stored before it existed).
        lift_floor: The spectral plan's ``lift_floor`` when it is unset (off for jobs stored before it existed).
    """

    preset: str = DEFAULT_PRESET
    loss_model: str = DEFAULT_LOSS_MODEL
    decay_tail: float = DECAY_TAIL
    verify_fall: bool = VERIFY_FALL
    lift_floor: bool = LIFT_FLOOR

    #: The switches stored as flags, each written only where on.
    FLAGS: ClassVar[tuple[str, ...]] = ("verify_fall", "lift_floor")

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``decay_tail`` and the flags only where set: older dumps are written back as read)."""
        out: dict[str, Any] = {"preset": self.preset, "loss_model": self.loss_model}
        if self.decay_tail:
            out["decay_tail"] = self.decay_tail
        out.update({name: True for name in self.FLAGS if getattr(self, name)})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Defaults:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError: A key is missing.
            ValueError: A value names no preset or loss model (or ``preset`` is ``"default"``).
        """
        preset, loss_model = data["preset"], data["loss_model"]
        if preset not in PRESETS or preset == "default" or loss_model not in LOSS_MODELS:
            raise ValueError(f"defaults must name a preset and a loss model, got {dict(data)!r}")
        tail = data.get("decay_tail", 0.0)
        if isinstance(tail, bool) or not isinstance(tail, int | float) or not 0.0 <= tail <= 1.0:
            raise ValueError(f"defaults' decay_tail must be a share between 0 and 1, got {tail!r}")
        flags = {name: data.get(name, False) for name in cls.FLAGS}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"defaults' {name} must be true or false, got {value!r}")
        return cls(preset=preset, loss_model=loss_model, decay_tail=float(tail), **flags)


#: What unset choices stood for before the state recorded them: ``default`` was ``greedy``, the loss model ``power``
#: (and no plan had a decay tail or a fall check).
LEGACY_DEFAULTS = Defaults(preset="greedy", loss_model="power", decay_tail=0.0, verify_fall=False, lift_floor=False)


def plans(preset: str, strategy: str, defaults: Defaults = Defaults()) -> bool:
    """Whether a job runs the planner: the ``plan`` preset (``"default"`` read as ``defaults.preset``), searching.

    A job of the ``plan`` preset that serves a standard schedule (``strategy`` other than ``"autolrs"``) does not.
    """
    return (defaults.preset if preset == "default" else preset) == "plan" and strategy == "autolrs"


def resolve(config: TunerConfig, defaults: Defaults = Defaults()) -> Settings:
    """Fill every unset knob from the preset and the step budget.

    Args:
        config: The user's config.
        defaults: What ``preset="default"`` and an unset ``loss_model`` stand for (a stored job's own).

    Returns:
        The complete settings. ``paper`` reproduces the reference AutoLRS numbers (tau=1000 doubling to
        8000, k=10, tau'=tau/10, no cap, roll back every candidate, lowest forecast wins); ``greedy`` sizes the
        stages from the budget so that about four stages fit before the final anneal; ``plan`` trains 6% of
        the budget before its first search (three candidates of 2% each), rolls back at most 15%, and plans the
        end itself (no fixed anneal).
    """
    c = config
    paper = c.preset == "paper"
    plan = plans(c.preset, c.strategy, defaults)
    total = c.total_steps
    if c.warmup_lr is not None:
        warmup_lr = c.warmup_lr
    elif c.strategy == "autolrs":
        warmup_lr = math.sqrt(c.min_lr * c.max_lr)
    else:
        warmup_lr = c.max_lr
    anneal_fraction = c.anneal_fraction if c.anneal_fraction is not None else (0.0 if paper or plan else 0.2)
    anneal_steps = round(anneal_fraction * total)
    if c.strategy == "autolrs":
        anneal_steps = min(anneal_steps, total - c.warmup_steps - 1)
    # A prior LR takes the place of the sweep's suggestion: no sweep unless asked for.
    loss_model = c.loss_model or defaults.loss_model
    spectral = plan and loss_model == "spectral"
    # The spectral planner reads the sweep only for the stability edge and as data: half the length does.
    default_sweep = 0.0 if paper or c.prior_lr else 0.02 if spectral else 0.04
    sweep_fraction = c.sweep_fraction if c.sweep_fraction is not None else default_sweep
    explore_cap = float(c.explore_cap if c.explore_cap is not None else (1.0 if paper else 0.15 if plan else 0.25))
    sweep_steps = min(round(sweep_fraction * total), math.floor(explore_cap * total)) if c.strategy == "autolrs" else 0
    if sweep_steps < _MIN_SWEEP_STEPS or total - c.warmup_steps - anneal_steps - sweep_steps < 2 * _MIN_SWEEP_STEPS:
        sweep_steps = 0  # too short to say anything, or it would leave nothing to train
    if paper:
        tau = c.tau or 1000
        tau_max = c.tau_max or max(8000, tau)
    elif plan:
        tau = c.tau or max(10, round(_PLAN_TAU * total))
        tau_max = c.tau_max or 16 * tau
    else:
        main = max(1, total - c.warmup_steps - anneal_steps - sweep_steps)
        tau = c.tau or max(10, main // _DEFAULT_STAGES)
        tau_max = c.tau_max or 8 * tau
    tau_max = max(tau_max, tau)
    k = c.k or (10 if paper else 3 if plan else 6)
    k_warm = c.k_warm or (k if paper else 1 if plan else min(k, 4))
    max_segment_steps = c.max_segment_steps or max(50, math.ceil(total / 64))
    return Settings(
        min_lr=float(c.min_lr),
        max_lr=float(c.max_lr),
        total_steps=total,
        preset=c.preset,
        strategy=c.strategy,
        seed=c.seed,
        tau=tau,
        tau_max=tau_max,
        k=k,
        k_warm=k_warm,
        candidate_fraction=c.candidate_fraction or (0.1 if paper else 1 / 3 if plan else 0.2),
        min_candidate_steps=c.min_candidate_steps or (1 if paper else 10),
        objective=c.objective or ("auto" if paper else "train"),
        val_samples=c.val_samples,
        warmup_steps=c.warmup_steps,
        warmup_lr=float(warmup_lr),
        explore_cap=explore_cap,
        anneal_steps=anneal_steps,
        noise_from_forecast=_flag(c.noise_from_forecast, not paper),
        carry_observations=_flag(c.carry_observations, not paper),
        keep_winner=_flag(c.keep_winner, not paper),
        divergence_guard=_flag(c.divergence_guard, not paper),
        replay_batches=_flag(c.replay_batches, not paper),
        forecast_families=("exp", "power") if _flag(c.power_law, not paper) else ("exp",),
        loss_floor=None if paper or c.loss_floor is None else float(c.loss_floor),
        divergence_factor=float(c.divergence_factor),
        trust_region=float(c.trust_region),
        max_segment_steps=max_segment_steps,
        wsd_decay_fraction=float(c.wsd_decay_fraction),
        acquisition="explore" if paper else "lcb",
        sweep_steps=sweep_steps,
        sweep_divisor=float(c.sweep_divisor),
        probe_fraction=float(c.probe_fraction if c.probe_fraction is not None else (0.0 if paper else 0.5)),
        planner=plan,
        replan=_flag(c.replan, plan),
        later_searches=_flag(c.later_searches, False),
        tied_kernel=_flag(c.tied_kernel, False),
        plan_shape=c.plan_shape or "free",
        model_window=float(c.model_window if c.model_window is not None else 10.0),
        plan_pieces=c.plan_pieces or (24 if spectral else 12),
        probe_all=_flag(c.probe_all, False),
        robust_plan=_flag(c.robust_plan, False),
        probe_judge=_flag(c.probe_judge, False),
        loss_model=loss_model,
        verify_rise=_flag(c.verify_rise, spectral),
        decay_tail=float(c.decay_tail if c.decay_tail is not None else (defaults.decay_tail if spectral else 0.0)),
        verify_fall=_flag(c.verify_fall, defaults.verify_fall and spectral),
        lift_floor=_flag(c.lift_floor, defaults.lift_floor and spectral),
        measure_rise=_flag(c.measure_rise, False),
        rise_tolerance=float(c.rise_tolerance or 0.0),
    )


#: The plan preset's switches that only one loss model reads, by that model.
_MODEL_SWITCHES: dict[str, tuple[str, ...]] = {
    "power": ("robust_plan", "tied_kernel", "model_window"),
    "spectral": ("verify_rise", "decay_tail", "verify_fall", "lift_floor", "measure_rise", "rise_tolerance"),
}


def check_model_switches(config: TunerConfig, settings: Settings) -> None:
    """Refuse a ``plan`` switch that the job's loss model would ignore (set to anything but off or unset).

    Checked when a job is created; a stored job is recovered as it was accepted.

    Args:
        config: The user's config.
        settings: What it resolves to (whether it plans, and with which loss model).

    Raises:
        InvalidConfigError: Naming the switches and the model they belong to.
    """
    if not settings.planner:
        return
    used = settings.loss_model
    for model, names in _MODEL_SWITCHES.items():
        ignored = [n for n in names if model != used and getattr(config, n) not in (None, False)]
        if ignored:
            raise InvalidConfigError(
                f"{', '.join(ignored)} only applies with loss_model={model!r}; this plan uses "
                f"loss_model={used!r} (set loss_model={model!r}, or leave {', '.join(ignored)} unset)"
            )


def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else value
