"""dump()/recover() round-trips at every point of a run: the rest of the run is identical."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from lrtune.tuner import InvalidStateError, Tuner, TunerConfig
from tests.tuner.driver import toy_step

CONFIGS = [
    {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 1500, "seed": 4},
    {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 1500, "seed": 5, "preset": "paper", "tau": 60, "tau_max": 120},
    {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 700, "strategy": "wsd", "warmup_steps": 50},
]


def play(tuner: Tuner, cut: int | None) -> list[dict[str, object]]:
    """Run to the end with a deterministic worker; at report ``cut`` swap the tuner for a recovered copy."""
    state = {"loss": 3.0}
    snaps: dict[str, dict[str, float]] = {}
    seen = []
    seg = tuner.next_segment()
    reports = 0
    while not seg.done:
        seen.append(seg.to_dict())
        if seg.restore:
            state = dict(snaps[seg.restore])
        for name in seg.drop:
            snaps.pop(name, None)
        if seg.snapshot:
            snaps[seg.snapshot] = dict(state)
        losses = [toy_step(state, seg.lr_at(j)) for j in range(seg.steps)]
        vals = [state["loss"]] * (seg.steps // seg.eval_every) if seg.eval_every else None
        if seg.keep:
            snaps[seg.keep] = dict(state)
        seg = tuner.report(seg.segment_id, losses, vals)
        reports += 1
        if reports == cut:
            tuner = Tuner.recover(json.loads(json.dumps(tuner.dump(), allow_nan=False)))
            assert tuner.next_segment() == seg
    seen.append(tuner.schedule())
    return seen


REFERENCE = {i: play(Tuner(TunerConfig(**c)), None) for i, c in enumerate(CONFIGS)}  # type: ignore[arg-type]


@settings(max_examples=12, deadline=None)
@given(which=st.integers(0, len(CONFIGS) - 1), cut=st.integers(1, 80))
def test_recover_after_any_report_continues_identically(which: int, cut: int) -> None:
    assert play(Tuner(TunerConfig(**CONFIGS[which])), cut) == REFERENCE[which]  # type: ignore[arg-type]


def test_state_is_plain_json_and_holds_observations_not_models() -> None:
    t = Tuner(TunerConfig(**CONFIGS[0]))  # type: ignore[arg-type]
    play(t, None)
    text = json.dumps(t.dump(), allow_nan=False)
    assert "forecast" in text and "candidates" in text
    assert len(text) < 1_000_000


def test_foreign_state_is_refused() -> None:
    for bad in ({}, {"schema": 99}, {"schema": 1}, []):
        try:
            Tuner.recover(bad)  # type: ignore[arg-type]
        except InvalidStateError as exc:
            assert isinstance(exc, ValueError)
        else:
            raise AssertionError(f"recovered {bad!r}")
