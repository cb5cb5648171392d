"""The noisy-quadratic benchmark's ``--presets`` entries: a preset with its config switches."""

import pytest

from benchmarks.nqm import preset_switches
from lrtune.tuner import TunerConfig


def test_a_switch_turns_on_and_a_value_is_read_as_json_or_as_text() -> None:
    preset, switches = preset_switches("plan:loss_model=spectral,verify_rise=false,probe_all")
    assert preset == "plan"
    assert switches == {"loss_model": "spectral", "verify_rise": False, "probe_all": True}
    # The tuner takes them as they are.
    TunerConfig(min_lr=1e-3, max_lr=10.0, total_steps=1000, preset="plan", **switches)


def test_a_plain_preset_has_no_switches() -> None:
    assert preset_switches("greedy") == ("greedy", {})


def test_a_value_of_the_wrong_kind_is_refused_by_the_config() -> None:
    _, switches = preset_switches("plan:verify_rise=1")
    with pytest.raises(ValueError, match="verify_rise"):
        TunerConfig(min_lr=1e-3, max_lr=10.0, total_steps=1000, preset="plan", **switches)
