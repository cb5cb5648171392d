"""Train one method on one workload with one seed and score it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from benchmarks.methods import WARMUP_SHARE, Method, make_optimizer
from benchmarks.workloads import Workload
from lrtune.tuner import sweep_suggestion

CURVE_POINTS = 30  # validation evaluations along a run (for curves and steps-to-target)


@dataclass
class RunResult:
    """The score of one run.

    Attributes:
        workload: Workload name.
        method: Method name.
        family: Method family.
        seed: Seed of initialization and data order.
        steps: Gradient steps taken (all of them).
        test_loss: Final loss on the test split.
        test_acc: Final accuracy on the test split (classifiers).
        tune_loss: Final loss on the tuning split (what tuners may see).
        wall_s: Wall-clock seconds of the run, BO and range test included.
        cpu_s: CPU seconds of the process over the run (unlike ``wall_s``, barely affected by other jobs sharing
            the cores).
        tuner_s: Seconds spent inside lrtune's callback (snapshots, forecasts, BO), where it ran.
        explore_share: Share of the budget spent exploring (lrtune) or on a range test.
        curve: ``[step, tune loss]`` pairs along the run.
        lrs: ``[step, lr]`` pairs along the run (the LR of the first param group).
        stages: lrtune's stages (candidates with LR, forecast, std, winner), where it ran.
        cost_runs: Full trainings this result cost.
    """

    workload: str
    method: str
    family: str
    seed: int
    steps: int
    test_loss: float
    test_acc: float | None
    tune_loss: float
    wall_s: float
    cpu_s: float | None = None
    tuner_s: float | None = None
    explore_share: float = 0.0
    curve: list[list[float]] = field(default_factory=list)
    lrs: list[list[float]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    cost_runs: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (infinite losses become None)."""
        out = asdict(self)
        for key in ("test_loss", "tune_loss"):
            if not math.isfinite(out[key]):
                out[key] = None
        out["curve"] = [[s, v if math.isfinite(v) else None] for s, v in self.curve]
        return out


class _Recorder:
    """Records the LR and, on a fixed cadence, the tuning loss along a run."""

    def __init__(self, workload: Workload, model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int):
        self.workload, self.model, self.optimizer = workload, model, optimizer
        self.every = max(1, steps // CURVE_POINTS)
        self.lr_every = max(1, steps // 300)
        self.curve: list[list[float]] = []
        self.lrs: list[list[float]] = []

    def before_step(self, step: int) -> None:
        if step % self.lr_every == 0:
            self.lrs.append([step, float(self.optimizer.param_groups[0]["lr"])])

    def after_step(self, step: int, eval_mode: Any = None) -> None:
        if (step + 1) % self.every == 0:
            if eval_mode is not None:
                eval_mode(True)
            loss, _ = self.workload.evaluate(self.model, self.workload.tune, self.workload.eval_examples)
            if eval_mode is not None:
                eval_mode(False)
            self.curve.append([step + 1, loss])


def train_step(workload: Workload, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: Any) -> torch.Tensor:
    """One optimizer step; returns the detached loss (still on its device)."""
    x, y = batch
    loss = workload.loss(model, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return loss.detach()


#: Callbacks given each in-process tuning job's final state (``Tuner.dump()``); the last one is called.
STATE_HOOK: list[Callable[[dict[str, Any]], None]] = []


def run(workload: Workload, method: Method, seed: int) -> RunResult:
    """Train ``method`` on ``workload`` from seed ``seed`` for the workload's budget and score it."""
    torch.manual_seed(seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    steps = workload.steps
    if method.family == "range-test":
        result = _run_range_test(workload, method, seed, started)
    else:
        model = workload.make_model()
        if method.tuner is not None:
            result = _run_callback(workload, method, seed, model, started)
        else:
            result = _run_lr_free(workload, method, seed, model, steps, started)
    result.cpu_s = time.process_time() - cpu_started
    return result


def _finish(
    workload: Workload,
    method: Method,
    seed: int,
    model: torch.nn.Module,
    steps: int,
    started: float,
    recorder: _Recorder,
    **extra: Any,
) -> RunResult:
    test_loss, test_acc = workload.evaluate(model, workload.test)
    tune_loss, _ = workload.evaluate(model, workload.tune)
    return RunResult(
        workload=workload.name,
        method=method.name,
        family=method.family,
        seed=seed,
        steps=steps,
        test_loss=test_loss,
        test_acc=test_acc,
        tune_loss=tune_loss,
        wall_s=time.perf_counter() - started,
        curve=recorder.curve,
        lrs=recorder.lrs,
        cost_runs=method.cost_runs,
        **extra,
    )


def _run_lr_free(
    workload: Workload, method: Method, seed: int, model: torch.nn.Module, steps: int, started: float
) -> RunResult:
    opt = make_optimizer(method.optimizer, model, 1.0, steps)
    recorder = _Recorder(workload, model, opt, steps)
    sched = None
    set_mode: Any = None
    if method.optimizer == "prodigy":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    else:  # schedule-free keeps two sequences: evaluate at the averaged weights
        opt.train()  # type: ignore[attr-defined]

        def set_mode(evaluating: bool) -> None:
            (opt.eval if evaluating else opt.train)()  # type: ignore[attr-defined]

    batches = workload.batches(seed)
    for step in range(steps):
        recorder.before_step(step)
        train_step(workload, model, opt, next(batches))
        if sched is not None:
            sched.step()
        recorder.after_step(step, set_mode)
    if set_mode is not None:
        set_mode(True)
    return _finish(workload, method, seed, model, steps, started, recorder)


def _run_range_test(workload: Workload, method: Method, seed: int, started: float) -> RunResult:
    steps = workload.steps
    sweep = max(20, int(0.05 * steps))
    model = workload.make_model()
    opt = make_optimizer("adamw", model, 1e-6, steps)
    batches = workload.batches(seed)
    lrs = [1e-6 * (1.0 / 1e-6) ** (i / (sweep - 1)) for i in range(sweep)]
    losses = []
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        losses.append(float(train_step(workload, model, opt, next(batches))))
    peak = sweep_suggestion(losses, lrs)  # the usual rule: a tenth of the LR at the lowest smoothed loss
    # Restart from the same initialization; the sweep's steps stay charged.
    torch.manual_seed(seed)
    model = workload.make_model()
    main = steps - sweep
    warm = int(WARMUP_SHARE * main)
    opt = make_optimizer("adamw", model, peak, steps)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, main - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    recorder = _Recorder(workload, model, opt, steps)
    recorder.lrs = [[i, lr] for i, lr in enumerate(lrs) if i % recorder.lr_every == 0]
    for step in range(sweep, steps):
        recorder.before_step(step)
        train_step(workload, model, opt, next(batches))
        sched.step()
        recorder.after_step(step)
    return _finish(workload, method, seed, model, steps, started, recorder, explore_share=sweep / steps)


def _run_callback(workload: Workload, method: Method, seed: int, model: torch.nn.Module, started: float) -> RunResult:
    from lrtune.client import AutoLRSCallback, ReplayLoader

    steps = workload.steps
    spec = dict(method.tuner or {})
    opt = make_optimizer("adamw", model, spec["max_lr"], steps)
    warmup = int(WARMUP_SHARE * steps) if spec.pop("warmup", False) else 0
    tau_share = spec.pop("tau_share", None)
    if tau_share is not None:
        spec["tau"] = max(2, int(tau_share * steps))
        spec["tau_max"] = 8 * spec["tau"]
    data = ReplayLoader(workload.batches(seed))

    def val_fn() -> float:
        return workload.evaluate(model, workload.tune, workload.eval_examples)[0]

    preset = spec.pop("preset", "default")
    strategy = spec.pop("strategy", "autolrs")
    min_lr, max_lr = spec.pop("min_lr"), spec.pop("max_lr")
    cb = AutoLRSCallback(
        model,
        opt,
        server_url=None,
        min_lr=min_lr,
        max_lr=max_lr,
        total_steps=steps,
        val_fn=val_fn,
        preset=preset,
        strategy=strategy,
        seed=seed,
        loader=data,
        config={"warmup_steps": warmup, **spec},
    )
    recorder = _Recorder(workload, model, opt, steps)
    step, inside = 0, 0.0
    for batch in data:
        if cb.done or step >= steps:
            break
        recorder.before_step(step)
        loss = train_step(workload, model, opt, batch)
        t0 = time.perf_counter()
        cb.on_train_batch_end(loss)
        inside += time.perf_counter() - t0
        recorder.after_step(step)
        step += 1
    cb.on_train_end()
    schedule = cb.tuner.schedule()
    if STATE_HOOK:  # what a job's own model can be checked against (benchmarks.model_forecast)
        STATE_HOOK[-1](cb.tuner.dump())
    return _finish(
        workload,
        method,
        seed,
        model,
        step,
        started,
        recorder,
        tuner_s=inside,
        explore_share=float(schedule["explore_share"]),
        stages=schedule["stages"] if strategy == "autolrs" else [],
    )
