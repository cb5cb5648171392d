"""No reported loss, however extreme, is stored raw or makes a later valid report fail."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrtune.tuner import Segment, Tuner, TunerConfig, TunerError
from lrtune.tuner.stages import MAX_ABS_LOSS

#: float64 values that broke the GP or the loss model before they were treated as diverged points.
EXTREMES = [1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 1e300, 1e200, 1e155, -1e155, 1e31]
TINY = [5e-324, -5e-324, 2.2250738585072014e-308, 1e-310, 0.0, -0.0]
NON_FINITE = [math.nan, math.inf, -math.inf, None]

poison_value = st.one_of(
    st.sampled_from(EXTREMES + TINY + NON_FINITE),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=64),
)


def good_losses(seg: Segment) -> list[float]:
    """A plausible training curve for the segment (decreasing in steps, worse at large LRs)."""
    return [1.0 / (1.0 + 0.01 * (seg.start_step + j) * seg.lr_at(j)) + 0.1 * seg.lr_at(j) for j in range(seg.steps)]


def poisoned(seg: Segment, pattern: list[float | None]) -> list[float | None]:
    """``pattern`` repeated over the segment's length (one loss per step, as a valid report has)."""
    return [pattern[j % len(pattern)] for j in range(seg.steps)]


def finite_numbers(obj: Any) -> list[float]:
    """Every finite float inside a JSON-like document."""
    if isinstance(obj, float):
        return [obj] if math.isfinite(obj) else []
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in finite_numbers(v)]
    if isinstance(obj, list | tuple):
        return [x for v in obj for x in finite_numbers(v)]
    return []


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    poisons=st.dictionaries(
        keys=st.integers(min_value=0, max_value=12),
        values=st.lists(poison_value, min_size=1, max_size=12),
        min_size=1,
        max_size=4,
    ),
    preset=st.sampled_from(["default", "paper"]),
)
def test_arbitrary_losses_never_break_later_valid_reports(poisons: dict[int, list[float | None]], preset: str) -> None:
    """Reports ``i in poisons`` carry arbitrary float64 losses; every other report is valid and must succeed."""
    config = TunerConfig(
        min_lr=1e-3, max_lr=1.0, total_steps=300, preset=preset, seed=0, tau=60 if preset == "paper" else None
    )
    tuner = Tuner(config)
    seg = tuner.next_segment()
    for i in range(200):
        if seg.done:
            break
        if i in poisons:
            try:
                seg = tuner.report(seg.segment_id, poisoned(seg, poisons[i]), None)
            except TunerError:
                pass  # a typed refusal is fine: the state is unchanged, the next valid report must still work
            else:
                continue
            seg = tuner.next_segment()
        val = [1.0] * (seg.steps // seg.eval_every) if seg.eval_every else None
        seg = tuner.report(seg.segment_id, good_losses(seg), val)  # must never raise
    assert seg.done, "the job ran to the end of its budget"
    state = tuner.dump()
    json.dumps(state, allow_nan=True)  # plain JSON-safe data
    # Losses up to the bound are kept, and what the tuner derives from them (means, penalties) may round a little past
    # it; a raw 1e155 or 1e308 never gets in.
    assert all(abs(x) <= 10 * MAX_ABS_LOSS for x in finite_numbers(state)), "a huge loss was stored raw"
    tuner.schedule()
    tuner.export()


def test_huge_losses_are_diverged_points() -> None:
    """Magnitudes above the bound (either sign) read as NaN, like a diverged step; tiny ones are kept."""
    from lrtune.tuner.reports import as_floats as _as_floats

    got = _as_floats([1e31, -1e31, 1e30, -1e30, 5e-324, None, math.inf, 0.5], "losses")
    assert [math.isnan(v) for v in got] == [True, True, False, False, False, True, True, False]
    assert got[4] == 5e-324 and got[2] == 1e30
