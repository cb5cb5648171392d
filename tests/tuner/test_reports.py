"""Reports that do not fit are typed errors that change nothing; a repeated report is applied once."""

import json
import math

import pytest

from lrtune.tuner import (
    ConflictingReportError,
    InvalidReportError,
    Tuner,
    TunerConfig,
    TunerError,
    UnknownSegmentError,
)


def fresh(**kw: object) -> Tuner:
    config = {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 2000, "seed": 0}
    config.update(kw)
    return Tuner(TunerConfig(**config))  # type: ignore[arg-type]


def test_next_segment_is_stable_until_reported() -> None:
    t = fresh()
    assert t.next_segment() == t.next_segment()


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        (lambda seg: (seg.segment_id + 5, [1.0] * seg.steps, None), UnknownSegmentError, "is not the open segment"),
        (lambda seg: (seg.segment_id, [1.0] * (seg.steps + 1), None), InvalidReportError, "steps but the report has"),
        (lambda seg: (seg.segment_id, [], None), InvalidReportError, "got none"),
        (lambda seg: (seg.segment_id, [1.0] * 3, None), InvalidReportError, "only a candidate whose loss diverged"),
        (lambda seg: (seg.segment_id, ["a"] * seg.steps, None), InvalidReportError, "must be a number"),
        (lambda seg: (seg.segment_id, [True] * seg.steps, None), InvalidReportError, "must be a number"),
        (lambda seg: (seg.segment_id, "1.0", None), InvalidReportError, "list of numbers"),
        (lambda seg: (seg.segment_id, [1.0] * seg.steps, [0.5]), InvalidReportError, "asked for no validation"),
    ],
)
def test_bad_reports_raise_typed_errors_and_leave_the_state_unchanged(make, error, fragment) -> None:  # type: ignore[no-untyped-def]
    t = fresh()
    before = json.dumps(t.dump(), sort_keys=True)
    segment_id, losses, val = make(t.next_segment())
    with pytest.raises(error) as info:
        t.report(segment_id, losses, val)
    assert fragment in str(info.value)
    assert isinstance(info.value, TunerError) and isinstance(info.value, ValueError)
    assert json.dumps(t.dump(), sort_keys=True) == before


def test_unknown_segment_is_also_a_lookup_error() -> None:
    t = fresh()
    with pytest.raises(LookupError):
        t.report(99, [1.0])


def test_validation_losses_are_required_when_asked_for() -> None:
    t = fresh(objective="val", sweep_fraction=0.0)
    seg = t.next_segment()
    assert seg.eval_every is not None
    with pytest.raises(InvalidReportError, match="validation losses expected"):
        t.report(seg.segment_id, [1.0] * seg.steps)
    nxt = t.report(seg.segment_id, [1.0] * seg.steps, [1.0] * (seg.steps // seg.eval_every))
    assert nxt.segment_id == seg.segment_id + 1


def test_the_same_report_twice_is_applied_once() -> None:
    t = fresh()
    seg = t.next_segment()
    losses = [2.0 - 0.01 * i for i in range(seg.steps)]
    first = t.report(seg.segment_id, losses)
    state = json.dumps(t.dump(), sort_keys=True)
    again = t.report(seg.segment_id, losses)
    assert again == first
    assert json.dumps(t.dump(), sort_keys=True) == state
    with pytest.raises(ConflictingReportError):
        t.report(seg.segment_id, [0.0] * seg.steps)


def test_nan_and_inf_are_a_diverged_candidate_not_an_error() -> None:
    t = fresh(sweep_fraction=0.0, preset="greedy")
    seg = t.next_segment()
    t.report(seg.segment_id, [1.0, math.nan, None, math.inf])  # cut short once it diverged
    cand = t.schedule()["stages"][0]["candidates"][0]
    assert cand["diverged"] and cand["steps"] == 4 and cand["forecast"] is None
    json.dumps(t.dump(), allow_nan=False)  # the state stays strict JSON


def test_reporting_after_the_end_is_refused() -> None:
    t = fresh(total_steps=5, strategy="constant")
    seg = t.next_segment()
    done = t.report(seg.segment_id, [1.0] * seg.steps)
    assert done.done and done.steps == 0 and t.done
    with pytest.raises(InvalidReportError, match="the job is done"):
        t.report(done.segment_id, [1.0])
