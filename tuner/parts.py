"""What the parts of :class:`lrtune.tuner.stages.Tuner` know of each other: its state and the methods they call across.

Each concept of the tuner is a module with a mixin (:mod:`lrtune.tuner.candidates`, :mod:`lrtune.tuner.greedy`,
:mod:`lrtune.tuner.online`, :mod:`lrtune.tuner.onlinestages`, :mod:`lrtune.tuner.outage`, :mod:`lrtune.tuner.views`),
combined into one class in :mod:`lrtune.tuner.stages`.
:class:`TunerParts` declares, for the type checker only, the state they share (``_s``, the typed records of
:mod:`lrtune.tuner.state`) and the methods one calls on another; at run time it adds nothing, so no declaration here
can shadow an implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrtune.tuner.config import Settings, TunerConfig
    from lrtune.tuner.lossmodel import Fit
    from lrtune.tuner.modelruns import RecordMemo
    from lrtune.tuner.planner import Plan
    from lrtune.tuner.records import SegmentRecord
    from lrtune.tuner.replan import AnyFit, AnyHistory, Knobs
    from lrtune.tuner.search import Observation, Surrogate
    from lrtune.tuner.segment import Segment
    from lrtune.tuner.stagestate import Candidate, Stage
    from lrtune.tuner.state import OnlineState, TunerState


class TunerParts:
    """The shared state (``_s``: the job's whole state) and the cross-module methods."""

    config: TunerConfig
    settings: Settings
    last_suggest_s: float
    _s: TunerState
    _fits: dict[tuple[Observation, ...], Surrogate]

    if TYPE_CHECKING:

        @property
        def done(self) -> bool:
            """True once the whole budget is spent."""
            ...

        def _new_id(self) -> int: ...

        def _plan(self) -> Segment: ...

        def _chunk(self, step: int, end: int) -> int: ...

        def _start_lr(self) -> float: ...

        def _suggested_lr(self) -> float | None: ...

        def _warm_start(self) -> int: ...

        def _remember(self, train: list[float]) -> None: ...

        def _plan_view(self, points: int = 32) -> dict[str, Any] | None: ...

        def _planned_lr(self, step: int) -> float: ...

        def _model(self, record: bool = True) -> AnyFit | None: ...

        def _rival(self) -> Fit | None: ...

        def _online(self) -> OnlineState: ...

        def _knobs(self) -> Knobs: ...

        def _memo(self) -> RecordMemo: ...

        def _objective(self) -> str: ...

        def _eval_every(self, steps: int) -> int | None: ...

        def _history(self, segment_id: int | None) -> AnyHistory: ...

        def _replan(self, step: int) -> Plan | None: ...

        def _cap(self, history: AnyHistory) -> float: ...

        def _current_plan(self) -> Plan | None: ...

        @property
        def _spectral(self) -> bool: ...

        def _check_trust(self) -> None: ...

        def _trust(self, lr: float) -> None: ...

        def _rise(self) -> tuple[SegmentRecord, float | None]: ...

        def _stayed(self, start: int, before: float, steps: int, decay: int) -> float | None: ...

        def _candidate(
            self,
            stage: Stage,
            step: int,
            lr: float,
            x: float,
            keep: str | None,
            eval_every: int | None,
            drop: tuple[str, ...] = (),
        ) -> Segment: ...

        def _probe(self, stage: Stage, cand: Candidate, step: int) -> Segment: ...

        def _probe_steps(self, cand_steps: int) -> int: ...

        def _wants_probe(self, cand: Candidate) -> bool: ...

        def _propose(self, stage: Stage, i: int) -> float: ...

        def _surrogate(self, obs: list[Observation]) -> Surrogate: ...

        def _observations(self, stage: Stage, carried: bool = False, failed: bool = True) -> list[Observation]: ...

        def _scores(self, stage: Stage) -> tuple[dict[int, tuple[float, float]], bool]: ...

        def _ranking(self, stage: Stage, kept_only: bool = False) -> list[int]: ...

        def _drops(self, stage: Stage) -> list[str]: ...
