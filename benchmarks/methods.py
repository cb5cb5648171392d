"""The methods compared: what a user would pick instead of lrtune, and lrtune itself.

Every method trains the same model from the same initialization on the same batch stream for the same
budget of gradient steps; every step a method takes (exploration, range test, rolled-back candidates)
counts against that budget. Schedules are served through lrtune's own callback (in-process), so the
comparison is like for like; the LR-free optimizers run on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# One tuner setting for every workload: the user's range, warmup share and budget rule are the same.
LR_RANGE = (1e-5, 1e-1)
WARMUP_SHARE = 0.05
GRID_PEAKS = [float(v) for v in torch.logspace(-4.5, -1.5, 8)]  # 3.2e-5 .. 3.2e-2, AdamW peak LRs
GRID_SHAPES = ("cosine", "linear", "wsd")
# One switch flipped at a time, on the plan preset (which ``default`` stands for).
ABLATIONS: dict[str, dict[str, Any]] = {
    "power": {"loss_model": "power"},
    "no-verify": {"verify_rise": False},
    "no-tail": {"decay_tail": 0.0},
    "no-fall-check": {"verify_fall": False},
    "no-lift": {"lift_floor": False},
    "measure-rise": {"measure_rise": True},
    "no-replan": {"replan": False},
    "train-objective": {"objective": "train"},
    "later-searches": {"later_searches": True},
    "tied-kernel": {"loss_model": "power", "tied_kernel": True},  # switches of the power-law model
    "plan-cosine": {"plan_shape": "cosine"},
    "no-divergence-guard": {"divergence_guard": False},
    "no-batch-replay": {"replay_batches": False},
    "no-lr-sweep": {"sweep_fraction": 0.0},
    "no-cooldown-probe": {"probe_fraction": 0.0},
    "probe-all": {"probe_all": True},
    "robust-plan": {"loss_model": "power", "robust_plan": True},
    "probe-judge": {"probe_all": True, "probe_judge": True},
    "probe-judge-robust": {"loss_model": "power", "probe_all": True, "probe_judge": True, "robust_plan": True},
    # Where the first training LR sits below the sweep's bottom (10 by default), chosen on the selection workloads.
    "sweep-divisor-3": {"sweep_divisor": 3.0},
    "sweep-divisor-5": {"sweep_divisor": 5.0},
    "sweep-divisor-20": {"sweep_divisor": 20.0},
    "decay-tail-0.35": {"decay_tail": 0.35},
    # A rise check that lets misses within the fit's scatter pass, chosen on the selection workloads (not taken).
    "rise-tolerance-1": {"rise_tolerance": 1.0},
    "rise-tolerance-2": {"rise_tolerance": 2.0},
}


@dataclass(frozen=True)
class Method:
    """One way to train.

    Attributes:
        name: Name in reports.
        family: ``default``, ``lr-free``, ``range-test``, ``grid``, ``lrtune`` or ``ablation``.
        optimizer: ``adamw``, ``schedulefree`` or ``prodigy``.
        tuner: Config for lrtune's callback (``min_lr``, ``max_lr``, strategy, preset, switches ...), with
            ``total_steps`` and ``warmup_steps`` filled per workload; None for methods that bring their own LR.
        cost_runs: How many full trainings the method's result cost (the grid's 24; else 1).
    """

    name: str
    family: str
    optimizer: str = "adamw"
    tuner: dict[str, Any] | None = None
    cost_runs: int = 1


def schedule_config(strategy: str, peak: float, warmup: bool = True) -> dict[str, Any]:
    """A standard schedule peaking at ``peak`` and decaying to a thousandth of it."""
    return {"strategy": strategy, "min_lr": peak * 1e-3, "max_lr": peak, "warmup": warmup}


def lrtune_config(**switches: Any) -> dict[str, Any]:
    """lrtune's default preset over the shared LR range, with optional switches."""
    return {"strategy": "autolrs", "min_lr": LR_RANGE[0], "max_lr": LR_RANGE[1], "warmup": True, **switches}


def paper_config() -> dict[str, Any]:
    """The reference AutoLRS preset with its stage lengths scaled to the budget (tau = budget / 40)."""
    return {**lrtune_config(preset="paper", objective="train"), "tau_share": 1 / 40}


def all_methods(ablations: bool = True) -> list[Method]:
    """Every method of the full benchmark (the grid's 24 trials are separate methods of family ``grid``)."""
    methods = [
        Method("adamw-1e-3-constant", "default", tuner=schedule_config("constant", 1e-3, warmup=False)),
        Method("adamw-1e-3-cosine", "default", tuner=schedule_config("cosine", 1e-3)),
        Method("schedulefree-adamw", "lr-free", optimizer="schedulefree"),
        Method("prodigy-cosine", "lr-free", optimizer="prodigy"),
        Method("range-test-cosine", "range-test"),
        Method("lrtune-paper", "lrtune", tuner=paper_config()),
        Method("lrtune-default", "lrtune", tuner=lrtune_config()),
        Method("lrtune-greedy", "lrtune", tuner=lrtune_config(preset="greedy")),
    ]
    for shape in GRID_SHAPES:
        for peak in GRID_PEAKS:
            methods.append(Method(f"grid-{shape}-{peak:.1e}", "grid", tuner=schedule_config(shape, peak)))
    if ablations:
        for name, switches in ABLATIONS.items():
            methods.append(Method(f"lrtune-plan-{name}", "ablation", tuner=lrtune_config(preset="plan", **switches)))
    return methods


def make_optimizer(name: str, model: torch.nn.Module, lr: float, steps: int) -> torch.optim.Optimizer:
    """Build the optimizer a method uses (AdamW, schedule-free AdamW or Prodigy, each at its defaults)."""
    params = model.parameters()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    if name == "schedulefree":
        import schedulefree

        return schedulefree.AdamWScheduleFree(params, warmup_steps=int(WARMUP_SHARE * steps))  # type: ignore[no-any-return]
    if name == "prodigy":
        import prodigyopt

        return prodigyopt.Prodigy(params, lr=1.0, weight_decay=0.01)  # type: ignore[no-any-return]
    raise ValueError(f"unknown optimizer {name!r}")
