import dataclasses
import math

import pytest

from lrtune.tuner import InvalidConfigError, TunerConfig, TunerError, resolve
from lrtune.tuner.config import _MODEL_SWITCHES


def cfg(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"min_lr": 1e-4, "max_lr": 1e-1, "total_steps": 10_000}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"min_lr": 0.1, "max_lr": 0.1}, "must be below max_lr"),
        ({"min_lr": 0.5, "max_lr": 0.1}, "must be below max_lr"),
        ({"min_lr": -1.0}, "min_lr must be a finite number > 0"),
        ({"max_lr": math.nan}, "max_lr must be a finite number > 0"),
        ({"max_lr": math.inf}, "max_lr must be a finite number > 0"),
        ({"total_steps": 0}, "total_steps must be an integer in [1, 1000000000]"),
        ({"total_steps": -5}, "total_steps must be an integer in [1, 1000000000]"),
        ({"total_steps": 10**12}, "total_steps must be an integer in [1, 1000000000]"),
        ({"total_steps": 100.0}, "total_steps must be an integer in [1, 1000000000]"),
        ({"total_steps": True}, "total_steps must be an integer in [1, 1000000000]"),
        ({"preset": "fast"}, "preset must be one of"),
        ({"strategy": "step"}, "strategy must be one of"),
        ({"k": 0}, "k must be an integer in [1, 64] or null"),
        ({"tau": 100, "tau_max": 50}, "tau_max (50) must be at least tau (100)"),
        ({"warmup_steps": 10_000}, "warmup_steps (10000) must be below total_steps (10000)"),
        ({"explore_cap": 1.5}, "explore_cap must be a finite number in [0, 1] or null"),
        ({"candidate_fraction": 0.0}, "candidate_fraction must be a finite number in (0, 1] or null"),
        ({"divergence_factor": 1.0}, "divergence_factor must be a finite number in (1, 1000000)"),
        ({"keep_winner": "yes"}, "keep_winner must be true, false or null"),
        ({"seed": -1}, "seed must be an integer in [0, 9223372036854775808)"),
    ],
)
def test_invalid_config_is_a_typed_value_error_that_says_what_to_fix(
    override: dict[str, object], fragment: str
) -> None:
    with pytest.raises(InvalidConfigError) as info:
        TunerConfig.from_dict(cfg(**override))
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TunerError)
    assert info.value.code == "invalid_config"


def test_unknown_and_missing_fields_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="unknown config field"):
        TunerConfig.from_dict(cfg(learning_rate=0.1))
    with pytest.raises(InvalidConfigError, match="missing config field"):
        TunerConfig.from_dict({"min_lr": 1e-3, "max_lr": 1e-1})
    with pytest.raises(InvalidConfigError, match="JSON object"):
        TunerConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_paper_preset_resolves_to_the_reference_numbers() -> None:
    st = resolve(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=50_000, preset="paper"))
    assert (st.tau, st.tau_max, st.k, st.k_warm, st.candidate_fraction) == (1000, 8000, 10, 10, 0.1)
    assert st.objective == "auto"
    assert st.val_samples == 16
    assert st.explore_cap == 1.0 and st.anneal_steps == 0
    assert not (st.keep_winner or st.carry_observations or st.divergence_guard or st.noise_from_forecast)
    assert st.forecast_families == ("exp",)


def test_greedy_preset_switches_are_on_and_each_can_be_turned_off() -> None:
    st = resolve(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=20_000, preset="greedy"))
    assert st.keep_winner and st.carry_observations and st.divergence_guard and st.noise_from_forecast
    assert st.explore_cap == 0.25 and st.anneal_steps == 4_000
    off = resolve(
        TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=20_000, keep_winner=False, explore_cap=0.1, preset="greedy")
    )
    assert not off.keep_winner and off.explore_cap == 0.1


def test_config_round_trips_through_a_dict() -> None:
    c = TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=123, preset="paper", seed=7, tau=50)
    assert TunerConfig.from_dict(c.to_dict()) == c


def test_plan_preset_plans_the_whole_budget_with_every_piece_a_switch() -> None:
    st = resolve(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=20_000, preset="plan"))
    assert st.planner and st.replan and st.plan_shape == "free" and not st.later_searches and not st.tied_kernel
    assert st.explore_cap == 0.15 and st.anneal_steps == 0  # the plan decides the end, not a fixed anneal
    assert st.k == 3 and st.tau == 1200
    off = resolve(
        TunerConfig(
            min_lr=1e-4, max_lr=1e-1, total_steps=20_000, replan=False, plan_shape="cosine", later_searches=True
        )
    )
    assert not off.replan and off.plan_shape == "cosine" and off.later_searches
    assert not resolve(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=20_000, preset="greedy")).planner


def test_default_is_the_spectral_plan_with_its_checks_and_a_job_keeps_what_default_meant() -> None:
    from lrtune.tuner import InvalidStateError, Tuner
    from lrtune.tuner.config import LEGACY_DEFAULTS

    config = TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=5000)
    now = resolve(config)
    assert now.planner and now.loss_model == "spectral" and now.verify_rise and now.explore_cap == 0.15
    assert now.verify_fall and now.lift_floor
    then = resolve(config, LEGACY_DEFAULTS)
    assert not then.planner and then.anneal_steps == 1000  # greedy: the last 20% decays
    assert not then.verify_fall and not then.lift_floor
    # An explicit preset and loss model mean the same whatever the defaults.
    c = TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=5000, preset="plan", loss_model="power")
    assert resolve(c) == resolve(c, LEGACY_DEFAULTS) and resolve(c).loss_model == "power"
    state = Tuner(config).dump()
    assert state["defaults"] == {
        "preset": "plan",
        "loss_model": "spectral",
        "decay_tail": 0.2,
        "verify_fall": True,
        "lift_floor": True,
    }
    assert now.decay_tail == 0.2  # every plan decays linearly to zero over the last 20% of the budget
    # A job stored before plans had a tail keeps planning without one (and without the fall check).
    before = Tuner.recover({**state, "defaults": {"preset": "plan", "loss_model": "spectral"}})
    assert before.settings.decay_tail == 0.0 and not before.settings.verify_fall
    assert before.dump()["defaults"] == {"preset": "plan", "loss_model": "spectral"}
    # One stored after the tail but before the fall check keeps its tail and goes on without the check.
    tail_only = {"preset": "plan", "loss_model": "spectral", "decay_tail": 0.2}
    later = Tuner.recover({**state, "defaults": tail_only})
    assert later.settings.decay_tail == 0.2 and not later.settings.verify_fall
    assert later.dump()["defaults"] == tail_only
    # One stored after the fall check but before rises lifted its floor keeps the check, and its floor only falls.
    fall_only = {**tail_only, "verify_fall": True}
    checked = Tuner.recover({**state, "defaults": fall_only})
    assert checked.settings.verify_fall and not checked.settings.lift_floor
    assert checked.dump()["defaults"] == fall_only
    # An explicit switch means the same whatever the defaults.
    assert not resolve(dataclasses.replace(config, verify_fall=False)).verify_fall
    assert not resolve(dataclasses.replace(config, lift_floor=False)).lift_floor
    for bad in (
        {"preset": "default", "loss_model": "spectral"},
        {"preset": "plan", "loss_model": "cubic"},
        {"preset": "plan", "loss_model": "spectral", "decay_tail": 1.5},
        {"preset": "plan", "loss_model": "spectral", "verify_fall": "yes"},
        {"preset": "plan", "loss_model": "spectral", "verify_fall": True, "lift_floor": 1},
        {},
    ):
        with pytest.raises(InvalidStateError):
            Tuner.recover({**state, "defaults": bad})


@pytest.mark.parametrize(
    ("switches", "named"),
    [
        ({"robust_plan": True}, "robust_plan only applies with loss_model='power'"),
        ({"tied_kernel": True, "model_window": 5.0}, "tied_kernel, model_window only applies"),
        ({"loss_model": "power", "verify_rise": True}, "verify_rise only applies with loss_model='spectral'"),
        ({"loss_model": "power", "decay_tail": 0.1}, "decay_tail only applies with loss_model='spectral'"),
        ({"loss_model": "power", "verify_fall": True}, "verify_fall only applies with loss_model='spectral'"),
        ({"loss_model": "power", "lift_floor": True}, "lift_floor only applies with loss_model='spectral'"),
        ({"loss_model": "power", "measure_rise": True}, "measure_rise only applies with loss_model='spectral'"),
        ({"loss_model": "power", "rise_tolerance": 2.0}, "rise_tolerance only applies with loss_model='spectral'"),
    ],
)
def test_a_switch_the_plans_loss_model_would_ignore_is_refused(switches: dict[str, object], named: str) -> None:
    from lrtune.tuner import Tuner

    config = TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=2000, **switches)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match=named):
        Tuner(config)
    # On with the model that reads it is fine; so is any of them on another preset.
    alone = {k: v for k, v in switches.items() if k != "loss_model"}
    model = "spectral" if set(_MODEL_SWITCHES["spectral"]) & set(switches) else "power"
    base = {"min_lr": 1e-4, "max_lr": 1e-1, "total_steps": 2000}
    assert Tuner(TunerConfig(**base, loss_model=model, **alone)).settings.loss_model == model  # type: ignore[arg-type]
    assert not Tuner(TunerConfig(**base, preset="greedy", **switches)).settings.planner  # type: ignore[arg-type]


def test_a_stored_job_with_a_switch_its_model_ignored_still_recovers() -> None:
    # Earlier versions accepted (and ignored) such a switch: a job they stored must go on as it ran.
    from lrtune.tuner import Tuner

    state = Tuner(TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=2000, seed=1)).dump()
    state["config"] = {**state["config"], "robust_plan": True}
    recovered = Tuner.recover(state)
    assert recovered.settings.loss_model == "spectral" and recovered.next_segment().to_dict() == state["open"]


def test_a_rise_tolerance_outside_its_range_is_refused_with_the_range() -> None:
    for bad in (-1.0, 11.0):
        with pytest.raises(InvalidConfigError, match=r"rise_tolerance must be a finite number in \[0, 10\]"):
            TunerConfig(min_lr=1e-4, max_lr=1.0, total_steps=2000, rise_tolerance=bad)
