"""The wire models repeat the tuner's config and segment fields (trainer machines do not install the tuner);
these tests keep the two copies from drifting apart."""

import dataclasses
import math

import pytest

from lrtune.client.protocol import JobConfig, WireSegment
from lrtune.tuner import Segment, TunerConfig
from lrtune.tuner.segment import SHAPES


def test_job_config_has_exactly_the_tuner_configs_fields_and_defaults() -> None:
    tuner_fields = {f.name: f.default for f in dataclasses.fields(TunerConfig)}
    wire_fields = {name: f.default for name, f in JobConfig.model_fields.items()}
    assert set(wire_fields) == set(tuner_fields)
    for name, default in tuner_fields.items():
        if default is not dataclasses.MISSING:
            assert wire_fields[name] == default, name


def test_wire_segment_carries_every_tuner_segment_field() -> None:
    assert {f.name for f in dataclasses.fields(Segment)} <= set(WireSegment.model_fields)


@pytest.mark.parametrize("shape", SHAPES)
def test_both_copies_of_the_lr_formula_agree(shape: str) -> None:
    seg = Segment(3, "schedule", 100, 50, shape, 0.1, 0.001, 0.2, 0.7)  # type: ignore[arg-type]
    wire = WireSegment(job_id="j", **seg.to_dict())
    for j in range(seg.steps):
        assert math.isclose(wire.lr_at(j), seg.lr_at(j), rel_tol=1e-12)
