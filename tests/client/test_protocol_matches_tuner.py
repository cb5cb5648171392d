"""The wire's job config is the tuner's own TunerConfig, and the wire segment carries the tuner's segment:
what the service accepts, documents and hands out is what the tuner defines, once."""

import dataclasses
import json
import math

import pytest
from pydantic import TypeAdapter, ValidationError

from lrtune.client.protocol import JobConfig, JobCreate, WireSegment
from lrtune.tuner import Segment, TunerConfig
from lrtune.tuner.config import FieldRule, field_docs, field_rules
from lrtune.tuner.segment import GUARD_WINDOW, SHAPES, Piece

BASE = {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 1000}


def test_the_job_config_on_the_wire_is_the_tuners_config() -> None:
    assert JobConfig is TunerConfig
    created = JobCreate.model_validate({"config": {**BASE, "k": "3"}})  # lax about numbers sent as strings
    assert created.config == TunerConfig(**BASE, k=3)


def test_the_api_schema_documents_every_field_with_its_default_and_bounds() -> None:
    schema = JobCreate.model_json_schema()
    props = schema["$defs"]["TunerConfig"]["properties"]
    assert list(props) == [f.name for f in dataclasses.fields(TunerConfig)]
    docs = field_docs()
    for f in dataclasses.fields(TunerConfig):
        assert props[f.name]["description"] == docs[f.name] and len(docs[f.name]) > 10, f.name
        if f.default is not dataclasses.MISSING:
            assert props[f.name]["default"] == f.default, f.name
    assert props["k"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 64}
    assert props["min_lr"]["exclusiveMinimum"] == 0
    assert schema["$defs"]["TunerConfig"]["additionalProperties"] is False


def _outside(rule: FieldRule) -> list[object]:
    """Values a field refuses: just past each bound, a string, and for numbers infinity."""
    out: list[object] = ["not-a-value"]
    if rule.low is not None:
        out.append(rule.low if rule.low_open else rule.low - 1)
    if rule.high is not None:
        out.append(rule.high if rule.high_open else rule.high + 1)
    if rule.kind in (int, float):
        out.append(math.inf)
    return out


@pytest.mark.parametrize("rule", field_rules(), ids=lambda r: r.name)
def test_the_wire_and_the_tuner_refuse_the_same_values(rule: FieldRule) -> None:
    adapter = TypeAdapter(TunerConfig)
    for value in _outside(rule):
        data = {**BASE, rule.name: value}
        with pytest.raises(ValueError, match=rule.name):
            TunerConfig.from_dict(data)
        with pytest.raises(ValidationError):
            adapter.validate_python(data)


def test_a_config_the_tuner_refuses_as_a_whole_is_refused_on_the_wire_with_the_tuners_words() -> None:
    with pytest.raises(ValidationError, match=r"min_lr \(1.0\) must be below max_lr \(0.1\)"):
        JobCreate.model_validate({"config": {"min_lr": 1.0, "max_lr": 0.1, "total_steps": 10}})


@pytest.mark.parametrize("shape", SHAPES)
def test_the_wire_segment_is_the_tuners_segment_and_round_trips_through_json(shape: str) -> None:
    seg = Segment(3, "schedule", 100, 50, shape, 0.1, 0.001, 0.2, 0.7, drop=("a",), then=(Piece(150, 10),))  # type: ignore[arg-type]
    wire = WireSegment.of(seg, "j", lease_epoch=2)
    assert isinstance(wire, Segment) and wire.lr_at(7) == seg.lr_at(7)
    sent = json.loads(TypeAdapter(WireSegment).dump_json(wire))
    assert sent["lr"] == seg.lr and sent["lr_end"] == seg.lr_end and sent["guard_window"] == GUARD_WINDOW
    got = WireSegment.from_dict({**sent, "from_a_newer_service": 1})
    assert got == wire and Segment.from_dict(sent) == seg


def test_a_wire_segment_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValidationError, match="steps"):
        WireSegment.from_dict({"job_id": "j", "segment_id": 0, "phase": "train", "start_step": 0, "steps": "many"})
