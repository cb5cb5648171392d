"""How well the loss model predicts the end of a run: fitted on the first half, the final loss of the rest.

    python -m benchmarks.model_forecast                   # 3 noisy-quadratic landscapes x 20k steps x 5 seeds
                                                          # (the default spectral model: model_forecast_spectral.md)
    python -m benchmarks.model_forecast --seeds 2 --budgets 20000 100000
    python -m benchmarks.model_forecast --workloads --seeds 3   # also the four benchmark networks
    python -m benchmarks.model_forecast --workloads --seed-from 3 --seeds 6 --budgets 20000 100000
                                                          # seeds 3-5: the band's settings came from 0-2
    python -m benchmarks.model_forecast --loss-model power    # the multi-power-law model (model_forecast.md)

Each run is a ``plan``-preset job on a noisy quadratic (:mod:`benchmarks.nqm`). The model is fitted to every
segment reported until the kept line reached half of its steps; it then predicts the final loss of the
continuation the job really ran (the kept line's LR, step by step), which is compared with the truth (the closed
form's expected loss of the final weights). Reported: the median absolute relative error and how often the truth
falls inside the stated 90% band (aim: 80-95%), and the median error in units of the stated standard deviation
(0.67 for normal errors and a band as wide as it should be). With ``--workloads`` also ``plan``-preset runs on the
benchmark networks, each checked against what the job itself measured at its end (its objective's last
observation on the kept line: the validation loss, since the benchmark gives ``val_fn``). Results go to
``benchmarks/results/model_forecast_spectral.md`` (``model_forecast.md`` for the power-law model).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.nqm import LANDSCAPES, run_tuner
from benchmarks.workloads import SHORT_WORKLOADS
from lrtune.tuner import Tuner, lossmodel, spectral
from lrtune.tuner.config import DEFAULT_LOSS_MODEL, LOSS_MODELS, TunerConfig, resolve
from lrtune.tuner.lossmodel import History
from lrtune.tuner.modelruns import runs_of
from lrtune.tuner.online import Knobs, fit_model, record_lrs
from lrtune.tuner.replan import AnyFit, AnyHistory, predict, predict_std
from lrtune.tuner.spectral import ModeHistory


def forecast_case(state: dict[str, Any], final: float | None = None) -> dict[str, float] | None:
    """Fit on the first half of a dumped job and predict its final loss; None when the model cannot tell.

    Args:
        state: The job's ``Tuner.dump()``.
        final: The true final loss; None takes the job's own last observation of its objective on the kept line
            (the last binned training loss, or the last validation loss: on a real network, the truth as measured).
    """
    records = state["segments"]
    by_id = {int(r["segment_id"]): r for r in records}
    path: list[dict[str, Any]] = []
    sid = state.get("line")
    while sid is not None and sid in by_id:
        path.append(by_id[sid])
        sid = by_id[sid].get("parent")
    path.reverse()
    kept = sum(int(r["steps"]) for r in path)
    done, cut = 0, 0
    for i, rec in enumerate(path):
        done += int(rec["steps"])
        if done >= kept / 2:
            cut = i
            break
    order = {int(r["segment_id"]): i for i, r in enumerate(records)}
    seen = records[: order[int(path[cut]["segment_id"])] + 1]
    st = resolve(TunerConfig.from_dict(state["config"]))
    knobs = Knobs(
        st.model_window, st.plan_pieces, st.replan, st.later_searches, st.plan_shape == "free", st.tied_kernel
    )
    objective = "val" if st.objective == "val" else "train"
    fit: AnyFit | None
    history: AnyHistory
    if st.loss_model == "spectral":
        grid = Tuner.recover(state)._grid()  # the job's own curvature grid
        fit = spectral.fit(runs_of(seen, objective)[0], grid, st.loss_floor)
        history = ModeHistory.start(grid)
        for r in path[: cut + 1]:
            history = history.then(record_lrs(r))
    else:
        fit = fit_model(seen, knobs, st.loss_floor, objective)
        history = History.of([record_lrs(r) for r in path[: cut + 1]])
    if fit is None:
        return None
    if final is None:
        points = [p[1] for r in path for p in (r["val"] if objective == "val" else r["curve"]) if p[1] is not None]
        if not points:
            return None
        final = float(points[-1])
    rest = np.concatenate([record_lrs(r) for r in path[cut + 1 :]]) if cut + 1 < len(path) else np.zeros(0)
    if not rest.size:
        return None
    pieces = np.array_split(rest, min(64, rest.size))
    steps = np.array([float(p.size) for p in pieces])
    lrs = np.array([float(p.mean()) for p in pieces])
    mean = float(predict(fit, history, steps, lrs[None, :])[0])
    std = predict_std(fit, history, steps, lrs)
    lo, hi = lossmodel.band90(mean, std, st.loss_floor)
    return {
        "predicted": mean,
        "std": std,
        "truth": final,
        "rel_error": abs(mean / final - 1),
        "inside": lo <= final <= hi,
    }


def _keep(cases: list[dict[str, float]], case: dict[str, float] | None, label: str, truth: str) -> None:
    """Add a case (when the model could tell) and print its line."""
    if case is None:
        return
    cases.append(case)
    where = "inside" if case["inside"] else "outside"
    print(
        f"{label}: predicted {case['predicted']:.4g} ± {case['std']:.2g}, {truth} {case['truth']:.4g} "
        f"({case['rel_error']:.0%} off, {where} the band)",
        flush=True,
    )


def _median_z(cases: list[dict[str, float]]) -> float:
    """Median of the absolute error in units of the stated standard deviation."""
    return statistics.median(abs(c["truth"] - c["predicted"]) / c["std"] if c["std"] > 0 else math.inf for c in cases)


def workload_rows(
    names: list[str], seeds: range, threads: int, loss_model: str = DEFAULT_LOSS_MODEL
) -> list[dict[str, Any]]:
    """Plan-preset runs on benchmark networks, each job's own model checked against what the job then measured."""
    import torch

    from benchmarks import run as runner
    from benchmarks.methods import all_methods
    from benchmarks.workloads import WORKLOADS

    torch.set_num_threads(threads)
    wanted = "lrtune-default" if loss_model == DEFAULT_LOSS_MODEL else f"lrtune-plan-{loss_model}"
    method = next(m for m in all_methods() if m.name == wanted)
    rows = []
    for name in names:
        workload = WORKLOADS[name]()
        cases: list[dict[str, float]] = []
        for seed in seeds:
            states: list[dict[str, Any]] = []
            runner.STATE_HOOK.append(states.append)
            try:
                runner.run(workload, method, seed)
            finally:
                runner.STATE_HOOK.pop()
            _keep(cases, forecast_case(states[-1]) if states else None, f"{name} seed {seed}", "measured")
        rows.append({"landscape": name, "budget": workload.steps, "cases": cases})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run, print and save the table; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_forecast", description=__doc__.split("\n")[0])
    parser.add_argument("--landscapes", nargs="+", default=list(LANDSCAPES), choices=sorted(LANDSCAPES))
    parser.add_argument("--budgets", nargs="+", type=int, default=[20_000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--seed-from", type=int, default=0, help="run only seeds from this one on (seeds not used to set the band)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--workloads",
        nargs="*",
        default=None,
        help="also the benchmark networks (names, or none for the four short ones): plan-preset runs, truth measured",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the network runs")
    parser.add_argument(
        "--loss-model", choices=list(LOSS_MODELS), default=DEFAULT_LOSS_MODEL, help="the plan's loss model"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    seeds = range(args.seed_from, args.seeds)
    rows = []
    if args.workloads is not None:
        rows += workload_rows(args.workloads or list(SHORT_WORKLOADS), seeds, args.threads, args.loss_model)
    for name in args.landscapes:
        for total in args.budgets:
            cases: list[dict[str, float]] = []
            for seed in seeds:
                result = run_tuner(LANDSCAPES[name], total, seed, "plan", keep_state=True, loss_model=args.loss_model)
                case = forecast_case(result["state"], result["final"])
                _keep(cases, case, f"{name} {total} seed {seed}", "truth")
            rows.append({"landscape": name, "budget": total, "cases": cases})
    lines = [
        f"# Loss model ({args.loss_model}): predicted final loss from the first half of a run",
        "",
        f"Command: `{' '.join(['python -m benchmarks.model_forecast', *sys.argv[1:]])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; load average {load:.1f} at the start  ",
        f"Date: {dt.date.today().isoformat()}",
        "",
        "| landscape or network | budget | runs | median abs error | median error / std | truth inside the 90% band |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    everything = []
    for r in rows:
        cases = r["cases"]
        everything += cases
        if cases:
            err = statistics.median(c["rel_error"] for c in cases)
            inside = sum(c["inside"] for c in cases) / len(cases)
            z = _median_z(cases)
            lines.append(f"| {r['landscape']} | {r['budget']:,} | {len(cases)} | {err:.1%} | {z:.2f} | {inside:.0%} |")
    if everything:
        err = statistics.median(c["rel_error"] for c in everything)
        inside = sum(c["inside"] for c in everything) / len(everything)
        z = _median_z(everything)
        lines.append(f"| all | | {len(everything)} | {err:.1%} | {z:.2f} | {inside:.0%} |")
    lines += [
        "",
        "Aim: the truth inside the 90% band 80-95% of the time. The median error over the stated standard deviation",
        "is 0.67 for a band that is as wide as it should be (normal errors); far less: the band is too wide.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "model_forecast" if args.loss_model == "power" else f"model_forecast_{args.loss_model}"
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1, default=float))
    print("\n".join(lines))
    return 0 if everything and all(math.isfinite(c["predicted"]) for c in everything) else 1


if __name__ == "__main__":
    raise SystemExit(main())
