"""What searching costs: the oracle's own schedule, trained on only the steps lrtune keeps.

lrtune spends part of the budget on steps it rolls back (the LR range sweep, candidates that lose, cooldown
probes). This re-runs the grid oracle's pick of every (workload, seed) of a finished benchmark with its budget
cut by lrtune-default's rolled-back share on that run, so the result says how much of lrtune's gap to the oracle
is the price of those steps rather than a worse LR or schedule. It does the same for the best single grid trial
picked in hindsight (the report's ceiling): the lowest loss a schedule of the grid's family reaches on the steps a
search like lrtune's leaves. Nothing here feeds back into lrtune.

Every run is deterministic, so runs already in ``search_cost.json`` (same workload, seed, schedule and steps) are
read back instead of trained again.

Usage::

    python -m benchmarks.search_cost [--results benchmarks/results/training] [--threads 1]

Writes ``search_cost.md`` and ``search_cost.json`` next to the benchmark's raw results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.methods import all_methods
from benchmarks.report import geomean, grid_spread, with_oracle
from benchmarks.run import run
from benchmarks.workloads import WORKLOADS


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write its table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/training"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in (args.results / "raw.jsonl").read_text().splitlines()]
    oracle = {(r["workload"], r["seed"]): r for r in with_oracle(rows) if r["method"] == "grid-oracle"}
    lrtune = {(r["workload"], r["seed"]): r for r in rows if r["method"] == "lrtune-default"}
    methods = {m.name: m for m in all_methods(ablations=False)}
    from tqdm import tqdm

    hindsight = {w: g["best"]["method"] for w, g in grid_spread(rows).items()}
    out = args.results / "search_cost.json"
    done = _earlier_runs(out)
    results: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    plan = sorted(k for k in oracle if k in lrtune)
    trained = 0
    for workload_name, seed in tqdm(plan, unit="run", file=sys.stderr):
        pick, tuned = oracle[(workload_name, seed)], lrtune[(workload_name, seed)]
        kept = tuned["steps"] - _rolled_back(tuned)
        losses: dict[str, float] = {}
        for name in dict.fromkeys((pick["picked"], hindsight[workload_name])):
            key = (workload_name, seed, name, kept)
            if key not in done:
                if workload_name not in cache:
                    cache.clear()
                    cache[workload_name] = WORKLOADS[workload_name]()
                short = dataclasses.replace(cache[workload_name], steps=kept)
                done[key] = run(short, methods[name], seed).test_loss
                trained += 1
            losses[name] = done[key]
        results.append(
            {
                "workload": workload_name,
                "seed": seed,
                "oracle_pick": pick["picked"],
                "oracle_test_loss": pick["test_loss"],
                "kept_steps": kept,
                "budget": tuned["steps"],
                "oracle_on_kept_steps": losses[pick["picked"]],
                "hindsight_trial": hindsight[workload_name],
                "hindsight_on_kept_steps": losses[hindsight[workload_name]],
                "lrtune_test_loss": tuned["test_loss"],
            }
        )
    out.write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "search_cost.md").write_text(_markdown(results, argv, trained))
    print(f"wrote {args.results / 'search_cost.md'} and {out}")
    return 0


def _earlier_runs(path: Path) -> dict[tuple[str, int, str, int], float]:
    """Test losses of the runs an earlier invocation wrote to ``path``, by (workload, seed, schedule, steps)."""
    if not path.exists():
        return {}
    done: dict[tuple[str, int, str, int], float] = {}
    for r in json.loads(path.read_text()):
        done[(r["workload"], r["seed"], r["oracle_pick"], r["kept_steps"])] = r["oracle_on_kept_steps"]
        if "hindsight_trial" in r:
            done[(r["workload"], r["seed"], r["hindsight_trial"], r["kept_steps"])] = r["hindsight_on_kept_steps"]
    return done


def _rolled_back(run_row: dict[str, Any]) -> int:
    """Steps of an lrtune run that did not reach the final model: all exploration but each stage's kept winner."""
    explored = round(run_row["explore_share"] * run_row["steps"])
    kept = sum(c["steps"] for st in run_row["stages"] for c in st["candidates"] if c["winner"])
    return int(explored - kept)


def _markdown(results: list[dict[str, Any]], argv: list[str] | None, trained: int) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by[r["workload"]].append(r)
    command = "python -m benchmarks.search_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    runs = sum(len({r["oracle_pick"], r["hindsight_trial"]}) for r in results)
    lines = [
        "# What searching costs",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) at the end  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Runs: {runs}, of which this invocation trained {trained} (the rest read back from search_cost.json; every "
        "run is deterministic)",
        "",
        "Two schedules of the grid, each trained again on every workload and seed with only as many steps as "
        "lrtune-default kept on that run (the budget minus its rolled-back sweep, losing candidates and cooldown "
        "probes): the grid oracle's pick for that seed, and the best single grid trial picked in hindsight (the "
        "report's ceiling: the trial with the lowest median test loss over seeds, the same for every seed). Each "
        "figure is the median over seeds of the ratio to the oracle's full-budget test loss on the same seed (so "
        "the lrtune column can differ slightly from the report's ratio of medians).",
        "",
        "| workload | steps kept by lrtune (of budget) | oracle pick on those steps | hindsight trial | "
        "hindsight trial on those steps | lrtune-default |",
        "|---|---:|---:|---|---:|---:|",
    ]
    columns: dict[str, list[float]] = defaultdict(list)
    for workload, rs in by.items():
        kept = statistics.median(r["kept_steps"] for r in rs)
        cells = {
            "short": statistics.median(r["oracle_on_kept_steps"] / r["oracle_test_loss"] for r in rs),
            "hindsight": statistics.median(r["hindsight_on_kept_steps"] / r["oracle_test_loss"] for r in rs),
            "tuned": statistics.median(r["lrtune_test_loss"] / r["oracle_test_loss"] for r in rs),
        }
        for name, value in cells.items():
            columns[name].append(value)
        lines.append(
            f"| {workload} | {kept:.0f} ({rs[0]['budget']}) | {cells['short']:.3f} | {rs[0]['hindsight_trial']} | "
            f"{cells['hindsight']:.3f} | {cells['tuned']:.3f} |"
        )
    geo = {name: geomean(values) or math.nan for name, values in columns.items()}
    lines += [
        f"| geometric mean | | {geo['short']:.3f} | | {geo['hindsight']:.3f} | {geo['tuned']:.3f} |",
        "",
        "Where the oracle-pick and lrtune columns are close, lrtune's LR and schedule are about as good as the best "
        "of the grid, and its gap to the oracle is the price of the steps it searched with. The hindsight column is "
        f"what knowing the grid's best schedule in advance would give after paying for the same search: "
        f"{geo['hindsight']:.3f} of the oracle in geometric mean, against lrtune-default's {geo['tuned']:.3f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
